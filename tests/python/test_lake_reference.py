"""The LAKE reference (lake_reference.py) on its own: hand-computable cases and
invariants, so that the comparison against the library rests on a checked yardstick.
No pylake here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clip_factory
import lake_reference as R
from conftest import max_err


# --------------------------------------------------------------------------
# options, prompts
# --------------------------------------------------------------------------

@pytest.mark.parametrize("depth,expect", [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (4, [1, 2, 3, 4]),
                                          (12, [3, 6, 9, 12]), (24, [6, 12, 18, 24])])
def test_default_layers(depth, expect):
    assert R.default_layers(depth) == expect


def test_resolve_layers():
    assert R.resolve_layers(None, 3) == [1, 2, 3]
    assert R.resolve_layers([-1], 3) == [3]
    assert R.resolve_layers([2, -1, 1], 3) == [2, 3, 1]  # tap order kept
    for bad in ([0], [4], [-4], [1, -3], []):
        with pytest.raises(ValueError):
            R.resolve_layers(bad, 3)


def test_default_prompts():
    normal, anomalous = R.default_prompts("grid", False), R.default_prompts("grid", True)
    assert len(normal) == 6 * 7 and len(anomalous) == 5 * 7
    assert normal[0] == "a photo of a flawless grid."
    assert normal[1] == "a cropped photo of the flawless grid."          # templates inner
    assert normal[7] == "a photo of a perfect grid."                     # states outer
    assert normal[-1] == "a photo of a grid without damage for anomaly detection."
    assert anomalous[0] == "a photo of a damaged grid."
    assert anomalous[-1] == "a photo of a grid with damage for anomaly detection."
    assert len(set(normal)) == len(normal) and not set(normal) & set(anomalous)


# --------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------

def test_top_k_tie_breaking_by_lower_index():
    s = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0, 0.0, 2.0], dtype=torch.float64)
    assert R.top_k_channels(s, 1).tolist() == [1]
    assert R.top_k_channels(s, 2).tolist() == [1, 2]
    assert R.top_k_channels(s, 3).tolist() == [1, 2, 4]
    assert R.top_k_channels(s, 4).tolist() == [1, 2, 3, 4]      # 3 beats 6 (both 2.0)
    assert R.top_k_channels(s, 5).tolist() == [1, 2, 3, 4, 6]
    assert R.top_k_channels(s, 7).tolist() == list(range(7))
    assert R.top_k_channels(torch.zeros(5), 2).tolist() == [0, 1]
    assert R.top_k_channels(s, 3).dtype == torch.int64
    with pytest.raises(ValueError):
        R.top_k_channels(s, 8)


def test_channel_stats_match_numpy_two_pass():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 7)) * [1, 2, 3, 4, 5, 6, 7] + 1e4).astype(np.float32)
    mean, var = R.channel_stats(torch.from_numpy(x))
    x64 = x.astype(np.float64)
    np_mean = x64.mean(0)
    np_var = ((x64 - np_mean) ** 2).mean(0)  # two-pass, population
    assert mean.dtype == torch.float64 and var.dtype == torch.float64
    np.testing.assert_allclose(mean.numpy(), np_mean, rtol=1e-14)
    np.testing.assert_allclose(var.numpy(), np_var, rtol=1e-10)
    np.testing.assert_allclose(var.numpy(), np.var(x64, axis=0), rtol=1e-10)


def test_streaming_float64_stats_equal_numpy_two_pass_variance():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1000, 5)) * 3 + 1e5).astype(np.float32)
    x64 = x.astype(np.float64)
    np_var = np.var(x64, axis=0)  # numpy: two-pass, ddof=0
    for sizes in ([1000], [1] * 10 + [990], [7, 300, 13, 680], [333, 333, 334]):
        s, start = R.StreamingStats(), 0
        for n in sizes:
            s.update(torch.from_numpy(x[start:start + n]).reshape(n, 1, 5))  # any leading shape
            start += n
        assert s.count == 1000
        np.testing.assert_allclose(s.mean.numpy(), x64.mean(0), rtol=1e-14)
        np.testing.assert_allclose(s.variance().numpy(), np_var, rtol=1e-9)
    a, b = R.StreamingStats().update(torch.from_numpy(x[:400])), R.StreamingStats().update(torch.from_numpy(x[400:]))
    a.merge(b).merge(R.StreamingStats())
    np.testing.assert_allclose(a.variance().numpy(), np_var, rtol=1e-9)
    # the naive full-matrix statistics agree with the streaming ones
    np.testing.assert_allclose(R.channel_stats(torch.from_numpy(x))[1].numpy(), a.variance().numpy(), rtol=1e-9)


def test_sensitivity_scores():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    x[:, 2] = 0.0  # constant zero: cv = 0 / 1e-12 = 0
    x[:, 3] += 10.0
    t = torch.from_numpy(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(R.sensitivity_scores(t, "variance").numpy(), x64.var(0), rtol=1e-10)
    n = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    np.testing.assert_allclose(R.sensitivity_scores(t, "normalized_variance").numpy(), n.var(0), rtol=1e-8)
    cv = np.sqrt(x64.var(0)) / np.maximum(np.abs(x64.mean(0)), 1e-12)
    np.testing.assert_allclose(R.sensitivity_scores(t, "cv").numpy(), cv, rtol=1e-8)
    assert R.sensitivity_scores(t, "cv")[2].item() == 0.0
    # constant non-zero channel never selected first by variance; a spread one is
    assert R.top_k_channels(R.sensitivity_scores(t, "variance"), 1).item() != 2


def test_random_channels_depend_on_the_seed_only():
    a = R.random_channels(128, 16, seed=3)
    assert a.tolist() == sorted(set(a.tolist())) and len(a) == 16
    assert 0 <= a.min() and a.max() < 128
    assert torch.equal(a, R.random_channels(128, 16, seed=3))
    assert not torch.equal(a, R.random_channels(128, 16, seed=4))


# --------------------------------------------------------------------------
# visual distance
# --------------------------------------------------------------------------

def test_visual_distance_hand_computed():
    g = R.l2_normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    q = torch.tensor([[2.0, 0.0, 0.0],     # in the gallery (scale-free): 0
                      [-1.0, 0.0, 0.0],    # opposite of row 0, orthogonal to row 1: 0.5
                      [0.0, 0.0, 5.0],     # orthogonal to both: 0.5
                      [1.0, 1.0, 0.0],     # 45 degrees from both: (1 - cos45) / 2
                      [-1.0, -1.0, 0.0]])  # 135 degrees from both
    d = R.visual_distances(q, g)
    expect = [0.0, 0.5, 0.5, (1 - math.sqrt(0.5)) / 2, (1 + math.sqrt(0.5)) / 2]
    assert d.dtype == torch.float64
    assert max_err(d, torch.tensor(expect)) <= 1e-7
    # a single-row gallery: the opposite vector is at distance 1
    assert abs(R.visual_distances(torch.tensor([[0.0, -3.0, 0.0]]), g[1:]).item() - 1.0) <= 1e-7


def test_visual_distance_gallery_containing_the_query_is_zero_and_all_in_unit_interval():
    gen = torch.Generator().manual_seed(4)
    raw = torch.randn(200, 16, generator=gen) * 3 + 0.5
    g = R.l2_normalize(raw)
    d_in = R.visual_distances(raw[50:80], g)
    assert d_in.abs().max().item() <= 1e-7
    q = torch.randn(500, 16, generator=gen)
    d = R.visual_distances(q, g)
    assert (d >= 0).all() and (d <= 1).all() and (d > 1e-3).all()
    # the minimum really is over the full matrix
    full = (1 - R.l2_normalize(q).double() @ g.double().T) / 2
    assert max_err(d, full.min(1).values) <= 1e-12


# --------------------------------------------------------------------------
# map: upsample, blur, pooling, quantile
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sigma,H,W,taps", [(4.0, 64, 64, 33), (2.0, 32, 40, 17), (0.5, 10, 10, 5),
                                            (4.0, 10, 20, 19), (4.0, 5, 50, 9), (1.0, 2, 2, 3)])
def test_blur_kernel(sigma, H, W, taps):
    w = R.gaussian_kernel1d(sigma, H, W)
    assert w.dtype == torch.float32 and w.numel() == taps
    assert abs(w.double().sum().item() - 1.0) <= 1e-6
    assert torch.equal(w, w.flip(0))
    assert int(w.argmax()) == taps // 2
    r = taps // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    e = torch.exp(-x * x / (2 * sigma * sigma))
    assert max_err(w, e / e.sum()) <= 1e-7


def test_blur_of_a_constant_map_is_constant():
    for sigma in (0.7, 2.0, 4.0):
        m = torch.full((2, 24, 40), 0.37)
        b = R.gaussian_blur(m, sigma)
        assert b.shape == m.shape and max_err(b, m) <= 1e-6


def test_blur_zero_sigma_is_identity():
    m = torch.randn(2, 9, 11)
    assert torch.equal(R.gaussian_blur(m, 0.0), m)


def test_blur_of_an_impulse_is_the_kernel_outer_product():
    m = torch.zeros(1, 41, 41)
    m[0, 20, 20] = 1.0
    w = R.gaussian_kernel1d(3.0, 41, 41)  # 25 taps: away from the borders
    b = R.gaussian_blur(m, 3.0)[0]
    expect = torch.zeros(41, 41)
    expect[8:33, 8:33] = torch.outer(w, w)
    assert max_err(b, expect) <= 1e-7


def test_blur_matches_reflect_pad_and_conv():
    """Cross-check with torch's own reflect padding and separable convolutions."""
    gen = torch.Generator().manual_seed(5)
    m = torch.rand(3, 1, 20, 28, generator=gen)
    sigma = 4.0
    w = R.gaussian_kernel1d(sigma, 20, 28)  # r = 16, clamped to 19 -> 16
    r = w.numel() // 2
    x = F.conv2d(F.pad(m, (r, r, 0, 0), mode="reflect"), w.reshape(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), w.reshape(1, 1, -1, 1))
    assert max_err(R.gaussian_blur(m, sigma), x) <= 1e-6
    # clamped radius: a 6-pixel-high map, sigma 4 -> r = min(16, 5)
    m = torch.rand(1, 1, 6, 30, generator=gen)
    w = R.gaussian_kernel1d(sigma, 6, 30)
    r = w.numel() // 2
    assert r == 5
    x = F.conv2d(F.pad(m, (r, r, 0, 0), mode="reflect"), w.reshape(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), w.reshape(1, 1, -1, 1))
    assert max_err(R.gaussian_blur(m, sigma), x) <= 1e-6


def test_reflect_padding_excludes_the_edge_sample():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    w = torch.tensor([1.0, 0.0, 0.0])  # out[i] = x[i - 1] (correlation), reflected at 0: x[1]
    assert R._filter_last_dim(x, w).tolist() == [[1.0, 0.0, 1.0, 2.0]]
    w = torch.tensor([0.0, 0.0, 1.0])  # out[i] = x[i + 1], reflected at the end: x[2]
    assert R._filter_last_dim(x, w).tolist() == [[1.0, 2.0, 3.0, 2.0]]


def test_upsample_is_bilinear_half_pixel():
    v = torch.tensor([[0.0, 1.0, 2.0, 3.0]])        # a 2 x 2 grid
    up = R.upsample(v, 2, 2, 4, 4)
    assert up.shape == (1, 4, 4)
    # align_corners=False: output pixel centres at (i + 0.5) / 2 - 0.5 in grid units
    assert up[0, 0].tolist() == [0.0, 0.25, 0.75, 1.0]
    assert up[0, :, 0].tolist() == [0.0, 0.5, 1.5, 2.0]
    const = R.upsample(torch.full((2, 16), 0.25), 4, 4, 40, 56)
    assert const.shape == (2, 40, 56) and max_err(const, torch.full((2, 40, 56), 0.25)) <= 1e-7


def test_pooling():
    m = torch.arange(400, dtype=torch.float32).reshape(1, 20, 20)
    assert R.pool(m, "max").item() == 399.0
    assert R.pool(m, "top1pct").item() == pytest.approx((399 + 398 + 397 + 396) / 4)  # ceil(4.0)
    m = torch.arange(150, dtype=torch.float32).reshape(1, 10, 15)
    assert R.pool(m, "top1pct").item() == pytest.approx((149 + 148) / 2)               # ceil(1.5)
    m = torch.rand(3, 7, 9)
    assert torch.equal(R.pool(m, "top1pct"), m.reshape(3, -1).max(1).values)          # ceil(0.63)


@pytest.mark.parametrize("n", [1, 2, 5, 100, 1001])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 0.99, 1.0])
def test_quantile_matches_numpy(n, q):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    assert R.quantile(torch.from_numpy(x), q) == pytest.approx(float(np.quantile(x.astype(np.float64), q)),
                                                               rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------
# backbone taps
# --------------------------------------------------------------------------

def test_taps_match_the_factory_hooks(tiny_openclip):
    images = clip_factory.example_images(2, 32, seed=30)
    ref = clip_factory.reference_outputs(tiny_openclip, images, None, [1, 2, 3])
    res = R.backbone_taps(tiny_openclip, images, 32, [1, 2, 3], "residual", 3)
    mlp = R.backbone_taps(tiny_openclip, images, 32, [2, 1], "mlp", 1)
    assert res["grid"] == 4
    for l in (1, 2, 3):
        assert torch.equal(res["tokens"][l], ref[f"resid_{l}"])
    for l in (1, 2):
        assert torch.equal(mlp["tokens"][l], ref[f"mlp_{l}"])
    assert max_err(res["projected"], ref["projected"]) <= 1e-6
    v = tiny_openclip.visual
    with torch.no_grad():
        assert max_err(mlp["projected"], v.ln_post(ref["resid_1"]) @ v.proj) <= 1e-6


def test_input_resize(tiny_openclip):
    x = clip_factory.example_images(1, 32, seed=31)
    assert R.resize_input(x, 32) is x
    y = clip_factory.example_images(2, 64, seed=32)
    r = R.resize_input(y, 32)
    assert r.shape == (2, 3, 32, 32)
    assert max_err(r, F.interpolate(y, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)) == 0
    # a 64 x 64 input at image_size 32: the taps are those of the resized image
    a = R.backbone_taps(tiny_openclip, y, 32, [2], "residual", None)["tokens"][2]
    b = R.backbone_taps(tiny_openclip, r, 32, [2], "residual", None)["tokens"][2]
    assert torch.equal(a, b)
    z = clip_factory.example_images(1, 40, seed=33)[..., :, :40]
    z = torch.cat([z, z[..., :16]], dim=-1)  # 40 x 56
    assert R.resize_input(z, 32).shape == (1, 3, 32, 32)


def test_model_for_another_image_size(tiny_openclip):
    assert R.model_for_size(tiny_openclip, 32) is tiny_openclip
    m64 = R.model_for_size(tiny_openclip, 64)
    assert m64.visual.positional_embedding.shape == (1 + 64, 128)
    assert torch.equal(m64.visual.positional_embedding[0], tiny_openclip.visual.positional_embedding[0])
    expect = clip_factory.with_image_size(tiny_openclip, 64)  # upsampling: no antialias, as here
    assert max_err(m64.visual.positional_embedding, expect.visual.positional_embedding) == 0
    x = clip_factory.example_images(1, 64, seed=34)
    taps = R.backbone_taps(tiny_openclip, x, 64, [1], "residual", 1)
    assert taps["grid"] == 8 and taps["tokens"][1].shape == (1, 64, 128)
    assert tiny_openclip.visual.positional_embedding.shape == (17, 128)  # untouched
    assert R.default_image_size(tiny_openclip) == 32
    assert R.default_image_size(clip_factory.make_clip("tiny14")) == 518


def test_text_embeddings(tiny_openclip):
    from open_clip.tokenizer import tokenize

    n, a = ["a photo of a flawless grid."], ["a photo of a damaged grid.", "a photo of a broken grid."]
    t = R.text_embeddings(tiny_openclip, n, a)
    assert t.shape == (2, 64) and t.dtype == torch.float32
    assert max_err(t.norm(dim=1), torch.ones(2)) <= 1e-6
    with torch.no_grad():
        e = F.normalize(tiny_openclip.encode_text(tokenize(n + a)), dim=-1)
    assert max_err(t[0], e[0]) <= 1e-6
    assert max_err(t[1], F.normalize(e[1:].mean(0), dim=0)) <= 1e-6


def test_semantic_scores_hand_computed():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    proj = torch.tensor([[[3.0, 0.0], [0.0, 0.5], [1.0, 1.0], [1.0, 0.99]]])
    t = R.semantic_scores(proj, text)
    c = 0.99 / math.sqrt(1 + 0.99 ** 2) - 1 / math.sqrt(1 + 0.99 ** 2)
    expect = [1 / (1 + math.exp(100)), 1 / (1 + math.exp(-100)), 0.5, 1 / (1 + math.exp(-100 * c))]
    assert max_err(t[0], torch.tensor(expect, dtype=torch.float64)) <= 1e-5  # z is normalised in float32


# --------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def normal_images():
    return clip_factory.example_images(3, 32, seed=40)


def test_fit_layout(tiny_openclip, normal_images):
    ref = R.ReferenceLAKE(tiny_openclip, k=16, class_name="grid").fit(normal_images)
    assert ref.layers == [1, 2, 3] and ref.semantic_layer == 3 and ref.image_size == 32 and ref.shots == 3
    taps = R.backbone_taps(tiny_openclip, normal_images, 32, [1, 2, 3], "residual", None)
    for nr, g, l in zip(ref.neurons, ref.galleries, [1, 2, 3]):
        assert nr["layer"] == l
        idx = nr["indices"]
        assert idx.dtype == torch.int64 and idx.shape == (16,) and torch.all(idx[1:] > idx[:-1])
        assert g.shape == (3 * 16, 16) and g.dtype == torch.float32
        assert max_err(g.norm(dim=1), torch.ones(48)) <= 1e-6
        tok = taps["tokens"][l]
        # image-major rows: row 16 * i + p is image i, patch p
        assert max_err(g[16 * 2 + 5], F.normalize(tok[2, 5, idx], dim=0)) <= 1e-7
        flat = tok.reshape(-1, 128).double()
        var = flat.var(0, unbiased=False)
        assert torch.equal(idx, var.argsort(descending=True)[:16].sort().values)
        assert max_err(nr["scores"], var[idx]) <= 1e-12
        assert max_err(nr["mean"], flat.mean(0)[idx]) <= 1e-12
        assert max_err(nr["std"], var[idx].sqrt()) <= 1e-12
        for key in ("scores", "mean", "std"):
            assert nr[key].dtype == torch.float64


def test_scoring_the_fit_images_gives_zero_visual_deviation(tiny_openclip, normal_images):
    ref = R.ReferenceLAKE(tiny_openclip, k=16, text_weight=0.0, blur_sigma=0).fit(normal_images)
    s = ref.patch_scores(normal_images)
    assert s["v"].abs().max().item() <= 1e-7
    p = ref.score(normal_images)
    assert p["anomaly_map"].abs().max().item() <= 1e-6 and p["pred_score"].abs().max().item() <= 1e-6
    # leave-one-out: the own rows are gone, the deviation is positive
    loo = ref.patch_scores(normal_images, exclude_image=[0, 1, 2])
    assert (loo["v"] > 1e-4).all()
    # removing image 1's rows by hand gives the same deviation for image 1
    keep = [r for r in range(48) if not 16 <= r < 32]
    for i, l in enumerate(ref.layers):
        tok = R.backbone_taps(tiny_openclip, normal_images[1:2], 32, [l], "residual", None)["tokens"][l][0]
        d = R.visual_distances(tok[:, ref.neurons[i]["indices"]], ref.galleries[i][keep])
        assert (d > 0).all()
    th_img, th_pix = ref.calibrate(normal_images, 0.5, leave_one_out=True)
    p = ref.score(normal_images, exclude_image=[0, 1, 2])
    assert th_img == pytest.approx(float(np.quantile(p["pred_score"].double().numpy(), 0.5)), rel=1e-12)
    assert th_pix == pytest.approx(float(np.quantile(p["anomaly_map"].double().numpy(), 0.5)), rel=1e-12)


def test_fusion_and_ranges(tiny_openclip, normal_images):
    test = clip_factory.example_images(2, 32, seed=41)
    refs = {w: R.ReferenceLAKE(tiny_openclip, k=16, text_weight=w, blur_sigma=0).fit(normal_images)
            for w in (0.0, 0.3, 1.0)}
    s = {w: r.patch_scores(test) for w, r in refs.items()}
    assert max_err(s[0.0]["A"], s[0.0]["v"]) == 0
    assert max_err(s[1.0]["A"], s[1.0]["t"]) == 0
    assert max_err(s[0.3]["A"], 0.7 * s[0.3]["v"] + 0.3 * s[0.3]["t"]) <= 1e-15
    for key in ("v", "t"):
        assert ((s[0.3][key] >= 0) & (s[0.3][key] <= 1)).all()
    assert (s[0.3]["v"] > 0).all()
    p = refs[0.3].score(test)
    assert p["anomaly_map"].shape == (2, 32, 32)
    # no blur: bilinear upsampling is a convex combination of the patches (the corner
    # pixels take the corner patches' values), the max pooling the map's maximum
    A = s[0.3]["A"]
    amap = p["anomaly_map"]
    assert (amap.reshape(2, -1).max(1).values <= A.max(1).values + 1e-6).all()
    assert (amap.reshape(2, -1).min(1).values >= A.min(1).values - 1e-6).all()
    assert max_err(amap[:, 0, 0], A[:, 0]) <= 1e-6 and max_err(amap[:, -1, -1], A[:, -1]) <= 1e-6
    assert torch.equal(p["pred_score"], amap.reshape(2, -1).max(1).values)


def test_zero_shot_is_the_semantic_branch(tiny_openclip):
    ref = R.ReferenceLAKE(tiny_openclip, class_name="grid").fit(torch.empty(0, 3, 32, 32))
    assert ref.shots == 0 and ref.neurons == [] and ref.galleries == []
    test = clip_factory.example_images(2, 32, seed=42)
    p = ref.score(test)
    assert p["visual_map"] is None and torch.equal(p["anomaly_map"], p["semantic_map"])
    assert torch.equal(p["patch"]["A"], p["patch"]["t"])


def test_non_square_input_maps(tiny_openclip, normal_images):
    ref = R.ReferenceLAKE(tiny_openclip, k=16).fit(normal_images)
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(43))
    p = ref.score(x)
    assert p["anomaly_map"].shape == (2, 40, 56) and p["visual_map"].shape == (2, 40, 56)
    s = ref.patch_scores(x)
    assert max_err(p["anomaly_map"], R.gaussian_blur(R.upsample(s["A"], 4, 4, 40, 56), 4.0)) == 0


def test_explain(tiny_openclip, normal_images):
    ref = R.ReferenceLAKE(tiny_openclip, k=16).fit(normal_images)
    image = clip_factory.example_images(1, 32, seed=44)[0]
    every = ref.explain(image, top=None)
    assert len(every) == 3 * 16
    devs = [e["deviation"] for e in every]
    assert devs == sorted(devs, reverse=True)
    top = ref.explain(image, top=5)
    assert [(e["layer"], e["channel"]) for e in top] == [(e["layer"], e["channel"]) for e in every[:5]]
    taps = R.backbone_taps(tiny_openclip, image[None], 32, [1, 2, 3], "residual", None)
    for e in top:
        i = ref.layers.index(e["layer"])
        j = ref.neurons[i]["indices"].tolist().index(e["channel"])
        mean, std = ref.neurons[i]["mean"][j].item(), ref.neurons[i]["std"][j].item()
        z = (taps["tokens"][e["layer"]][0, :, e["channel"]].double() - mean).abs() / std
        assert e["deviation"] == pytest.approx(z.max().item(), rel=1e-12)
        assert e["map"].shape == (32, 32)
        assert e["map"].max().item() <= e["deviation"] + 1e-5
        assert max_err(e["map"], R.upsample(z[None], 4, 4, 32, 32)[0]) <= 1e-6
    # Samuelson's inequality: a fit patch's z-score is at most sqrt(k*N - 1)
    for e in ref.explain(normal_images[0], top=None):
        assert e["deviation"] <= math.sqrt(3 * 16 - 1) + 1e-6


def test_explain_ties_break_by_layer_then_channel(tiny_openclip, normal_images):
    ref = R.ReferenceLAKE(tiny_openclip, k=4, layers=[2, 1]).fit(normal_images)
    for nr in ref.neurons:  # an infinite std: every deviation is exactly 0
        nr["std"] = torch.full_like(nr["std"], math.inf)
    rows = ref.explain(normal_images[0], top=None)
    assert all(r["deviation"] == 0.0 for r in rows)
    keys = [(r["layer"], r["channel"]) for r in rows]
    assert keys == sorted(keys) and keys[0][0] == 1  # lower layer NUMBER first, whatever the tap order
    assert [(r["layer"], r["channel"]) for r in ref.explain(normal_images[0], top=3)] == keys[:3]


def test_dead_units_tie_at_zero_and_break_by_lower_index(tiny_openclip, normal_images):
    live = {1: list(range(500, 512)), 2: [3, 7] + list(range(100, 110))}
    dead = {l: [u for u in range(512) if u not in v] for l, v in live.items()}
    m = R.with_dead_mlp_units(tiny_openclip, dead)
    taps = R.backbone_taps(m, normal_images, 32, [1, 2], "mlp", None)
    for l in (1, 2):
        assert torch.all(taps["tokens"][l][..., dead[l]] == 0)
        assert (taps["tokens"][l][..., live[l]].double().var(dim=(0, 1)) > 0).all()
    for score in ("variance", "normalized_variance", "cv"):
        ref = R.ReferenceLAKE(m, k=20, kind="mlp", layers=[2, 1], score=score).fit(normal_images)
        idx = {n["layer"]: n["indices"].tolist() for n in ref.neurons}
        assert idx[1] == list(range(8)) + list(range(500, 512)), score
        assert idx[2] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] + list(range(100, 110)), score
    ref = R.ReferenceLAKE(m, k=20, kind="mlp", layers=[2, 1]).fit(normal_images)
    rows = ref.explain(clip_factory.example_images(1, 32, seed=45), top=None)
    zero = [(r["layer"], r["channel"]) for r in rows if r["deviation"] == 0.0]
    assert zero == [(1, c) for c in range(8)] + [(2, c) for c in (0, 1, 2, 4, 5, 6, 8, 9)]
