"""Evaluation metrics of the anomaly-detection protocol (image and pixel level).

Definitions follow scikit-learn, anomalib and the official MVTec AD evaluation code:

* ``image_auroc`` = ``sklearn.metrics.roc_auc_score``; ``image_ap`` =
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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import _C

__all__ = [
    "ImageMetrics",
    "ImageResult",
    "PixelMetrics",
    "PixelResult",
    "aupro",
    "connected_components",
    "evaluate",
    "f1_max",
    "image_ap",
    "image_auroc",
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


def image_auroc(scores, labels) -> float:
    """ROC AUC of (N) scores against (N) labels (nonzero = anomalous); NaN with one class."""
    return _C.metrics_auroc(_scores(_vector(scores, "scores"), "scores"), _vector(labels, "labels"))


def image_ap(scores, labels) -> float:
    """Average precision (sklearn's, no interpolation); NaN without positives."""
    return _C.metrics_average_precision(_scores(_vector(scores, "scores"), "scores"), _vector(labels, "labels"))


def f1_max(scores, labels) -> float:
    """Maximum F1 over all thresholds; NaN without positives."""
    return _C.metrics_f1_max(_scores(_vector(scores, "scores"), "scores"), _vector(labels, "labels"))


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Exact AUPRO (sorts every pixel: for small data; stream large data with PixelMetrics).
    maps: (B, H, W) floats; masks: (B, H, W), nonzero = anomalous."""
    return _C.metrics_aupro(_scores(_maps(maps, "maps"), "maps"), _maps(masks, "masks"), fpr_limit)


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
    out = {"image_auroc": img.auroc, "image_ap": img.ap, "image_f1_max": img.f1_max}
    if maps is None and masks is None:
        return out
    if maps is None or masks is None:
        raise ValueError("evaluate: pass both maps and masks for the pixel metrics, or neither")
    m, k = _scores(_maps(maps, "maps"), "maps"), _maps(masks, "masks")
    if m.shape != k.shape:
        raise ValueError(f"evaluate: expected masks matching the maps {tuple(m.shape)}, got {tuple(k.shape)}")
    pm = PixelMetrics(lo, hi, bins, fpr_limit)
    for i in range(0, max(1, m.shape[0]), batch_size):
        pm.update(m[i:i + batch_size], k[i:i + batch_size])
    px = pm.compute()
    out.update(pixel_auroc=px.auroc, pixel_ap=px.ap, pixel_f1_max=px.f1_max, pixel_aupro=px.aupro)
    return out
