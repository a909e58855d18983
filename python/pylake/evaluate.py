"""The evaluation protocol (METHOD.md): per category, k normal shots drawn with a seed,
the whole test split scored, image and pixel metrics, averaged over seeds and categories.

Memory stays bounded: images are scored a batch at a time and pixel metrics are streamed
(`pylake.metrics.PixelMetrics`, binned over the range the maps actually take). Images go
through the file rule of `NormalityModel` (backbone at S x S, maps and masks at each
file's resolution), so a score here equals `NormalityModel.score(path)` and `lake predict`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from . import _C, _outputs, datasets, metrics, pipeline
from . import report as _report
from ._clip import ClipModel
from ._normality import NormalityModel

# The report's metric columns, "image_<name>" / "pixel_<name>" of the C++ metric names
# (pylake.metrics.IMAGE_METRICS / PIXEL_METRICS): image_auroc, image_ap, image_f1_max,
# pixel_auroc, pixel_ap, pixel_f1_max, pixel_aupro.
METRIC_KEYS = tuple(metrics.metric_columns())


class Progress:
    """A progress bar on stderr: tqdm's when it is installed (``pip install 'pylake[report]'``),
    else a plain line at every tenth of the way; nothing when ``enabled`` is False. Used by
    `lake eval` and `lake predict` (the library is silent unless asked: ``progress=True``)."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None) -> None:
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.stream = stream or sys.stderr
        self.start, self.done, self._bar, self._shown = time.perf_counter(), 0, None, 0
        if enabled:
            try:
                from tqdm import tqdm  # noqa: PLC0415
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=self.total, desc=label, file=self.stream, unit="img", dynamic_ncols=True,
                                 leave=True)

    def step(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if self.done >= self.total:
                self._bar.close()
            return
        tenth = 10 * self.done // self.total
        if tenth > self._shown:
            self._shown = tenth
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({elapsed:.1f} s)\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass
class RunResult:
    """Metrics of one (category, shots, seed) run (``None`` where a metric is undefined),
    and one row per test image."""

    category: str
    shots: int
    seed: int
    metrics: Dict[str, Optional[float]]
    seconds: float
    n_test: int
    heatmaps: List[str] = field(default_factory=list)
    images: List[dict] = field(default_factory=list)
    report: Optional[_report.RunData] = None  # with keep_maps: what report.write_run draws

    def row(self) -> dict:
        return {"category": self.category, "shots": self.shots, "seed": self.seed, **self.metrics,
                "seconds": round(self.seconds, 3), "n_test": self.n_test}


IMAGE_FIELDS = ("path", "key", "category", "defect", "label", "score", "pred_label", "shots", "seed")


def one_class_problem(category: datasets.Category) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """Why some metrics of ``category`` are undefined, and which: a test split without normal
    images has no image AUROC (and AP and F1-max of one class are trivially 1: not a
    result); without anomalous images nothing is defined. ``None`` when both classes are there."""
    n_anom = category.num_anomalous
    n_norm = len(category.test) - n_anom
    if n_norm and n_anom:
        return None
    missing, undefined = ("normal", METRIC_KEYS[:3]) if not n_norm else ("anomalous", METRIC_KEYS)
    return (f"category '{category.name}' has no {missing} test images ({n_norm} normal, {n_anom} anomalous): "
            + ("image AUROC, AP and F1-max are" if not n_norm else "the metrics are") + " undefined", undefined)


def fit_run(clip: ClipModel, category: datasets.Category, shots: int, seed: int,
            options: Optional[dict] = None) -> NormalityModel:
    """The model of one run: fitted on ``shots`` normal images of ``category`` drawn with
    ``seed`` (:func:`pylake.datasets.few_shot`), calibrated on them with leave-one-out when
    ``shots >= 2``. ``options``: :class:`NormalityModel` keywords (``class_name`` defaults to
    the category's name with spaces)."""
    opts = dict(options or {})
    opts.setdefault("class_name", category.name.replace("_", " "))
    model = NormalityModel(clip, **opts)
    train = datasets.few_shot(category.train, shots, seed)
    model.fit(train)
    if len(train) >= 2:
        model.calibrate(train, leave_one_out=True)
    return model


def run_dir(category: str, shots: int, seed: int) -> str:
    """The folder of one run's files under an output folder (heatmaps/, maps/, report_files/)."""
    return f"{category}/{shots}shot_seed{seed}"


def ground_truth(category: datasets.Category, index: int, height: int, width: int) -> Optional[torch.Tensor]:
    """The ground truth of test image ``index`` at its map's size (``None`` for an anomalous
    image without a mask, which then counts for the image metrics only)."""
    return datasets.read_mask(category.test[index], height, width, allow_missing=True)


class RunAccumulator:
    """What one run does with its scored test images, fed in input order: the image and
    pixel metrics (streamed), the per-image rows, the heatmaps' candidates and, with
    ``keep``, every map downscaled for the report. `lake eval` feeds it from the scoring
    loop; :mod:`pylake.distributed` feeds it the maps its workers wrote, so both give the
    same numbers, rows and pictures (one rule, here)."""

    def __init__(self, model: NormalityModel, category: datasets.Category, shots: int, seed: int,
                 out: Optional[Path] = None, n_heatmaps: int = 0, keep: bool = False) -> None:
        self.model, self.category, self.shots, self.seed = model, category, shots, seed
        self.out, self.n_heatmaps = out, n_heatmaps
        self.keys = _outputs.output_keys([s.path for s in category.test])
        self.run_dir = run_dir(category.name, shots, seed)
        self.pixel = metrics.PixelMetrics() if category.has_masks else None
        self.image_metrics = metrics.ImageMetrics()
        self.pending: List[tuple] = []  # (path, image, full map, mask) of the heatmaps, drawn once the scale is known
        self.keep = keep or (out is not None and n_heatmaps > 0)
        self.small_maps: List[torch.Tensor] = []
        self.small_masks: List[Optional[torch.Tensor]] = []
        self.rows: List[dict] = []     # the scored images, in input order (the report's rows)
        self.images: List[dict] = []   # every test image's row, errors included (images.csv)

    @property
    def needs_masks(self) -> bool:
        return self.pixel is not None

    def row(self, index: int, pred=None, error: Optional[BaseException] = None) -> dict:
        sample = self.category.test[index]
        r = {"path": str(sample.path), "key": self.keys[index], "category": self.category.name,
             "defect": sample.defect, "label": sample.label,
             "score": None if pred is None else float(pred.pred_score[0]),
             "pred_label": None if pred is None or pred.pred_label is None else int(pred.pred_label[0]),
             "shots": self.shots, "seed": self.seed}
        if error is not None:
            r["error"] = str(error)
        return r

    def add(self, index: int, pred, mask: Optional[torch.Tensor]) -> dict:
        """Test image ``index`` scored: ``pred`` its :class:`pylake.Prediction` (B = 1), ``mask``
        its ground truth at the map's size (:func:`ground_truth`; ``None`` without masks)."""
        sample, key = self.category.test[index], self.keys[index]
        amap = pred.anomaly_map[0]
        self.image_metrics.update(pred.pred_score, torch.tensor([sample.label]))
        if mask is not None:
            self.pixel.update(pred.anomaly_map, mask.unsqueeze(0))
        if self.out is not None and len(self.pending) < self.n_heatmaps and sample.label == 1:
            self.pending.append((self.out / "heatmaps" / self.run_dir / f"{key}.png", sample.path, amap, mask))
        if self.keep:
            small = _report.downscale_map(amap)
            self.small_maps.append(small)
            self.small_masks.append(None if mask is None else _report.downscale_mask(mask, tuple(small.shape)))
        r = self.row(index, pred)
        self.rows.append(r)
        self.images.append(r)
        return r

    def add_error(self, index: int, error: BaseException) -> dict:
        """Test image ``index`` could not be read: a row with the error and no score; the image
        is left out of the metrics."""
        r = self.row(index, error=error)
        self.images.append(r)
        return r

    def finish(self, seconds: float, keep_maps: bool = False) -> RunResult:
        """The run's metrics (``None`` where undefined), its heatmaps drawn on the category's
        colour scale, and with ``keep_maps`` the report's data."""
        img = self.image_metrics.compute()
        result: Dict[str, Optional[float]] = metrics.metric_columns()
        result.update(metrics.metric_columns(img))
        if self.pixel is not None and self.pixel.pixels > 0:  # every anomalous mask missing and no normal image
            result.update(metrics.metric_columns(pixel=self.pixel.compute()))
        problem = one_class_problem(self.category)
        for k in problem[1] if problem else ():
            result[k] = None
        result = {k: _outputs.finite_or_none(v) for k, v in result.items()}
        data = None
        if self.keep:
            data = _report.run_scale(_report.RunData(self.category.name, self.shots, self.seed, self.rows,
                                                     self.small_maps, self.small_masks, result,
                                                     self.model.image_threshold, self.model.pixel_threshold))
        heatmaps = [str(write_heatmap(path, image, amap, *data.scale, mask=mask))
                    for path, image, amap, mask in self.pending]
        return RunResult(self.category.name, self.shots, self.seed, result, seconds, len(self.category.test),
                         heatmaps, self.images, data if keep_maps else None)


def evaluate_category(clip: ClipModel, category: datasets.Category, shots: int, seed: int,
                      options: Optional[dict] = None, out: Optional[Path] = None, n_heatmaps: int = 0,
                      progress: bool = False, save_maps: bool = False, keep_maps: bool = False,
                      batch_size: Optional[int] = None, io_threads: Optional[int] = None,
                      on_error: str = "fail") -> RunResult:
    """Fit on ``shots`` normal images of ``category`` (drawn with ``seed``), calibrate on
    them (leave-one-out, when ``shots >= 2``), score its test split, and compute the
    metrics (pixel metrics only when the set has masks; ``None`` where undefined).

    Every image goes through the file rule of :class:`NormalityModel` (maps at the file's
    resolution, the masks read at the same size). Under ``out``: up to ``n_heatmaps``
    heatmaps of anomalous images and, with ``save_maps``, every raw map (``.npy``), named
    ``<category>/<shots>shot_seed<seed>/<path relative to the test images' common folder>``.
    The heatmaps share the category's colour scale (:func:`pylake.report.colour_scale` of the
    normal test maps). With ``keep_maps`` the result carries every map downscaled
    (:class:`pylake.report.RunData`, for :func:`pylake.report.write_run`).

    The test images go through :func:`pylake.pipeline.scored`: the next files are decoded
    while the backbone runs on ``batch_size`` of them (``None``: the device's default, 1 on
    the CPU, where every score is bit-identical to ``NormalityModel.score(path)``).
    ``on_error="record"``: a test image that fails to decode gets a row with its error and is
    left out of the metrics (:func:`unread_warning`); ``"fail"`` (default): a ValueError.
    """
    t0 = time.perf_counter()
    model = fit_run(clip, category, shots, seed, options)
    acc = RunAccumulator(model, category, shots, seed, out, n_heatmaps, keep_maps)
    bar = Progress(len(category.test), f"{category.name} {shots}-shot seed {seed}", progress)
    with pipeline.Writer() as writer:  # maps written behind the scoring
        test_paths = [s.path for s in category.test]
        read_mask = (  # in the decoding threads, at the map's size
            lambda j, im: ground_truth(category, j, im.height, im.width)) if acc.needs_masks else None
        for i, pred, mask in pipeline.scored(model, test_paths, batch_size, io_threads, extra=read_mask,
                                             on_error="raise" if on_error == "fail" else "yield"):
            if isinstance(pred, BaseException):
                acc.add_error(i, pred)
                bar.step()
                continue
            if out is not None and save_maps:
                writer.submit(_outputs.save_npy, out / "maps" / acc.run_dir / f"{acc.keys[i]}.npy", pred.anomaly_map[0])
            acc.add(i, pred, mask)
            bar.step()
    bar.close()
    return acc.finish(time.perf_counter() - t0, keep_maps)


def write_heatmap(path: Path, image: Path, amap: torch.Tensor, lo: Optional[float] = None,
                  hi: Optional[float] = None, mask=None) -> Path:
    """The image and its anomaly map blended over it (jet colours) side by side, and the
    ground-truth ``mask`` (an (H, W) bool tensor or a mask file) as a third panel when
    given, as a PNG written atomically. The colours span ``lo..hi`` (default: the map's
    own min..max, as anomalib shows maps). The image is decoded by the C++ reader; when its
    size differs from the map's (a tensor input), it is resized for display."""
    h, w = amap.shape
    base = _C.read_image(os.fspath(image)).float()
    if tuple(base.shape[1:]) != (h, w):
        base = torch.nn.functional.interpolate(base[None], size=(h, w), mode="bilinear", antialias=True,
                                               align_corners=False)[0].clamp(0, 255)
    lo = float(amap.min()) if lo is None else lo
    hi = float(amap.max()) if hi is None else hi
    x = ((amap.float() - lo) / max(hi - lo, 1e-12)).clamp(0, 1).unsqueeze(0)
    heat = (1.5 - (4.0 * x - torch.tensor([3.0, 2.0, 1.0]).view(3, 1, 1)).abs()).clamp(0, 1) * 255
    panels = [base, 0.5 * base + 0.5 * heat]
    if mask is not None:
        m = datasets._load_mask(Path(mask), h, w) if isinstance(mask, (str, os.PathLike)) else mask
        if tuple(m.shape) != (h, w):
            m = _C.resize_mask(m.bool(), h, w)
        panels.append(m.float().mul(255).expand(3, h, w))
    sheet = (torch.cat(panels, dim=2) + 0.5).floor().clamp(0, 255).to(torch.uint8)
    return _outputs.write_png(path, sheet)


def summarise(results: Sequence[RunResult]) -> List[dict]:
    """Mean over seeds per (category, shots), then a "mean" row per shots over categories
    (``None`` where no run defines the metric)."""
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


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return sum(v) / len(v) if v else None


def markdown_table(rows: Sequence[dict], keys: Sequence[str] = METRIC_KEYS) -> str:
    head = "| category | shots | " + " | ".join(keys) + " |"
    sep = "|---|---|" + "---|" * len(keys)
    lines = [head, sep]
    for r in rows:
        cells = ["-" if r[k] is None or math.isnan(r[k]) else f"{100 * r[k]:.1f}" for k in keys]
        lines.append(f"| {r['category']} | {r['shots']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: Path, results: Sequence[RunResult], meta: dict, warnings: Sequence[str] = ()) -> Dict[str, Path]:
    """report.json (meta, warnings, every run, summary; strict JSON with ``null`` for
    undefined metrics), report.csv (summary), report.md (table), images.csv / images.json
    (one row per test image and run). Every file is written atomically."""
    rows = summarise(results)
    files = {"json": out / "report.json", "md": out / "report.md"}
    _outputs.write_text(files["json"], _outputs.dumps({"meta": meta, "warnings": list(warnings),
                                                       "runs": [r.row() for r in results], "summary": rows}) + "\n")
    files.update(_outputs.write_table(rows, out / "report", ["category", "shots", "seeds", *METRIC_KEYS], ("csv",)))
    image_rows = [row for r in results for row in r.images]
    images = _outputs.write_table(image_rows, out / "images", IMAGE_FIELDS + (
        ("error",) if any("error" in row for row in image_rows) else ()))
    files["images_csv"], files["images_json"] = images["csv"], images["json"]
    note = "\n\n**Random-weight backbone: these numbers only show that the pipeline runs.**" if meta.get(
        "random_weights") else ""
    warn = "".join(f"\n\n**Warning:** {w}" for w in warnings)
    _outputs.write_text(files["md"], f"# LAKE evaluation\n\nModel: `{meta.get('model')}`, data set: "
                        f"{meta.get('dataset')} (`{meta.get('root')}`), seeds {meta.get('seeds')}; metrics in %; "
                        f"- = undefined.{note}{warn}\n\n" + markdown_table(rows) + "\n")
    return files


def one_class_warnings(categories: Sequence[datasets.Category], allow_one_class: bool,
                       log: Callable[[str], None] = lambda s: None) -> List[str]:
    """The report's warnings for categories whose test split lacks a class (each also sent
    to ``log``); without ``allow_one_class`` such a category is a ValueError."""
    warnings = []
    for cat in categories:
        problem = one_class_problem(cat)
        if problem is None:
            continue
        if not allow_one_class:
            raise ValueError(f"{problem[0]}; add the missing test images (folder sets: test_normal_dir / abnormal_dir, "
                             "CLI: --normal-test / --abnormal), or pass allow_one_class=True (CLI: --allow-one-class) "
                             "to report those metrics as null")
        warnings.append(problem[0] + ": reported as null")
        log("warning: " + warnings[-1])
    return warnings


def unread_warning(result: RunResult) -> Optional[str]:
    """The report's warning for a run with test images that could not be read (``on_error="record"``)."""
    n = sum("error" in row for row in result.images)
    if not n:
        return None
    return (f"{n} test image{'s' if n != 1 else ''} of {result.category} ({result.shots}-shot, seed {result.seed}) "
            "could not be read: left out of the metrics (images.csv, column error)")


def run(clip: ClipModel, categories: Sequence[datasets.Category], shots: Sequence[int], seeds: Sequence[int],
        out: Path, options: Optional[dict] = None, meta: Optional[dict] = None, n_heatmaps: int = 3,
        progress: bool = True, log: Callable[[str], None] = lambda s: None, allow_one_class: bool = False,
        save_maps: bool = False, html: Optional[bool] = None, batch_size: Optional[int] = None,
        io_threads: Optional[int] = None, on_error: str = "fail") -> Dict[str, Path]:
    """Every category x shots x seed; writes the report, the per-image table, heatmaps and
    (``save_maps``) raw maps into ``out``, and with ``html`` report.html (:mod:`pylake.report`:
    curves, score histograms and a heatmap gallery per category and shot count, at the first
    seed; ``None``: when matplotlib is installed; True without it: ImportError).

    A category whose test split lacks normal or anomalous images is a ValueError before
    anything runs, unless ``allow_one_class``: its undefined metrics are then ``null`` and
    the report carries a warning. ``on_error``: :func:`evaluate_category`'s.
    :func:`pylake.distributed.evaluate` runs the same on a Dask cluster.
    ``batch_size`` / ``io_threads``: the input pipeline
    (:func:`pylake.pipeline.scored`; the defaults keep CPU scores bitwise). While running, ``out`` holds an ``INCOMPLETE`` marker,
    removed once the report is written; a failed run leaves it."""
    out = Path(out)
    warnings = one_class_warnings(categories, allow_one_class, log)
    html = _report.available() if html is None else html
    if html:
        _report.require()
    meta = dict(meta or {})
    meta.setdefault("backbone", f"{clip!r}, fingerprint {clip.fingerprint()}")
    marker = _outputs.RunMarker(out, f"lake eval ({meta.get('dataset') or 'evaluate.run'})")
    results, sections = [], []
    for cat in categories:
        for k in shots:
            for i, seed in enumerate(seeds):
                r = evaluate_category(clip, cat, k, seed, options, out, n_heatmaps if i == 0 else 0, progress,
                                      save_maps, keep_maps=html and i == 0, batch_size=batch_size,
                                      io_threads=io_threads, on_error=on_error)
                if unread_warning(r):
                    warnings.append(unread_warning(r))
                    log("warning: " + warnings[-1])
                log(f"{cat.name} {k}-shot seed {seed}: " + ", ".join(
                    f"{key} {100 * v:.1f}" for key, v in r.metrics.items() if v is not None))
                if r.report is not None:  # drawn now, so that the maps of one run at a time are held
                    sections.append(_report.write_run(out, r.report))
                    r.report = None
                results.append(r)
    files = write_report(out, results, meta, warnings)
    if html:
        files["html"] = _report.write_eval_report(out, sections, summarise(results), meta, warnings,
                                                  [c.name for c in categories])
    marker.done()
    return files
