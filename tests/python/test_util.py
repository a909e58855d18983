"""The rules pylake takes from liblake instead of writing them again (bindings/bind_util.cpp):
dtype names (lake/dtype.h), the atomic writer and the key=value parser (lake/files.h), and the
state-dict wrappers of lake/clip_model.h, as the loaders and pylake's writers use them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pylake
from pylake import _C, _outputs, export

# Every spelling accepted before the rule had one home: _C.load_clip / _C.save_clip's strings
# (bindings/bind_clip.cpp), pylake.load_clip's torch dtypes (_clip.py), export's names and
# torch dtypes (export.py). Each must still give the same dtype.
BEFORE = {
    "float32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64,
    torch.float32: torch.float32, torch.float16: torch.float16,
    torch.bfloat16: torch.bfloat16, torch.float64: torch.float64,
}


def _leftovers(folder) -> list:
    return sorted(p.name for p in Path(folder).iterdir())


# ---------------------------------------------------------------- dtype names

@pytest.mark.parametrize("given,expected", list(BEFORE.items()), ids=str)
def test_every_dtype_spelling_accepted_before_still_is(given, expected):
    assert _C.parse_dtype(given) == expected
    assert _C.dtype_name(given) == str(expected).removeprefix("torch.")  # the one name


@pytest.mark.parametrize("bad", ["fp16", "Float32", "torch.float32", "int8", "", torch.int64, torch.uint8])
def test_unknown_dtype_names_every_accepted_name(bad):
    with pytest.raises(ValueError) as e:
        _C.parse_dtype(bad)
    msg = str(e.value)
    assert f"unknown dtype '{str(bad)}'" in msg
    for name in ("float32", "float16", "bfloat16", "float64", "float", "half", "double"):
        assert name in msg, name
    with pytest.raises(TypeError, match="torch.dtype or its name"):
        _C.parse_dtype(3)


def test_each_entry_point_takes_its_dtypes():
    assert _C.load_clip_dtypes == ("float32", "float16", "bfloat16", "float64")
    assert _C.save_clip_dtypes == ("float32", "float16", "bfloat16") == export.DTYPES
    for name in _C.load_clip_dtypes:
        assert _C.check_dtype(name, "load_clip") == _C.parse_dtype(name)
    with pytest.raises(ValueError, match=r"^save_clip: dtype must be float32, float16 or bfloat16, got float64$"):
        _C.check_dtype("double", "save_clip")
    with pytest.raises(ValueError, match="entry must be"):
        _C.check_dtype("float32", "export")


def test_load_clip_accepts_every_compute_dtype_and_names_the_rest(fixtures_dir):
    path = fixtures_dir / "tiny_state_dict.pt"
    for dtype in (torch.float32, torch.float64):  # the CPU ones
        assert pylake.load_clip(path, activation="quick_gelu", dtype=dtype).dtype == dtype
    with pytest.raises((ValueError, TypeError), match="dtype"):
        pylake.load_clip(path, activation="quick_gelu", dtype=torch.int32)


# ---------------------------------------------------------------- atomic writer

def test_write_bytes_goes_through_the_cpp_writer(tmp_path):
    out = tmp_path / "sub" / "a.bin"
    assert _outputs.write_bytes(out, b"\x00abc") == out and out.read_bytes() == b"\x00abc"
    _outputs.write_bytes(out, b"new")  # replaced whole
    assert out.read_bytes() == b"new" and _leftovers(out.parent) == ["a.bin"]
    _C.write_file_atomically(tmp_path / "m.bin", memoryview(bytearray(b"xyz")))  # any contiguous buffer
    assert (tmp_path / "m.bin").read_bytes() == b"xyz"
    (tmp_path / "dir").mkdir()
    with pytest.raises(RuntimeError, match="write_bytes: writing '.*dir' failed"):  # rename onto a folder
        _outputs.write_bytes(tmp_path / "dir", b"x")
    assert _leftovers(tmp_path) == ["dir", "m.bin", "sub"] and _leftovers(tmp_path / "dir") == []
    with pytest.raises(ValueError, match="write_file_atomically: cannot create .*missing"):
        _C.write_file_atomically(tmp_path / "missing" / "x", b"x")


def test_failing_write_bytes_leaves_the_old_file_byte_identical(tmp_path):
    """A write that fails half way (the file-size limit: EFBIG after 64 kB of 1 MB) through
    _outputs.write_bytes: the old file is unchanged, no temporary file is left."""
    out = tmp_path / "report.json"
    old = bytes(range(256)) * 3
    out.write_bytes(old)
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(Path(pylake.__file__).parents[1])!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from pylake import _outputs
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
try:
    _outputs.write_bytes({str(out)!r}, b"y" * (1 << 20))
except RuntimeError as e:
    print("RuntimeError:", e)
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "RuntimeError: write_bytes: writing" in res.stdout and "File too large" in res.stdout, res.stdout
    assert "an existing file is unchanged" in res.stdout
    assert _leftovers(tmp_path) == ["report.json"] and out.read_bytes() == old


# ---------------------------------------------------------------- key=value

def test_key_values():
    text = "# a comment\nformat=lake-clip\n\nsource=a=b c\r\nmean=0.1,0.2,0.3\nformat=again\n"
    assert _C.parse_key_values(text, "cfg") == {"format": "again", "source": "a=b c", "mean": "0.1,0.2,0.3"}
    assert _C.parse_key_values("") == {}
    assert _C.parse_key_values("k=\n") == {"k": ""}
    for bad, line in (("ok=1\nnoequals\n", 2), ("=value\n", 1)):
        with pytest.raises(RuntimeError, match=rf"^cfg line {line}: expected 'key=value', got '"):
            _C.parse_key_values(bad, "cfg")


# ---------------------------------------------------------------- state-dict wrappers

def test_checkpoint_wrappers_in_a_file_and_in_memory(fixtures_dir, tmp_path):
    """The C++ rules (kCheckpointStateDictKeys, kWrapperPrefixes) for a torch.save file and for
    pylake.export's mappings: the same model either way."""
    assert _C.checkpoint_state_dict_keys == ("state_dict", "model", "model_state_dict")
    ref = pylake.load_clip(fixtures_dir / "tiny_state_dict.pt", activation="quick_gelu")
    sd = torch.load(fixtures_dir / "tiny_state_dict.pt", weights_only=True)
    wrapped = {"epoch": 3, "model": {f"module._orig_mod.{k}": v for k, v in sd.items()}}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    got = pylake.load_clip(tmp_path / "ckpt.pt", activation="quick_gelu")
    assert got.parameter_names() == ref.parameter_names() and got.fingerprint() == ref.fingerprint()
    export.export_clip(wrapped, tmp_path / "a.safetensors", activation="quick_gelu", source="s")
    export.export_clip(sd, tmp_path / "b.safetensors", activation="quick_gelu", source="s")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    # a prefix on only some names is not a wrapper's: nothing is removed (no silent merge)
    some = dict(sd)
    some["module.visual.conv1.weight"] = some.pop("visual.conv1.weight")
    with pytest.raises(ValueError, match="no 'visual.conv1.weight'"):
        export.export_clip(some, tmp_path / "c.safetensors", activation="quick_gelu")
