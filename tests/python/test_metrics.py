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

def test_pixel_metrics_exact_and_binned():
    maps, masks = blob_maps(24, 96, 5)
    y, s = masks.flatten().numpy(), maps.flatten().numpy()
    exact = metrics.PixelMetrics(exact_limit=1 << 30)
    binned = metrics.PixelMetrics(lo=0.0, hi=1.0, bins=10000, exact_limit=0)
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
    for name in ("auroc", "ap", "f1_max", "aupro"):
        assert abs(getattr(e, name) - getattr(q, name)) < 1e-3, name


def test_pixel_metrics_state_is_bounded():
    maps, masks = blob_maps(8, 64, 1)
    pm = metrics.PixelMetrics(exact_limit=3 * 64 * 64)
    pm.update(maps[:2], masks[:2])
    assert pm.is_exact
    pm.update(maps[2:], masks[2:])  # crosses the limit: folded into the histograms
    assert not pm.is_exact
    size = pm.state_bytes()
    for _ in range(20):
        pm.update(maps, masks)
    assert pm.state_bytes() == size < 400_000
    assert pm.pixels == 21 * 8 * 64 * 64
    # Repeating the same data leaves every metric unchanged (weights scale together).
    once = metrics.PixelMetrics(exact_limit=0).update(maps, masks).compute()
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
