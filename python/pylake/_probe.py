"""NeuronProbe: read the neurons inside a CLIP image tower."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

from . import _C
from ._clip import ClipModel


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
            ``proj`` (the joint image-text space); ``None`` for no.

    Calling the probe on ``(B, 3, H, W)`` CLIP-normalised images (H, W multiples of the
    patch size) returns a :class:`ProbeResult`. Only the requested taps are kept, and the
    tower stops after the deepest block needed.
    """

    def __init__(
        self,
        model: ClipModel,
        layers: Sequence[int],
        kind: str = "residual",
        project_layer: Optional[int] = None,
    ) -> None:
        self._probe = _C.NeuronProbe(model, [int(l) for l in layers], kind, int(project_layer or 0))
        self.model = model

    @property
    def layers(self) -> list:
        """Resolved 1-based block indices, in request order."""
        return list(self._probe.layers)

    @property
    def kind(self) -> str:
        return self._probe.kind

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
