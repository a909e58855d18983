"""pylake.NormalityModel against the independent pure-torch reference (lake_reference.py)
on the tiny random-weight CLIP: neurons, galleries, text embeddings, maps, scores,
explain, calibrate (max abs difference <= 1e-4), plus determinism (batch size, threads)
and the properties of the seeded random selection."""

from __future__ import annotations

import threading

import pytest
import torch

import clip_factory
import lake_reference as R
import pylake
from conftest import max_err

TOL = 1e-4
REF_OPTIONS = ("layers", "k", "score", "seed", "kind", "image_size", "text_weight", "class_name",
               "normal_prompts", "anomaly_prompts", "semantic_layer", "pooling", "blur_sigma")


@pytest.fixture(scope="module")
def lib_clip(fixtures_dir):
    return pylake.load_clip(fixtures_dir / "tiny_state_dict.pt")


def images(n, h=32, w=None, seed=0):
    w = h if w is None else w
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


NORMAL3 = images(3, seed=50)
TEST2 = images(2, seed=51)


def build(lib_clip, ref_clip, normal, **options):
    """The library's and the reference's models, fitted on the same normal images. For
    score="random" the reference takes the library's indices (its RNG is its own)."""
    lib = pylake.NormalityModel(lib_clip, **options)
    lib.fit(normal)
    ref = R.ReferenceLAKE(ref_clip, **{k: v for k, v in options.items() if k in REF_OPTIONS})
    indices = None
    if options.get("score") == "random" and normal.shape[0] > 0:
        indices = [torch.as_tensor(n.indices) for n in lib.neurons]
    ref.fit(normal, indices=indices)
    return lib, ref


def close(a, b, tol=TOL):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = max_err(a, b)
    assert err <= tol, f"max abs difference {err:.3g} > {tol}"


def assert_same_model(lib, ref, random_score=False):
    assert list(lib.layers) == ref.layers
    assert lib.image_size == ref.image_size
    assert lib.semantic_layer == ref.semantic_layer
    assert list(lib.normal_prompts) == ref.normal_prompts
    assert list(lib.anomaly_prompts) == ref.anomaly_prompts
    assert lib.shots == ref.shots
    te = lib.text_embeddings
    assert te.dtype == torch.float32
    close(te, ref.text)
    assert len(lib.neurons) == len(ref.neurons)
    for got, want in zip(lib.neurons, ref.neurons):
        assert got.layer == want["layer"]
        idx = torch.as_tensor(got.indices)
        assert idx.dtype == torch.int64
        assert torch.equal(idx, want["indices"]), (got.layer, idx.tolist(), want["indices"].tolist())
        for key in ("scores", "mean", "std"):
            assert torch.as_tensor(got[key]).dtype == torch.float64, key
        if not random_score:
            # relative for large scores (cv = std / |mean| can be huge)
            s, w = torch.as_tensor(got.scores), want["scores"]
            assert ((s - w).abs() <= TOL * w.abs().clamp_min(1.0)).all(), (s, w)
        close(got.mean, want["mean"])
        close(got.std, want["std"])
    assert len(lib.galleries) == len(ref.galleries)
    for got, want in zip(lib.galleries, ref.galleries):
        assert got.dtype == torch.float32
        close(got, want)


def assert_same_prediction(p, r, branches=True):
    B, H, W = r["anomaly_map"].shape
    assert p.pred_score.shape == (B,) and p.anomaly_map.shape == (B, H, W)
    close(p.pred_score, r["pred_score"])
    close(p.anomaly_map, r["anomaly_map"])
    if branches:
        close(p.semantic_map, r["semantic_map"])
        if r["visual_map"] is not None:
            close(p.visual_map, r["visual_map"])


# --------------------------------------------------------------------------
# fit + score, option by option
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shots", [1, 3])
def test_default_options(lib_clip, tiny_openclip, shots):
    normal = images(shots, seed=60 + shots)
    lib, ref = build(lib_clip, tiny_openclip, normal, class_name="grid")
    assert list(lib.layers) == [1, 2, 3] and lib.image_size == 32 and lib.semantic_layer == 3
    assert all(len(n.indices) == 100 for n in lib.neurons)
    assert all(g.shape == (shots * 16, 100) for g in lib.galleries)
    assert lib.text_embeddings.shape == (2, 64)
    assert_same_model(lib, ref)
    p = lib.score(TEST2, with_branches=True)
    assert p.pred_label is None and p.pred_mask is None
    assert_same_prediction(p, ref.score(TEST2))


CASES = {
    "variance_k16": dict(k=16),
    "mlp": dict(kind="mlp", k=16),
    "mlp_k100": dict(kind="mlp"),
    "normalized_variance": dict(score="normalized_variance", k=16),
    "cv": dict(score="cv", k=16),
    "random": dict(score="random", k=16, seed=7),
    "text_weight_0": dict(k=16, text_weight=0.0),
    "text_weight_0.5": dict(k=16, text_weight=0.5),
    "top1pct": dict(k=16, pooling="top1pct"),
    "blur_0": dict(k=16, blur_sigma=0.0),
    "blur_2": dict(k=16, blur_sigma=2.0),
    "layers_and_semantic_layer": dict(k=16, layers=[1, -1], semantic_layer=1),
    "prompts": dict(k=16, normal_prompts=["a photo of a good grid."],
                    anomaly_prompts=["a photo of a bad grid.", "a cracked grid."]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_options_match_the_reference(lib_clip, tiny_openclip, case):
    options = dict(class_name="grid", **CASES[case])
    lib, ref = build(lib_clip, tiny_openclip, NORMAL3, **options)
    assert_same_model(lib, ref, random_score=options.get("score") == "random")
    assert_same_prediction(lib.score(TEST2, with_branches=True), ref.score(TEST2))


def test_non_square_input(lib_clip, tiny_openclip):
    test = images(2, 40, 56, seed=52)
    # fit at the backbone's size, score non-square
    lib, ref = build(lib_clip, tiny_openclip, NORMAL3, k=16, class_name="grid")
    p = lib.score(test, with_branches=True)
    assert p.anomaly_map.shape == (2, 40, 56) and p.visual_map.shape == (2, 40, 56)
    assert_same_prediction(p, ref.score(test))
    # fit on non-square images too, top-1 % pooling (ceil(22.4) = 23 pixels)
    lib, ref = build(lib_clip, tiny_openclip, images(3, 40, 56, seed=53), k=16, pooling="top1pct")
    assert_same_model(lib, ref)
    assert_same_prediction(lib.score(test, with_branches=True), ref.score(test))


def test_input_size_different_from_image_size(lib_clip, tiny_openclip):
    normal, test = images(3, 64, seed=54), images(2, 64, seed=55)
    lib, ref = build(lib_clip, tiny_openclip, normal, k=16, image_size=32, class_name="grid")
    assert lib.image_size == 32
    assert_same_model(lib, ref)
    p = lib.score(test, with_branches=True)
    assert p.anomaly_map.shape == (2, 64, 64)
    assert_same_prediction(p, ref.score(test))


def test_zero_shot(lib_clip, tiny_openclip):
    lib, ref = build(lib_clip, tiny_openclip, torch.empty(0, 3, 32, 32), class_name="grid")
    assert lib.shots == 0
    assert len(lib.neurons) == 0 and len(lib.galleries) == 0
    close(lib.text_embeddings, ref.text)
    p = lib.score(TEST2, with_branches=True)
    r = ref.score(TEST2)
    close(p.pred_score, r["pred_score"])
    close(p.anomaly_map, r["anomaly_map"])
    if p.semantic_map is not None:
        close(p.semantic_map, r["semantic_map"])
    # A = t: the text weight plays no part
    lib2 = pylake.NormalityModel(lib_clip, class_name="grid", text_weight=0.5)
    lib2.fit(torch.empty(0, 3, 32, 32))
    close(lib2.score(TEST2).anomaly_map, r["anomaly_map"])


@pytest.fixture(scope="module")
def dead_unit_models(tmp_path_factory, tiny_openclip):
    """The tiny model with MLP hidden units that are exactly 0 whatever the input (block 1:
    all but 500..511; block 2: all but 3, 7, 100..109): their variance / cv / normalised
    variance and every explain deviation are exactly 0, so the top-K and explain must
    break these ties (lower index; lower layer, then lower channel)."""
    live = {1: list(range(500, 512)), 2: [3, 7] + list(range(100, 110))}
    dead = {l: [u for u in range(512) if u not in v] for l, v in live.items()}
    ref_clip = R.with_dead_mlp_units(tiny_openclip, dead)
    path = tmp_path_factory.mktemp("dead_units") / "tiny_dead_units.pt"
    clip_factory.save_state_dict(ref_clip, path)
    return pylake.load_clip(path), ref_clip


@pytest.mark.parametrize("score", ["variance", "normalized_variance", "cv"])
def test_top_k_ties_break_by_lower_index(dead_unit_models, score):
    lib_clip_d, ref_clip_d = dead_unit_models
    lib, ref = build(lib_clip_d, ref_clip_d, NORMAL3, k=20, kind="mlp", layers=[1, 2], score=score)
    idx = {n.layer: torch.as_tensor(n.indices).tolist() for n in lib.neurons}
    assert idx[1] == list(range(8)) + list(range(500, 512))
    assert idx[2] == list(range(10)) + list(range(100, 110))
    assert_same_model(lib, ref)
    assert_same_prediction(lib.score(TEST2, with_branches=True), ref.score(TEST2))


def test_explain_ties_break_by_layer_then_channel(dead_unit_models):
    lib_clip_d, ref_clip_d = dead_unit_models
    lib, ref = build(lib_clip_d, ref_clip_d, NORMAL3, k=20, kind="mlp", layers=[1, 2])
    image = images(1, seed=57)
    got = lib.explain(image, top=40)
    want = ref.explain(image, top=None)
    assert len(got) == 40
    zero = [(int(g.layer), int(g.channel)) for g in got if float(g.deviation) == 0.0]
    assert zero == [(1, c) for c in range(8)] + [(2, c) for c in (0, 1, 2, 4, 5, 6, 8, 9)]
    assert zero == [(w["layer"], w["channel"]) for w in want if w["deviation"] == 0.0]
    for g in got[-16:]:
        assert torch.all(g.map == 0)


# --------------------------------------------------------------------------
# explain, calibrate
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["residual", "mlp"])
def test_explain(lib_clip, tiny_openclip, kind):
    lib, ref = build(lib_clip, tiny_openclip, NORMAL3, k=16, kind=kind)
    for image in (images(1, seed=56)[0], images(1, seed=57), images(1, 40, 56, seed=58)[0]):
        H, W = image.shape[-2:]
        got = lib.explain(image, top=10)
        every = ref.explain(image, top=None)
        by_key = {(e["layer"], e["channel"]): e for e in every}
        assert len(got) == 10
        # the deviations are the reference's 10 largest, in descending order
        devs = [float(g.deviation) for g in got]
        assert devs == sorted(devs, reverse=True)
        close(torch.tensor(devs, dtype=torch.float64),
              torch.tensor([e["deviation"] for e in every[:10]], dtype=torch.float64))
        for g in got:
            want = by_key[(int(g.layer), int(g.channel))]
            assert abs(float(g.deviation) - want["deviation"]) <= TOL
            assert g.map.shape == (H, W)
            close(g.map, want["map"])
    # 'top' larger than 10 gives the same head
    assert [(e.layer, e.channel) for e in lib.explain(images(1, seed=56)[0], top=20)][:10] == \
           [(e.layer, e.channel) for e in lib.explain(images(1, seed=56)[0], top=10)]


def test_calibrate_held_out(lib_clip, tiny_openclip):
    lib, ref = build(lib_clip, tiny_openclip, NORMAL3, k=16, class_name="grid")
    held_out = images(4, seed=59)
    lib.calibrate(held_out, quantile=0.9)
    th_img, th_pix = ref.calibrate(held_out, 0.9)
    assert abs(lib.image_threshold - th_img) <= TOL
    assert abs(lib.pixel_threshold - th_pix) <= TOL
    p = lib.score(TEST2)
    assert p.pred_label.dtype == torch.bool and p.pred_mask.dtype == torch.bool
    assert torch.equal(p.pred_label, p.pred_score > lib.image_threshold)
    assert torch.equal(p.pred_mask, p.anomaly_map > lib.pixel_threshold)
    # default quantile 0.99
    lib.calibrate(held_out)
    th_img, th_pix = ref.calibrate(held_out, 0.99)
    assert abs(lib.image_threshold - th_img) <= TOL and abs(lib.pixel_threshold - th_pix) <= TOL


def test_calibrate_leave_one_out(lib_clip, tiny_openclip):
    lib, ref = build(lib_clip, tiny_openclip, NORMAL3, k=16, class_name="grid")
    lib.calibrate(NORMAL3, quantile=0.99, leave_one_out=True)
    th_img, th_pix = ref.calibrate(NORMAL3, 0.99, leave_one_out=True)
    assert abs(lib.image_threshold - th_img) <= TOL
    assert abs(lib.pixel_threshold - th_pix) <= TOL
    # not the held-in thresholds: own patches would give ~0 visual deviation
    held_in = ref.calibrate(NORMAL3, 0.99)
    assert th_img > held_in[0] + 1e-3
    p = lib.score(NORMAL3)
    assert torch.equal(p.pred_label, p.pred_score > lib.image_threshold)
    assert torch.equal(p.pred_mask, p.anomaly_map > lib.pixel_threshold)


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------

def _outputs(m, test):
    p = m.score(test, with_branches=True)
    out = {"pred_score": p.pred_score, "anomaly_map": p.anomaly_map,
           "visual_map": p.visual_map, "semantic_map": p.semantic_map,
           "text": m.text_embeddings}
    for i, (n, g) in enumerate(zip(m.neurons, m.galleries)):
        for key in ("indices", "scores", "mean", "std"):
            out[f"{key}_{i}"] = torch.as_tensor(n[key])
        out[f"gallery_{i}"] = g
    return out


@pytest.mark.parametrize("kind", ["residual", "mlp"])
def test_bit_identical_whatever_the_batch_size(lib_clip, kind):
    """The same images scored in one call or split into batches of 1, 2 or 3: bit-identical."""
    normal, test = images(5, seed=70), images(5, seed=71)
    m = pylake.NormalityModel(lib_clip, k=16, kind=kind)
    m.fit(normal)
    whole = m.score(test, with_branches=True)
    for bs in (1, 2, 3):
        parts = [m.score(test[i:i + bs], with_branches=True) for i in range(0, len(test), bs)]
        for key in ("pred_score", "anomaly_map", "visual_map", "semantic_map"):
            joined = torch.cat([getattr(p, key) for p in parts])
            assert torch.equal(joined, getattr(whole, key)), (bs, key)
    # Fitting on the same images again gives the same model, bit for bit.
    again = pylake.NormalityModel(lib_clip, k=16, kind=kind)
    again.fit(normal)
    for g1, g2 in zip(m.galleries, again.galleries):
        assert torch.equal(g1, g2)


def test_batched_backbone_agrees_with_one_image_at_a_time(lib_clip, tmp_path):
    """batch_size > 1 runs the backbone on several images per forward: same neurons, and
    scores equal to float rounding (the forward is batch-invariant to about 1e-6)."""
    normal, test = images(5, seed=75), images(5, seed=76)
    one = pylake.NormalityModel(lib_clip, k=16)
    one.fit(normal)
    many = pylake.NormalityModel(lib_clip, k=16, batch_size=3)
    many.fit(normal)
    for a, b in zip(one.neurons, many.neurons):
        assert torch.equal(torch.as_tensor(a.indices), torch.as_tensor(b.indices))
    for g1, g2 in zip(one.galleries, many.galleries):
        assert max_err(g1, g2) < 1e-5
    p1, p3 = one.score(test, with_branches=True), many.score(test, with_branches=True)
    for key in ("pred_score", "anomaly_map", "visual_map", "semantic_map"):
        assert max_err(getattr(p1, key), getattr(p3, key)) < 1e-5, key
    many.save(tmp_path / "m.lake")
    assert pylake.NormalityModel.load(tmp_path / "m.lake", lib_clip).batch_size == 3
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        pylake.NormalityModel(lib_clip, batch_size=0)


def test_two_threads_share_one_fitted_model(lib_clip):
    m = pylake.NormalityModel(lib_clip, k=16)
    m.fit(images(4, seed=72))
    inputs = [images(5, seed=73), images(3, 40, 56, seed=74)]
    expect = [_outputs(m, x) for x in inputs]
    results = [[None] * 3 for _ in inputs]
    errors = []
    barrier = threading.Barrier(len(inputs))

    def work(i):
        try:
            barrier.wait()
            for r in range(3):
                results[i][r] = _outputs(m, inputs[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(len(inputs)):
        for r in range(3):
            for key in expect[i]:
                assert torch.equal(results[i][r][key], expect[i][key]), (i, r, key)
    # same images in both threads at once
    same = [None, None]
    barrier2 = threading.Barrier(2)

    def work2(i):
        barrier2.wait()
        same[i] = _outputs(m, inputs[0])

    threads = [threading.Thread(target=work2, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in expect[0]:
        assert torch.equal(same[0][key], expect[0][key]) and torch.equal(same[1][key], expect[0][key]), key


# --------------------------------------------------------------------------
# random selection: properties only (the library's RNG is its own)
# --------------------------------------------------------------------------

def _random_sets(lib_clip, normal, seed, kind="residual", k=16):
    m = pylake.NormalityModel(lib_clip, k=k, score="random", seed=seed, kind=kind)
    m.fit(normal)
    return [torch.as_tensor(n.indices) for n in m.neurons]


@pytest.mark.parametrize("kind,channels", [("residual", 128), ("mlp", 512)])
def test_random_selection_properties(lib_clip, kind, channels):
    sets = _random_sets(lib_clip, NORMAL3, seed=11, kind=kind)
    assert len(sets) == 3
    for idx in sets:
        assert idx.dtype == torch.int64 and idx.shape == (16,)
        assert torch.all(idx[1:] > idx[:-1])  # distinct, ascending
        assert 0 <= int(idx.min()) and int(idx.max()) < channels
    # same seed, other images (and another shot count) -> the same set
    for other in (images(3, seed=80), images(1, seed=81), images(2, 40, 56, seed=82)):
        assert all(torch.equal(a, b) for a, b in zip(sets, _random_sets(lib_clip, other, 11, kind)))
    # another seed -> another set, in every layer
    for seed in (0, 12):
        other = _random_sets(lib_clip, NORMAL3, seed=seed, kind=kind)
        assert all(not torch.equal(a, b) for a, b in zip(sets, other)), seed
    # not the variance top-K (with overwhelming probability)
    top = pylake.NormalityModel(lib_clip, k=16, kind=kind)
    top.fit(NORMAL3)
    assert any(not torch.equal(a, torch.as_tensor(n.indices)) for a, n in zip(sets, top.neurons))


def test_random_selection_galleries_and_maps_follow_the_indices(lib_clip, tiny_openclip):
    lib, ref = build(lib_clip, tiny_openclip, NORMAL3, k=16, score="random", seed=3, kind="mlp")
    assert_same_model(lib, ref, random_score=True)
    assert_same_prediction(lib.score(TEST2, with_branches=True), ref.score(TEST2))
    # mean / std are the raw channel statistics at the chosen indices
    taps = R.backbone_taps(tiny_openclip, NORMAL3, 32, ref.layers, "mlp", None)
    for n, l in zip(lib.neurons, ref.layers):
        flat = taps["tokens"][l].reshape(-1, 512).double()
        idx = torch.as_tensor(n.indices)
        close(n.mean, flat.mean(0)[idx])
        close(n.std, flat.std(0, unbiased=False)[idx])
