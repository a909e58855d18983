"""Published numbers (METHOD.md) beside ours: the paper-style table."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

# Image AUROC (%) at 1/2/4 shots, as published.
PEERS: Dict[str, Dict[str, Sequence[float]]] = {
    "mvtec": {"WinCLIP+": (93.1, 94.4, 95.2), "AnomalyDINO": (96.6, 96.9, 97.7), "PatchCore": (83.4, 86.3, 88.8)},
    "visa": {"WinCLIP+": (83.8, 84.6, 87.3), "AnomalyDINO": (87.4, 89.7, 92.6)},
}
# LAKE paper, image AUROC (%); the shot count is not stated (probably 1-shot).
PAPER = {"mvtec": 94.7, "visa": 89.4, "btad": 96.2}
SHOT_COLUMNS = (1, 2, 4)
# The categories the published means are over.
CATEGORIES: Dict[str, Sequence[str]] = {
    "mvtec": ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
              "tile", "toothbrush", "transistor", "wood", "zipper"),
    "visa": ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
             "pcb4", "pipe_fryum"),
    "btad": ("01", "02", "03"),
}
NAMES = {"mvtec": "MVTec AD", "visa": "VisA", "btad": "BTAD"}


def paper_set(dataset: str, categories: Sequence[str]) -> Optional[str]:
    """The published data set a run's numbers can stand beside: ``dataset`` is the kind of
    a paper set (mvtec, visa, btad) and every evaluated category is one of its categories;
    else ``None`` (a folder set, MPDD, LOCO, or a set in the MVTec layout with other classes)."""
    known = CATEGORIES.get(dataset.lower())
    if known is None or not categories or not set(categories) <= set(known):
        return None
    return dataset.lower()


def paper_table(dataset: str, summary: List[dict], categories: Sequence[str]) -> str:
    """Markdown: our mean image AUROC per shot count next to the paper's and the peers',
    for runs on MVTec AD, VisA or BTAD (see :func:`paper_set`); ``""`` for any other set.
    A run on part of the categories says so: the published means are over all of them."""
    key = paper_set(dataset, categories)
    if key is None:
        return ""
    means = {r["shots"]: r["image_auroc"] for r in summary if r["category"] == "mean"}
    shots = sorted(set(SHOT_COLUMNS) | set(means))
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"  # noqa: E731
    n, total = len(set(categories)), len(CATEGORIES[key])
    part = "" if n == total else f" ({n} of its {total} categories: not comparable with the published means over all {total})"
    lines = [f"Image AUROC (%), {NAMES[key]}, mean over categories{part}", "",
             "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---|" + "---|" * len(shots)]
    lines.append("| LAKE (ours, this run) | " + " | ".join(
        fmt(None if means.get(k) is None else 100 * means[k]) if k in means else "-" for k in shots) + " |")
    lines.append("| LAKE (paper, shots not stated) | " + " | ".join(
        fmt(PAPER[key]) if k == 1 else "-" for k in shots) + " |")
    for name, vals in PEERS.get(key, {}).items():
        by = dict(zip(SHOT_COLUMNS, vals))
        lines.append(f"| {name} (published) | " + " | ".join(fmt(by.get(k)) for k in shots) + " |")
    return "\n".join(lines)
