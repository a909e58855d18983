"""Evaluation metrics of the anomaly-detection protocol (image and pixel level).

Definitions follow scikit-learn, anomalib and the official MVTec AD evaluation code:

* ``auroc`` = ``sklearn.metrics.roc_auc_score``; ``ap`` =
  ``sklearn.metrics.average_precision_score``; ``f1_max`` = the maximum F1 over
  ``sklearn.metrics.precision_recall_curve``.
* ``aupro``: regions are the 8-connected components of every ground-truth mask; PRO(t) is
  the mean over all regions of the fraction predicted anomalous, FPR(t) the false
  positives over all normal pixels; the PRO-vs-FPR curve is integrated with the trapezoid
  rule up to ``fpr_limit`` (interpolated there) and divided by ``fpr_limit``.
* Degenerate inputs give NaN instead of raising: AUROC without both classes, AP and F1-max
  without positives, AUPRO without regions or without normal pixels. Bad inputs (shapes,
  NaN/inf scores) raise ``ValueError``.

``PixelMetrics`` streams maps batch by batch with bounded memory: exact while at most
``exact_limit`` pixels were seen, then histograms of ``bins`` bins (2^15 by default, 768 KiB
of state) over the range of the scores actually seen: it starts as the [min, max] of the
first ``exact_limit`` pixels and grows by power-of-two wider bins whose edges keep the old
ones (so nothing is re-binned approximately) when later maps fall outside. Binned results
are the exact metrics of the scores rounded to their bin; the bounds (``include/lake/metrics.h``)
scale with the final bin width; on smooth anomaly maps the tests measure errors below 3e-6
for AUROC and AUPRO and below 2e-4 for AP and F1-max. ``lo`` and ``hi`` fix the range
instead (scores outside are clamped into the end bins).

>>> from pylake import metrics
>>> pm = metrics.PixelMetrics()
>>> for maps, masks in batches:          # (B, H, W) floats, (B, H, W) bool
...     pm.update(maps, masks)
>>> pm.compute().aupro

Names, one scheme (C++ ``lake::metrics::kImageMetricNames`` / ``kPixelMetricNames``, bound as
:data:`IMAGE_METRICS` / :data:`PIXEL_METRICS`): a metric is ``auroc``, ``ap``, ``f1_max`` or
``aupro``, the function of this module and the field of :class:`ImageResult` /
:class:`PixelResult` of that name; report columns are ``image_<name>`` and ``pixel_<name>``
(:func:`metric_columns`). ``image_auroc`` and ``image_ap`` are the old names of ``auroc`` and
``ap``, kept as aliases.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import _C

IMAGE_METRICS: tuple = _C.IMAGE_METRICS  # ("auroc", "ap", "f1_max")
PIXEL_METRICS: tuple = _C.PIXEL_METRICS  # ("auroc", "ap", "f1_max", "aupro")

__all__ = [
    "IMAGE_METRICS",
    "PIXEL_METRICS",
    "ImageMetrics",
    "ImageResult",
    "PixelMetrics",
    "PixelResult",
    "ap",
    "aupro",
    "auroc",
    "connected_components",
    "evaluate",
    "f1_max",
    "image_ap",
    "image_auroc",
    "metric_columns",
    "pr_curve",
    "pro_curve",
    "roc_curve",
    "thin_curve",
]


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name}: expected a numpy array, a torch tensor or a sequence, got {type(x).__name__}") from e


def _scores(x, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    return t if t.is_floating_point() else t.float()


def _vector(x, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    return t.reshape(-1) if t.dim() == 2 and 1 in t.shape else t


def _maps(x, name: str) -> torch.Tensor:
    """(H, W), (B, H, W) or (B, 1, H, W) -> (B, H, W)."""
    t = _as_tensor(x, name)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    elif t.dim() == 4 and t.shape[1] == 1:
        t = t.squeeze(1)
    return t


def auroc(scores, labels) -> float:
    """ROC AUC of (N) scores against (N) labels (nonzero = anomalous); NaN with one class."""
    return _C.metrics_auroc(_scores(_vector(scores, "scores"), "scores"), _vector(labels, "labels"))


def ap(scores, labels) -> float:
    """Average precision (sklearn's, no interpolation); NaN without positives."""
    return _C.metrics_ap(_scores(_vector(scores, "scores"), "scores"), _vector(labels, "labels"))


image_auroc = auroc  # the old names (aliases)
image_ap = ap


def f1_max(scores, labels) -> float:
    """Maximum F1 over all thresholds; NaN without positives."""
    return _C.metrics_f1_max(_scores(_vector(scores, "scores"), "scores"), _vector(labels, "labels"))


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Exact AUPRO (sorts every pixel: for small data; stream large data with PixelMetrics).
    maps: (B, H, W) floats; masks: (B, H, W), nonzero = anomalous."""
    return _C.metrics_aupro(_scores(_maps(maps, "maps"), "maps"), _maps(masks, "masks"), fpr_limit)


# ----------------------------------------------------------------------------- curve points
# The curves behind the metrics above, with the same conventions (thresholds at the distinct
# scores, ">= threshold" is anomalous, ties move together), in float64: the trapezoid area of
# roc_curve is auroc, sum((r[i] - r[i-1]) * p[i]) over pr_curve is ap, and the
# trapezoid area of pro_curve (which ends at fpr_limit, interpolated there) divided by
# fpr_limit is aupro (tested in tests/python/test_report.py against those functions and
# scikit-learn). For plots of millions of pixels, thin_curve keeps a subset of the points.


def _ranked(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores sorted high to low, labels in that order (bool), the index of the last
    element of each run of equal scores (the thresholds), and the sorting permutation."""
    s = _scores(_vector(scores, "scores"), "scores").reshape(-1).double().numpy()
    y = (_vector(labels, "labels").reshape(-1) != 0).numpy()
    if s.shape != y.shape:
        raise ValueError(f"expected one label per score, got {s.size} scores and {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError(f"scores: expected finite values, got {int((~np.isfinite(s)).sum())} NaN or infinite")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.flatnonzero(np.diff(s) != 0)
    return s, y, (np.append(last, s.size - 1) if s.size else last), order


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), float64, from (0, 0) at threshold +inf to (1, 1):
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``. ``np.trapezoid(tpr, fpr)``
    is :func:`auroc`. Needs both classes (else a ValueError naming the missing one)."""
    s, y, last, _ = _ranked(scores, labels)
    pos = int(y.sum())
    neg = y.size - pos
    if not pos or not neg:
        raise ValueError(f"roc_curve: expected anomalous and normal samples, got {pos} anomalous and {neg} normal")
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    return (np.concatenate([[0.0], fps / neg]), np.concatenate([[0.0], tps / pos]),
            np.concatenate([[np.inf], s[last]]))


def pr_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall points (precision, recall, thresholds), float64, recall rising from
    (recall 0, precision 1) at threshold +inf to 1 (the points of
    ``sklearn.metrics.precision_recall_curve``, in reverse order and down to the lowest
    score). ``np.sum(np.diff(recall) * precision[1:])`` is :func:`ap`. Needs
    anomalous samples."""
    s, y, last, _ = _ranked(scores, labels)
    pos = int(y.sum())
    if not pos:
        raise ValueError(f"pr_curve: expected anomalous samples, got none among {y.size}")
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    return (np.concatenate([[1.0], precision]), np.concatenate([[0.0], tps / pos]),
            np.concatenate([[np.inf], s[last]]))


def pro_curve(maps, masks, fpr_limit: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """The per-region overlap curve of :func:`aupro` (fpr, pro), float64, from (0, 0) up to
    ``fpr_limit`` (the last point linearly interpolated there). maps: (B, H, W) floats, or a
    list of (H_i, W_i) maps of different sizes; masks: the same shapes, nonzero = anomalous;
    regions are each mask's 8-connected components. ``np.trapezoid(pro, fpr) / fpr_limit``
    is :func:`aupro`. Needs a region and a normal pixel."""
    if isinstance(maps, (list, tuple)) != isinstance(masks, (list, tuple)):
        raise ValueError("pro_curve: pass maps and masks both as (B, H, W) arrays or both as lists of (H, W) maps")
    if isinstance(maps, (list, tuple)):
        if len(maps) != len(masks):
            raise ValueError(f"pro_curve: expected one mask per map, got {len(maps)} maps and {len(masks)} masks")
        ms = [_scores(_as_tensor(x, "maps"), "maps") for x in maps]
        ks = [_as_tensor(x, "masks") for x in masks]
    else:
        m, k = _scores(_maps(maps, "maps"), "maps"), _maps(masks, "masks")
        ms, ks = list(m), list(k)
    for i, (m, k) in enumerate(zip(ms, ks)):
        if m.dim() != 2 or m.shape != k.shape:
            raise ValueError(f"pro_curve: map {i}: expected an (H, W) map and a mask of its shape, got "
                             f"{tuple(m.shape)} and {tuple(k.shape)}")
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"pro_curve: expected 0 < fpr_limit <= 1, got {fpr_limit}")
    comps = [connected_components(k != 0).reshape(-1).numpy() for k in ks]
    sizes = [np.bincount(cc)[1:] for cc in comps]
    n_regions = sum(len(z) for z in sizes)
    normal = np.concatenate([(k == 0).reshape(-1).numpy() for k in ks]) if ks else np.zeros(0, dtype=bool)
    if not n_regions or not normal.any():
        raise ValueError(f"pro_curve: expected ground-truth regions and normal pixels, got {n_regions} regions and "
                         f"{int(normal.sum())} normal pixels")
    weight = []  # per pixel: 1 / (|its region| * regions), 0 outside the regions
    for cc, z in zip(comps, sizes):
        w = np.zeros(cc.size, dtype=np.float64)
        inside = cc > 0
        w[inside] = 1.0 / (z[cc[inside] - 1] * n_regions)
        weight.append(w)
    flat = torch.cat([m.reshape(-1).double() for m in ms])
    _, _, last, order = _ranked(flat, torch.from_numpy(normal))
    pro = np.cumsum(np.concatenate(weight)[order])[last]
    fpr = np.cumsum(normal[order])[last] / normal.sum()
    fpr, pro = np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])
    j = int(np.searchsorted(fpr, fpr_limit, side="left"))  # the first point at or past the limit
    if j >= fpr.size:
        return fpr, pro
    if fpr[j] > fpr_limit:
        t = (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        return np.append(fpr[:j], fpr_limit), np.append(pro[:j], pro[j - 1] + t * (pro[j] - pro[j - 1]))
    return fpr[: j + 1], pro[: j + 1]


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """About ``max_points`` (at most twice that) of the points (x, y) of a monotone curve in
    the unit square, for plotting: both ends and those where x or y enters a new step of
    1 / max_points.
    Points that lie on a straight segment are dropped first, so the trapezoid area is
    unchanged when they suffice; otherwise it changes by at most about 1 / max_points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size <= 2:
        return x, y
    d = np.diff(np.stack([x, y]), axis=1)
    bend = np.ones(x.size, dtype=bool)  # keep the ends and every point where the direction changes
    bend[1:-1] = np.abs(d[0, 1:] * d[1, :-1] - d[1, 1:] * d[0, :-1]) > 1e-15
    x, y = x[bend], y[bend]
    if x.size <= max_points:
        return x, y
    step = 1.0 / max_points
    keep = np.zeros(x.size, dtype=bool)
    keep[0] = keep[-1] = True
    gx = np.floor(x / step)
    gy = np.floor(y / step)
    keep[1:] |= (gx[1:] != gx[:-1]) | (gy[1:] != gy[:-1])
    return x[keep], y[keep]


def connected_components(mask) -> torch.Tensor:
    """8-connected components of an (H, W) mask: (H, W) int64, 0 = background, 1..n in
    raster order (scipy.ndimage.label's numbering with a 3x3 all-ones structure)."""
    return _C.metrics_connected_components(_as_tensor(mask, "mask"))


class _Fields:
    """Results read as attributes (r.auroc), tuples, or mappings (r["auroc"], dict(r))."""

    __slots__ = ()

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)

    def keys(self):
        return self._fields


class _ImageResult(NamedTuple):
    auroc: float
    ap: float
    f1_max: float


class _PixelResult(NamedTuple):
    auroc: float
    ap: float
    f1_max: float
    aupro: float


class ImageResult(_Fields, _ImageResult):
    """Image-level AUROC, AP and F1-max."""

    __slots__ = ()


class PixelResult(_Fields, _PixelResult):
    """Pixel-level AUROC, AP, F1-max and AUPRO."""

    __slots__ = ()


class ImageMetrics:
    """Streams image scores and labels; computes exact AUROC, AP and F1-max."""

    def __init__(self) -> None:
        self._impl = _C.ImageMetrics()

    def update(self, scores, labels) -> "ImageMetrics":
        self._impl.update(_scores(_vector(scores, "scores"), "scores").reshape(-1), _vector(labels, "labels").reshape(-1))
        return self

    def compute(self) -> ImageResult:
        r = self._impl.compute()
        return ImageResult(r.auroc, r.ap, r.f1_max)

    def reset(self) -> None:
        self._impl.reset()

    def __len__(self) -> int:
        return self._impl.count()


class PixelMetrics:
    """Streamed pixel AUROC, AP, F1-max and AUPRO with bounded memory.

    Exact while at most ``exact_limit`` pixels were seen; then histograms of ``bins`` bins.
    lo, hi: None (the default) for the adaptive range (the scores seen, extended by
    power-of-two wider bins as later maps need); both given (lo < hi) for a fixed range,
    scores outside clamped into the end bins. fpr_limit: AUPRO's FPR integration limit."""

    def __init__(self, lo: float | None = None, hi: float | None = None, bins: int = 1 << 15,
                 fpr_limit: float = 0.3, exact_limit: int = 1 << 21) -> None:
        self._impl = _C.PixelMetrics(lo, hi, bins, fpr_limit, exact_limit)

    def update(self, maps, masks) -> "PixelMetrics":
        """maps: (B, H, W) or (B, 1, H, W) floats; masks: same shape, nonzero = anomalous."""
        self._impl.update(_scores(_maps(maps, "maps"), "maps"), _maps(masks, "masks"))
        return self

    def compute(self) -> PixelResult:
        r = self._impl.compute()
        return PixelResult(r.auroc, r.ap, r.f1_max, r.aupro)

    def reset(self) -> None:
        self._impl.reset()

    @property
    def is_exact(self) -> bool:
        return self._impl.is_exact()

    @property
    def pixels(self) -> int:
        return self._impl.pixels

    @property
    def fixed_range(self) -> bool:
        """Whether lo and hi were given."""
        return self._impl.fixed_range

    @property
    def lo(self) -> float | None:
        """The histogram's lower edge: the given lo, or for the adaptive range the current
        grid's (None while still exact)."""
        return self._impl.lo

    @property
    def hi(self) -> float | None:
        """The histogram's upper edge (see ``lo``)."""
        return self._impl.hi

    @property
    def bin_width(self) -> float | None:
        """(hi - lo) / bins: the resolution the error bounds scale with (None while exact in
        adaptive mode)."""
        return self._impl.bin_width

    @property
    def bins(self) -> int:
        return self._impl.bins

    def state_bytes(self) -> int:
        return self._impl.state_bytes()


def evaluate(image_scores, image_labels, maps=None, masks=None, *, lo: float | None = None,
             hi: float | None = None, bins: int = 1 << 15, fpr_limit: float = 0.3, batch_size: int = 32) -> dict:
    """All metrics of one category. image_scores, image_labels: (N); maps, masks: optional
    (N, H, W) (or (N, 1, H, W)) pixel maps and ground truth. The pixel metrics use
    ``PixelMetrics(lo, hi, bins, fpr_limit)``: the adaptive range over the maps by default, a
    fixed one with both lo and hi. Returns a dict with image_auroc, image_ap, image_f1_max
    and, with maps, pixel_auroc, pixel_ap, pixel_f1_max, pixel_aupro (floats, NaN where
    undefined)."""
    img = ImageMetrics().update(image_scores, image_labels).compute()
    if maps is None and masks is None:
        return metric_columns(img)
    if maps is None or masks is None:
        raise ValueError("evaluate: pass both maps and masks for the pixel metrics, or neither")
    m, k = _scores(_maps(maps, "maps"), "maps"), _maps(masks, "masks")
    if m.shape != k.shape:
        raise ValueError(f"evaluate: expected masks matching the maps {tuple(m.shape)}, got {tuple(k.shape)}")
    pm = PixelMetrics(lo, hi, bins, fpr_limit)
    for i in range(0, max(1, m.shape[0]), batch_size):
        pm.update(m[i:i + batch_size], k[i:i + batch_size])
    return metric_columns(img, pm.compute())


def metric_columns(image: "ImageResult | None" = None, pixel: "PixelResult | None" = None) -> dict:
    """The report columns of results: ``image_<name>`` for each of :data:`IMAGE_METRICS`,
    then ``pixel_<name>`` for each of :data:`PIXEL_METRICS` (those of a result not given are
    left out). With neither: ``dict.fromkeys`` of every column (the order of
    :data:`pylake.evaluate.METRIC_KEYS`), values None."""
    if image is None and pixel is None:
        return dict.fromkeys([f"image_{m}" for m in IMAGE_METRICS] + [f"pixel_{m}" for m in PIXEL_METRICS])
    out = {} if image is None else {f"image_{m}": getattr(image, m) for m in IMAGE_METRICS}
    if pixel is not None:
        out.update({f"pixel_{m}": getattr(pixel, m) for m in PIXEL_METRICS})
    return out
