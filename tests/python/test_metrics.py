"""pylake.metrics against scikit-learn, scipy.ndimage and a slow reference AUPRO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pylake import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")
ndimage = pytest.importorskip("scipy.ndimage")


# -- references ---------------------------------------------------------------------------

def sk_f1_max(scores, labels) -> float:
    p, r, _ = sklearn_metrics.precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * p * r / (p + r)
    return float(np.nanmax(f1))


def slow_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Obviously correct: for every distinct threshold t (high to low) predict maps >= t,
    measure each region's overlap and the FPR, then integrate the PRO(FPR) curve from (0, 0)
    with the trapezoid rule up to fpr_limit, interpolating linearly there."""
    structure = np.ones((3, 3), dtype=int)
    regions = []  # (image index, boolean region mask)
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=structure)
        regions += [(i, lab == j) for j in range(1, n + 1)]
    normal = ~masks.astype(bool)
    xs, ys = [0.0], [0.0]
    for t in sorted(np.unique(maps), reverse=True):
        pred = maps >= t
        ys.append(float(np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions])))
        xs.append(float((pred & normal).sum() / normal.sum()))
    area = 0.0
    for x0, y0, x1, y1 in zip(xs, ys, xs[1:], ys[1:]):
        if x1 >= fpr_limit:
            y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0) if x1 > x0 else y0
            return (area + (fpr_limit - x0) * (y0 + y_lim) / 2) / fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    raise AssertionError("FPR never reached the limit")


def blob_maps(n: int, size: int, seed: int):
    """Smooth maps in [0, 1] with elliptic defects that the maps partly find; every third
    image is normal; some images hold two defects."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, size // 8, size // 8, generator=g)
    maps = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear").squeeze(1) * 0.5
    yy = torch.arange(size).view(1, size, 1).float()
    xx = torch.arange(size).view(1, 1, size).float()
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    boost = torch.zeros(n, size, size)
    for _ in range(2):
        cy, cx = torch.rand(n, 1, 1, generator=g) * size, torch.rand(n, 1, 1, generator=g) * size
        r = torch.rand(n, 1, 1, generator=g) * (size / 8) + 2
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
        found = torch.rand(n, 1, 1, generator=g)  # how well the map finds this defect
        masks |= d2 <= 1
        boost = torch.maximum(boost, found * torch.exp(-0.7 * d2))
    keep = (torch.arange(n) % 3 != 0).view(n, 1, 1)
    masks &= keep
    maps = (maps + 0.6 * boost * keep).clamp(0, 1)
    return maps, masks


# -- image level ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_image_metrics_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    if seed % 2 == 0:
        scores = np.round(scores, 1)  # many ties
    assert metrics.image_auroc(scores, labels) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.image_ap(scores, labels) == pytest.approx(
        sklearn_metrics.average_precision_score(labels, scores), abs=1e-12)
    assert metrics.f1_max(scores, labels) == pytest.approx(sk_f1_max(scores, labels), abs=1e-12)
    # Streaming in pieces, torch inputs, int labels: the same numbers.
    im = metrics.ImageMetrics()
    for i in range(0, n, 7):
        im.update(torch.from_numpy(scores[i:i + 7]).float(), torch.from_numpy(labels[i:i + 7].astype(np.int64)))
    r = im.compute()
    f32 = scores.astype(np.float32)
    assert r.auroc == pytest.approx(sklearn_metrics.roc_auc_score(labels, f32), abs=1e-12)
    assert r.ap == pytest.approx(sklearn_metrics.average_precision_score(labels, f32), abs=1e-12)
    assert r.f1_max == pytest.approx(sk_f1_max(f32, labels), abs=1e-12)
    assert len(im) == n


def test_degenerate_and_bad_inputs():
    s = np.array([0.2, 0.7])
    assert math.isnan(metrics.image_auroc(s, [0, 0]))
    assert math.isnan(metrics.image_auroc(s, [1, 1]))
    assert math.isnan(metrics.image_ap(s, [0, 0]))
    assert metrics.image_ap(s, [1, 1]) == 1.0
    assert math.isnan(metrics.aupro(np.random.rand(2, 5, 5), np.zeros((2, 5, 5), bool)))
    with pytest.raises(ValueError, match="labels matching the 2 scores"):
        metrics.image_auroc(s, [0, 1, 1])
    with pytest.raises(ValueError, match="finite"):
        metrics.image_auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="masks matching"):
        metrics.aupro(np.random.rand(2, 5, 5), np.zeros((2, 5, 4), bool))
    with pytest.raises(ValueError, match="lo < hi"):
        metrics.PixelMetrics(lo=1.0, hi=1.0)
    with pytest.raises(ValueError, match="both lo and hi"):
        metrics.PixelMetrics(lo=0.0)
    with pytest.raises(ValueError, match="finite"):
        metrics.PixelMetrics().update(np.full((1, 3, 3), np.inf, np.float32), np.zeros((1, 3, 3), bool))
    with pytest.raises(ValueError, match="both maps and masks"):
        metrics.evaluate(s, [0, 1], maps=np.zeros((2, 3, 3)))


# -- connected components -------------------------------------------------------------------

@pytest.mark.parametrize("shape,density", [((1, 1), 1.0), ((1, 30), 0.5), ((30, 1), 0.5), ((40, 57), 0.3),
                                           ((64, 64), 0.55), ((100, 80), 0.7), ((13, 13), 0.0)])
def test_connected_components_match_scipy(shape, density):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < density
    ours = metrics.connected_components(mask).numpy()
    want, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    np.testing.assert_array_equal(ours, want)


# -- AUPRO ------------------------------------------------------------------------------------

def test_aupro_hand_worked():
    # One 2x2 region scored 1, everything else 0: PRO = 1 at FPR = 0 -> AUPRO 1.
    mask = np.zeros((1, 10, 10), bool)
    mask[0, 2:4, 2:4] = True
    assert metrics.aupro(mask.astype(np.float32), mask) == pytest.approx(1.0)
    # Two regions (4 and 9 pixels, in different images), the first found (1.0), the second
    # scored below the background (0.0 < 0.5): (0,0) -> (0, 1/2) -> (1, 1/2) -> (1, 1) = 1/2.
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 2:4, 2:4] = True
    masks[1, 6:9, 6:9] = True
    maps = np.full((2, 10, 10), 0.5, np.float32)
    maps[0][masks[0]] = 1.0
    maps[1][masks[1]] = 0.0
    assert metrics.aupro(maps, masks) == pytest.approx(0.5)
    assert slow_aupro(maps, masks) == pytest.approx(0.5)
    # FPR reaches 0.3 between two thresholds. 1 x 20 image, region = pixels 0..3, 16 normals.
    # Region 0.9 0.9 0.6 0.6; normals 4 x 0.8, 2 x 0.6, 10 x 0.1. Curve: (0,0) -> (0, 1/2) [0.9]
    # -> (4/16, 1/2) [0.8] -> (6/16, 1) [0.6] -> (1, 1). At FPR 0.3: PRO = 1/2 + 1/2 * 0.05/0.125 = 0.7,
    # area = 0.25 * 0.5 + 0.05 * (0.5 + 0.7) / 2 = 0.155, AUPRO = 0.155 / 0.3 = 0.51666...
    line = np.array([[[0.9, 0.9, 0.6, 0.6] + [0.8] * 4 + [0.6] * 2 + [0.1] * 10]], np.float32)
    line_mask = np.arange(20).reshape(1, 1, 20) < 4
    assert metrics.aupro(line, line_mask) == pytest.approx(0.155 / 0.3)
    assert slow_aupro(line, line_mask) == pytest.approx(0.155 / 0.3)
    # A diagonal pair is one region under 8-connectivity: finding one pixel = PRO 1/2, not 1.
    diag = np.zeros((1, 4, 4), bool)
    diag[0, 1, 1] = diag[0, 2, 2] = True
    m = np.zeros((1, 4, 4), np.float32)
    m[0, 1, 1] = 1.0
    # (0,0) -> (0, 1/2) -> (1, 1): at 0.3, PRO = 0.65; area 0.3 * (0.5 + 0.65) / 2; / 0.3 = 0.575.
    assert metrics.aupro(m, diag) == pytest.approx(0.575)


@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_slow_reference(seed):
    maps, masks = blob_maps(6, 24, seed)
    maps = (maps * 20).round() / 20  # ties between region and normal pixels
    want = slow_aupro(maps.numpy(), masks.numpy())
    assert metrics.aupro(maps, masks) == pytest.approx(want, abs=1e-12)
    for limit in (0.05, 1.0):
        assert metrics.aupro(maps, masks, fpr_limit=limit) == pytest.approx(
            slow_aupro(maps.numpy(), masks.numpy(), limit), abs=1e-12)
    # Binned with bins aligned to the 0.05 grid (bin edges between the values): the same.
    pm = metrics.PixelMetrics(lo=-0.025, hi=1.025, bins=21, exact_limit=0)
    pm.update(maps, masks)
    assert not pm.is_exact
    assert pm.compute().aupro == pytest.approx(want, abs=1e-12)


# -- streaming --------------------------------------------------------------------------------

def realistic_maps(n: int, size: int, seed: int, patch: int = 14):
    """(n, size, size) float64 maps and bool masks like a patch-based detector's: random
    low-resolution patch scores, raised where a patch overlaps a defect (by a per-image
    amount: some defects are found well, some barely), upsampled bilinearly and Gaussian
    blurred (sigma 4). Defects are one or two irregular blobs (wobbly ellipses) in two of
    every three images. Unit-free scale: rescale with `into`."""
    rng = np.random.default_rng(seed)
    g = size // patch
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    maps, masks = [], []
    for i in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(0 if i % 3 == 0 else int(rng.integers(1, 3))):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            a, b = rng.uniform(0.03, 0.15, 2) * size
            t = rng.uniform(0, np.pi)
            u = ((yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)) / a
            v = (-(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)) / b
            wobble = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 20) * (size / 8)
            mask |= u**2 + v**2 + wobble <= 1
        cover = mask[:g * patch, :g * patch].reshape(g, patch, g, patch).mean((1, 3))
        low = rng.normal(size=(g, g)) * 0.35 + rng.uniform(0.6, 1.6) * cover
        up = torch.nn.functional.interpolate(torch.from_numpy(low)[None, None], size=(size, size), mode="bilinear",
                                             align_corners=False)[0, 0].numpy()
        maps.append(ndimage.gaussian_filter(up, 4.0))
        masks.append(mask)
    return np.stack(maps), np.stack(masks)


def into(maps: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """maps affinely onto [lo, hi] (float64)."""
    return lo + (maps - maps.min()) / (maps.max() - maps.min()) * (hi - lo)


def exact_pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict:
    y, s = masks.ravel(), maps.ravel().astype(np.float64)
    return {"auroc": sklearn_metrics.roc_auc_score(y, s), "ap": sklearn_metrics.average_precision_score(y, s),
            "f1_max": sk_f1_max(s, y), "aupro": metrics.aupro(torch.from_numpy(maps), torch.from_numpy(masks))}


def quantised(maps: np.ndarray, lo: float, width: float, bins: int) -> np.ndarray:
    """Bin indices of the maps (float64) on the grid lo + k width, clamped to [0, bins)."""
    return np.clip(np.floor((maps.astype(np.float64) - lo) / width), 0, bins - 1)


def error_bounds(maps, masks, q, fpr_limit: float = 0.3) -> dict:
    """The error bounds of include/lake/metrics.h, evaluated on the data and its bins q."""
    structure = np.ones((3, 3), dtype=int)
    weights = np.zeros(masks.shape)  # 1 / |region| inside each ground-truth region
    regions = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=structure)
        regions += n
        sizes = np.bincount(lab.ravel())
        weights[i] = np.where(lab > 0, 1.0 / sizes[lab], 0.0)
    qi, y = q.ravel().astype(np.int64)[::-1], masks.ravel()[::-1]
    nb = int(qi.max()) + 1
    pos = np.bincount(qi, y, nb)[::-1]  # from the top bin down
    neg = np.bincount(qi, ~y, nb)[::-1]
    dpro = np.bincount(qi, weights.ravel()[::-1], nb)[::-1] / regions
    p, n = pos / pos.sum(), neg / neg.sum()
    fpr_after = np.cumsum(n)
    c = int(np.argmax(fpr_after >= fpr_limit))  # the bin whose FPR step reaches the limit
    above = np.concatenate([[0.0], np.cumsum(pos + neg)[:-1]])
    s, yy = maps.ravel().astype(np.float64), masks.ravel()
    pr, rc, thr = sklearn_metrics.precision_recall_curve(yy, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * pr * rc / (pr + rc))[:-1]
    t_best = thr[int(np.argmax(f1))]
    b_best = nb - 1 - int(q.ravel()[np.argmax(s == t_best)])  # its bin, counted from the top
    return {"auroc": 0.5 * np.sum(p * n),
            "aupro": (0.5 * np.sum(n[:c] * dpro[:c]) + n[c] * dpro[c]) / fpr_limit,
            "ap": float(np.sum(p * (pos + neg) / (above + 1))),
            "f1_max": min(neg[b_best], 2 * pos[b_best]) / pos.sum()}


def stream(pm, maps, masks, batch: int):
    for i in range(0, len(maps), batch):
        pm.update(torch.from_numpy(np.ascontiguousarray(maps[i:i + batch])), torch.from_numpy(masks[i:i + batch]))
    return pm


def growing_ranges(maps):
    """Batches of 3 on ranges that keep leaving the one seen so far, below and above."""
    out = maps.copy()
    for j, (lo, hi) in enumerate([(0.19, 0.20), (0.185, 0.205), (0.17, 0.22), (0.10, 0.30), (0.16, 0.23),
                                  (0.05, 0.21), (0.17, 0.22), (0.12, 0.24)]):
        out[3 * j:3 * j + 3] = into(maps[3 * j:3 * j + 3], lo, hi)
    return out


REALISTIC = {
    "narrow": lambda m: into(m, 0.17, 0.22).astype(np.float32),   # a typical cosine-distance map range
    "growing": lambda m: growing_ranges(m).astype(np.float32),     # forces several range extensions
    "offset": lambda m: into(m, 1e3, 1e3 + 1e-2),                  # float64: far from 0, 1e-2 wide
}


@pytest.fixture(scope="module")
def realistic():
    return realistic_maps(24, 224, seed=0)


@pytest.fixture(scope="module")
def realistic_exact(realistic):
    """The exact metrics of every REALISTIC case (computed once per case)."""
    cache = {}

    def get(case):
        if case not in cache:
            cache[case] = exact_pixel_metrics(REALISTIC[case](realistic[0]), realistic[1])
        return cache[case]
    return get


@pytest.mark.parametrize("exact_limit", [0, 7 * 224 * 224])  # bin from the start / after 2 exact batches of 3
@pytest.mark.parametrize("case", sorted(REALISTIC))
def test_adaptive_binning_matches_exact_on_realistic_maps(realistic, realistic_exact, case, exact_limit):
    base, masks = realistic
    maps = REALISTIC[case](base)
    exact = realistic_exact(case)
    pm = metrics.PixelMetrics(exact_limit=exact_limit)
    assert pm.lo is None and pm.bin_width is None and not pm.fixed_range
    grids = []  # (lo, width) after every binned batch
    for i in range(0, len(maps), 3):
        stream(pm, maps[i:i + 3], masks[i:i + 3], 3)
        assert pm.is_exact == (pm.pixels <= exact_limit)
        if not pm.is_exact:
            grids.append((pm.lo, pm.bin_width))
    binned = pm.compute()
    assert pm.pixels == maps.size
    first_lo, first_width = grids[0]
    extensions = sum(a != b for a, b in zip(grids, grids[1:]))
    assert pm.state_bytes() < 800_000
    # The range covers everything and was only widened by powers of two on the old grid.
    ratio = pm.bin_width / first_width
    assert ratio == 2.0 ** round(math.log2(ratio))
    assert pm.lo <= maps.min() and maps.max() < pm.hi
    assert pm.hi - pm.lo == pytest.approx(pm.bins * pm.bin_width)
    assert (first_lo - pm.lo) / first_width == pytest.approx(round((first_lo - pm.lo) / first_width), abs=1e-6)
    span = float(maps.max()) - float(maps.min())
    assert span / pm.bins <= pm.bin_width < 2 * (span + first_width) / (pm.bins - 1)
    if case == "growing":
        assert ratio >= 8 and pm.lo < first_lo and extensions >= 2  # extended both ways, several doublings
    else:
        assert ratio <= 2  # the first batches span most of the range: at most one doubling
    # Binned results are exactly the metrics of the scores quantised to the final grid...
    q = quantised(maps, pm.lo, pm.bin_width, pm.bins)
    want = exact_pixel_metrics(q, masks)
    for name in want:
        assert getattr(binned, name) == pytest.approx(want[name], abs=1e-9), name
    # ... so their errors vs the exact metrics stay within the documented bounds.
    bound = error_bounds(maps, masks, q)
    errors = {name: getattr(binned, name) - exact[name] for name in exact}
    print(f"\n{case} exact_limit={exact_limit} extensions={extensions} width={pm.bin_width:.3g} "
          f"state={pm.state_bytes()} B: "
          + ", ".join(f"{k} {v:+.2e} (bound {bound[k]:.2e})" for k, v in errors.items()))
    for name, err in errors.items():
        assert abs(err) <= bound[name] * (1 + 1e-9) + 1e-12, name
    assert -bound["f1_max"] - 1e-12 <= errors["f1_max"] <= 1e-12  # binned F1-max never exceeds the exact one
    assert abs(errors["auroc"]) < 1e-5 and abs(errors["aupro"]) < 1e-5
    if exact_limit == 0:  # the exact mode of the same accumulator agrees with the references
        e = stream(metrics.PixelMetrics(exact_limit=1 << 30), maps, masks, 3).compute()
        for name in exact:
            assert getattr(e, name) == pytest.approx(exact[name], abs=1e-10), name


def test_adaptive_range_from_constant_start():
    maps, masks = realistic_maps(6, 56, seed=3)
    maps = into(maps, 0.2, 0.3).astype(np.float32)
    pm = metrics.PixelMetrics(exact_limit=0, bins=4096)
    pm.update(np.full((1, 56, 56), 0.25, np.float32), np.zeros((1, 56, 56), bool))  # no spread yet
    assert pm.bin_width > 0 and pm.lo <= 0.25 < pm.hi
    r = stream(pm, maps, masks, 2).compute()
    allm = np.concatenate([np.full((1, 56, 56), 0.25, np.float32), maps])
    allk = np.concatenate([np.zeros((1, 56, 56), bool), masks])
    assert pm.lo <= allm.min() and allm.max() < pm.hi
    want = exact_pixel_metrics(quantised(allm, pm.lo, pm.bin_width, pm.bins), allk)
    for name in want:
        assert getattr(r, name) == pytest.approx(want[name], abs=1e-9), name


def test_fixed_range_clamps_as_before(realistic, realistic_exact):
    base, masks = realistic
    maps = into(base[:9], 0.0, 1.0).astype(np.float32)
    masks = masks[:9]
    # Scores outside [lo, hi] fall into the end bins: the metrics of the clamped quantisation.
    for lo, hi, bins in [(0.0, 1.0, 10000), (0.3, 0.7, 500), (-1.0, 3.0, 64)]:
        pm = metrics.PixelMetrics(lo=lo, hi=hi, bins=bins, exact_limit=0)
        assert pm.fixed_range and (pm.lo, pm.hi, pm.bins) == (lo, hi, bins)
        assert pm.bin_width == pytest.approx((hi - lo) / bins)
        r = stream(pm, maps, masks, 4).compute()
        q = np.clip(np.floor((maps.astype(np.float64) - lo) * (bins / (hi - lo))), 0, bins - 1)
        want = exact_pixel_metrics(q, masks)
        for name in want:
            assert getattr(r, name) == pytest.approx(want[name], abs=1e-9), (lo, hi, name)
        assert (pm.lo, pm.hi) == (lo, hi)  # never extended
    # A fixed range that misses the data's spread is coarse; the adaptive default is not.
    narrow, masks_all, exact = REALISTIC["narrow"](base), realistic[1], realistic_exact("narrow")
    fixed = stream(metrics.PixelMetrics(0.0, 1.0, 10000, exact_limit=0), narrow, masks_all, 6).compute()
    adaptive = stream(metrics.PixelMetrics(exact_limit=0), narrow, masks_all, 6).compute()
    assert abs(fixed.ap - exact["ap"]) > 10 * abs(adaptive.ap - exact["ap"])


def test_pixel_metrics_exact_and_binned():
    maps, masks = blob_maps(24, 96, 5)
    y, s = masks.flatten().numpy(), maps.flatten().numpy()
    exact = metrics.PixelMetrics(exact_limit=1 << 30)
    binned = metrics.PixelMetrics(exact_limit=0)
    for i in range(0, 24, 5):
        exact.update(maps[i:i + 5], masks[i:i + 5].unsqueeze(1).numpy())  # (B, 1, H, W) numpy masks
        binned.update(maps[i:i + 5], masks[i:i + 5])
    assert exact.is_exact and not binned.is_exact
    e, q = exact.compute(), binned.compute()
    assert e.auroc == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-10)
    assert e.ap == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-10)
    assert e.f1_max == pytest.approx(sk_f1_max(s, y), abs=1e-10)
    assert e.aupro == pytest.approx(metrics.aupro(maps, masks), abs=1e-12)
    assert 0.2 < e.aupro < 0.95
    for name, tol in (("auroc", 1e-5), ("ap", 1e-3), ("f1_max", 1e-3), ("aupro", 1e-5)):
        assert abs(getattr(e, name) - getattr(q, name)) < tol, name


def test_pixel_metrics_state_is_bounded():
    maps, masks = blob_maps(8, 64, 1)
    pm = metrics.PixelMetrics(exact_limit=3 * 64 * 64)
    pm.update(maps[:2], masks[:2])
    assert pm.is_exact
    pm.update(maps[2:], masks[2:])  # crosses the limit: folded into the histograms
    assert not pm.is_exact
    size = pm.state_bytes()
    for k in range(20):
        pm.update(maps * (1 + k / 4) - k / 8, masks)  # ever wider ranges: the grid grows, the state does not
    assert pm.state_bytes() == size < 24 * pm.bins + 1000
    assert pm.pixels == 21 * 8 * 64 * 64
    # Repeating the same data leaves every metric unchanged (weights scale together).
    pm = metrics.PixelMetrics(exact_limit=0).update(maps, masks)
    once = pm.compute()
    for _ in range(5):
        pm.update(maps, masks)
    assert pm.compute().aupro == pytest.approx(once.aupro, abs=1e-12)
    assert pm.compute().auroc == pytest.approx(once.auroc, abs=1e-12)


def test_evaluate():
    maps, masks = blob_maps(9, 32, 2)
    labels = masks.flatten(1).any(1).numpy()
    scores = maps.flatten(1).max(1).values.numpy()
    out = metrics.evaluate(scores, labels, maps.numpy(), masks.numpy())
    assert set(out) == {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
                        "pixel_aupro"}
    assert out["image_auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores))
    assert out["pixel_auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(masks.flatten(), maps.flatten()))
    assert out["pixel_aupro"] == pytest.approx(metrics.aupro(maps, masks))
    r = metrics.PixelMetrics().update(maps, masks).compute()
    assert r["aupro"] == r.aupro == r[3] and dict(r)["auroc"] == r.auroc and r._fields[-1] == "aupro"
    assert set(metrics.evaluate(scores, labels)) == {"image_auroc", "image_ap", "image_f1_max"}
