"""The evaluation protocol (METHOD.md): per category, k normal shots drawn with a seed,
the whole test split scored, image and pixel metrics, averaged over seeds and categories.

Memory stays bounded: images are scored one at a time and pixel metrics are streamed
(`pylake.metrics.PixelMetrics`), maps and masks at the backbone resolution S x S.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from . import datasets, metrics
from ._clip import ClipModel
from ._normality import NormalityModel, load_images

METRIC_KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")


class Progress:
    """A one-line progress bar with an ETA on stderr (silent when ``enabled`` is False)."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None) -> None:
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.stream = stream or sys.stderr
        self.start, self.done = time.perf_counter(), 0

    def step(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        width = 24
        filled = int(width * self.done / self.total)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{elapsed:5.1f}s elapsed, ETA {eta:5.1f}s")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


@dataclass
class RunResult:
    """Metrics of one (category, shots, seed) run."""

    category: str
    shots: int
    seed: int
    metrics: Dict[str, float]
    seconds: float
    n_test: int
    heatmaps: List[str] = field(default_factory=list)

    def row(self) -> dict:
        return {"category": self.category, "shots": self.shots, "seed": self.seed, **self.metrics,
                "seconds": round(self.seconds, 3), "n_test": self.n_test}


def evaluate_category(clip: ClipModel, category: datasets.Category, shots: int, seed: int,
                      options: Optional[dict] = None, heatmap_dir: Optional[Path] = None, n_heatmaps: int = 0,
                      progress: bool = False) -> RunResult:
    """Fit on ``shots`` normal images of ``category`` (drawn with ``seed``), score its test
    split, and compute the metrics (pixel metrics only when the set has masks)."""
    t0 = time.perf_counter()
    opts = dict(options or {})
    opts.setdefault("class_name", category.name.replace("_", " "))
    model = NormalityModel(clip, **opts)
    train = datasets.few_shot(category.train, shots, seed)
    size = model.image_size
    model.fit(load_images(train, clip, size) if train else torch.empty(0, 3, size, size))
    pixel = metrics.PixelMetrics(0.0, 1.0) if category.has_masks else None
    scores: List[float] = []
    labels: List[int] = []
    heatmaps: List[str] = []
    bar = Progress(len(category.test), f"{category.name} {shots}-shot seed {seed}", progress)
    for i, sample in enumerate(category.test):
        x = load_images([sample.path], clip, size)
        pred = model.score(x)
        scores.append(float(pred.pred_score[0]))
        labels.append(sample.label)
        if pixel is not None:
            mask = datasets.read_mask(sample, size, size, allow_missing=True)
            if mask is not None:
                pixel.update(pred.anomaly_map, mask.unsqueeze(0))
        if heatmap_dir is not None and len(heatmaps) < n_heatmaps and sample.label == 1:
            heatmaps.append(str(write_heatmap(heatmap_dir / f"{category.name}_{sample.defect}_{sample.path.stem}.png",
                                              sample.path, pred.anomaly_map[0])))
        bar.step()
    result = metrics.evaluate(torch.tensor(scores), torch.tensor(labels))
    out = {k: result.get(k, math.nan) for k in METRIC_KEYS}
    if pixel is not None:
        p = pixel.compute()
        out.update(pixel_auroc=p["auroc"], pixel_ap=p["ap"], pixel_f1_max=p["f1_max"], pixel_aupro=p["aupro"])
    return RunResult(category.name, shots, seed, out, time.perf_counter() - t0, len(category.test), heatmaps)


def write_heatmap(path: Path, image: Path, amap: torch.Tensor, lo: Optional[float] = None,
                  hi: Optional[float] = None, mask: Optional[Path] = None) -> Path:
    """The image and its anomaly map blended over it (jet colours) side by side, and the
    ground-truth ``mask`` as a third panel when that file exists, as a PNG. The colours span
    ``lo..hi`` (default: the map's own min..max, as anomalib shows maps)."""
    from PIL import Image  # noqa: PLC0415

    h, w = amap.shape
    base = Image.open(image).convert("RGB").resize((w, h), Image.BICUBIC)
    lo = float(amap.min()) if lo is None else lo
    hi = float(amap.max()) if hi is None else hi
    x = ((amap - lo) / max(hi - lo, 1e-12)).clamp(0, 1).unsqueeze(-1)
    rgb = (1.5 - (4.0 * x - torch.tensor([3.0, 2.0, 1.0])).abs()).clamp(0, 1)
    heat = Image.fromarray((rgb * 255 + 0.5).to(torch.uint8).numpy())
    panels = [base, Image.blend(base, heat, 0.5)]
    if mask is not None and Path(mask).exists():
        panels.append(Image.open(mask).convert("L").resize((w, h), Image.NEAREST).convert("RGB"))
    sheet = Image.new("RGB", (w * len(panels), h))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * w, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def summarise(results: Sequence[RunResult]) -> List[dict]:
    """Mean over seeds per (category, shots), then a "mean" row per shots over categories."""
    groups: Dict[tuple, List[RunResult]] = {}
    for r in results:
        groups.setdefault((r.category, r.shots), []).append(r)
    rows = []
    for (cat, shots), rs in groups.items():
        rows.append({"category": cat, "shots": shots, "seeds": len(rs),
                     **{k: _mean([r.metrics[k] for r in rs]) for k in METRIC_KEYS}})
    for shots in sorted({r["shots"] for r in rows}):
        sel = [r for r in rows if r["shots"] == shots]
        rows.append({"category": "mean", "shots": shots, "seeds": max(r["seeds"] for r in sel),
                     **{k: _mean([r[k] for r in sel]) for k in METRIC_KEYS}})
    return rows


def _mean(values: Iterable[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def markdown_table(rows: Sequence[dict], keys: Sequence[str] = METRIC_KEYS) -> str:
    head = "| category | shots | " + " | ".join(keys) + " |"
    sep = "|---|---|" + "---|" * len(keys)
    lines = [head, sep]
    for r in rows:
        cells = ["-" if math.isnan(r[k]) else f"{100 * r[k]:.1f}" for k in keys]
        lines.append(f"| {r['category']} | {r['shots']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: Path, results: Sequence[RunResult], meta: dict) -> Dict[str, Path]:
    """report.json (every run + summary + meta), report.csv (summary), report.md (table)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(results)
    files = {"json": out / "report.json", "csv": out / "report.csv", "md": out / "report.md"}
    files["json"].write_text(json.dumps({"meta": meta, "runs": [r.row() for r in results], "summary": rows},
                                        indent=2, default=str))
    with open(files["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["category", "shots", "seeds", *METRIC_KEYS])
        w.writeheader()
        w.writerows(rows)
    note = "\n\n**Random-weight backbone: these numbers only show that the pipeline runs.**" if meta.get(
        "random_weights") else ""
    files["md"].write_text(f"# LAKE evaluation\n\nModel: `{meta.get('model')}`, data set: {meta.get('dataset')} "
                           f"(`{meta.get('root')}`), seeds {meta.get('seeds')}; metrics in %.{note}\n\n"
                           + markdown_table(rows) + "\n")
    return files


def run(clip: ClipModel, categories: Sequence[datasets.Category], shots: Sequence[int], seeds: Sequence[int],
        out: Path, options: Optional[dict] = None, meta: Optional[dict] = None, n_heatmaps: int = 3,
        progress: bool = True, log: Callable[[str], None] = lambda s: None) -> Dict[str, Path]:
    """Every category x shots x seed; writes the report and heatmaps into ``out``."""
    results = []
    for cat in categories:
        for k in shots:
            for i, seed in enumerate(seeds):
                r = evaluate_category(clip, cat, k, seed, options, out / "heatmaps",
                                      n_heatmaps if i == 0 else 0, progress)
                log(f"{cat.name} {k}-shot seed {seed}: " + ", ".join(
                    f"{key} {100 * v:.1f}" for key, v in r.metrics.items() if not math.isnan(v)))
                results.append(r)
    return write_report(out, results, meta or {})
