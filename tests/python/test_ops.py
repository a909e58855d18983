"""lake::ops, the anomaly head's kernels, against naive pure-torch references on every
device this build and machine offer (CPU always; CUDA when both LAKE's CUDA kernels and a
GPU are present)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pylake import _C

ops = _C.ops

DEVICES = ["cpu"] + (["cuda"] if ops.cuda_kernels_available() and torch.cuda.is_available() else [])
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- references -------------------------------------------------------------------------

def ref_moments(x: torch.Tensor, mask=None):
    x = x.double().cpu()
    if mask is not None:
        x = x[mask.cpu()]
    n = x.shape[0]
    if n == 0:
        return 0, torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
    mean = x.mean(0)
    return n, mean, ((x - mean) ** 2).sum(0)


def ref_top_k(scores: torch.Tensor, k: int) -> list:
    s = scores.double().cpu().tolist()
    order = sorted(range(len(s)), key=lambda i: (math.isnan(s[i]), -s[i] if not math.isnan(s[i]) else 0.0, i))
    return sorted(order[:k])


def ref_gather_normalize(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    g = x.cpu()[:, idx.cpu()].double()
    return (g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()


def ref_nearest(q: torch.Tensor, g: torch.Tensor, lo: int = 0, hi: int = 0):
    """(L, Q, K), (L, M, K) -> float64 distances and indices (lowest on ties)."""
    sims = torch.einsum("lqk,lmk->lqm", q.double().cpu(), g.double().cpu())
    if hi > lo:
        sims[:, :, lo:hi] = -math.inf
    best, arg = sims.max(dim=2)  # torch returns the first maximal index
    none = torch.isinf(best)
    dist = ((1 - best) / 2).clamp(0, 1)
    dist[none] = 1.0
    arg[none] = -1
    return dist, arg


def ref_upsample_blur(maps: torch.Tensor, H: int, W: int, sigma: float) -> torch.Tensor:
    up = F.interpolate(maps.cpu().double()[:, None], size=(H, W), mode="bilinear", align_corners=False)
    r = min(int(4 * sigma + 0.5), min(H, W) - 1) if sigma > 0 else 0
    if r <= 0:
        return up[:, 0]
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-x * x / (2 * sigma * sigma))
    w = w / w.sum()
    up = F.conv2d(F.pad(up, (r, r, 0, 0), mode="reflect"), w.view(1, 1, 1, -1))
    up = F.conv2d(F.pad(up, (0, 0, r, r), mode="reflect"), w.view(1, 1, -1, 1))
    return up[:, 0]


# ---- channel_moments --------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("T", [0, 1, 255, 256, 257, 1000])
def test_channel_moments_matches_reference(device, dtype, T):
    x = (torch.randn(T, 37, generator=gen(T)) * 3 + 1).to(dtype)
    n, mean, m2 = ops.channel_moments(x.to(device))
    rn, rmean, rm2 = ref_moments(x)
    assert n == rn and mean.dtype == torch.float64 and m2.dtype == torch.float64
    assert mean.device.type == device
    torch.testing.assert_close(mean.cpu(), rmean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m2.cpu(), rm2, rtol=1e-11, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_channel_moments_mask_and_strides(device):
    x = torch.randn(50, 700, generator=gen(1)).t()  # (700, 50), not contiguous
    mask = torch.rand(700, generator=gen(2)) > 0.3
    n, mean, m2 = ops.channel_moments(x.to(device), mask.to(device))
    rn, rmean, rm2 = ref_moments(x, mask)
    assert n == rn == int(mask.sum())
    torch.testing.assert_close(mean.cpu(), rmean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m2.cpu(), rm2, rtol=1e-11, atol=1e-10)
    n0, mean0, m20 = ops.channel_moments(x.to(device), torch.zeros(700, dtype=torch.bool, device=device))
    assert n0 == 0 and mean0.abs().sum() == 0 and m20.abs().sum() == 0


def test_channel_moments_large_offset_is_exact():
    # A naive float32 sum of squares loses everything here; float64 two-pass blocks do not.
    x = 1e4 + torch.randn(5000, 8, generator=gen(3), dtype=torch.float64) * 1e-3
    n, mean, m2 = ops.channel_moments(x)
    _, rmean, rm2 = ref_moments(x)
    torch.testing.assert_close(m2, rm2, rtol=1e-9, atol=0)


def test_channel_moments_independent_of_threads():
    x = torch.randn(3000, 300, generator=gen(4))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = ops.channel_moments(x)
        torch.set_num_threads(2)
        b = ops.channel_moments(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_channel_stats_streams_with_mask():
    x = torch.randn(4, 100, 16, generator=gen(5))
    mask = torch.rand(4, 100, generator=gen(6)) > 0.5
    st = _C.ChannelStats()
    st.update(x[:2], mask[:2])
    st.update(x[2:], mask[2:])
    rn, rmean, rm2 = ref_moments(x.reshape(-1, 16), mask.reshape(-1))
    assert st.count == rn
    torch.testing.assert_close(st.mean, rmean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.m2, rm2, rtol=1e-11, atol=1e-10)


# ---- top_k --------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_top_k_order_ties_nan(device, dtype):
    s = torch.tensor([0.5, 2.0, float("nan"), 2.0, -math.inf, 7.0, 0.5, float("nan"), math.inf, -1.0], dtype=dtype)
    for k in range(1, len(s) + 1):
        got = ops.top_k(s.to(device), k)
        assert got.dtype == torch.int64 and got.device.type == device
        assert got.cpu().tolist() == ref_top_k(s, k), k


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_random_with_many_ties(device):
    s = torch.randint(0, 20, (3072,), generator=gen(7)).double()
    for k in (1, 100, 1000, 3072):
        assert ops.top_k(s.to(device), k).cpu().tolist() == ref_top_k(s, k)


def test_top_k_errors():
    with pytest.raises(ValueError, match="k = 0 neurons requested, but the layer has 3 channels"):
        ops.top_k(torch.ones(3), 0)
    with pytest.raises(ValueError, match="expected 1 <= k <= 3"):
        ops.top_k(torch.ones(3), 4)
    with pytest.raises(ValueError, match=r"expected \(C\) floating scores"):
        ops.top_k(torch.ones(3, 2), 1)


# ---- gather_normalize --------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_gather_normalize_matches_reference(device, dtype):
    x = torch.randn(333, 96, generator=gen(8)).to(dtype)
    idx = torch.randperm(96, generator=gen(9))[:40]
    got = ops.gather_normalize(x.to(device), idx)
    assert got.shape == (333, 40) and got.dtype == torch.float32 and got.device.type == device
    torch.testing.assert_close(got.cpu(), ref_gather_normalize(x, idx), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_gather_normalize_zero_rows_and_strides(device):
    x = torch.randn(64, 20, generator=gen(10)).t().contiguous().t()  # column-major view
    x[3] = 0
    idx = torch.tensor([5, 0, 5, 63])
    got = ops.gather_normalize(x.t().to(device), idx)  # (20, 64) rows, non-contiguous
    torch.testing.assert_close(got.cpu(), ref_gather_normalize(x.t(), idx), rtol=2e-6, atol=2e-7)
    assert torch.isfinite(got).all()


def test_gather_normalize_errors():
    with pytest.raises(IndexError, match=r"channel indices must lie in \[0, 8\), got values in \[0, 8\]"):
        ops.gather_normalize(torch.ones(2, 8), torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="expected \\(K\\) int64 channel indices"):
        ops.gather_normalize(torch.ones(2, 8), torch.tensor([0.0]))


# ---- nearest_neighbors -------------------------------------------------------------------

def rows(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=gen(seed)), dim=-1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tile", [1, 7, 64, 512, 100000])
def test_nearest_neighbors_matches_brute_force(device, tile):
    q, g = rows(3, 150, 24, seed=11), rows(3, 700, 24, seed=12)
    d, i = ops.nearest_neighbors(q.to(device), g.to(device), tile=tile)
    rd, ri = ref_nearest(q, g)
    assert d.shape == (3, 150) and d.dtype == torch.float32 and i.dtype == torch.int64
    torch.testing.assert_close(d.cpu().double(), rd, rtol=0, atol=1e-6)
    assert torch.equal(i.cpu(), ri)


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_neighbors_ties_go_to_the_lowest_row(device):
    g = rows(1, 40, 16, seed=13)
    g = torch.cat([g, g, g], dim=1)  # rows r, r + 40, r + 80 are identical
    q = g[:, 50:70] + 0.0  # exact copies of rows 10..29
    for tile in (1, 3, 40, 512):
        d, i = ops.nearest_neighbors(q.to(device), g.to(device), tile=tile)
        assert i.cpu().tolist() == [list(range(10, 30))], tile
        assert d.max().item() <= 1e-6


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lo,hi", [(0, 100), (100, 200), (250, 300), (37, 38), (5, 5), (0, 300), (0, 10**6)])
def test_nearest_neighbors_exclusion(device, lo, hi):
    q, g = rows(2, 30, 8, seed=14), rows(2, 300, 8, seed=15)
    for tile in (64, 512):
        d, i = ops.nearest_neighbors(q.to(device), g.to(device), tile=tile, exclude_lo=lo, exclude_hi=hi)
        rd, ri = ref_nearest(q, g, lo, min(hi, 300))
        torch.testing.assert_close(d.cpu().double(), rd, rtol=0, atol=1e-6)
        assert torch.equal(i.cpu(), ri)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nearest_neighbors_half_inputs_accumulate_in_float(device, dtype):
    q, g = rows(2, 64, 100, seed=16).to(dtype), rows(2, 1000, 100, seed=17).to(dtype)
    d, i = ops.nearest_neighbors(q.to(device), g.to(device))
    rd, _ = ref_nearest(q, g)  # from the same rounded values, in float64
    torch.testing.assert_close(d.cpu().double(), rd, rtol=0, atol=1e-5)


def test_nearest_neighbors_2d_empty_and_errors():
    q, g = rows(5, 4, seed=18), rows(9, 4, seed=19)
    d, i = ops.nearest_neighbors(q, g)
    assert d.shape == (1, 5) and i.shape == (1, 5)
    d, i = ops.nearest_neighbors(q, g[:0])
    assert torch.equal(d, torch.ones(1, 5)) and torch.equal(i, torch.full((1, 5), -1))
    with pytest.raises(ValueError, match="must agree in layers L and channels K"):
        ops.nearest_neighbors(q, rows(9, 5, seed=1))
    with pytest.raises(ValueError, match="queries are Float but the gallery is Double"):
        ops.nearest_neighbors(q, g.double())
    with pytest.raises(ValueError, match="tile must be >= 1, got 0"):
        ops.nearest_neighbors(q, g, tile=0)


# ---- upsample_blur -------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hw,HW,sigma", [((14, 14), (224, 224), 4.0), ((37, 37), (300, 420), 4.0),
                                         ((7, 5), (33, 61), 1.3), ((16, 16), (16, 16), 2.0),
                                         ((20, 30), (10, 12), 0.7), ((4, 4), (5, 7), 40.0),
                                         ((14, 14), (224, 224), 0.0), ((3, 9), (1, 1), 3.0)])
def test_upsample_blur_matches_reference(device, hw, HW, sigma):
    maps = torch.rand(3, *hw, generator=gen(20))
    got = ops.upsample_blur(maps.to(device), HW[0], HW[1], sigma)
    assert got.shape == (3, *HW) and got.dtype == torch.float32 and got.device.type == device
    torch.testing.assert_close(got.cpu().double(), ref_upsample_blur(maps, *HW, sigma), rtol=0, atol=2e-6)


def test_upsample_blur_sigma0_is_torch_bilinear():
    maps = torch.rand(2, 9, 11, generator=gen(21))
    got = ops.upsample_blur(maps, 50, 70, 0.0)
    ref = F.interpolate(maps[:, None], size=(50, 70), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_gaussian_taps():
    w = ops.gaussian_taps(2.0, 100)
    assert w.shape == (17,) and abs(w.sum().item() - 1) < 1e-15 and w.argmax().item() == 8
    assert ops.gaussian_taps(2.0, 3).shape == (7,)
    assert torch.equal(ops.gaussian_taps(0.0, 5), torch.ones(1, dtype=torch.float64))


def test_upsample_blur_errors():
    with pytest.raises(ValueError, match=r"expected \(B, h, w\) maps"):
        ops.upsample_blur(torch.ones(4, 4), 8, 8, 1.0)
    with pytest.raises(ValueError, match="expected float32 maps, got Double"):
        ops.upsample_blur(torch.ones(1, 4, 4, dtype=torch.float64), 8, 8, 1.0)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        ops.upsample_blur(torch.ones(1, 4, 4), 8, 8, -1.0)


# ---- the CUDA path -----------------------------------------------------------------------

def _every_op(device: str) -> dict:
    """Each op on small inputs on `device`: {op: () -> tuple of outputs}."""
    x = torch.randn(300, 48, generator=gen(40))
    mask = torch.rand(300, generator=gen(41)) > 0.5
    idx = torch.randperm(48, generator=gen(42))[:12]
    scores = torch.randint(0, 9, (48,), generator=gen(43)).double()
    q, g = rows(2, 40, 12, seed=44), rows(2, 300, 12, seed=45)
    maps = torch.rand(2, 7, 9, generator=gen(46))
    return {
        "channel_moments": lambda: ops.channel_moments(x.to(device), mask.to(device))[1:],
        "top_k": lambda: (ops.top_k(scores.to(device), 10),),
        "gather_normalize": lambda: (ops.gather_normalize(x.to(device), idx),),
        "nearest_neighbors": lambda: ops.nearest_neighbors(q.to(device), g.to(device), tile=64, exclude_lo=10,
                                                           exclude_hi=20),
        "upsample_blur": lambda: (ops.upsample_blur(maps.to(device), 30, 40, 1.5),),
    }


@pytest.mark.parametrize("op", ["channel_moments", "top_k", "gather_normalize", "nearest_neighbors", "upsample_blur"])
def test_cuda_path(op):
    """With a GPU: on a build with the CUDA kernels, each op runs on the GPU (its outputs stay
    there) and agrees with the CPU kernel; on a build without them, CUDA tensors are a clear
    error. Without a GPU: skipped (the CPU path carries the tests; `lake doctor` says the same)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False): the CUDA path runs on GPU machines")
    if not ops.cuda_kernels_available():
        with pytest.raises(RuntimeError, match="no CUDA kernels"):
            _every_op("cuda")[op]()
        return
    want, got = _every_op("cpu")[op](), _every_op("cuda")[op]()
    assert len(got) == len(want)
    for w, g in zip(want, got):
        assert g.device.type == "cuda" and g.dtype == w.dtype and g.shape == w.shape
        if w.dtype == torch.float64:  # moments: the same blocks, rounding inside them only
            torch.testing.assert_close(g.cpu(), w, rtol=1e-12, atol=1e-12)
        elif w.dtype.is_floating_point:
            torch.testing.assert_close(g.cpu(), w, rtol=0, atol=2e-6)
        else:
            assert torch.equal(g.cpu(), w)
