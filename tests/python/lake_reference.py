"""A naive, pure-torch reference of the whole LAKE pipeline (independent of pylake).

Written from ``shared/METHOD.md`` and the exact specification the library implements
(see the module's functions, one per step).  It runs an ``open_clip.model.CLIP`` (ViT,
OpenAI parameter layout) and reads the intermediate tokens with forward hooks.  Nothing
here imports ``pylake``: this is the yardstick the library is compared against.

Clarity over speed: full distance matrices, float64 statistics, explicit loops.

Conventions: images are (B, 3, H, W) float32, CLIP-normalised.  Layers are 1-based
vision blocks.  Token tensors are batch-first (B, N, C), patches in grid row-major order,
the CLS token excluded.

Choices where the specification leaves room (documented so the library can align):

* visual distances (1 - f.g) / 2 are clamped to [0, 1] (only rounding can leave the
  interval: f and g are unit vectors);
* the statistics of "normalized_variance" tokens are accumulated in float64 from the
  float32 tokens L2-normalised in float64; the reported ``mean``/``std`` of every
  selected neuron are those of the RAW tokens (what ``explain`` uses), its ``scores``
  the chosen score;
* the Gaussian blur: "rows then columns" = first along the width axis (each row of the
  map filtered), then along the height axis; "reflect" = ``torch``/numpy reflect (the
  edge sample is not repeated: ... 2 1 | 0 1 2 ... ), which is why the radius is clamped
  to min(H, W) - 1;
* a positional embedding for an image size S other than the model's own is resized
  bicubically (align_corners=False) in float32, antialiased only when shrinking (the
  CLS row unchanged);
* the default image size: 518 for a /14 model, else the model's own;
* ``explain`` ties: deviation descending, then the layer NUMBER ascending, then the
  channel ascending;
* ``calibrate(leave_one_out=True)`` keeps the selected neurons (and their mean/std) of the
  full fit; only the gallery rows of the held-out image are removed.
"""

from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------
# prompts (METHOD.md step 5, spec step 6)
# --------------------------------------------------------------------------

NORMAL_STATES = ["flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                 "{} without defect", "{} without damage"]
ANOMALY_STATES = ["damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage"]
TEMPLATES = ["a photo of a {}.", "a cropped photo of the {}.", "a close-up photo of a {}.",
             "a bright photo of a {}.", "a dark photo of the {}.",
             "a photo of the {} for visual inspection.", "a photo of a {} for anomaly detection."]

SCORES = ("variance", "normalized_variance", "cv", "random")
KINDS = ("residual", "mlp")
POOLINGS = ("max", "top1pct")


def default_prompts(class_name: str, anomalous: bool) -> List[str]:
    """states outer loop, templates inner loop; "{}" of the state filled with the class."""
    states = ANOMALY_STATES if anomalous else NORMAL_STATES
    return [t.format(s.format(class_name)) for s in states for t in TEMPLATES]


# --------------------------------------------------------------------------
# small numeric building blocks
# --------------------------------------------------------------------------

def default_layers(depth: int) -> List[int]:
    """Quarter points of the depth: sorted unique max(1, depth * q // 4), q = 1..4."""
    return sorted({max(1, depth * q // 4) for q in range(1, 5)})


def resolve_layers(layers: Optional[Sequence[int]], depth: int) -> List[int]:
    """1-based, negative from the end (-1 = depth); None: :func:`default_layers`.
    The order given is kept (tap order)."""
    if layers is None:
        return default_layers(depth)
    out = []
    for l in layers:
        l = int(l)
        r = depth + 1 + l if l < 0 else l
        if not 1 <= r <= depth:
            raise ValueError(f"layer {l} is out of range for a model with {depth} blocks")
        if r in out:
            raise ValueError(f"layer {l} requested twice")
        out.append(r)
    if not out:
        raise ValueError("at least one layer")
    return out


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||, eps) over the last dimension, in x's dtype."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def top_k_channels(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k of a (C,) score vector, descending, ties by the lower index; returned as
    ascending int64 indices."""
    s = scores.double().tolist()
    if not 0 < k <= len(s):
        raise ValueError(f"k = {k} is not in 1..{len(s)}")
    order = sorted(range(len(s)), key=lambda c: (-s[c], c))
    return torch.tensor(sorted(order[:k]), dtype=torch.int64)


def channel_stats(tokens: torch.Tensor):
    """(T, C) tokens -> (mean, population variance), both (C,) float64, two-pass."""
    x = tokens.reshape(-1, tokens.shape[-1]).double()
    mean = x.sum(0) / x.shape[0]
    var = ((x - mean) ** 2).sum(0) / x.shape[0]
    return mean, var


class StreamingStats:
    """Chan et al.'s parallel Welford update in float64 (what a streaming fit does):
    ``update`` with batches of (..., C) tokens, ``merge`` another accumulator."""

    def __init__(self):
        self.count = 0
        self.mean = None
        self.m2 = None

    def update(self, tokens: torch.Tensor) -> "StreamingStats":
        x = tokens.reshape(-1, tokens.shape[-1]).double()
        n = x.shape[0]
        if n == 0:
            return self
        mean = x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        other = StreamingStats()
        other.count, other.mean, other.m2 = n, mean, m2
        return self.merge(other)

    def merge(self, other: "StreamingStats") -> "StreamingStats":
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.clone(), other.m2.clone()
            return self
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / n)
        self.m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / n)
        self.count = n
        return self

    def variance(self) -> torch.Tensor:
        return self.m2 / self.count


def sensitivity_scores(tokens: torch.Tensor, score: str) -> torch.Tensor:
    """(T, C) normal patch tokens -> (C,) float64 scores ("variance",
    "normalized_variance", "cv"; "random" has no score: see :func:`random_channels`)."""
    if score == "variance":
        return channel_stats(tokens)[1]
    if score == "normalized_variance":
        return channel_stats(l2_normalize(tokens.double()))[1]
    if score == "cv":
        mean, var = channel_stats(tokens)
        return var.sqrt() / mean.abs().clamp_min(1e-12)
    raise ValueError(f"unknown score {score!r}")


def random_channels(channels: int, k: int, seed: int) -> torch.Tensor:
    """The reference's own seeded random choice (the library uses its own RNG: only the
    properties are comparable)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(channels, generator=g)[:k].sort().values


def visual_distances(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """(P, K) queries (any scale) and (M, K) L2-normalised gallery rows ->
    (P,) float64 min over rows of (1 - cos) / 2, clamped to [0, 1]."""
    f = l2_normalize(queries.float()).double()
    g = gallery.double()
    d = (1.0 - f @ g.T) / 2.0  # full (P, M) matrix
    return d.min(dim=1).values.clamp(0.0, 1.0)


def gaussian_kernel1d(sigma: float, height: int, width: int) -> torch.Tensor:
    """float32 weights exp(-x^2 / (2 sigma^2)), x = -r..r, r = int(4 sigma + 0.5) clamped to
    min(H, W) - 1, normalised to sum 1."""
    r = min(int(4.0 * sigma + 0.5), min(height, width) - 1)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (w / w.sum()).float()


def _filter_last_dim(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Correlate the last dimension of (..., L) float32 x with the odd kernel w, reflect
    padding (numpy/torch 'reflect': the edge sample is not repeated)."""
    r = (w.numel() - 1) // 2
    L = x.shape[-1]
    idx = []
    for i in range(-r, L + r):  # reflect index, explicit
        j = i
        while j < 0 or j >= L:
            j = -j if j < 0 else 2 * (L - 1) - j
        idx.append(j)
    padded = x[..., torch.tensor(idx)]
    out = torch.zeros_like(x)
    for t in range(w.numel()):
        out = out + w[t] * padded[..., t:t + L]
    return out


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(..., H, W) maps -> blurred float32 (sigma <= 0: unchanged); rows (along W) then
    columns (along H)."""
    maps = maps.float()
    if sigma <= 0:
        return maps.clone()
    H, W = maps.shape[-2:]
    w = gaussian_kernel1d(sigma, H, W)
    x = _filter_last_dim(maps, w)                                   # along W
    x = _filter_last_dim(x.transpose(-1, -2), w).transpose(-1, -2)  # along H
    return x.contiguous()


def upsample(grid_values: torch.Tensor, h: int, w: int, H: int, W: int) -> torch.Tensor:
    """(B, h*w) patch values -> (B, H, W) float32, bilinear, align_corners=False."""
    x = grid_values.float().reshape(-1, 1, h, w)
    return F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)[:, 0]


def pool(maps: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, H, W) -> (B,) float32 image scores."""
    flat = maps.reshape(maps.shape[0], -1).float()
    if pooling == "max":
        return flat.max(dim=1).values
    if pooling == "top1pct":
        n = math.ceil(0.01 * flat.shape[1])
        return flat.double().sort(dim=1, descending=True).values[:, :n].mean(dim=1).float()
    raise ValueError(f"unknown pooling {pooling!r}")


def quantile(values, q: float) -> float:
    """Linear-interpolated quantile (numpy's default method), float64."""
    x = sorted(float(v) for v in torch.as_tensor(values).reshape(-1).double().tolist())
    if not x:
        raise ValueError("quantile of nothing")
    pos = q * (len(x) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (pos - lo) * (x[hi] - x[lo])


# --------------------------------------------------------------------------
# the backbone through forward hooks
# --------------------------------------------------------------------------

def model_image_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def model_patch_size(model) -> int:
    return int(model.visual.conv1.kernel_size[0])


def default_image_size(model) -> int:
    return 518 if model_patch_size(model) == 14 else model_image_size(model)


def resize_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """Backbone input: bicubic antialiased resize to size x size unless already so."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False,
                         antialias=True)


_resized_models: Dict[tuple, torch.nn.Module] = {}


def model_for_size(model, size: int):
    """``model`` itself for its own image size, else a (cached) copy with the positional
    embedding resized bicubically (antialiased when shrinking)."""
    patch, own = model_patch_size(model), model_image_size(model)
    if size % patch:
        raise ValueError(f"image size {size} is not a multiple of the patch {patch}")
    if size == own:
        return model
    key = (id(model), size)
    if key not in _resized_models:
        m = copy.deepcopy(model)
        pos = m.visual.positional_embedding.data
        g, D, n = own // patch, pos.shape[1], size // patch
        grid = pos[1:].float().reshape(1, g, g, D).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False,
                             antialias=n < g)
        new = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(n * n, D).to(pos.dtype)])
        m.visual.positional_embedding = torch.nn.Parameter(new, requires_grad=False)
        _resized_models[key] = m
    return _resized_models[key]


@torch.no_grad()
def with_dead_mlp_units(model, dead: Dict[int, Sequence[int]]):
    """A copy of ``model`` whose MLP hidden units ``dead[l]`` of block l are exactly 0 for
    every input (c_fc row 0, bias -1e4: QuickGELU/GELU of -1e4 is -0.0 in float32), so their
    variance, mean and std are exactly 0 in any implementation: exact ties for the top-K
    and ``explain``.  (The model itself changes: the dead units no longer feed c_proj.)"""
    m = copy.deepcopy(model)
    for l, units in dead.items():
        fc = m.visual.transformer.resblocks[l - 1].mlp.c_fc
        idx = torch.as_tensor(list(units), dtype=torch.int64)
        fc.weight[idx] = 0.0
        fc.bias[idx] = -1e4
    return m


@torch.no_grad()
def backbone_taps(model, images: torch.Tensor, size: int, layers: Sequence[int], kind: str,
                  semantic_layer: Optional[int]) -> dict:
    """Resize to size x size, run the vision tower, capture through hooks.

    Returns {"tokens": {l: (B, N, C) float32}, "projected": (B, N, E) float32 or None,
    "grid": n}; C = D (residual) or 4D (mlp); projected = the residual patch tokens of
    ``semantic_layer`` through ln_post and @ proj (not normalised)."""
    m = model_for_size(model, size)
    vis = m.visual
    blocks = vis.transformer.resblocks
    batch_first = bool(getattr(vis.transformer, "batch_first", True))
    x = resize_input(images.float(), size)
    captured = {}
    handles = []

    def keep(name):
        def hook(_mod, _inp, out):
            out = out if batch_first else out.transpose(0, 1)
            captured[name] = out.detach().clone()
        return hook

    res_layers = set(layers) if kind == "residual" else set()
    if semantic_layer is not None:
        res_layers.add(semantic_layer)
    try:
        for l in res_layers:
            handles.append(blocks[l - 1].register_forward_hook(keep(f"resid_{l}")))
        if kind == "mlp":
            for l in layers:
                handles.append(blocks[l - 1].mlp.gelu.register_forward_hook(keep(f"mlp_{l}")))
        vis(x)
    finally:
        for h in handles:
            h.remove()
    prefix = "resid" if kind == "residual" else "mlp"
    tokens = {l: captured[f"{prefix}_{l}"][:, 1:].float().contiguous() for l in layers}
    projected = None
    if semantic_layer is not None:
        patches = captured[f"resid_{semantic_layer}"][:, 1:]
        projected = (vis.ln_post(patches) @ vis.proj).float()
    return {"tokens": tokens, "projected": projected, "grid": size // model_patch_size(model)}


@torch.no_grad()
def text_embeddings(model, normal_prompts: Sequence[str], anomaly_prompts: Sequence[str]) -> torch.Tensor:
    """(2, E) float32: per side, encode_text, L2-normalise rows, mean, L2-normalise."""
    from open_clip.tokenizer import tokenize

    rows = []
    for prompts in (normal_prompts, anomaly_prompts):
        tokens = tokenize(list(prompts), context_length=77)
        emb = l2_normalize(model.encode_text(tokens).float())
        rows.append(l2_normalize(emb.mean(dim=0)))
    return torch.stack(rows)


def semantic_scores(projected: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(B, N, E) projected patch tokens, (2, E) text -> (B, N) float64 anomalous
    probability softmax(100 * [z.t_n, z.t_a])[1]."""
    z = l2_normalize(projected.float()).double()
    logits = 100.0 * z @ text.double().T
    return torch.softmax(logits, dim=-1)[..., 1]


# --------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------

class ReferenceLAKE:
    """The reference normality model (same options as ``pylake.NormalityModel``)."""

    def __init__(self, model, layers=None, k=100, score="variance", seed=0, kind="residual",
                 image_size=None, text_weight=0.3, class_name="object", normal_prompts=None,
                 anomaly_prompts=None, semantic_layer=None, pooling="max", blur_sigma=4.0):
        if score not in SCORES or kind not in KINDS or pooling not in POOLINGS:
            raise ValueError("bad option")
        self.clip = model
        depth = len(model.visual.transformer.resblocks)
        self.layers = resolve_layers(layers, depth)
        self.k = int(k)
        self.score_name = score
        self.seed = int(seed)
        self.kind = kind
        self.image_size = int(image_size) if image_size else default_image_size(model)
        self.text_weight = float(text_weight)
        self.semantic_layer = (resolve_layers([semantic_layer], depth)[0] if semantic_layer
                               else max(self.layers))
        self.normal_prompts = list(normal_prompts) if normal_prompts else default_prompts(class_name, False)
        self.anomaly_prompts = list(anomaly_prompts) if anomaly_prompts else default_prompts(class_name, True)
        self.pooling = pooling
        self.blur_sigma = float(blur_sigma)
        self.text = text_embeddings(model, self.normal_prompts, self.anomaly_prompts)
        self.neurons: List[dict] = []
        self.galleries: List[torch.Tensor] = []
        self.shots = 0
        self.grid = self.image_size // model_patch_size(model)

    # ---- fit ---------------------------------------------------------------
    def fit(self, images: torch.Tensor, indices: Optional[Sequence[torch.Tensor]] = None):
        """images (k, 3, H, W); k = 0: zero-shot.  ``indices``: per tapped layer, force the
        selected channels (to follow the library's "random" choice)."""
        self.shots = int(images.shape[0])
        self.neurons, self.galleries = [], []
        if self.shots == 0:
            return self
        taps = backbone_taps(self.clip, images, self.image_size, self.layers, self.kind, None)
        for i, l in enumerate(self.layers):
            tok = taps["tokens"][l]                       # (k, N, C) float32
            flat = tok.reshape(-1, tok.shape[-1])        # (k*N, C), image-major
            C = flat.shape[1]
            mean, var = channel_stats(flat)
            if indices is not None:
                idx = torch.as_tensor(indices[i], dtype=torch.int64)
                scores = (sensitivity_scores(flat, "variance") if self.score_name == "random"
                          else sensitivity_scores(flat, self.score_name))
            elif self.score_name == "random":
                idx = random_channels(C, self.k, self.seed)
                scores = sensitivity_scores(flat, "variance")
            else:
                scores = sensitivity_scores(flat, self.score_name)
                idx = top_k_channels(scores, self.k)
            self.neurons.append({"layer": l, "indices": idx, "scores": scores[idx],
                                 "mean": mean[idx], "std": var[idx].sqrt()})
            self.galleries.append(l2_normalize(flat[:, idx].float()))
        return self

    # ---- score -------------------------------------------------------------
    def patch_scores(self, images: torch.Tensor, exclude_image: Optional[Sequence[int]] = None) -> dict:
        """(B, 3, H, W) -> {"v": (B, N) or None, "t": (B, N), "A": (B, N)} float64.
        exclude_image[b]: the fit image whose gallery rows image b must not see (LOO)."""
        taps = backbone_taps(self.clip, images, self.image_size, self.layers, self.kind,
                             self.semantic_layer)
        t = semantic_scores(taps["projected"], self.text)
        B, N = t.shape
        if self.shots == 0:
            return {"v": None, "t": t, "A": t.clone()}
        v = torch.zeros(B, N, dtype=torch.float64)
        for i, l in enumerate(self.layers):
            idx, gallery = self.neurons[i]["indices"], self.galleries[i]
            for b in range(B):
                g = gallery
                if exclude_image is not None and exclude_image[b] is not None:
                    e = int(exclude_image[b])
                    keep = torch.ones(g.shape[0], dtype=torch.bool)
                    keep[e * N:(e + 1) * N] = False
                    g = g[keep]
                v[b] += visual_distances(taps["tokens"][l][b][:, idx], g)
        v /= len(self.layers)
        A = (1.0 - self.text_weight) * v + self.text_weight * t
        return {"v": v, "t": t, "A": A}

    def maps(self, values: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """(B, N) patch values -> (B, H, W) upsampled and blurred float32 map."""
        n = self.grid
        return gaussian_blur(upsample(values.float(), n, n, H, W), self.blur_sigma)

    def score(self, images: torch.Tensor, exclude_image=None) -> dict:
        H, W = images.shape[-2:]
        s = self.patch_scores(images, exclude_image)
        amap = self.maps(s["A"], H, W)
        out = {"pred_score": pool(amap, self.pooling), "anomaly_map": amap,
               "semantic_map": self.maps(s["t"], H, W),
               "visual_map": self.maps(s["v"], H, W) if s["v"] is not None else None,
               "patch": s}
        return out

    # ---- calibrate ---------------------------------------------------------
    def calibrate(self, images: torch.Tensor, quantile_q: float = 0.99, leave_one_out: bool = False):
        """Returns (image threshold, pixel threshold) as Python floats."""
        if leave_one_out:
            if images.shape[0] != self.shots:
                raise ValueError("leave_one_out: pass the fit images")
            p = self.score(images, exclude_image=list(range(self.shots)))
        else:
            p = self.score(images)
        return quantile(p["pred_score"], quantile_q), quantile(p["anomaly_map"], quantile_q)

    # ---- explain -----------------------------------------------------------
    def explain(self, image: torch.Tensor, top: Optional[int] = 10) -> List[dict]:
        """The selected neurons sorted by max-over-patches z-score; ``top=None``: all."""
        if image.dim() == 3:
            image = image[None]
        H, W = image.shape[-2:]
        taps = backbone_taps(self.clip, image, self.image_size, self.layers, self.kind, None)
        n = self.grid
        rows = []
        for i, l in enumerate(self.layers):
            nr = self.neurons[i]
            vals = taps["tokens"][l][0].double()   # (N, C) raw channel values
            for j, c in enumerate(nr["indices"].tolist()):
                z = (vals[:, c] - nr["mean"][j]).abs() / max(float(nr["std"][j]), 1e-12)
                rows.append({"layer": l, "channel": c, "deviation": float(z.max()),
                             "map": upsample(z[None].float(), n, n, H, W)[0]})
        rows.sort(key=lambda r: (-r["deviation"], r["layer"], r["channel"]))
        return rows if top is None else rows[:top]
