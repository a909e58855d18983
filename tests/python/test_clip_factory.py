"""Checks of the test-fixture generator tests/fixtures/clip_factory.py.

Runs without the compiled pylake extension (torch + open_clip only).
"""

import sys
import zipfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "tests" / "fixtures", _ROOT / "python"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("open_clip")
import clip_factory as cf  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return cf.make_clip("tiny", seed=0)


@pytest.fixture(scope="module")
def inputs():
    return cf.example_images(2, 32, seed=1), cf.example_tokens(3, 77)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip_fixtures")
    assert cf.main(["--out", str(out), "--quiet"]) == 0
    return out


def _code_files(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n).decode("utf-8") for n in z.namelist()
                if "/code/" in n and n.endswith(".py")}


# ---------------------------------------------------------------- models

def test_make_clip_is_deterministic_and_openai_named(tiny):
    other = cf.make_clip("tiny", seed=0)
    a, b = tiny.state_dict(), other.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    different = cf.make_clip("tiny", seed=1).state_dict()
    assert not torch.equal(a["visual.conv1.weight"], different["visual.conv1.weight"])
    for name in ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding",
                 "visual.ln_pre.weight", "visual.transformer.resblocks.2.attn.in_proj_weight",
                 "visual.transformer.resblocks.0.mlp.c_fc.bias", "visual.ln_post.bias",
                 "visual.proj", "token_embedding.weight", "positional_embedding",
                 "transformer.resblocks.1.mlp.c_proj.weight", "ln_final.weight",
                 "text_projection", "logit_scale"):
        assert name in a, name
    assert "attn_mask" not in a
    assert tuple(a["visual.conv1.weight"].shape) == (128, 3, 8, 8)
    assert tuple(a["visual.positional_embedding"].shape) == (17, 128)
    assert tuple(a["visual.proj"].shape) == (128, 64)
    assert all(v.dtype == torch.float32 for v in a.values())
    # layer norms were re-randomised (not the constructor's ones/zeros)
    assert not torch.equal(a["visual.ln_pre.weight"], torch.ones(128))
    assert float(a["visual.ln_pre.bias"].abs().max()) > 0


@pytest.mark.parametrize("spec,width,patch,image,heads,act", [
    ("tiny", 128, 8, 32, 2, "QuickGELU"),
    ("tiny14", 128, 14, 56, 2, "QuickGELU"),
    ("plus240", 896, 16, 240, 14, "GELU"),
])
def test_specs(spec, width, patch, image, heads, act):
    m = cf.make_clip(spec)
    v = m.visual
    assert v.conv1.weight.shape == (width, 3, patch, patch)
    assert v.positional_embedding.shape[0] == (image // patch) ** 2 + 1
    assert v.transformer.resblocks[0].attn.num_heads == heads
    assert type(v.transformer.resblocks[0].mlp.gelu).__name__ == act
    if spec == "plus240":
        assert m.transformer.resblocks[0].attn.num_heads == 10
        assert m.text_projection.shape == (640, 640)
        assert len(v.transformer.resblocks) == 2


def test_activations_neither_blow_up_nor_vanish(tiny, inputs):
    stats = cf.activation_stats(tiny, inputs[0])
    for k, s in stats.items():
        assert 0.3 < s < 10.0, (k, s)
    text = cf.reference_outputs(tiny, None, inputs[1])["text_features"]
    assert 0.3 < float(text.std()) < 10.0
    # different prompts give clearly different features
    assert float((text[0] - text[2]).abs().max()) > 0.1


# ---------------------------------------------------------------- hooks

def test_reference_outputs_shapes_and_hooks(tiny, inputs):
    images, tokens = inputs
    ref = cf.reference_outputs(tiny, images, tokens, (1, 2, 3))
    assert ref["image_features"].shape == (2, 64)
    assert ref["text_features"].shape == (3, 64)
    for l in (1, 2, 3):
        assert ref[f"resid_{l}"].shape == (2, 16, 128)
        assert ref[f"cls_{l}"].shape == (2, 128)
        assert ref[f"mlp_{l}"].shape == (2, 16, 512)
    assert ref["projected"].shape == (2, 16, 64)
    with torch.no_grad():
        v = tiny.visual
        # the last residual's CLS through ln_post @ proj is the image feature
        cls_feat = v.ln_post(ref["cls_3"]) @ v.proj
        torch.testing.assert_close(cls_feat, ref["image_features"], rtol=0, atol=1e-5)
        torch.testing.assert_close(ref["image_features"], tiny.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(ref["text_features"], tiny.encode_text(tokens), rtol=0, atol=0)
        # block 1 by hand (batch-first), patch tokens vs the hook
        x = v._embeds(images)
        blk = v.transformer.resblocks[0]
        x1 = blk(x)
        torch.testing.assert_close(ref["resid_1"], x1[:, 1:], rtol=0, atol=1e-6)
        torch.testing.assert_close(ref["cls_1"], x1[:, 0], rtol=0, atol=1e-6)
        # MLP hidden of block 2 = act(c_fc(ln_2(x + attn)))
        blk2 = v.transformer.resblocks[1]
        x2_in = x1
        mid = x2_in + blk2.attention(blk2.ln_1(x2_in))
        hidden = blk2.mlp.gelu(blk2.mlp.c_fc(blk2.ln_2(mid)))
        torch.testing.assert_close(ref["mlp_2"], hidden[:, 1:], rtol=0, atol=1e-5)
        torch.testing.assert_close(ref["projected"], v.ln_post(ref["resid_3"]) @ v.proj,
                                   rtol=0, atol=1e-6)


def test_resize_pos_embed_reference(tiny):
    pos = tiny.visual.positional_embedding.detach()
    assert torch.equal(cf.resize_pos_embed_reference(pos, 4), pos)
    big = cf.resize_pos_embed_reference(pos, 8)
    assert big.shape == (65, 128)
    assert torch.equal(big[0], pos[0])
    rect = cf.resize_pos_embed_reference(pos, (6, 8))
    assert rect.shape == (49, 128)
    # open_clip's own resize uses antialias=True, which in PyTorch is a different
    # bicubic kernel (a=-0.5 vs -0.75) even when upsampling: equal only with antialias
    from open_clip.model import resize_pos_embed

    m64 = cf.make_clip("tiny")
    m64.visual.grid_size = (8, 8)
    sd = {"visual.positional_embedding": pos.clone()}
    resize_pos_embed(sd, m64, interpolation="bicubic")
    oc = sd["visual.positional_embedding"]
    torch.testing.assert_close(oc, cf.resize_pos_embed_reference(pos, 8, antialias=True),
                               rtol=0, atol=1e-6)
    assert float((oc - big).abs().max()) > 1e-4
    # grid rows are row-major: a pos embed varying only along columns stays so
    cols = torch.zeros(17, 128)
    cols[1:, 0] = torch.arange(4.0).repeat(4)
    r = cf.resize_pos_embed_reference(cols, 8)[1:, 0].reshape(8, 8)
    assert torch.allclose(r, r[0:1].expand(8, 8))
    assert float(r[0, -1] - r[0, 0]) > 2.5
    m = cf.with_image_size(tiny, 64)
    with torch.no_grad():
        feats = m.encode_image(cf.example_images(2, 64))
    assert feats.shape == (2, 64) and torch.isfinite(feats).all()
    rect = cf.with_image_size(tiny, (48, 40), antialias=True)  # 6 x 5 grid
    assert rect.visual.positional_embedding.shape == (31, 128)
    with torch.no_grad():
        assert rect.encode_image(cf.example_images(1, 48)[..., :40]).shape == (1, 64)
    with pytest.raises(ValueError, match="multiple of the patch"):
        cf.with_image_size(tiny, 30)


# ---------------------------------------------------------------- archives

def test_fp16_jit_archive(tiny, tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    cf.save_openai_jit(tiny, path, fp16=True, cuda_constants=True)
    assert not list(tmp_path.glob("*.tmp"))
    m = torch.jit.load(str(path), map_location="cpu")
    code = _code_files(path)
    joined = "\n".join(code.values())
    assert 'torch.device("cuda:0")' in joined
    assert 'torch.device("cpu")' not in joined
    assert "cuda" in m.code or "cuda" in m.encode_text.code

    sd = m.state_dict()
    assert int(sd["input_resolution"]) == 32 and sd["input_resolution"].dtype == torch.int64
    assert int(sd["context_length"]) == 77 and sd["context_length"].dim() == 0
    assert int(sd["vocab_size"]) == 49408
    assert "attn_mask" not in sd
    ref = tiny.state_dict()
    weights = {k: v for k, v in sd.items()
               if k not in ("input_resolution", "context_length", "vocab_size")}
    assert set(weights) == set(ref)
    for k, v in weights.items():
        assert v.dtype == torch.float16, k
        assert torch.equal(v, ref[k].half()), k
    # the archive's activation module keeps its Python class name
    gelu = dict(m.named_modules())["visual.transformer.resblocks.0.mlp.gelu"]
    assert gelu.original_name == "QuickGELU"
    # tensor records stay 64-byte aligned after the rewrite
    reader = torch._C.PyTorchFileReader(str(path))
    offsets = [reader.get_record_offset(r) for r in reader.get_all_records() if r.startswith("data/")]
    assert offsets and all(o % 64 == 0 for o in offsets)


def test_fp32_jit_archive_matches_open_clip(tiny, inputs, tmp_path):
    images, tokens = inputs
    path = tmp_path / "tiny32.pt"
    cf.save_openai_jit(tiny, path, fp16=False, cuda_constants=False)
    m = torch.jit.load(str(path), map_location="cpu")
    assert all(v.dtype == torch.float32 for k, v in m.state_dict().items() if v.is_floating_point())
    with torch.no_grad():
        torch.testing.assert_close(m.encode_image(images), tiny.encode_image(images), rtol=0, atol=1e-6)
        torch.testing.assert_close(m.encode_text(tokens), tiny.encode_text(tokens), rtol=0, atol=1e-6)
        img_f, txt_f, scale = m(images, tokens[:2])
        torch.testing.assert_close(scale, tiny.logit_scale.exp())
    assert 'torch.device("cpu")' in "\n".join(_code_files(path).values())


def test_cuda_rewrite_of_fp32_archive_still_runs_on_cpu_weights(tiny, tmp_path):
    # the rewrite only touches code text: an fp32 archive with cuda constants loads
    # on CPU and its weights are untouched
    path = tmp_path / "tiny32cuda.pt"
    cf.save_openai_jit(tiny, path, fp16=False, cuda_constants=True)
    m = torch.jit.load(str(path), map_location="cpu")
    sd = m.state_dict()
    ref = tiny.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_state_dict_and_checkpoint(tiny, tmp_path):
    cf.save_state_dict(tiny, tmp_path / "sd.pt")
    cf.save_state_dict(tiny, tmp_path / "ckpt.pt", wrapped=True)
    sd = torch.load(tmp_path / "sd.pt", weights_only=True)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    ref = tiny.state_dict()
    assert list(sd) == list(ref)
    assert ckpt["epoch"] == 3 and isinstance(ckpt["name"], str)
    assert list(ckpt["state_dict"]) == ["module." + k for k in ref]
    assert all(torch.equal(ckpt["state_dict"]["module." + k], v) for k, v in ref.items())


def test_resnet_state_dict(tmp_path):
    sd = cf.make_resnet_clip_state_dict(tmp_path / "rn.pt")
    loaded = torch.load(tmp_path / "rn.pt", weights_only=True)
    assert list(loaded) == list(sd)
    for name in ("visual.conv1.weight", "visual.bn1.weight", "visual.layer1.0.conv1.weight",
                 "visual.attnpool.positional_embedding", "visual.attnpool.q_proj.weight",
                 "token_embedding.weight", "text_projection"):
        assert name in sd, name
    assert not any(k.startswith("visual.transformer.") for k in sd)


# ---------------------------------------------------------------- fixture set

def test_generated_fixture_set(fixture_dir, tiny):
    names = ["tiny_openai_jit_fp16.pt", "tiny_openai_jit_fp32.pt", "tiny_state_dict.pt",
             "tiny_checkpoint.pt", "plus240_state_dict.pt", "resnet_state_dict.pt",
             "tiny_export.pt", "not_an_archive.pt", "truncated.pt", "tiny_reference.pt",
             "tiny_fp16_reference.pt", "missing_param_state_dict.pt",
             "misshapen_state_dict.pt", "not_clip_state_dict.pt"]
    for n in names:
        assert (fixture_dir / n).is_file(), n
    assert not list(fixture_dir.glob("*.tmp"))

    ref = torch.load(fixture_dir / "tiny_reference.pt", weights_only=True)
    assert set(ref) == set(cf.TINY_REF_KEYS)
    assert all(isinstance(v, torch.Tensor) for v in ref.values())
    shapes = {"images": (2, 3, 32, 32), "images64": (2, 3, 64, 64), "tokens": (3, 77),
              "image_features": (2, 64), "image_features64": (2, 64), "text_features": (3, 64),
              "resid_1": (2, 16, 128), "resid_3": (2, 16, 128), "mlp_2": (2, 16, 512),
              "cls_3": (2, 128), "projected": (2, 16, 64)}
    for k, s in shapes.items():
        assert tuple(ref[k].shape) == s, k
    assert ref["tokens"].dtype == torch.int64
    assert (ref["tokens"][:, 0] == 49406).all()
    assert ((ref["tokens"] == 49407).sum(1) == 1).all()
    with torch.no_grad():
        torch.testing.assert_close(ref["image_features"], tiny.encode_image(ref["images"]), rtol=0, atol=0)
        m64 = cf.with_image_size(tiny, 64)
        torch.testing.assert_close(ref["image_features64"], m64.encode_image(ref["images64"]),
                                   rtol=0, atol=0)

    ref16 = torch.load(fixture_dir / "tiny_fp16_reference.pt", weights_only=True)
    assert {"image_features", "text_features", "images", "tokens"} <= set(ref16)
    diff = (ref16["image_features"] - ref["image_features"]).abs().max()
    assert 0 < float(diff) < 0.05  # rounding to fp16 changes outputs, but only a little
    # the fp16 archive's weights, computed in fp32, give the fp16 reference
    m16 = torch.jit.load(str(fixture_dir / "tiny_openai_jit_fp16.pt"), map_location="cpu")
    w16 = {k: v.float() for k, v in m16.state_dict().items() if v.is_floating_point()}
    rebuilt = cf.make_clip("tiny")
    rebuilt.load_state_dict(w16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_image(ref16["images"]), ref16["image_features"],
                                   rtol=0, atol=0)
        torch.testing.assert_close(rebuilt.encode_text(ref16["tokens"]), ref16["text_features"],
                                   rtol=0, atol=0)

    # --if-stale: a second run finds the stamp and does nothing
    before = {p.name: p.stat().st_mtime_ns for p in fixture_dir.iterdir()}
    assert cf.main(["--out", str(fixture_dir), "--if-stale", "--quiet"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in fixture_dir.iterdir()} == before

    for bad in ("not_an_archive.pt", "truncated.pt"):
        with pytest.raises(Exception):
            torch.jit.load(str(fixture_dir / bad), map_location="cpu")
    size32 = (fixture_dir / "tiny_openai_jit_fp32.pt").stat().st_size
    assert (fixture_dir / "truncated.pt").stat().st_size == size32 // 2

    missing = torch.load(fixture_dir / "missing_param_state_dict.pt", weights_only=True)
    assert set(tiny.state_dict()) - set(missing) == {"visual.transformer.resblocks.1.mlp.c_fc.bias"}
    misshapen = torch.load(fixture_dir / "misshapen_state_dict.pt", weights_only=True)
    assert tuple(misshapen["visual.ln_post.weight"].shape) == (127,)
    not_clip = torch.load(fixture_dir / "not_clip_state_dict.pt", weights_only=True)
    assert not any(k.startswith("visual.") for k in not_clip)

    plus = torch.load(fixture_dir / "plus240_state_dict.pt", weights_only=True)
    assert tuple(plus["visual.conv1.weight"].shape) == (896, 3, 16, 16)
    assert tuple(plus["visual.positional_embedding"].shape) == (226, 896)
    assert tuple(plus["visual.proj"].shape) == (896, 640)
