"""NormalityModel: LAKE's few-shot normality model, from Python."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from typing import Any, List, Optional, Sequence, Union

import torch

from . import _C
from ._clip import ClipModel
from ._model_file import read_model_file  # noqa: F401  (re-exported by pylake)
from ._tokenize import default_vocabulary_path
from .datasets import image_paths

ImagesLike = Union[torch.Tensor, str, os.PathLike, Sequence[Union[str, os.PathLike]]]

NormalityOptions = _C.NormalityOptions
SensitivityScore = _C.SensitivityScore
Pooling = _C.Pooling
# The C++ defaults (lake::NormalityOptions), the one definition NormalityModel's keyword defaults,
# the CLI's and docs/method.md's options table are read from or tested against.
_DEFAULTS = NormalityOptions()
# Options whose C++ default (empty / 0) means "chosen from the model": None in Python.
AUTO_OPTIONS = ("layers", "image_size", "normal_prompts", "anomaly_prompts", "semantic_layer", "vocabulary")


def normality_options(**keywords: Any) -> NormalityOptions:
    """The :class:`NormalityOptions` of :class:`NormalityModel`'s keyword arguments: ``None``
    for an option of :data:`AUTO_OPTIONS` (and for ``vocabulary``) keeps the C++ "from the model"
    value (empty / 0); strings name enum values (``score="cv"``), parsed by the C++ parser, whose
    ValueError names the input; an unknown keyword is a TypeError."""
    o = NormalityOptions()
    for name, value in keywords.items():
        if value is None and name in AUTO_OPTIONS:
            continue
        if name not in NormalityOptions._fields:
            raise TypeError(f"unknown NormalityModel option '{name}'; the options: {', '.join(NormalityOptions._fields)}")
        if name == "vocabulary":
            value = os.fspath(value)
        elif isinstance(getattr(_DEFAULTS, name), list):
            value = list(value)
        setattr(o, name, value)
    return o


class _Record:
    """Dict-style reading (``r["layer"]``) of the typed results below, kept for the code
    written when they were dicts; deprecated: read the attributes (``r.layer``)."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        warnings.warn(f"{type(self).__name__}[{key!r}] is deprecated: use .{key}", DeprecationWarning, stacklevel=2)
        return getattr(self, key)

    def keys(self) -> List[str]:
        return [f.name for f in fields(self)]


@dataclass(frozen=True)
class LayerNeurons(_Record):
    """The sensitive neurons of one tapped layer (``NormalityModel.neurons``).

    Attributes:
        layer: the 1-based block.
        indices: ``(K,)`` int64 selected channels, ascending.
        scores: ``(K,)`` float64 their sensitivity scores.
        mean: ``(K,)`` float64 their mean over the normal patches.
        std: ``(K,)`` float64 their population standard deviation over the normal patches.
    """

    layer: int
    indices: torch.Tensor
    scores: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


@dataclass(frozen=True)
class NeuronDeviation(_Record):
    """One neuron of an explanation (``NormalityModel.explain``).

    Attributes:
        layer: the 1-based block.
        channel: the channel in that layer's tokens.
        deviation: max over patches of ``|activation - normal mean| / normal std``.
        map: ``(H, W)`` float32 per-pixel deviation, the patch grid bilinearly resized to the image
            (so its peak can sit slightly below ``deviation``).
    """

    layer: int
    channel: int
    deviation: float
    map: torch.Tensor


@dataclass(frozen=True)
class Prediction:
    """Scores of a batch of B images, maps at the input images' resolution (H, W).

    Attributes:
        pred_score: ``(B,)`` float32 image anomaly scores.
        anomaly_map: ``(B, H, W)`` float32 fused anomaly maps.
        pred_label: ``(B,)`` bool, ``pred_score > image_threshold`` (``None`` until thresholds are set).
        pred_mask: ``(B, H, W)`` bool, ``anomaly_map > pixel_threshold`` (``None`` until set).
        visual_map: ``(B, H, W)`` the visual branch alone (``with_branches=True``; ``None`` zero-shot).
        semantic_map: ``(B, H, W)`` the semantic (text) branch alone (``with_branches=True``).
    """

    pred_score: torch.Tensor
    anomaly_map: torch.Tensor
    pred_label: Optional[torch.Tensor] = None
    pred_mask: Optional[torch.Tensor] = None
    visual_map: Optional[torch.Tensor] = None
    semantic_map: Optional[torch.Tensor] = None


def load_images(paths: Sequence[Union[str, os.PathLike]], model: ClipModel, size: Optional[int] = None,
                if_mixed: Optional[int] = None) -> torch.Tensor:
    """Read image files into a ``(B, 3, H, W)`` CLIP-normalised float32 batch, through the
    C++ decoder (:func:`pylake.read_image`, equal to PIL).

    ``size``: resize every image to ``size x size`` first (:func:`pylake.clip_preprocess`:
    PIL's antialiased bicubic on the uint8 pixels, as :func:`pylake.prepare_image` and every
    file entry point do); ``None`` keeps the files' resolution, which must then agree,
    unless ``if_mixed`` is given: files of different sizes are then all resized to that side.

    To score files, pass their paths to :class:`NormalityModel` instead: the backbone then
    sees them at ``S x S`` by the same rule and the maps come back at each file's resolution.
    """
    mean, std = list(model.config.image_mean), list(model.config.image_std)
    images = [_C.read_image(os.fspath(p)) for p in paths]
    sizes = {(int(x.shape[2]), int(x.shape[1])) for x in images}
    if size is None and len(sizes) > 1:
        if if_mixed is None:
            raise ValueError(f"images of different sizes {sorted(sizes)} (width, height): pass size=..., or score "
                             "them one at a time")
        size = if_mixed
    if size is None:
        return torch.stack([_C.clip_normalize(x, mean, std) for x in images])
    return torch.stack([_C.clip_preprocess(x, int(size), mean, std) for x in images])


def _file_list(images) -> Optional[List[str]]:
    """Paths (a file, a folder, or a list of them) as a list of file names; ``None`` for a tensor."""
    if isinstance(images, torch.Tensor):
        return None
    if not (isinstance(images, (str, os.PathLike)) or (
            isinstance(images, (list, tuple)) and all(isinstance(x, (str, os.PathLike)) for x in images))):
        raise ValueError("expected images as a (B, 3, H, W) tensor, an image path, a folder, or a list of paths, "
                         f"got {type(images).__name__}")
    return [os.fspath(p) for p in image_paths(images)]


class NormalityModel:
    """LAKE's few-shot normality model over a CLIP ViT (METHOD.md; docs/method.md).

    Args (all keyword; every default is the C++ ``lake::NormalityOptions`` one, read from
    :class:`NormalityOptions`, and ``None`` means the C++ "from the model" value; the table of
    docs/method.md lists them):
        model: a :class:`ClipModel`.
        layers: tapped blocks (1-based, negative from the end); ``None``: the quarter points
            of the depth (6, 12, 18, 24 on a 24-block model).
        k: sensitive neurons kept per layer (paper: 100).
        score: ``"variance"`` (paper), ``"normalized_variance"``, ``"cv"`` or ``"random"``
            (the paper's random-K control, drawn by ``seed``).
        seed: seed of the random choice.
        kind: ``"residual"`` (D channels) or ``"mlp"`` (4 D hidden units).
        image_size: the backbone's input side S; ``None``: 518 on /14 models, 240 on
            ViT-B-16-plus-240, else the model's own.
        text_weight: lambda of the fusion ``(1 - lambda) visual + lambda semantic``.
        class_name: fills the prompt ensemble ("a photo of a damaged {class_name}.").
        normal_prompts, anomaly_prompts: full sentences replacing the ensemble.
        semantic_layer: the block whose patch tokens meet the text; ``None``: deepest tapped.
        pooling: image score from the map: ``"max"`` or ``"top1pct"``.
        blur_sigma: Gaussian blur of the maps in pixels (0: none).
        gallery_tile: gallery rows per tile of the CPU nearest-neighbour search (memory
            O(tile); results do not depend on it).
        batch_size: images per backbone forward. 1 (the default) makes every image's result
            bit-identical whatever batch it comes in; larger is faster on CUDA and agrees
            with 1 to float rounding (about 1e-6).
        vocabulary: CLIP's BPE vocabulary file for the prompts; ``None``: the model's embedded
            one, else :func:`pylake.default_vocabulary_path`.

    Lifecycle: ``fit(normal_images)`` -> ``score(images)`` -> :class:`Prediction`;
    ``calibrate``, ``explain`` -> :class:`NeuronDeviation`, ``neurons`` -> :class:`LayerNeurons`,
    ``save`` / ``NormalityModel.load``. :meth:`from_options` takes a :class:`NormalityOptions`.
    """

    def __init__(
        self,
        model: ClipModel,
        *,
        layers: Optional[Sequence[int]] = None,
        k: int = _DEFAULTS.k,
        score: Union[str, SensitivityScore] = str(_DEFAULTS.score),
        seed: int = _DEFAULTS.seed,
        kind: Union[str, "_C.ProbeKind"] = str(_DEFAULTS.kind),
        image_size: Optional[int] = None,
        text_weight: float = _DEFAULTS.text_weight,
        class_name: str = _DEFAULTS.class_name,
        normal_prompts: Optional[Sequence[str]] = None,
        anomaly_prompts: Optional[Sequence[str]] = None,
        semantic_layer: Optional[int] = None,
        pooling: Union[str, Pooling] = str(_DEFAULTS.pooling),
        blur_sigma: float = _DEFAULTS.blur_sigma,
        gallery_tile: int = _DEFAULTS.gallery_tile,
        batch_size: int = _DEFAULTS.batch_size,
        vocabulary: Optional[Union[str, os.PathLike]] = None,
        _native: Optional["_C.NormalityModel"] = None,
    ) -> None:
        self.clip = model
        if _native is not None:
            self._m = _native
            return
        if vocabulary is None and model.tokenizer() is None:
            vocabulary = default_vocabulary_path()
        options = normality_options(
            layers=layers, k=k, score=score, seed=seed, kind=kind, image_size=image_size, text_weight=text_weight,
            class_name=class_name, normal_prompts=normal_prompts, anomaly_prompts=anomaly_prompts,
            semantic_layer=semantic_layer, pooling=pooling, blur_sigma=blur_sigma, gallery_tile=gallery_tile,
            batch_size=batch_size, vocabulary=vocabulary)
        self._m = _C.NormalityModel(model, options)

    @classmethod
    def from_options(cls, model: ClipModel, options: NormalityOptions) -> "NormalityModel":
        """A model with these :class:`NormalityOptions` (``vocabulary`` empty: the model's embedded
        one, else :func:`pylake.default_vocabulary_path`, as for the keyword form)."""
        if not options.vocabulary and model.tokenizer() is None:
            options = NormalityOptions(**{f: getattr(options, f) for f in NormalityOptions._fields})
            options.vocabulary = default_vocabulary_path()
        return cls(model, _native=_C.NormalityModel(model, options))

    @property
    def options(self) -> NormalityOptions:
        """The options as given (a copy); the resolved ``layers``, ``image_size`` and
        ``semantic_layer`` are properties of their own."""
        return self._m.options

    # -- lifecycle ------------------------------------------------------------------------
    # Images are a (B, 3, H, W) CLIP-normalised tensor, or files: a path, a folder, or a
    # list of them. Files follow the one rule of every file entry point (C++
    # `NormalityModel::*_files`, `lake predict`, `lake eval`): decoded by the C++ reader,
    # resized to the backbone's S x S by `pylake.prepare_image`, maps at each file's own
    # resolution. A tensor is resized to S x S as floats (antialiased bicubic) and its maps
    # come back at its H x W.

    def fit(self, normal_images: ImagesLike) -> "NormalityModel":
        """Fit on k >= 1 normal images: a ``(k, 3, H, W)`` CLIP-normalised tensor, or files
        (of any sizes). ``fit([])`` (or an empty tensor) gives the zero-shot model."""
        if isinstance(normal_images, (list, tuple)) and len(normal_images) == 0:
            self._m.fit_files([])
            return self
        files = _file_list(normal_images)
        if files is None:
            self._m.fit(normal_images)
        else:
            self._m.fit_files(files)
        return self

    def is_fitted(self) -> bool:
        return self._m.is_fitted()

    def score(self, images: ImagesLike, with_branches: bool = False) -> Prediction:
        """Score images; maps come back at each input's resolution ``H x W``. Files in one
        call must share a size (score files of other sizes in another call)."""
        files = _file_list(images)
        p = self._m.score(images, bool(with_branches)) if files is None else self._m.score_files(files, bool(with_branches))
        return Prediction(p.pred_score, p.anomaly_map, p.pred_label, p.pred_mask, p.visual_map, p.semantic_map)

    def score_prepared(self, images: Sequence["_C.PreparedImage"], with_branches: bool = False,
                       batch_size: Optional[int] = None) -> List[Prediction]:
        """Score files already prepared by :meth:`prepare` (of any sizes): one
        :class:`Prediction` per image (B = 1), maps at that file's resolution. The backbone
        runs on ``batch_size`` images at a time (``None``: the model's ``batch_size``); at 1
        each result is bit-identical to ``score(path)``. :func:`pylake.pipeline.scored`
        prepares the next files in threads while this runs (what `lake predict` and
        `lake eval` do)."""
        ps = self._m.score_prepared(list(images), bool(with_branches), int(batch_size or 0))
        return [Prediction(p.pred_score, p.anomaly_map, p.pred_label, p.pred_mask, p.visual_map, p.semantic_map)
                for p in ps]

    def calibrate(self, normal_images: ImagesLike, quantile: float = 0.99, leave_one_out: bool = False) -> "NormalityModel":
        """Set the image and pixel thresholds to ``quantile`` of normal images' scores and map
        values. ``leave_one_out=True``: pass the fit images (same order); each is scored
        against the gallery without its own patches."""
        files = _file_list(normal_images)
        if files is None:
            self._m.calibrate(normal_images, float(quantile), bool(leave_one_out))
        else:
            self._m.calibrate_files(files, float(quantile), bool(leave_one_out))
        return self

    def explain(self, image: ImagesLike, top: int = 10) -> List[NeuronDeviation]:
        """The ``top`` selected neurons deviating most on one image, most deviating first,
        as :class:`NeuronDeviation` (layer, channel, deviation, map ``(H, W)``); deviation =
        max over patches of ``|activation - normal mean| / normal std`` on the patch grid; the
        map is that grid bilinearly resized to the image, so its peak can sit slightly below it."""
        files = _file_list(image)
        if files is not None and len(files) != 1:
            raise ValueError(f"explain: expected one image, got {len(files)} files")
        ds = self._m.explain(image, int(top)) if files is None else self._m.explain_file(files[0], int(top))
        return [NeuronDeviation(d.layer, d.channel, d.deviation, d.map) for d in ds]

    def prepare(self, path: Union[str, os.PathLike]) -> "_C.PreparedImage":
        """One file as this model's backbone sees it: ``.pixels`` ``(3, S, S)`` float32 and the
        file's ``.height`` / ``.width`` (the resolution of its maps)."""
        return self._m.prepare(os.fspath(path))

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the model file atomically: format version 2, a safetensors file whose
        JSON header holds every option, the backbone's identity and a checksum (docs/method.md;
        :func:`pylake.read_model_file` reads it back for inspection)."""
        self._m.save(os.fspath(path))

    @classmethod
    def load(cls, path: Union[str, os.PathLike], model: ClipModel) -> "NormalityModel":
        """Read a file written by :meth:`save` (format version 2, or 1 of earlier LAKE) for
        ``model``: the archive it was fitted on, loaded in any dtype or device, with or without
        the text tower (version 1: the same parameters as loaded). Every field is checked
        first; a bad file is a ``ValueError`` naming the file and the field."""
        return cls(model, _native=_C.NormalityModel.load(os.fspath(path), model))

    # -- state ------------------------------------------------------------------------------
    @property
    def image_threshold(self) -> Optional[float]:
        return self._m.image_threshold

    @property
    def pixel_threshold(self) -> Optional[float]:
        return self._m.pixel_threshold

    def set_thresholds(self, image: Optional[float], pixel: Optional[float]) -> None:
        self._m.set_thresholds(image, pixel)

    @property
    def neurons(self) -> List[LayerNeurons]:
        """Per tapped layer, in tap order, its :class:`LayerNeurons` (layer, indices ``(K,)``
        int64 ascending, scores, mean, std ``(K,)`` float64); empty before fit and zero-shot."""
        return [LayerNeurons(n.layer, n.indices, n.scores, n.mean, n.std) for n in self._m.neurons.layers]

    @property
    def galleries(self) -> List[torch.Tensor]:
        """Per tapped layer, ``(k * N, K)`` float32 L2-normalised normal patches."""
        return list(self._m.galleries)

    @property
    def text_embeddings(self) -> Optional[torch.Tensor]:
        """``(2, E)``: the normal and the anomalous prompt embedding."""
        return self._m.text_embeddings

    layers = property(lambda self: list(self._m.layers), doc="Tapped blocks (1-based).")
    image_size = property(lambda self: self._m.image_size, doc="The backbone's input side S.")
    semantic_layer = property(lambda self: self._m.semantic_layer)
    normal_prompts = property(lambda self: list(self._m.normal_prompts))
    anomaly_prompts = property(lambda self: list(self._m.anomaly_prompts))
    shots = property(lambda self: self._m.shots, doc="Number of normal images fitted on.")
    batch_size = property(lambda self: self._m.batch_size, doc="Images per backbone forward.")
    gallery_tile = property(lambda self: self._m.gallery_tile, doc="Gallery rows per CPU search tile.")
    class_name = property(lambda self: self._m.class_name, doc="The product's name in the prompts.")

    def __repr__(self) -> str:
        state = f"{self.shots} shots" if self.is_fitted() else "not fitted"
        return f"NormalityModel(layers={self.layers}, image_size={self.image_size}, {state})"
