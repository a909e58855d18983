"""NeuronProbe: read the neurons inside a CLIP image tower."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from . import _C
from ._clip import ClipModel

ProbeKind = _C.ProbeKind
ProbeOptions = _C.ProbeOptions
_DEFAULTS = ProbeOptions()  # the C++ defaults (lake::ProbeOptions)


@dataclass(frozen=True)
class ProbeResult:
    """What a probe call returns (patch tokens exclude CLS, in row-major grid order).

    Attributes:
        activations: ``{layer: (B, N, C) tensor}``, C = D (residual) or 4 D (mlp),
            keyed by the resolved 1-based block index, in request order.
        cls: ``{layer: (B, C) tensor}``, the CLS token's channels.
        grid: ``(grid_h, grid_w)``, with ``N = grid_h * grid_w``.
        projected: ``(B, N, embed_dim)`` patch tokens of ``project_layer`` through
            ``ln_post`` and ``proj``, or ``None``.
    """

    activations: Dict[int, torch.Tensor]
    cls: Dict[int, torch.Tensor]
    grid: Tuple[int, int]
    projected: Optional[torch.Tensor]


class NeuronProbe:
    """Reads per-layer patch-token activations of a CLIP ViT.

    Args:
        model: a :class:`ClipModel` from :func:`pylake.load_clip`.
        layers: 1-based block indices; negative ones count from the end (-1: last block).
        kind: ``"residual"`` (the residual stream after block l, D channels) or
            ``"mlp"`` (the MLP hidden units after the activation, 4 D channels).
        project_layer: also return this block's patch tokens through ``ln_post`` and
            ``proj`` (the joint image-text space); ``None`` (or 0) for no.

    Defaults are the C++ ``lake::ProbeOptions`` ones (:class:`ProbeOptions`); ``kind`` takes a
    :class:`ProbeKind` or its name.

    Calling the probe on ``(B, 3, H, W)`` CLIP-normalised images (H, W multiples of the
    patch size) returns a :class:`ProbeResult`. Only the requested taps are kept, and the
    tower stops after the deepest block needed.
    """

    def __init__(
        self,
        model: ClipModel,
        layers: Sequence[int],
        kind: Union[str, ProbeKind] = str(_DEFAULTS.kind),
        project_layer: Optional[int] = None,
    ) -> None:
        options = ProbeOptions(layers=[int(l) for l in layers], kind=kind)
        if project_layer is not None:
            options.project_layer = int(project_layer)
        self._probe = _C.NeuronProbe(model, options)
        self.model = model

    @property
    def options(self) -> ProbeOptions:
        """The options as given (a copy)."""
        return self._probe.options

    @property
    def layers(self) -> list:
        """Resolved 1-based block indices, in request order."""
        return list(self._probe.layers)

    @property
    def kind(self) -> str:
        """``"residual"`` or ``"mlp"`` (the spelling of ``options.kind``)."""
        return str(self._probe.kind)

    @property
    def channels(self) -> int:
        """Channels per token of each tap: D (residual) or 4 D (mlp)."""
        return self._probe.channels

    def __call__(self, images: torch.Tensor) -> ProbeResult:
        r = self._probe(images)
        return ProbeResult(
            activations=dict(zip(r.layers, r.activations)),
            cls=dict(zip(r.layers, r.cls)),
            grid=(r.grid_h, r.grid_w),
            projected=r.projected,
        )

    def __repr__(self) -> str:
        return f"NeuronProbe(layers={self.layers}, kind={self.kind!r}, channels={self.channels})"
