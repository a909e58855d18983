"""`lake sweep`: the paper's ablations over a data set, as many independent `lake eval` runs,
locally or on a Dask cluster (:mod:`pylake.distributed`), with the published points beside ours.

Ablations (METHOD.md), each against the default configuration (``--k 100``, variance,
text weight 0.3, the quarter-point layers, residual neurons, the sweep's shots):

==============  ==================================================================  ========================
``k``           K in 10, 50, 100, 200, 500 and all channels (those up to D)         paper: K = 100
``selection``   Top-K (variance) vs a random K with selection seeds 0, 1, 2         94.7 vs 81.6 image AUROC
``text_weight`` lambda in 0, 0.1, ..., 0.7                                          0.3 best, >= 0.5 worse
``layers``      each quarter-point layer alone, and all of them                     -
``kind``        residual channels vs MLP hidden units                               -
``shots``       1, 2, 4 normal images                                               -
==============  ==================================================================  ========================

Every point is one `lake eval` report in ``OUT/runs/<configuration hash>/`` (its options in
``config.json``); points that share a configuration (K = 100 is also Top-K, lambda 0.3, ...)
share the run, and a run already finished in ``OUT`` is not run again. Per ablation:
``OUT/<ablation>.csv`` / ``.md`` (the mean over categories and seeds of each metric, and the
paper's published point where there is one, for MVTec AD) and ``OUT/<ablation>.png`` (the
metrics against the swept value, when matplotlib is installed); ``OUT/sweep.md`` holds every
table.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import _outputs, datasets
from . import evaluate as _evaluate
from . import paper as _paper
from . import report as _report

ABLATIONS = ("k", "selection", "text_weight", "layers", "kind", "shots")
K_VALUES = (10, 50, 100, 200, 500)        # and "all": every channel of a tapped layer
SELECTION_SEEDS = (0, 1, 2)
TEXT_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SHOT_VALUES = (1, 2, 4)
TABLE_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
# The published ablation points (METHOD.md; MVTec AD, %): Top-100 vs a random 100 channels.
PAPER_TOP100 = {"image_auroc": _paper.PAPER["mvtec"], "pixel_aupro": 88.9}
PAPER_RANDOM100 = {"image_auroc": 81.6, "pixel_aupro": 45.8}
PARALLEL_EVALS = 8  # evals submitted to a cluster at once (each fans out into its own tasks)


@dataclass(frozen=True)
class Point:
    """One swept value: its ``label`` in the table, ``x`` on the plot, the option overrides,
    the shots it is evaluated at, and the paper's published metrics there (%)."""

    ablation: str
    label: str
    x: object
    options: Tuple[Tuple[str, object], ...]
    shots: int
    paper: Dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Backbone:
    """What the points depend on: the channels of a tapped layer (D, residual) and the default layers."""

    width: int
    default_layers: Tuple[int, ...]


def points(ablation: str, backbone: Backbone, shots: int = 1, k: int = 100) -> List[Point]:
    """The points of ``ablation`` for a backbone with ``backbone.width`` channels per layer;
    ``shots``: the shot count of every ablation but ``shots``; ``k``: the K of the others."""
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}: expected one of {', '.join(ABLATIONS)}")
    d = backbone.width
    k = min(k, d)
    if ablation == "k":
        ks = [v for v in K_VALUES if v < d]
        out = [Point("k", str(v), v, (("k", v),), shots, PAPER_TOP100 if v == 100 else {},
                     "the paper's K" if v == 100 else "") for v in ks]
        return out + [Point("k", f"all ({d})", d, (("k", d),), shots)]
    if ablation == "selection":
        top = Point("selection", f"Top-{k} (variance)", "top", (("k", k),), shots, PAPER_TOP100 if k == 100 else {})
        rnd = [Point("selection", f"random {k} (seed {s})", f"random {s}", (("k", k), ("score", "random"), ("seed", s)),
                     shots, PAPER_RANDOM100 if k == 100 else {}) for s in SELECTION_SEEDS]
        return [top, *rnd]
    if ablation == "text_weight":
        return [Point("text_weight", f"{w:g}", w, (("text_weight", w),), shots, {},
                      "best (paper)" if w == 0.3 else ("clearly worse (paper)" if w >= 0.5 else ""))
                for w in TEXT_WEIGHTS]
    if ablation == "layers":
        layers = list(backbone.default_layers)
        singles = [Point("layers", str(v), str(v), (("layers", [v]),), shots) for v in layers]
        return singles + [Point("layers", ",".join(map(str, layers)), "all", (("layers", layers),), shots, {},
                                "the default (quarter points)")]
    if ablation == "kind":
        return [Point("kind", kind, kind, (("kind", kind),), shots) for kind in ("residual", "mlp")]
    return [Point("shots", str(s), s, (), s) for s in SHOT_VALUES]


def method_defaults() -> dict:
    """The method options of :class:`pylake.NormalityModel` with their defaults (its signature is
    the one place they are written), so that equal configurations are spelled, and run, once."""
    import inspect  # noqa: PLC0415

    from ._normality import NormalityModel  # noqa: PLC0415

    return {n: p.default for n, p in inspect.signature(NormalityModel.__init__).parameters.items()
            if p.kind is p.KEYWORD_ONLY and not n.startswith("_") and n not in _NOT_SWEPT}


# Per category (the prompts' class name) or not about the method (memory tiles, batching).
_NOT_SWEPT = ("class_name", "normal_prompts", "anomaly_prompts", "gallery_tile", "batch_size")


def configuration(base: dict, point: Point, seeds: Sequence[int]) -> dict:
    """The full configuration of one point's run: the method options and the shots and seeds."""
    opts = dict(base)
    opts.update(dict(point.options))
    return {"options": _outputs.finite_or_none(opts), "shots": point.shots, "seeds": list(seeds)}


def run_folder(out: Path, config: dict) -> Path:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return Path(out) / "runs" / digest


def finished(folder: Path) -> bool:
    return (folder / "report.json").exists() and not (folder / _outputs.INCOMPLETE).exists()


def run(categories: Sequence[datasets.Category], out, *, model: str, dataset: str, root: str = "",
        options: Optional[dict] = None, shots: int = 1, seeds: Sequence[int] = (0, 1, 2),
        ablations: Sequence[str] = ABLATIONS, clip=None, client=None, progress: bool = True,
        log: Callable[[str], None] = lambda s: None, batch_size: Optional[int] = None,
        io_threads: Optional[int] = None, chunk_size: Optional[int] = None, device: str = "cpu",
        random_weights: bool = False, allow_one_class: bool = False, on_error: str = "fail") -> Dict[str, Path]:
    """Every point of ``ablations`` on ``categories``: with ``client`` (a ``distributed.Client``)
    on its cluster, :data:`PARALLEL_EVALS` evals at a time; else one after another in this
    process with ``clip``. Returns the files written (per ablation its csv, md and png)."""
    for a in ablations:
        if a not in ABLATIONS:
            raise ValueError(f"--ablations: unknown ablation {a!r}, expected some of {', '.join(ABLATIONS)}")
    if (clip is None) == (client is None):
        raise ValueError("sweep.run: pass clip (this process) or client (a Dask cluster), one of them")
    out = Path(out)
    base = {**method_defaults(), **dict(options or {})}
    bb = _backbone(clip, client, model, device, base)
    if base.get("layers") is None:  # spelled out, so that the default run and the layers ablation's "all" are one
        base["layers"] = list(bb.default_layers)
    pts = [p for a in ablations for p in points(a, bb, shots, int(base["k"]))]
    configs = [configuration(base, p, seeds) for p in pts]
    folders = [run_folder(out, c) for c in configs]
    todo = {}
    for folder, c in zip(folders, configs):
        if not finished(folder) and folder not in todo:
            todo[folder] = c
    log(f"sweep: {len(pts)} points, {len(set(folders))} distinct runs, {len(todo)} to run "
        f"({len(set(folders)) - len(todo)} already in '{out}')")

    def one(folder: Path, config: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _outputs.write_text(folder / "config.json", json.dumps(config, indent=1) + "\n")
        meta = {"model": model, "dataset": dataset, "root": str(root), "shots": [config["shots"]],
                "seeds": config["seeds"], "random_weights": bool(random_weights), "options": config["options"]}
        kw = dict(n_heatmaps=0, progress=False, html=False, batch_size=batch_size, io_threads=io_threads,
                  allow_one_class=allow_one_class, on_error=on_error)
        if client is not None:
            from . import distributed  # noqa: PLC0415

            distributed.evaluate(client, categories, [config["shots"]], config["seeds"], folder, model=model,
                                 options=config["options"], meta=meta, chunk_size=chunk_size, device=device, **kw)
        else:
            _evaluate.run(clip, categories, [config["shots"]], config["seeds"], folder, config["options"], meta, **kw)

    bar = _evaluate.Progress(len(todo), "sweep", progress)
    if client is not None:
        with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_EVALS, len(todo))), thread_name_prefix="lake-sweep") as ex:
            futures = [ex.submit(one, f, c) for f, c in todo.items()]
            try:
                for f in futures:
                    f.result()
                    bar.step()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    else:
        for f, c in todo.items():
            one(f, c)
            bar.step()
    bar.close()
    published = _paper.paper_set(dataset, [c.name for c in categories]) == "mvtec"
    files: Dict[str, Path] = {}
    sections = []
    for a in ablations:
        rows = []
        for p, folder in zip(pts, folders):
            if p.ablation != a:
                continue
            mean = _mean_row(folder, p.shots)
            row = {"ablation": a, "value": p.label, "shots": p.shots, "run": folder.relative_to(out).as_posix()}
            row.update({m: None if mean.get(m) is None else 100 * mean[m] for m in TABLE_METRICS})
            row.update({f"paper_{m}": (p.paper.get(m) if published else None) for m in ("image_auroc", "pixel_aupro")})
            row["note"] = p.note
            rows.append((p, row))
        written = _outputs.write_table([r for _, r in rows], out / a, _FIELDS, ("csv",))
        md = _markdown(a, [r for _, r in rows], len(categories), dataset, published)
        files[f"{a}_csv"] = written["csv"]
        files[f"{a}_md"] = _outputs.write_text(out / f"{a}.md", md + "\n")
        sections.append(md)
        if _report.available():
            files[f"{a}_png"] = _plot(out / f"{a}.png", a, rows)
    files["md"] = _outputs.write_text(out / "sweep.md", "\n\n".join(sections) + "\n")
    return files


_FIELDS = ("ablation", "value", "shots", *TABLE_METRICS, "paper_image_auroc", "paper_pixel_aupro", "note", "run")
_TITLES = {"k": "K (sensitive neurons per layer)", "selection": "Top-K vs random K", "text_weight":
           "text weight lambda", "layers": "tapped layers", "kind": "residual vs MLP neurons", "shots": "shots"}


def backbone_of(clip, base: dict) -> Backbone:
    """The channels per tapped layer (D; 4 D for MLP neurons) and the default layers of ``clip``."""
    from ._normality import NormalityModel  # noqa: PLC0415

    kw = {k: v for k, v in base.items() if k in ("layers", "image_size", "vocabulary")}
    width = int(clip.config.vision_width) * (4 if base.get("kind") == "mlp" else 1)
    return Backbone(width, tuple(NormalityModel(clip, **kw).layers))


def _worker_backbone(backbone, base: dict) -> Backbone:
    from .distributed import worker_clip  # noqa: PLC0415

    return backbone_of(worker_clip(backbone), base)


def _backbone(clip, client, model: str, device: str, base: dict) -> Backbone:
    if client is None:
        return backbone_of(clip, base)
    from . import distributed  # noqa: PLC0415

    return client.submit(_worker_backbone, distributed.Backbone(model, device), base, pure=False).result()


def _mean_row(folder: Path, shots: int) -> dict:
    summary = json.loads((folder / "report.json").read_text())["summary"]
    return next(r for r in summary if r["category"] == "mean" and r["shots"] == shots)


def _markdown(ablation: str, rows: List[dict], n_categories: int, dataset: str, published: bool) -> str:
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"  # noqa: E731
    head = (f"## {_TITLES[ablation]}\n\nMean over {n_categories} categor{'y' if n_categories == 1 else 'ies'} of "
            f"{dataset} and the seeds, in %" + ("; paper: MVTec AD, as published" if published else
                                                  "; the paper's points are MVTec AD numbers, not shown for this set"))
    lines = [head, "", "| value | shots | image AUROC | pixel AUROC | pixel AUPRO | paper image AUROC | paper AUPRO | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['value']} | {r['shots']} | {fmt(r['image_auroc'])} | {fmt(r['pixel_auroc'])} | "
                     f"{fmt(r['pixel_aupro'])} | {fmt(r['paper_image_auroc'])} | {fmt(r['paper_pixel_aupro'])} | "
                     f"{r['note']} |")
    return "\n".join(lines)


def _plot(path: Path, ablation: str, rows: List[tuple]) -> Path:
    """The table's metrics against the swept value (numeric axes where the values are numbers)."""
    import io  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    numeric = all(isinstance(p.x, (int, float)) for p, _ in rows)
    xs = [p.x if numeric else i for i, (p, _) in enumerate(rows)]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for m, label in zip(TABLE_METRICS, ("image AUROC", "pixel AUROC", "pixel AUPRO")):
        ys = [r[m] for _, r in rows]
        if any(y is not None for y in ys):
            ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o", label=label)
    for m, label in (("paper_image_auroc", "paper image AUROC"), ("paper_pixel_aupro", "paper AUPRO")):
        pts = [(x, r[m]) for x, (_, r) in zip(xs, rows) if r[m] is not None]
        if pts:
            ax.scatter(*zip(*pts), marker="*", s=120, label=label, zorder=3)
    if not numeric:
        ax.set_xticks(xs)
        ax.set_xticklabels([p.label for p, _ in rows], rotation=20, ha="right", fontsize=8)
    elif ablation == "k":
        ax.set_xscale("log")
    ax.set_xlabel(_TITLES[ablation])
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return _outputs.write_bytes(path, buf.getvalue())
