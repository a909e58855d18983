"""OpenCLIP hub folders (open_clip_config.json + open_clip_model.safetensors /
open_clip_pytorch_model.bin, as open_clip's push_to_hf_hub writes them): tiny random
OpenCLIP ViTs made and saved by open_clip itself (create_model, save_for_hf), read back by
open_clip ("local-dir:") as the reference and by LAKE's C++ reader; encode_image /
encode_text agree to max abs error <= 1e-4 in fp32. Configs LAKE does not compute, and
configs that disagree with their weights, are ValueErrors naming the file and the key."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

import clip_factory
import pylake
from conftest import max_err

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("safetensors.torch")
from open_clip.push_to_hf_hub import save_for_hf  # noqa: E402

TOL = 1e-4
CONFIG = "open_clip_config.json"
SAFE, BIN = "open_clip_model.safetensors", "open_clip_pytorch_model.bin"

# Heads deliberately not width / 64 (the vision tower's come from head_width, the text's from heads).
BASE_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class _NoTokenizer:
    """save_for_hf saves the tokenizer with save_pretrained; the tests need no tokenizer files."""

    def save_pretrained(self, directory):
        pass


def _model_cfg(quick_gelu, **edits):
    cfg = copy.deepcopy(BASE_CFG)
    if quick_gelu is not None:
        cfg["quick_gelu"] = quick_gelu
    for where, changes in edits.items():
        cfg[where].update(changes)
    return cfg


def make_openclip(tmp: Path, model_cfg: dict, preprocess_cfg=None, seed: int = 1):
    """A random-weight open_clip model built by open_clip from ``model_cfg`` (via a
    config-only "local-dir:" folder), every parameter re-drawn (non-trivial forward)."""
    src = tmp / "cfg_only"
    src.mkdir(parents=True)
    (src / CONFIG).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}))
    model = open_clip.create_model(f"local-dir:{src}")
    return clip_factory.randomize_clip_(model.float().eval(), seed=seed)


def save_hub_folder(model, model_cfg: dict, folder: Path, form: str = "both") -> Path:
    """The folder open_clip.push_to_hf_hub uploads (its own save_for_hf)."""
    save_for_hf(model, _NoTokenizer(), copy.deepcopy(model_cfg), folder,
                safe_serialization={"safetensors": True, "bin": False, "both": "both"}[form])
    return folder


def reference(folder: Path):
    """open_clip's own reading of the hub folder (strict load of the weights)."""
    return open_clip.create_model(f"local-dir:{folder}").float().eval()


@pytest.fixture(scope="module", params=[True, None], ids=["quick_gelu", "gelu"])
def hub(request, tmp_path_factory):
    quick_gelu = request.param
    root = tmp_path_factory.mktemp("open_clip_" + ("quick_gelu" if quick_gelu else "gelu"))
    cfg = _model_cfg(quick_gelu)
    # The GELU model also carries its own normalisation (preprocess_cfg); the other OpenAI's default.
    pp = None if quick_gelu else {"mean": [0.5, 0.25, 0.125], "std": [0.2, 0.3, 0.4]}
    model = make_openclip(root, cfg, pp)
    save_hub_folder(model, cfg, root / "both", "both")
    save_hub_folder(model, cfg, root / "safetensors", "safetensors")
    save_hub_folder(model, cfg, root / "bin", "bin")
    assert sorted(p.name for p in (root / "both").iterdir()) == sorted([CONFIG, SAFE, BIN])
    return ("quick_gelu" if quick_gelu else "gelu"), root, pp


@pytest.mark.parametrize("form", ["both", "safetensors", "bin", f"safetensors/{SAFE}", f"bin/{BIN}"])
def test_hub_folder_matches_open_clip(hub, form):
    act, root, pp = hub
    folder = root / form.split("/")[0]
    ref = reference(folder)
    model = pylake.load_clip(root / form)
    c = model.config
    assert c.archive_kind == "open_clip" and c.activation == act
    assert (c.image_size, c.patch_size, c.vision_width, c.vision_layers, c.vision_heads, c.embed_dim) == (
        32, 8, 64, 2, 2, 32)
    assert (c.context_length, c.vocab_size, c.text_width, c.text_layers, c.text_heads) == (77, 49408, 64, 2, 4)
    assert c.image_mean == pytest.approx(list(ref.visual.image_mean), abs=1e-7)
    assert c.image_std == pytest.approx(list(ref.visual.image_std), abs=1e-7)
    assert tuple(ref.visual.image_mean) == (tuple(pp["mean"]) if pp else OPENAI_MEAN)
    assert tuple(ref.visual.image_std) == (tuple(pp["std"]) if pp else OPENAI_STD)
    images = clip_factory.example_images(3, 32, seed=4)
    tokens = clip_factory.example_tokens(3)
    with torch.no_grad():
        err_img = max_err(model.encode_image(images), ref.encode_image(images))
        err_txt = max_err(model.encode_text(tokens), ref.encode_text(tokens))
    print(f"\nopen_clip hub {act} {form}: encode_image {err_img:.2e}, encode_text {err_txt:.2e}")
    assert err_img <= TOL and err_txt <= TOL


def test_the_wrong_activation_would_show(hub):
    # The comparison above can tell GELU from QuickGELU on these weights.
    act, root, _ = hub
    ref = reference(root / "both")
    other = "gelu" if act == "quick_gelu" else "quick_gelu"
    model = pylake.load_clip(root / "both", activation=other)
    images = clip_factory.example_images(2, 32, seed=5)
    tokens = clip_factory.example_tokens(2)
    with torch.no_grad():
        assert max_err(model.encode_image(images), ref.encode_image(images)) > 10 * TOL
        assert max_err(model.encode_text(tokens), ref.encode_text(tokens)) > 10 * TOL


def test_explicit_quick_gelu_false_is_gelu(tmp_path):
    cfg = _model_cfg(False)
    model = make_openclip(tmp_path, cfg)
    folder = save_hub_folder(model, cfg, tmp_path / "hub", "safetensors")
    assert pylake.load_clip(folder).config.activation == "gelu"


def test_image_size_as_height_width(tmp_path):
    cfg = _model_cfg(True, vision_cfg={"image_size": [32, 32], "patch_size": [8, 8]})
    model = make_openclip(tmp_path, cfg)
    folder = save_hub_folder(model, cfg, tmp_path / "hub", "safetensors")
    lake = pylake.load_clip(folder)
    assert (lake.config.image_size, lake.config.patch_size) == (32, 8)
    images = clip_factory.example_images(2, 32, seed=6)
    with torch.no_grad():
        err = max_err(lake.encode_image(images), reference(folder).encode_image(images))
    print(f"\nopen_clip hub image_size [h, w]: encode_image {err:.2e}")
    assert err <= TOL


def test_custom_text_clip(tmp_path):
    # CustomTextCLIP keeps the standard text tower under "text.".
    cfg = dict(_model_cfg(None), custom_text=True)
    model = make_openclip(tmp_path, cfg)
    assert any(k.startswith("text.transformer.") for k in model.state_dict())
    folder = save_hub_folder(model, cfg, tmp_path / "hub", "safetensors")
    lake = pylake.load_clip(folder)
    ref = reference(folder)
    images = clip_factory.example_images(2, 32, seed=7)
    tokens = clip_factory.example_tokens(2)
    with torch.no_grad():
        err_img = max_err(lake.encode_image(images), ref.encode_image(images))
        err_txt = max_err(lake.encode_text(tokens), ref.encode_text(tokens))
    print(f"\nopen_clip hub custom_text: encode_image {err_img:.2e}, encode_text {err_txt:.2e}")
    assert err_img <= TOL and err_txt <= TOL


def test_hf_text_tower_loads_the_image_tower_only(tmp_path):
    # A Hugging Face text tower ("text.transformer.*" of a transformers model) is not computed by
    # LAKE: the (clean) image tower is loaded. The text tower is made by hand: building a real HF
    # text tower needs a transformers config from the hub.
    cfg = _model_cfg(None)
    root = tmp_path / "src"
    save_hub_folder(make_openclip(tmp_path, cfg), cfg, root / "both", "safetensors")
    src = json.loads((root / "both" / CONFIG).read_text())
    src["model_cfg"]["text_cfg"] = {"hf_model_name": "roberta-base", "hf_tokenizer_name": "roberta-base",
                                    "hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler"}
    folder = tmp_path / "hf_text"
    folder.mkdir()
    (folder / CONFIG).write_text(json.dumps(src))
    import safetensors.torch as st
    sd = {k: v for k, v in st.load_file(str(root / "both" / SAFE)).items()
          if k.startswith("visual.") or k == "logit_scale"}
    sd["text.transformer.embeddings.word_embeddings.weight"] = torch.zeros(10, 8)
    sd["text.proj.0.weight"] = torch.zeros(8, 8)
    st.save_file(sd, str(folder / SAFE))
    with pytest.warns(UserWarning, match="Hugging Face model"):
        lake = pylake.load_clip(folder)
    assert not lake.config.has_text and lake.config.archive_kind == "open_clip"
    images = clip_factory.example_images(2, 32, seed=8)
    with torch.no_grad():
        err = max_err(lake.encode_image(images), reference(root / "both").encode_image(images))
    assert err <= TOL


# ---- bad input ----------------------------------------------------------------------------------

@pytest.fixture()
def folder(tmp_path, hub):
    _, root, _ = hub
    dst = tmp_path / "hub"
    shutil.copytree(root / "safetensors", dst)
    return dst


def _edit(folder: Path, edit):
    cfg = json.loads((folder / CONFIG).read_text())
    edit(cfg["model_cfg"])
    (folder / CONFIG).write_text(json.dumps(cfg))


def _raises(folder: Path, needle: str):
    with pytest.raises(ValueError, match=needle) as e:
        pylake.load_clip(folder)
    assert CONFIG in str(e.value), str(e.value)
    return str(e.value)


@pytest.mark.parametrize("where,key,value,needle", [
    ("vision_cfg", "width", 128, r"model_cfg\.vision_cfg\.width = 128 but the weights .* width = 64"),
    ("vision_cfg", "layers", 3, r"model_cfg\.vision_cfg\.layers = 3 but .* image-tower blocks = 2"),
    ("vision_cfg", "patch_size", 16, r"model_cfg\.vision_cfg\.patch_size = 16 but .* kernel size = 8"),
    ("vision_cfg", "image_size", 64, r"model_cfg\.vision_cfg\.image_size = 64 but .* image size .* = 32"),
    ("vision_cfg", "image_size", [32, 48], r"model_cfg\.vision_cfg\.image_size = \[32,48\].*square"),
    ("vision_cfg", "mlp_ratio", 2.0, r"model_cfg\.vision_cfg\.mlp_ratio = 2"),
    ("vision_cfg", "head_width", 48, r"model_cfg\.vision_cfg\.head_width = 48, which does not divide"),
    ("text_cfg", "width", 32, r"model_cfg\.text_cfg\.width = 32 but .* width = 64"),
    ("text_cfg", "layers", 1, r"model_cfg\.text_cfg\.layers = 1 but .* text blocks = 2"),
    ("text_cfg", "context_length", 64, r"model_cfg\.text_cfg\.context_length = 64 but .* rows = 77"),
    ("text_cfg", "vocab_size", 1000, r"model_cfg\.text_cfg\.vocab_size = 1000 but .* rows = 49408"),
    ("text_cfg", "heads", 3, r"model_cfg\.text_cfg\.heads = 3, which does not divide"),
    (None, "embed_dim", 64, r"model_cfg\.embed_dim = 64 but .* 'visual\.proj' columns = 32"),
])
def test_config_disagrees_with_weights(folder, where, key, value, needle):
    _edit(folder, lambda c: (c[where] if where else c).__setitem__(key, value))
    msg = _raises(folder, needle)
    if " but the weights " in msg:
        assert SAFE in msg


@pytest.mark.parametrize("where,key,value,needle", [
    ("vision_cfg", "timm_model_name", "vit_base_patch16_224", r"timm_model_name = \"vit_base_patch16_224\" \(a timm image tower\)"),
    ("vision_cfg", "layers", [1, 1, 1, 1], r"vision_cfg\.layers = \[1,1,1,1\] \(a ResNet image tower\)"),
    ("vision_cfg", "attentional_pool", True, r"attentional_pool = true \(attentional pooling"),
    ("vision_cfg", "ls_init_value", 1e-5, r"vision_cfg\.ls_init_value = 1e-05 \(layer scale\)"),
    ("text_cfg", "ls_init_value", 1e-5, r"text_cfg\.ls_init_value = 1e-05 \(layer scale\)"),
    ("vision_cfg", "no_ln_pre", True, r"no_ln_pre = true"),
    ("vision_cfg", "final_ln_after_pool", True, r"vision_cfg\.final_ln_after_pool = true"),
    ("vision_cfg", "pool_type", "avg", r"vision_cfg\.pool_type = \"avg\""),
    ("vision_cfg", "output_tokens", True, r"vision_cfg\.output_tokens = true"),
    ("vision_cfg", "act_kwargs", {"approximate": "tanh"}, r"vision_cfg\.act_kwargs = \{\"approximate\":\"tanh\"\}"),
    ("vision_cfg", "norm_kwargs", {"eps": 1e-6}, r"vision_cfg\.norm_kwargs = \{\"eps\":1e-06\}"),
    ("vision_cfg", "qk_norm", True, r"vision_cfg\.qk_norm = true \(a custom attention block\)"),
    ("text_cfg", "pool_type", "last", r"text_cfg\.pool_type = \"last\""),
    ("text_cfg", "proj_bias", True, r"text_cfg\.proj_bias = true"),
    ("text_cfg", "no_causal_mask", True, r"text_cfg\.no_causal_mask = true"),
    ("vision_cfg", "some_new_option", 1, r"vision_cfg\.some_new_option = 1, an option LAKE does not know"),
    (None, "multimodal_cfg", {"width": 64}, r"model_cfg\.multimodal_cfg = .*CoCa"),
])
def test_unsupported_option(folder, where, key, value, needle):
    _edit(folder, lambda c: (c[where] if where else c).__setitem__(key, value))
    _raises(folder, needle)


def _edit_preprocess(folder: Path, key: str, value):
    cfg = json.loads((folder / CONFIG).read_text())
    cfg.setdefault("preprocess_cfg", {})[key] = value
    (folder / CONFIG).write_text(json.dumps(cfg))


@pytest.mark.parametrize("key,value,needle", [
    ("mean", [1e300, 0.5, 0.5], r"preprocess_cfg\.mean = \[1e\+300,0\.5,0\.5\], expected numbers within float32's range"),
    ("std", [0.2, 0.0, 0.3], r"preprocess_cfg\.std = \[0\.2,0\.0,0\.3\], expected positive numbers"),
    ("mean", "grey", r"preprocess_cfg\.mean = \"grey\", expected three numbers"),
])
def test_bad_normalisation_constants(folder, key, value, needle):
    _edit_preprocess(folder, key, value)
    _raises(folder, needle)


def test_normalisation_constants_are_the_float32_of_the_json_numbers(folder):
    # The config's doubles become float32 once (rounded to nearest), whatever their digits:
    # the text the reader passes to build_clip must not round them a second time. `just_up`
    # lies one double above the midpoint of two float32s: rounded once it is the upper one;
    # rounded to 9 digits first ("0.100000005") it would fall to the lower one.
    lo = torch.tensor(0.1, dtype=torch.float32)
    hi = torch.nextafter(lo, torch.tensor(1.0))
    just_up = math.nextafter((lo.item() + hi.item()) / 2, 1.0)
    mean, std = [0.1, just_up, 1 / 3], [0.26862954, 2.5e-30, 123456.789]
    _edit_preprocess(folder, "mean", mean)
    _edit_preprocess(folder, "std", std)
    c = pylake.load_clip(folder).config
    assert list(c.image_mean) == torch.tensor(mean, dtype=torch.float32).tolist()
    assert list(c.image_std) == torch.tensor(std, dtype=torch.float32).tolist()
    assert c.image_mean[1] == hi.item()


@pytest.mark.parametrize("where,key,value", [
    ("vision_cfg", "norm_kwargs", {"eps": 1e-5}),
    ("vision_cfg", "act_kwargs", {}),
    ("vision_cfg", "patch_dropout", 0.5),  # training only
    ("vision_cfg", "timm_model_name", None),
    ("text_cfg", "pool_type", "argmax"),
    (None, "init_logit_bias", -10.0),
])
def test_harmless_options_are_accepted(folder, where, key, value):
    _edit(folder, lambda c: (c[where] if where else c).__setitem__(key, value))
    assert pylake.load_clip(folder).config.archive_kind == "open_clip"


def test_not_an_open_clip_config(folder):
    (folder / CONFIG).write_text(json.dumps({"architectures": ["CLIPModel"]}))
    _raises(folder, r"has no \"model_cfg\" object; it is not an OpenCLIP hub config")


def test_invalid_json(folder):
    (folder / CONFIG).write_text('{"model_cfg": ')
    _raises(folder, "not valid JSON")


def test_weights_that_are_not_clip(folder):
    import safetensors.torch as st
    st.save_file({"fc.weight": torch.zeros(2, 2)}, str(folder / SAFE))
    with pytest.raises(ValueError, match=r"have no 'visual\.conv1\.weight': not an OpenCLIP ViT state dict"):
        pylake.load_clip(folder)


def test_missing_weights(folder):
    (folder / SAFE).unlink()
    with pytest.raises(ValueError, match=re.escape(f"'{folder}' has {CONFIG} but no weights: expected {SAFE} or {BIN} in it")):
        pylake.load_clip(folder)


def test_empty_folder_names_both_forms(tmp_path):
    with pytest.raises(ValueError, match="folder without config.json or open_clip_config.json") as e:
        pylake.load_clip(tmp_path)
    assert str(tmp_path) in str(e.value) and SAFE in str(e.value) and "model.safetensors" in str(e.value)


def test_weights_file_beside_the_config_is_cross_checked(folder):
    _edit(folder, lambda c: c["vision_cfg"].__setitem__("width", 128))
    with pytest.raises(ValueError, match=r"vision_cfg\.width = 128"):
        pylake.load_clip(folder / SAFE)


def test_a_folder_with_both_forms_reads_transformers(folder, tmp_path):
    # laion's hub repos hold both forms; the transformers one is read, as before this form existed.
    transformers = pytest.importorskip("transformers")
    tc = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
    vc = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
              image_size=32, patch_size=8)
    hf = transformers.CLIPModel(transformers.CLIPConfig(text_config=tc, vision_config=vc, projection_dim=32))
    hf.save_pretrained(folder, safe_serialization=True)
    assert pylake.load_clip(folder).config.archive_kind == "transformers"
    assert pylake.load_clip(folder / SAFE).config.archive_kind == "open_clip"
    (folder / "model.safetensors").unlink()  # config.json without its weights: the OpenCLIP form
    assert pylake.load_clip(folder).config.archive_kind == "open_clip"
