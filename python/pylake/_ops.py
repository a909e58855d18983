"""Fake (meta) kernels of the dispatcher ops ``torch.ops.lake.*``, for FakeTensor and torch.compile.

The ops themselves are registered in C++ (``src/ops/registration.cpp``: ``TORCH_LIBRARY(lake, m)``
with the CPU and CUDA kernels) when ``pylake._C`` is loaded; ``import pylake`` also imports this
module, which tells torch the shapes, dtypes and devices of their outputs without running them:

>>> import torch, pylake
>>> torch.ops.lake.upsample_blur(torch.rand(2, 7, 9), 30, 40, 1.5).shape
torch.Size([2, 30, 40])

Each fake kernel checks what the output's shape depends on, with the op's message; the value
checks (index ranges, k against the channels, eps, tile) stay with the real kernel. The one
data-dependent output is ``channel_moments``'s count when a mask is given: an unbacked SymInt
(``torch.library.get_ctx().new_dynamic_size()``).
"""

from __future__ import annotations

import torch

_FLOAT = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@torch.library.register_fake("lake::channel_moments")
def _channel_moments(tokens, mask=None):
    torch._check(tokens.dim() == 2 and tokens.dtype in _FLOAT,
                 lambda: f"channel_moments: expected (T, C) float32/float64/float16/bfloat16 tokens, got "
                         f"{list(tokens.shape)} {tokens.dtype}")
    T, C = tokens.shape
    if mask is not None:
        torch._check(mask.dim() == 1 and mask.shape[0] == T and mask.dtype == torch.bool,
                     lambda: f"channel_moments: expected a ({T}) bool token mask, got {list(mask.shape)} {mask.dtype}")
    mean = tokens.new_empty((C,), dtype=torch.float64)
    m2 = tokens.new_empty((C,), dtype=torch.float64)
    if T == 0 or C == 0:
        return 0, mean, m2
    if mask is None:
        return T, mean, m2
    count = torch.library.get_ctx().new_dynamic_size()  # the true tokens: known only from the data
    torch._check(count <= T)
    return count, mean, m2


@torch.library.register_fake("lake::top_k")
def _top_k(scores, k):
    torch._check(scores.dim() == 1 and scores.dtype in _FLOAT,
                 lambda: f"top_k: expected (C) floating scores, got {list(scores.shape)} {scores.dtype}")
    return scores.new_empty((k,), dtype=torch.int64)


@torch.library.register_fake("lake::gather_normalize")
def _gather_normalize(tokens, indices, eps=1e-12):
    torch._check(tokens.dim() == 2 and tokens.dtype in _FLOAT,
                 lambda: f"gather_normalize: expected (T, C) float32/float64/float16/bfloat16 tokens, got "
                         f"{list(tokens.shape)}")
    torch._check(indices.dim() == 1 and indices.dtype == torch.int64,
                 lambda: f"gather_normalize: expected (K) int64 channel indices, got {list(indices.shape)} "
                         f"{indices.dtype}")
    return tokens.new_empty((tokens.shape[0], indices.shape[0]), dtype=torch.float32)


@torch.library.register_fake("lake::nearest_neighbors")
def _nearest_neighbors(queries, gallery, tile=512, exclude_lo=0, exclude_hi=0):
    torch._check(queries.dim() == gallery.dim() and queries.dim() in (2, 3),
                 lambda: f"nearest_neighbors: expected (L, Q, K) queries and (L, M, K) gallery (or (Q, K) and "
                         f"(M, K)), got {list(queries.shape)} and {list(gallery.shape)}")
    L, Q = (1, queries.shape[0]) if queries.dim() == 2 else (queries.shape[0], queries.shape[1])
    torch._check(queries.dtype == gallery.dtype and queries.dtype in (torch.float32, torch.float16, torch.bfloat16),
                 lambda: f"nearest_neighbors: expected float32, float16 or bfloat16 rows of one dtype, got "
                         f"{queries.dtype} and {gallery.dtype}")
    return (queries.new_empty((L, Q), dtype=torch.float32), queries.new_empty((L, Q), dtype=torch.int64))


@torch.library.register_fake("lake::upsample_blur")
def _upsample_blur(maps, height, width, sigma):
    torch._check(maps.dim() == 3 and maps.dtype == torch.float32,
                 lambda: f"upsample_blur: expected (B, h, w) float32 maps, got {list(maps.shape)} {maps.dtype}")
    torch._check(height >= 1 and width >= 1,
                 lambda: f"upsample_blur: expected an output size of at least 1 x 1, got {height} x {width}")
    return maps.new_empty((maps.shape[0], height, width))
