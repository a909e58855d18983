"""Published numbers (METHOD.md) beside ours: the paper-style table."""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

# Image AUROC (%) at 1/2/4 shots, as published.
PEERS: Dict[str, Dict[str, Sequence[float]]] = {
    "mvtec": {"WinCLIP+": (93.1, 94.4, 95.2), "AnomalyDINO": (96.6, 96.9, 97.7), "PatchCore": (83.4, 86.3, 88.8)},
    "visa": {"WinCLIP+": (83.8, 84.6, 87.3), "AnomalyDINO": (87.4, 89.7, 92.6)},
}
# LAKE paper, image AUROC (%); the shot count is not stated (probably 1-shot).
PAPER = {"mvtec": 94.7, "visa": 89.4, "btad": 96.2}
SHOT_COLUMNS = (1, 2, 4)


def paper_table(dataset: str, summary: List[dict]) -> str:
    """Markdown: our mean image AUROC per shot count next to the paper's and the peers'."""
    means = {r["shots"]: r["image_auroc"] for r in summary if r["category"] == "mean"}
    shots = sorted(set(SHOT_COLUMNS) | set(means))
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"  # noqa: E731
    lines = [f"Image AUROC (%), {dataset}, mean over categories", "",
             "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---|" + "---|" * len(shots)]
    lines.append("| LAKE (ours, this run) | " + " | ".join(
        fmt(100 * means[k]) if k in means else "-" for k in shots) + " |")
    if dataset in PAPER:
        lines.append("| LAKE (paper, shots not stated) | " + " | ".join(
            fmt(PAPER[dataset]) if k == 1 else "-" for k in shots) + " |")
    for name, vals in PEERS.get(dataset, {}).items():
        by = dict(zip(SHOT_COLUMNS, vals))
        lines.append(f"| {name} (published) | " + " | ".join(fmt(by.get(k)) for k in shots) + " |")
    return "\n".join(lines)
