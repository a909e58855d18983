"""Tests of python/pylake/export.py that run without the compiled extension.

pylake/__init__.py imports the compiled module, so pylake.export is loaded
straight from its file (clip_factory.load_export_module) unless it was already
imported normally.
"""

import gzip
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "tests" / "fixtures", _ROOT / "python"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("open_clip")
import clip_factory as cf  # noqa: E402

export = cf.load_export_module()

OPENAI_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


@pytest.fixture(scope="module")
def tiny():
    return cf.make_clip("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_gelu():
    return cf.make_clip("tiny", seed=0, quick_gelu=False)


def _params(module):
    return {n: p for n, p in module.named_parameters()}


def _assert_same_weights(params, ref, dtype=None):
    assert set(params) == set(ref)
    for k, v in ref.items():
        expect = v if dtype is None else v.to(dtype)
        assert params[k].dtype == expect.dtype, k
        assert params[k].shape == expect.shape, k
        assert torch.equal(params[k], expect), k


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# ---------------------------------------------------------------- round trip

def test_roundtrip_open_clip_quick_gelu(tiny, tmp_path):
    out = tmp_path / "tiny.pt"
    cfg = export.export_clip(tiny, out, source="unit\ntest")
    assert _leftovers(tmp_path) == ["tiny.pt"]
    module, read_cfg, vocab = export.read_export(out)

    _assert_same_weights(_params(module), tiny.state_dict())
    assert all(not p.requires_grad for p in module.parameters())
    assert list(read_cfg) == list(export.CONFIG_KEYS)
    assert read_cfg == cfg
    expected = {
        "format": "lake-clip", "format_version": "1", "activation": "quick_gelu",
        "image_size": "32", "patch_size": "8", "vision_width": "128", "vision_layers": "3",
        "vision_heads": "2", "embed_dim": "64", "context_length": "77", "vocab_size": "49408",
        "text_width": "128", "text_layers": "2", "text_heads": "2",
        "mean": "0.48145466,0.4578275,0.40821073", "std": "0.26862954,0.26130258,0.27577711",
        "source": "unit test",
    }
    assert read_cfg == expected

    # the vocabulary is open_clip's merges file, byte for byte
    with open(export.default_vocab_path(), "rb") as f:
        assert vocab == f.read()
    text = gzip.decompress(vocab).decode("utf-8")
    assert text.startswith('"bpe_simple_vocab_16e6.txt#version')
    assert len(text.splitlines()) > 49152 - 256 - 2


def test_raw_config_text_is_key_value_lines(tiny, tmp_path):
    out = tmp_path / "tiny.pt"
    export.export_clip(tiny, out)
    extra = {"lake_config.txt": ""}
    torch.jit.load(str(out), map_location="cpu", _extra_files=extra)
    raw = extra["lake_config.txt"].decode("utf-8")
    assert raw.endswith("\n")
    lines = raw.splitlines()
    assert lines[0] == "format=lake-clip"
    assert all(line.count("=") >= 1 and " =" not in line for line in lines)
    assert export.parse_config(raw)["vision_layers"] == "3"


def test_activation_detected_gelu(tiny_gelu, tmp_path):
    cfg = export.export_clip(tiny_gelu, tmp_path / "g.pt")
    assert cfg["activation"] == "gelu"
    _, read_cfg, _ = export.read_export(tmp_path / "g.pt")
    assert read_cfg["activation"] == "gelu"


def test_activation_override(tiny, tmp_path):
    cfg = export.export_clip(tiny, tmp_path / "o.pt", activation="gelu")
    assert cfg["activation"] == "gelu"


def test_float16_export(tiny, tmp_path):
    export.export_clip(tiny, tmp_path / "h.pt", dtype="float16")
    module, cfg, _ = export.read_export(tmp_path / "h.pt")
    _assert_same_weights(_params(module), tiny.state_dict(), dtype=torch.float16)


def test_preprocess_cfg_used_when_present(tmp_path):
    m = cf.make_clip("tiny")
    m.visual.preprocess_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "size": 32}
    cfg = export.export_clip(m, tmp_path / "p.pt")
    assert cfg["mean"] == "0.5,0.5,0.5" and cfg["std"] == "0.25,0.25,0.25"


def test_plus240_hyper_parameters():
    m = cf.make_clip("plus240")
    cfg = export.infer_config(m)
    assert cfg["activation"] == "gelu"
    assert (cfg["image_size"], cfg["patch_size"], cfg["vision_width"], cfg["vision_layers"],
            cfg["vision_heads"], cfg["embed_dim"], cfg["text_width"], cfg["text_heads"],
            cfg["text_layers"]) == ("240", "16", "896", "2", "14", "640", "640", "10", "2")
    # from a bare state dict: same numbers (heads = width // 64)
    cfg_sd = export.infer_config(m.state_dict(), activation="gelu")
    assert {k: v for k, v in cfg_sd.items()} == cfg


# ---------------------------------------------------------------- other inputs

def test_state_dict_needs_activation(tiny):
    with pytest.raises(ValueError, match="activation"):
        export.infer_config(tiny.state_dict())


def test_checkpoint_input(tiny, tmp_path):
    cf.save_state_dict(tiny, tmp_path / "ckpt.pt", wrapped=True)
    sd = export.load_state_dict_file(str(tmp_path / "ckpt.pt"))
    export.export_clip(sd, tmp_path / "c.pt", activation="quick_gelu")
    module, cfg, _ = export.read_export(tmp_path / "c.pt")
    _assert_same_weights(_params(module), tiny.state_dict())
    assert cfg["activation"] == "quick_gelu"


def test_openai_jit_input(tiny, tmp_path):
    cf.save_openai_jit(tiny, tmp_path / "jit16.pt", fp16=True, cuda_constants=True)
    jit = export.load_openai_jit(str(tmp_path / "jit16.pt"))
    cfg = export.export_clip(jit, tmp_path / "e.pt")
    assert cfg["activation"] == "quick_gelu"  # from the archive's QuickGELU module
    assert cfg["image_size"] == "32" and cfg["vision_heads"] == "2"
    module, _, _ = export.read_export(tmp_path / "e.pt")
    params = _params(module)
    assert not set(OPENAI_NON_WEIGHTS) & set(params)
    ref = {k: v.half().float() for k, v in tiny.state_dict().items()}
    _assert_same_weights(params, ref)


def test_cli(tiny, tmp_path, capsys):
    cf.save_state_dict(tiny, tmp_path / "ckpt.pt", wrapped=True)
    cf.save_openai_jit(tiny, tmp_path / "jit.pt", fp16=True)
    rc = export.main(["--state-dict", str(tmp_path / "ckpt.pt"), "--activation", "gelu",
                      "--out", str(tmp_path / "a.pt")])
    assert rc == 0
    _, cfg, _ = export.read_export(tmp_path / "a.pt")
    assert cfg["activation"] == "gelu" and cfg["source"] == "state_dict:ckpt.pt"

    rc = export.main(["--openai-jit", str(tmp_path / "jit.pt"), "--out", str(tmp_path / "b.pt"),
                      "--dtype", "float16"])
    assert rc == 0
    module, cfg, _ = export.read_export(tmp_path / "b.pt")
    assert cfg["activation"] == "quick_gelu"
    assert all(p.dtype == torch.float16 for p in module.parameters())

    # a state dict without --activation: clear error, nothing written
    rc = export.main(["--state-dict", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "c.pt")])
    assert rc == 2
    assert "activation" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "c.pt.tmp").exists()

    # a TorchScript archive given as a state dict
    rc = export.main(["--state-dict", str(tmp_path / "jit.pt"), "--activation", "gelu",
                      "--out", str(tmp_path / "d.pt")])
    assert rc == 2 and "--openai-jit" in capsys.readouterr().err


def test_cli_help_mentions_local_weights(capsys):
    with pytest.raises(SystemExit):
        export.main(["--help"])
    assert "locally" in capsys.readouterr().out


# ---------------------------------------------------------------- rejections

def test_resnet_rejected(tmp_path):
    sd = cf.make_resnet_clip_state_dict()
    with pytest.raises(ValueError, match="ResNet"):
        export.export_clip(sd, tmp_path / "rn.pt", activation="quick_gelu")
    assert _leftovers(tmp_path) == []
    cf.make_resnet_clip_state_dict(tmp_path / "rn_sd.pt")
    rc = export.main(["--state-dict", str(tmp_path / "rn_sd.pt"), "--activation", "quick_gelu",
                      "--out", str(tmp_path / "rn.pt")])
    assert rc == 2
    assert not (tmp_path / "rn.pt").exists()


def test_unexpected_and_missing_parameters_rejected(tiny):
    sd = dict(tiny.state_dict())
    sd["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(128)
    with pytest.raises(ValueError, match="unexpected.*ls_1.gamma"):
        export.infer_config(sd, activation="gelu")
    sd = dict(tiny.state_dict())
    del sd["visual.ln_pre.weight"]
    with pytest.raises(ValueError, match="missing.*visual.ln_pre.weight"):
        export.infer_config(sd, activation="gelu")


def test_misshapen_parameters_rejected(tiny):
    sd = dict(tiny.state_dict())
    sd["visual.ln_post.weight"] = sd["visual.ln_post.weight"][:127]
    with pytest.raises(ValueError, match=r"'visual.ln_post.weight' has shape \[127\], expected \[128\]"):
        export.infer_config(sd, activation="gelu")
    sd = dict(tiny.state_dict())
    sd["transformer.resblocks.1.mlp.c_proj.weight"] = torch.zeros(128, 256)
    with pytest.raises(ValueError, match="c_proj.weight' has shape"):
        export.infer_config(sd, activation="gelu")


def test_not_a_clip_rejected():
    with pytest.raises(ValueError, match="missing"):
        export.infer_config({"weight": torch.zeros(3)}, activation="gelu")


@pytest.mark.parametrize("kwargs,match", [
    ({"activation": "relu"}, "activation"),
    ({"activation": "QuickGELU"}, "activation"),
    ({"dtype": "int8"}, "dtype"),
])
def test_bad_arguments_leave_nothing(tiny, tmp_path, kwargs, match):
    out = tmp_path / "bad.pt"
    with pytest.raises(ValueError, match=match):
        export.export_clip(tiny, out, **kwargs)
    assert _leftovers(tmp_path) == []


def test_bad_vocab(tiny, tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("not gzip")
    with pytest.raises(ValueError, match="gzip"):
        export.export_clip(tiny, tmp_path / "v.pt", vocab_path=str(bad))
    assert _leftovers(tmp_path) == ["vocab.txt"]
    good = tmp_path / "vocab.txt.gz"
    good.write_bytes(gzip.compress(b'"custom#version: 0.2\na b\n'))
    export.export_clip(tiny, tmp_path / "v.pt", vocab_path=str(good))
    _, _, vocab = export.read_export(tmp_path / "v.pt")
    assert vocab == good.read_bytes()


def test_failure_while_writing_is_atomic(tiny, tmp_path, monkeypatch):
    out = tmp_path / "model.pt"
    out.write_bytes(b"previous export")
    real_save = torch.jit.save

    def failing_save(m, f, _extra_files=None):
        real_save(m, f, _extra_files=_extra_files)  # the tmp file exists ...
        assert os.path.exists(f) and str(f).endswith(".tmp")
        raise OSError("disk full")  # ... and then the write fails

    monkeypatch.setattr(export.torch.jit, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export.export_clip(tiny, out)
    assert _leftovers(tmp_path) == ["model.pt"]
    assert out.read_bytes() == b"previous export"  # untouched
