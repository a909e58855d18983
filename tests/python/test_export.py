"""LAKE's own CLIP export (format version 2, safetensors), written by C++ (lake::save_clip).

Every export is checked against its source loaded by LAKE in fp32 (same config, same
fingerprint, bitwise equal embeddings, same tokenizer output), its file against the
safetensors library, and the old TorchScript exports (version 1) through the fixture
``tiny_export.pt``. Crafted files and failing writes are ValueErrors / errors that leave
nothing behind and never touch an existing file.
"""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import clip_factory as cf
import pylake
import pylake.cli
from pylake import export

pytest.importorskip("open_clip")
safetensors_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open  # noqa: E402

CONFIG_FIELDS = ("image_size", "patch_size", "vision_width", "vision_layers", "vision_heads", "embed_dim",
                 "context_length", "vocab_size", "text_width", "text_layers", "text_heads", "has_text",
                 "activation", "image_mean", "image_std")
HYPER = ("image_size", "patch_size", "vision_width", "vision_layers", "vision_heads", "embed_dim",
         "context_length", "vocab_size", "text_width", "text_layers", "text_heads")
VOCAB_KEY = "vocabulary_gz_base64"
TEXTS = ["a photo of a cat", "a scratched metal grid", "x"]


@pytest.fixture(scope="module")
def tiny():
    return cf.make_clip("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_gelu():
    return cf.make_clip("tiny", seed=0, quick_gelu=False)


def _leftovers(folder) -> list:
    return sorted(p.name for p in Path(folder).iterdir())


def _metadata(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def assert_same_model(got, ref) -> None:
    """``got`` (a LAKE export, loaded) is ``ref`` (its source, loaded by LAKE in fp32)."""
    assert got.config.archive_kind == "lake_export"
    for field in CONFIG_FIELDS:
        assert getattr(got.config, field) == getattr(ref.config, field), field
    assert got.parameter_names() == ref.parameter_names()
    assert got.fingerprint() == ref.fingerprint()
    images = cf.example_images(2, ref.config.image_size, seed=1)
    assert torch.equal(got.encode_image(images), ref.encode_image(images))
    if ref.config.has_text:
        tokens = cf.example_tokens(3, ref.config.context_length)
        assert torch.equal(got.encode_text(tokens), ref.encode_text(tokens))
    ref_tok = ref.tokenizer() or pylake.Tokenizer.from_file(export.default_vocab_path())
    assert torch.equal(got.tokenizer().tokenize(TEXTS), ref_tok.tokenize(TEXTS))


def assert_file_holds(path, model, dtype=torch.float32) -> None:
    """The safetensors library reads exactly ``model``'s parameters, cast to ``dtype``."""
    tensors = safetensors_torch.load_file(str(path))
    assert sorted(tensors) == model.parameter_names()
    for name, t in tensors.items():
        assert t.dtype == dtype, name
        assert torch.equal(t, model.parameter(name).to(dtype)), name


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_open_clip_module_roundtrip(act, tiny, tiny_gelu, tmp_path):
    module = tiny if act == "quick_gelu" else tiny_gelu
    cf.save_state_dict(module, tmp_path / "sd.pt")
    ref = pylake.load_clip(tmp_path / "sd.pt", activation=act)
    meta = export.export_clip(module, tmp_path / "m.safetensors", source="unit\ntest")
    assert _leftovers(tmp_path) == ["m.safetensors", "sd.pt"]

    got = pylake.load_clip(tmp_path / "m.safetensors")
    assert got.config.activation == act  # detected from the module, recorded, read back
    assert_same_model(got, ref)
    assert_file_holds(tmp_path / "m.safetensors", ref)
    written = _metadata(tmp_path / "m.safetensors")
    assert {k: v for k, v in written.items() if k != VOCAB_KEY} == meta
    assert meta["format"] == "lake-clip" and meta["format_version"] == "2" and meta["source"] == "unit test"
    assert meta["activation"] == act
    for key in HYPER:
        assert meta[key] == str(getattr(ref.config, key)), key
    for key, values in (("mean", ref.config.image_mean), ("std", ref.config.image_std)):
        parsed = torch.tensor([float(x) for x in meta[key].split(",")], dtype=torch.float32)
        assert torch.equal(parsed, torch.tensor(values, dtype=torch.float32))
    # the vocabulary is open_clip's merges file, byte for byte
    with open(export.default_vocab_path(), "rb") as f:
        assert base64.b64decode(written[VOCAB_KEY], validate=True) == f.read()


def test_state_dict_and_checkpoint_roundtrip(tiny, tmp_path):
    cf.save_state_dict(tiny, tmp_path / "ckpt.pt", wrapped=True)  # {"state_dict": {"module." + k: v}}
    ref = pylake.load_clip(tmp_path / "ckpt.pt", activation="quick_gelu")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    export.export_clip(ckpt, tmp_path / "a.safetensors", activation="quick_gelu", source="s")
    assert_same_model(pylake.load_clip(tmp_path / "a.safetensors"), ref)
    # the same checkpoint by its path: the same bytes
    export.export_clip(tmp_path / "ckpt.pt", tmp_path / "b.safetensors", activation="quick_gelu", source="s")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    # ... and the open_clip module they came from, with its detected activation
    export.export_clip(tiny, tmp_path / "c.safetensors", source="s")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "c.safetensors").read_bytes()


def test_bare_state_dict_needs_activation(tiny, tmp_path):
    cf.save_state_dict(tiny, tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="activation"):
        export.export_clip(tiny.state_dict(), tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="sd.pt.*activation"):
        export.export_clip(tmp_path / "sd.pt", tmp_path / "a.safetensors")
    assert _leftovers(tmp_path) == ["sd.pt"]


def test_v1_export_converts_to_v2(fixtures_dir, tmp_path):
    v1_path = fixtures_dir / "tiny_export.pt"
    v1 = pylake.load_clip(v1_path)
    assert v1.config.archive_kind == "lake_export" and v1.tokenizer() is not None
    meta = export.export_clip(v1_path, tmp_path / "v2.safetensors")
    v2 = pylake.load_clip(tmp_path / "v2.safetensors")
    assert_same_model(v2, v1)  # activation, heads, mean/std, tokenizer kept
    # the vocabulary is the v1 archive's own, byte for byte (read from the zip directly)
    with zipfile.ZipFile(v1_path) as z:
        v1_vocab = z.read(next(n for n in z.namelist() if n.endswith("extra/lake_vocab.txt.gz")))
        v1_config = z.read(next(n for n in z.namelist() if n.endswith("extra/lake_config.txt"))).decode()
    assert base64.b64decode(_metadata(tmp_path / "v2.safetensors")[VOCAB_KEY]) == v1_vocab
    v1_cfg = dict(line.split("=", 1) for line in v1_config.splitlines() if line)
    assert v1_cfg["format_version"] == "1" and meta["format_version"] == "2"
    for key in ("activation",) + HYPER:
        assert meta[key] == v1_cfg[key], key
    # a v2 export re-exported: the same bytes
    export.export_clip(tmp_path / "v2.safetensors", tmp_path / "again.safetensors", source=meta["source"])
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "v2.safetensors").read_bytes()


def test_openai_torchscript_module_in_memory(tiny, tmp_path):
    cf.save_openai_jit(tiny, tmp_path / "jit16.pt", fp16=True, cuda_constants=True)
    ref = pylake.load_clip(tmp_path / "jit16.pt")
    with warnings.catch_warnings():  # torch >= 2.10: torch.jit is deprecated (users still hold such modules)
        warnings.simplefilter("ignore", DeprecationWarning)
        jit = torch.jit.load(str(tmp_path / "jit16.pt"), map_location="cpu")
    meta = export.export_clip(jit, tmp_path / "e.safetensors")
    assert meta["activation"] == "quick_gelu"  # from the archive's QuickGELU module
    assert_same_model(pylake.load_clip(tmp_path / "e.safetensors"), ref)
    assert "input_resolution" not in safetensors_torch.load_file(str(tmp_path / "e.safetensors"))
    # the file itself, as load_clip reads it: the same bytes
    export.export_clip(tmp_path / "jit16.pt", tmp_path / "f.safetensors")
    meta_f = _metadata(tmp_path / "f.safetensors")
    assert {k: v for k, v in meta_f.items() if k != "source"} == {
        k: v for k, v in _metadata(tmp_path / "e.safetensors").items() if k != "source"}


def test_transformers_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    tc = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=77, vocab_size=49408, hidden_act="gelu")
    vc = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8, hidden_act="gelu")
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=tc, vision_config=vc, projection_dim=32))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("logit_scale"):
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ref = pylake.load_clip(tmp_path / "hf")
    assert ref.config.vision_heads == 4  # from config.json, not width / 64
    meta = export.export_clip(tmp_path / "hf", tmp_path / "hf.safetensors")
    assert meta["vision_heads"] == "4" and meta["text_heads"] == "4" and meta["activation"] == "gelu"
    assert_same_model(pylake.load_clip(tmp_path / "hf.safetensors"), ref)


def test_module_head_count_and_normalisation_are_carried(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    # 4 heads of 32 (not width / 64 = 2): only the module knows
    m = CLIP(64, CLIPVisionCfg(image_size=32, patch_size=8, width=128, layers=2, head_width=32),
             CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=4, layers=1), quick_gelu=False)
    m = cf.randomize_clip_(m.float().eval(), 3)
    m.visual.preprocess_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "size": 32}
    cf.save_state_dict(m, tmp_path / "sd.pt")
    meta = export.export_clip(m, tmp_path / "m.safetensors")
    assert (meta["vision_heads"], meta["text_heads"]) == ("4", "4")
    assert meta["mean"] == "0.5,0.5,0.5" and meta["std"] == "0.25,0.25,0.25"
    got = pylake.load_clip(tmp_path / "m.safetensors")
    assert got.config.image_mean == [0.5] * 3 and got.config.image_std == [0.25] * 3
    ref = pylake.load_clip(tmp_path / "sd.pt", activation="gelu", vision_heads=4, text_heads=4)
    images = cf.example_images(2, 32, seed=1)
    assert torch.equal(got.encode_image(images), ref.encode_image(images))
    assert got.fingerprint() == ref.fingerprint()


@pytest.mark.parametrize("dtype,torch_dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_reduced_precision_export(dtype, torch_dtype, tiny, tmp_path):
    cf.save_state_dict(tiny, tmp_path / "sd.pt")
    ref = pylake.load_clip(tmp_path / "sd.pt", activation="quick_gelu")
    export.export_clip(tiny, tmp_path / "h.safetensors", dtype=dtype)
    assert_file_holds(tmp_path / "h.safetensors", ref, torch_dtype)  # the rounded weights, exactly
    got = pylake.load_clip(tmp_path / "h.safetensors")
    for name in ref.parameter_names():
        assert torch.equal(got.parameter(name), ref.parameter(name).to(torch_dtype).float()), name
    # torch.dtype accepted too: the same bytes
    export.export_clip(tiny, tmp_path / "h2.safetensors", dtype=torch_dtype)
    assert (tmp_path / "h.safetensors").read_bytes() == (tmp_path / "h2.safetensors").read_bytes()


def test_custom_vocabulary(tiny, tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("not gzip")
    with pytest.raises(ValueError, match="gzip"):
        export.export_clip(tiny, tmp_path / "v.safetensors", vocab_path=str(bad))
    assert _leftovers(tmp_path) == ["vocab.txt"]
    with open(export.default_vocab_path(), "rb") as f:
        text = gzip.decompress(f.read())
    good = tmp_path / "vocab.txt.gz"
    good.write_bytes(gzip.compress(text, mtime=0))  # other bytes, the same merges
    export.export_clip(tiny, tmp_path / "v.safetensors", vocab_path=str(good))
    assert base64.b64decode(_metadata(tmp_path / "v.safetensors")[VOCAB_KEY]) == good.read_bytes()


def test_no_vocabulary_anywhere(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "default_vocab_path", lambda: None)
    with pytest.raises(ValueError, match="vocabulary"):
        export.export_clip(tiny, tmp_path / "v.safetensors")
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- command line

def test_cli_writes_the_same_bytes(fixtures_dir, tmp_path, capsys):
    src = fixtures_dir / "tiny_checkpoint.pt"
    rc = pylake.cli.main(["export", str(src), "--out", str(tmp_path / "cli.safetensors"), "--activation", "gelu",
                          "--dtype", "float16", "--source", "a test"])
    assert rc == 0
    assert '"format_version": "2"' in capsys.readouterr().out
    export.export_clip(src, tmp_path / "api.safetensors", activation="gelu", dtype="float16", source="a test")
    assert (tmp_path / "cli.safetensors").read_bytes() == (tmp_path / "api.safetensors").read_bytes()
    # python -m pylake.export: the same command; the source defaults to the input
    assert export.main([str(src), "--out", str(tmp_path / "m.safetensors"), "--activation", "gelu"]) == 0
    assert _metadata(tmp_path / "m.safetensors")["source"] == str(src)


def test_cli_open_clip(tiny, tmp_path, monkeypatch):
    import open_clip

    seen = {}

    def fake_create(name, pretrained=None, cache_dir=None, device="cpu"):
        seen.update(name=name, pretrained=pretrained, cache_dir=cache_dir)
        return tiny, None, None

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    rc = pylake.cli.main(["export", "--open-clip", "ViT-X", "--pretrained", "tag", "--out",
                          str(tmp_path / "o.safetensors")])
    assert rc == 0 and seen == {"name": "ViT-X", "pretrained": "tag", "cache_dir": None}
    assert _metadata(tmp_path / "o.safetensors")["source"] == "open_clip:ViT-X/tag"


@pytest.mark.parametrize("argv,match", [
    (["--out", "{out}"], "SOURCE or --open-clip"),
    (["{sd}", "--open-clip", "ViT-B-16", "--out", "{out}"], "SOURCE or --open-clip"),
    (["{sd}", "--out", "{out}"], "activation"),
    (["{sd}", "--pretrained", "x", "--activation", "gelu", "--out", "{out}"], "--pretrained"),
    (["{missing}", "--out", "{out}"], "missing.pt"),
    (["{sd}", "--activation", "gelu", "--vocab", "{missing}", "--out", "{out}"], "missing.pt"),
    (["{sd}", "--activation", "gelu", "--out", "{nodir}"], "cannot create"),
    (["{resnet}", "--activation", "gelu", "--out", "{out}"], "ResNet"),
])
def test_cli_bad_input_exit_2_nothing_written(argv, match, fixtures_dir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "x.safetensors"
    names = dict(out=out, sd=fixtures_dir / "tiny_state_dict.pt", missing=tmp_path / "missing.pt",
                 nodir=tmp_path / "no" / "such" / "x.safetensors", resnet=fixtures_dir / "resnet_state_dict.pt")
    rc = pylake.cli.main(["export"] + [a.format(**names) for a in argv])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err and match in err
    assert _leftovers(tmp_path / "out") == [] and not (tmp_path / "no").exists()


@pytest.mark.parametrize("argv", [["--dtype", "int8"], ["--activation", "relu"]])
def test_cli_bad_choices(argv, fixtures_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pylake.cli.main(["export", str(fixtures_dir / "tiny_state_dict.pt"), "--out", str(tmp_path / "x")] + argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- failures are atomic

@pytest.mark.parametrize("kwargs,match", [
    ({"activation": "relu"}, "activation"),
    ({"activation": "QuickGELU"}, "activation"),
    ({"dtype": "int8"}, "dtype"),
    ({"dtype": torch.float64}, "dtype"),
])
def test_bad_arguments_leave_an_existing_file(kwargs, match, tiny, tmp_path):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"previous export")
    with pytest.raises(ValueError, match=match):
        export.export_clip(tiny, out, **kwargs)
    assert _leftovers(tmp_path) == ["model.safetensors"] and out.read_bytes() == b"previous export"


def test_rejected_models_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="ResNet"):
        export.export_clip(cf.make_resnet_clip_state_dict(), tmp_path / "rn.safetensors", activation="quick_gelu")
    with pytest.raises(ValueError, match="visual.conv1.weight"):
        export.export_clip({"weight": torch.zeros(3)}, tmp_path / "x.safetensors", activation="gelu")
    with pytest.raises(ValueError, match="cannot export a list"):
        export.export_clip([1, 2], tmp_path / "x.safetensors")
    assert _leftovers(tmp_path) == []


def test_unwritable_destination(tiny, tmp_path):
    with pytest.raises(ValueError, match="cannot create.*nope"):
        export.export_clip(tiny, tmp_path / "nope" / "m.safetensors")
    (tmp_path / "a_file").write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot create"):
        export.export_clip(tiny, tmp_path / "a_file" / "m.safetensors")
    assert _leftovers(tmp_path) == ["a_file"]


def test_failing_write_leaves_the_existing_file(fixtures_dir, tmp_path):
    """A write that fails half way (the file-size limit: EFBIG after 1 MB of the ~15 MB)."""
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"previous export")
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(Path(pylake.__file__).parents[1])!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
import pylake
model = pylake.load_clip({str(fixtures_dir / "tiny_export.pt")!r})
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    pylake.export.export_clip(model, {str(out)!r})
except RuntimeError as e:
    print("RuntimeError:", e)
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "RuntimeError: save_clip: writing" in res.stdout and "File too large" in res.stdout, res.stdout
    assert _leftovers(tmp_path) == ["model.safetensors"] and out.read_bytes() == b"previous export"


# ---------------------------------------------------------------- crafted v2 files

@pytest.fixture(scope="module")
def good_v2(tmp_path_factory, fixtures_dir):
    path = tmp_path_factory.mktemp("v2") / "good.safetensors"
    export.export_clip(fixtures_dir / "tiny_export.pt", path)
    return safetensors_torch.load_file(str(path)), _metadata(path)


def _craft(tmp_path, good_v2, name="bad.safetensors", drop=(), **changes) -> Path:
    tensors, meta = good_v2
    meta = {k: v for k, v in dict(meta, **changes).items() if k not in drop}
    path = tmp_path / name
    safetensors_torch.save_file(tensors, str(path), metadata=meta)  # the reference writer
    return path


def test_reference_writer_file_reads_back(good_v2, fixtures_dir, tmp_path):
    got = pylake.load_clip(_craft(tmp_path, good_v2, "ok.safetensors"))
    assert_same_model(got, pylake.load_clip(fixtures_dir / "tiny_export.pt"))


@pytest.mark.parametrize("changes,match", [
    ({"format_version": "3"}, r"LAKE export of format version 3; this build of LAKE reads versions 1 and 2 "
                              r"\(upgrade LAKE\)"),
    ({"format_version": "1"}, r"__metadata__ says format_version=1"),
    ({VOCAB_KEY: "bm90IGJhc2U2NA=!"}, rf"__metadata__ key '{VOCAB_KEY}' is not valid base64"),
    ({VOCAB_KEY: base64.b64encode(b"not gzip").decode()}, VOCAB_KEY),
    ({"activation": "relu"}, "__metadata__ has activation=relu"),
    ({"vision_layers": "5"}, "__metadata__ says vision_layers=5 but the weights' shapes give vision_layers=3"),
    ({"image_size": "64"}, "image_size=64"),
    ({"embed_dim": "32"}, "embed_dim=32"),
    ({"text_layers": "1"}, "text_layers=1"),
    ({"vision_heads": "3"}, "not divisible into 3 attention heads"),
    ({"vision_heads": "two"}, "vision_heads=two, expected an integer"),
    ({"mean": "0.5,0.5"}, "mean=0.5,0.5, expected three comma-separated numbers"),
    ({"std": "a,b,c"}, "std=a,b,c, expected three"),
])
def test_crafted_v2_metadata_rejected(changes, match, good_v2, tmp_path):
    path = _craft(tmp_path, good_v2, **changes)
    with pytest.raises(ValueError, match=match) as e:
        pylake.load_clip(path)
    assert str(path) in str(e.value)


def test_crafted_v2_missing_version(good_v2, tmp_path):
    path = _craft(tmp_path, good_v2, drop=("format_version",))
    with pytest.raises(ValueError, match="has no format_version"):
        pylake.load_clip(path)


def test_other_safetensors_metadata_is_a_plain_state_dict(good_v2, tmp_path):
    tensors, _ = good_v2
    path = tmp_path / "plain.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"format": "pt"})
    assert pylake.load_clip(path, activation="quick_gelu").config.archive_kind == "safetensors"


def test_load_text_false_skips_text_checks(good_v2, tmp_path):
    path = _craft(tmp_path, good_v2, "ok.safetensors")
    m = pylake.load_clip(path, load_text=False)
    assert not m.config.has_text and m.config.vision_layers == 3

