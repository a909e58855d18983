"""Weights as users have them: transformers CLIP checkpoints (single, sharded,
pytorch_model.bin, image tower only) and plain .safetensors state dicts, loaded by
LAKE's C++ reader and checked against the libraries that wrote them (max abs error
<= 1e-4 in fp32); every lying header or inconsistent checkpoint a ValueError naming
the file."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

import clip_factory
import pylake
from conftest import max_err

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

TOL = 1e-4
TEXTS = ["a photo of a cat", "a scratched metal grid", "x"]


def _config(act: str):
    tc = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
              max_position_embeddings=77, vocab_size=49408, hidden_act=act)
    vc = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
              image_size=32, patch_size=8, hidden_act=act)
    return transformers.CLIPConfig(text_config=tc, vision_config=vc, projection_dim=32)


def _randomize(model, seed: int):
    # Non-trivial values for every parameter (the init leaves biases at zero, norms at one).
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                continue
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + 0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module", params=["quick_gelu", "gelu"])
def hf_clip(request, tmp_path_factory):
    torch.manual_seed(0)
    model = _randomize(transformers.CLIPModel(_config(request.param)), seed=1)
    root = tmp_path_factory.mktemp(f"hf_{request.param}")
    model.save_pretrained(root / "single", safe_serialization=True)
    model.save_pretrained(root / "sharded", safe_serialization=True, max_shard_size="1MB")
    assert (root / "sharded" / "model.safetensors.index.json").is_file()
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shutil.copy(root / "single" / "config.json", bin_dir / "config.json")
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    return request.param, model, root


def _features(out):
    return getattr(out, "pooler_output", out) if not isinstance(out, torch.Tensor) else out


def _tokens():
    return pylake.tokenize(TEXTS)


@pytest.mark.parametrize("form", ["single", "single/model.safetensors", "sharded",
                                  "sharded/model.safetensors.index.json", "bin", "bin/pytorch_model.bin"])
def test_clip_model_matches_transformers(hf_clip, form):
    act, hf, root = hf_clip
    model = pylake.load_clip(root / form)
    c = model.config
    assert c.archive_kind == "transformers" and c.activation == act
    assert (c.image_size, c.patch_size, c.vision_width, c.vision_layers, c.vision_heads, c.embed_dim) == (
        32, 8, 64, 2, 2, 32)
    assert (c.context_length, c.vocab_size, c.text_width, c.text_layers, c.text_heads) == (77, 49408, 64, 2, 2)
    images = clip_factory.example_images(3, 32, seed=4)
    tokens = _tokens()
    with torch.no_grad():
        ref_img = _features(hf.get_image_features(pixel_values=images))
        ref_txt = _features(hf.get_text_features(input_ids=tokens))
        err_img = max_err(model.encode_image(images), ref_img)
        err_txt = max_err(model.encode_text(tokens), ref_txt)
    print(f"\n{act} {form}: encode_image {err_img:.2e}, encode_text {err_txt:.2e}")
    assert err_img <= TOL and err_txt <= TOL


def test_taps_match_hidden_states(hf_clip):
    act, hf, root = hf_clip
    model = pylake.load_clip(root / "single")
    images = clip_factory.example_images(2, 32, seed=5)
    taps = pylake.NeuronProbe(model, layers=[1, 2])(images)
    with torch.no_grad():
        hidden = hf.vision_model(pixel_values=images, output_hidden_states=True).hidden_states
    for layer in (1, 2):  # hidden_states[l]: the residual stream after block l; taps drop CLS
        err = max_err(taps.activations[layer], hidden[layer][:, 1:])
        print(f"\n{act} tap {layer}: {err:.2e}")
        assert err <= TOL


def test_a_shard_given_alone_reads_the_whole_checkpoint(hf_clip):
    _, _, root = hf_clip
    shard = sorted((root / "sharded").glob("model-0000*.safetensors"))[0]
    a = pylake.load_clip(shard)
    b = pylake.load_clip(root / "single")
    assert a.fingerprint() == b.fingerprint()


def test_vision_model_with_projection(tmp_path):
    torch.manual_seed(0)
    vc = _config("quick_gelu").vision_config
    vc.projection_dim = 32
    hf = _randomize(transformers.CLIPVisionModelWithProjection(vc), seed=2)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    for p in (tmp_path, tmp_path / "model.safetensors"):
        model = pylake.load_clip(p)
        assert not model.config.has_text and model.config.embed_dim == 32
        images = clip_factory.example_images(2, 32, seed=6)
        with torch.no_grad():
            err = max_err(model.encode_image(images), hf(pixel_values=images).image_embeds)
        print(f"\nvision-only: encode_image {err:.2e}")
        assert err <= TOL


def test_openclip_state_dict_as_safetensors(tmp_path, tiny_openclip):
    path = tmp_path / "tiny.safetensors"
    sd = {k: v.detach().clone().contiguous() for k, v in tiny_openclip.state_dict().items()}
    safetensors_torch.save_file(sd, str(path))
    model = pylake.load_clip(path)
    assert model.config.archive_kind == "safetensors"
    images = clip_factory.example_images(3, 32, seed=7)
    tokens = clip_factory.example_tokens(3)
    with torch.no_grad():
        err_img = max_err(model.encode_image(images), tiny_openclip.encode_image(images))
        err_txt = max_err(model.encode_text(tokens), tiny_openclip.encode_text(tokens))
    print(f"\nopenclip safetensors: encode_image {err_img:.2e}, encode_text {err_txt:.2e}")
    assert err_img <= TOL and err_txt <= TOL
    # fp16 weights are converted to the compute dtype.
    fp16 = tmp_path / "tiny_fp16.safetensors"
    safetensors_torch.save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, str(fp16))
    half = pylake.load_clip(fp16)
    assert half.dtype == torch.float32  # fp16 weights converted to the default compute dtype
    assert torch.equal(half.parameter("visual.conv1.weight"), sd["visual.conv1.weight"].half().float())


# ---- bad input ----------------------------------------------------------------------------------

def _write_raw(path: Path, header, data: bytes = b"", length=None) -> Path:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + h + data)
    return path


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


LYING_HEADERS = {
    "header_past_eof": (lambda p: _write_raw(p, {"a": _entry()}, bytes(8), length=10_000), "declares a 10000-byte header"),
    "offsets_outside": (lambda p: _write_raw(p, {"a": _entry(offsets=(0, 16))}, bytes(8)), "outside the data area"),
    "overlapping": (lambda p: _write_raw(p, {"a": _entry(), "b": _entry(offsets=(4, 12))}, bytes(16)), "overlaps"),
    "size_mismatch": (lambda p: _write_raw(p, {"a": _entry(shape=(3,))}, bytes(8)), "needs 12 bytes"),
    "unknown_dtype": (lambda p: _write_raw(p, {"a": _entry(dtype="F128")}, bytes(8)), "unknown dtype 'F128'"),
    "bad_json": (lambda p: _write_raw(p, b'{"a": {"dtype": "F32", ', bytes(8)), "not valid JSON"),
    "negative_shape": (lambda p: _write_raw(p, {"a": _entry(shape=(-2,))}, bytes(8)), "non-negative"),
    "begin_after_end": (lambda p: _write_raw(p, {"a": _entry(offsets=(8, 0))}, bytes(8)), "outside the data area"),
    "overflow": (lambda p: _write_raw(p, {"a": _entry(shape=(2**62, 2**62))}, bytes(8)), "overflows"),
}


@pytest.mark.parametrize("case", sorted(LYING_HEADERS))
def test_lying_safetensors_header_is_a_value_error(tmp_path, case):
    make, needle = LYING_HEADERS[case]
    path = make(tmp_path / f"{case}.safetensors")
    if case == "header_past_eof":  # no longer recognisable as safetensors: the generic error
        with pytest.raises(ValueError, match="not a TorchScript archive, torch.save file or safetensors"):
            pylake.load_clip(path)
        return
    with pytest.raises(ValueError, match=needle) as e:
        pylake.load_clip(path)
    assert str(path) in str(e.value)
    if case not in ("bad_json",):
        assert "'a'" in str(e.value) or case == "header_past_eof"


def test_unaligned_tensor_is_copied(tmp_path):
    # A 1-byte tensor first puts the F32 one at an odd offset: read correctly, not faulting.
    t = torch.arange(4, dtype=torch.float32)
    h = {"b": _entry("U8", (1,), (0, 1)), "a": _entry("F32", (4,), (1, 17))}
    header = json.dumps(h).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    path = _write_raw(tmp_path / "u.safetensors", header, b"\x07" + t.numpy().tobytes())
    with pytest.raises(ValueError, match="visual.conv1.weight"):  # read fine, then not a CLIP
        pylake.load_clip(path)


@pytest.fixture()
def hf_folder(tmp_path):
    torch.manual_seed(0)
    model = transformers.CLIPModel(_config("quick_gelu"))
    model.save_pretrained(tmp_path / "m", safe_serialization=True, max_shard_size="1MB")
    return tmp_path / "m"


def test_missing_shard(hf_folder):
    shard = sorted(hf_folder.glob("model-0000*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ValueError, match=f"shard '.*{shard.name}' listed in .*is missing"):
        pylake.load_clip(hf_folder)


def _edit_config(folder: Path, edit):
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("key,value,needle", [
    ("image_size", 64, "vision_config.image_size = 64"),
    ("patch_size", 16, "vision_config.patch_size = 16"),
    ("hidden_size", 128, "vision_config.hidden_size = 128"),
    ("num_hidden_layers", 3, "vision_config.num_hidden_layers = 3"),
    ("hidden_act", "gelu_new", "'gelu_new'"),
    ("layer_norm_eps", 1e-6, "layer_norm_eps"),
])
def test_config_and_weights_disagree(hf_folder, key, value, needle):
    _edit_config(hf_folder, lambda c: c["vision_config"].__setitem__(key, value))
    with pytest.raises(ValueError, match=needle) as e:
        pylake.load_clip(hf_folder)
    assert "config.json" in str(e.value)


@pytest.mark.parametrize("model_type", ["siglip", "dinov2", "clip_text_model"])
def test_not_a_clip_config(hf_folder, model_type):
    _edit_config(hf_folder, lambda c: c.__setitem__("model_type", model_type))
    with pytest.raises(ValueError, match=f"model_type '{model_type}'") as e:
        pylake.load_clip(hf_folder)
    assert "config.json" in str(e.value)


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="folder without config.json") as e:
        pylake.load_clip(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_config_without_weights(hf_folder):
    for f in hf_folder.glob("model*"):
        f.unlink()
    with pytest.raises(ValueError, match="has config.json but no weights"):
        pylake.load_clip(hf_folder)


def test_hf_weights_without_config(hf_folder, tmp_path):
    (tmp_path / "alone").mkdir()
    shutil.copy(hf_folder / "model-00002-of-00002.safetensors", tmp_path / "alone" / "w.safetensors")
    with pytest.raises(ValueError, match="no config.json beside it"):
        pylake.load_clip(tmp_path / "alone" / "w.safetensors")


# ---- full sizes (slow) ------------------------------------------------------------------------

FULL_SIZES = {  # transformers' configs of openai/clip-vit-base-patch16 and openai/clip-vit-large-patch14-336
    "ViT-B/16": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                 image_size=224, patch_size=16),
                     text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                     projection_dim=512),
    "ViT-L/14@336px": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                       num_attention_heads=16, image_size=336, patch_size=14),
                           text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12),
                           projection_dim=768),
}


@pytest.mark.slow
@pytest.mark.parametrize("size", sorted(FULL_SIZES))
def test_full_size_checkpoint_matches_transformers(size, tmp_path):
    s = FULL_SIZES[size]
    cfg = transformers.CLIPConfig(text_config=dict(s["text"], max_position_embeddings=77, vocab_size=49408),
                                  vision_config=s["vision"], projection_dim=s["projection_dim"])
    torch.manual_seed(0)
    hf = transformers.CLIPModel(cfg).eval()  # transformers' own random init (its std per layer)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model = pylake.load_clip(tmp_path)
    c = model.config
    assert (c.image_size, c.patch_size, c.vision_width, c.vision_layers, c.vision_heads) == (
        s["vision"]["image_size"], s["vision"]["patch_size"], s["vision"]["hidden_size"],
        s["vision"]["num_hidden_layers"], s["vision"]["num_attention_heads"])
    side = c.image_size
    images = clip_factory.example_images(1, side, seed=8)
    tokens = _tokens()
    deep = c.vision_layers
    taps = pylake.NeuronProbe(model, layers=[1, deep // 2, deep])(images)
    with torch.no_grad():
        ref_img = _features(hf.get_image_features(pixel_values=images))
        ref_txt = _features(hf.get_text_features(input_ids=tokens))
        hidden = hf.vision_model(pixel_values=images, output_hidden_states=True).hidden_states
        errs = {"encode_image": max_err(model.encode_image(images), ref_img),
                "encode_text": max_err(model.encode_text(tokens), ref_txt)}
    for layer in (1, deep // 2, deep):
        errs[f"tap {layer}"] = max_err(taps.activations[layer], hidden[layer][:, 1:])
    print(f"\n{size}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    assert max(errs.values()) <= TOL, errs
