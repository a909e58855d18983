"""Files from outside: nothing in them runs, and every reader is bounded (src/detail/limits.h).

* A TorchScript archive whose scripted class's ``__setstate__`` writes a file: torch.jit.load
  writes it (checked, so the archive is live); ``load_clip`` reads the weights and never does.
* LAKE's code-free TorchScript reader gives the tensors torch.jit.load gives (the reference,
  allowed here in the tests only), on every fixture archive.
* Bombs: each refused with an error naming the file and the limit, in a fresh process whose
  peak RSS (VmHWM) is measured and must stay within a bound above its baseline.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path
from typing import Tuple

import pytest
import torch

import legacy_export
import pylake

ROOT = Path(__file__).resolve().parents[2]

# Peak RSS a refused bomb may add to the process (the files themselves are a few KB).
RSS_BOUND_MB = 200


# ---- code never runs ----------------------------------------------------------------------


class Evil:
    """Scripted with torch.jit.script: its __setstate__ creates the file named in its state
    (torch.from_file(shared=True) opens with O_CREAT), as torch.jit.load runs it."""

    def __init__(self, path: str):
        self.path = path
        self.n = 0

    def __getstate__(self) -> Tuple[str, int]:
        return (self.path, 0)

    def __setstate__(self, state: Tuple[str, int]) -> None:
        self.path = state[0]
        self.n = torch.from_file(state[0], True, 16, dtype=torch.uint8).numel()


def _evil_archive(tiny_openclip, path: Path, target: Path) -> None:
    evil_cls = torch.jit.script(Evil)
    root = legacy_export._container(tiny_openclip.state_dict())  # named_parameters: the OpenAI layout
    root.evil = evil_cls(str(target))
    torch.jit.script(root).save(str(path))


def test_setstate_never_runs(tmp_path, tiny_openclip):
    archive, target = tmp_path / "evil.pt", tmp_path / "pwned"
    _evil_archive(tiny_openclip, archive, target)
    assert not target.exists()

    model = pylake.load_clip(archive, dtype=torch.float64)
    assert not target.exists(), "load_clip ran the archive's __setstate__"
    sd = tiny_openclip.state_dict()
    assert set(model.parameter_names()) == set(sd)
    for name in sd:
        assert torch.equal(model.parameter(name), sd[name].double()), name

    torch.jit.load(str(archive), map_location="cpu")  # the reference does run it
    assert target.exists(), "the test archive is not live: torch.jit.load did not write the file"


JIT_FIXTURES = ["tiny_openai_jit_fp16.pt", "tiny_openai_jit_fp32.pt", "tiny_export.pt"]


@pytest.mark.parametrize("name", JIT_FIXTURES)
def test_reader_matches_torch_jit_load(fixtures_dir, name):
    path = fixtures_dir / name
    ref = torch.jit.load(str(path), map_location="cpu")
    tensors = {**dict(ref.named_buffers()), **dict(ref.named_parameters())}
    floating = {k: v for k, v in tensors.items() if v.is_floating_point()}
    model = pylake.load_clip(path, dtype=torch.float64)
    assert set(model.parameter_names()) == set(floating)
    for k, v in floating.items():
        assert torch.equal(model.parameter(k), v.double()), k


# ---- bombs, each in a fresh process with its peak RSS measured ------------------------------

_PROBE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {python!r})
    import pylake

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    # Warm up what every call touches (ATen, the allocator) so the baseline is fair.
    try:
        pylake.load_clip({warm!r})
    except Exception:
        pass
    base = hwm()
    error = None
    try:
        {call}
    except Exception as e:
        error = type(e).__name__ + ": " + str(e)
    print(json.dumps({{"base_mb": base, "peak_mb": hwm(), "error": error}}))
    """
)


def _probe(call: str, fixtures_dir: Path) -> dict:
    code = _PROBE.format(python=str(ROOT / "python"), warm=str(fixtures_dir / "tiny_state_dict.pt"), call=call)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"the reader crashed (rc {out.returncode}): {out.stderr[-2000:]}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["delta_mb"] = result["peak_mb"] - result["base_mb"]
    print(f"{call}: +{result['delta_mb']:.1f} MB peak RSS; {result['error']}")
    return result


def _refused(result: dict, *fragments: str) -> None:
    assert result["error"] is not None, "the bomb was accepted"
    for f in fragments:
        assert f in result["error"], (f, result["error"])
    assert result["delta_mb"] < RSS_BOUND_MB, f"peak RSS grew by {result['delta_mb']:.0f} MB"


def _torch_zip(path: Path, records: dict) -> None:
    """A zip laid out as torch.save lays it out (records under one folder, stored)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in {"version": b"3\n", "byteorder": b"little", **records}.items():
            z.writestr(f"archive/{name}", data)


def test_deeply_nested_pickle(tmp_path, fixtures_dir):
    # 10^6 nested tuples (TUPLE1 on TUPLE1 ...) and 10^6 nested lists (10^6 EMPTY_LIST, then APPENDs)
    tuples, lists = tmp_path / "tuples.pt", tmp_path / "lists.pt"
    n = 10**6
    _torch_zip(tuples, {"data.pkl": b"\x80\x02)" + b"\x85" * n + b"."})
    _torch_zip(lists, {"data.pkl": b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."})
    for path in (tuples, lists):
        r = _probe(f"pylake.load_clip({str(path)!r})", fixtures_dir)
        _refused(r, "ValueError", path.name, "pickle nesting depth limit of 512")


def test_memo_cycle(tmp_path, fixtures_dir):
    # a = []; a.append(a) pickles as EMPTY_LIST, BINPUT 0, BINGET 0, APPEND
    path = tmp_path / "cycle.pt"
    _torch_zip(path, {"data.pkl": b"\x80\x02]q\x00h\x00a."})
    r = _probe(f"pylake.load_clip({str(path)!r})", fixtures_dir)
    _refused(r, "ValueError", "cycle.pt", "reference cycle")
    # the same through a dict value: d = {}; d["self"] = d
    path = tmp_path / "dict_cycle.pt"
    _torch_zip(path, {"data.pkl": b"\x80\x02}q\x00X\x04\x00\x00\x00selfq\x01h\x00s."})
    r = _probe(f"pylake.load_clip({str(path)!r})", fixtures_dir)
    _refused(r, "ValueError", "dict_cycle.pt", "reference cycle")


def _zip_claiming(path: Path, records: dict, claims: dict) -> None:
    """A stored zip whose central directory says record `name` holds `claims[name]` bytes
    (zip64 sizes), whatever it really holds."""
    out, central = bytearray(), bytearray()
    for name, data in records.items():
        n = name.encode()
        crc = zlib.crc32(data)
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, len(data), len(data), len(n), 0) + n + data
        size = claims.get(name)
        if size is None:
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, len(data), len(data),
                                   len(n), 0, 0, 0, 0, 0, offset) + n
        else:
            extra = struct.pack("<HHQQ", 0x0001, 16, size, size)
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                                   len(n), len(extra), 0, 0, 0, 0, offset) + n + extra
    cd_offset = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central), cd_offset, 0)
    path.write_bytes(bytes(out))


def test_zip_directory_claiming_100_gb(tmp_path, fixtures_dir):
    with zipfile.ZipFile(fixtures_dir / "tiny_state_dict.pt") as z:
        records = {i.filename: z.read(i.filename) for i in z.infolist()}
    prefix = next(iter(records)).split("/")[0]
    for victim in (f"{prefix}/data/0", f"{prefix}/version"):  # version: read by PyTorchStreamReader itself
        path = tmp_path / f"claims_{victim.split('/')[-1]}.pt"
        _zip_claiming(path, records, {victim: 100 * 10**9})
        r = _probe(f"pylake.load_clip({str(path)!r})", fixtures_dir)
        _refused(r, "ValueError", path.name, "claims 100000000000 bytes", "zip record size limit")


class _Storage:
    pass


class _Tensor:
    def __init__(self, sizes, strides):
        self.sizes, self.strides = sizes, strides

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (_Storage(), 0, self.sizes, self.strides, False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def __init__(self, f, numel):
        super().__init__(f, protocol=2)
        self.numel = numel

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, "0", "cpu", self.numel)
        return None


def _state_dict_file(path: Path, numel: int, sizes, strides, data: bytes) -> None:
    import io
    buf = io.BytesIO()
    _Pickler(buf, numel).dump({"visual.conv1.weight": _Tensor(sizes, strides)})
    _torch_zip(path, {"data.pkl": buf.getvalue(), "data/0": data})


def test_small_state_dict_claiming_1e12_elements(tmp_path, fixtures_dir):
    # the storage claims 10^12 floats but its record holds one
    claim = tmp_path / "claims_storage.pt"
    _state_dict_file(claim, 10**12, (10**6, 10**6), (10**6, 1), b"\0" * 4)
    # a one-element storage viewed as 10^6 x 10^6 with zero strides (what torch.save writes
    # for an expanded tensor): inside the storage, but 10^12 elements
    expanded = tmp_path / "expanded.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1).as_strided((10**6, 10**6), (0, 0))}, expanded)
    for path, limit in ((claim, "a storage claims 1000000000000 elements"), (expanded, "tensor-vs-storage limit")):
        assert path.stat().st_size < 2048
        r = _probe(f"pylake.load_clip({str(path)!r})", fixtures_dir)
        _refused(r, "ValueError", path.name, limit)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + \
        chunk(b"IEND", b"")


def test_png_of_1e10_pixels(tmp_path, fixtures_dir):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(100000, 100000))
    r = _probe(f"pylake.read_image({str(path)!r})", fixtures_dir)
    _refused(r, "ValueError", "huge.png", "100000x100000", "max_pixels")


def test_gzip_bomb_vocabulary(tmp_path, fixtures_dir):
    path = tmp_path / "bomb.txt.gz"
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    with open(path, "wb") as f:
        for _ in range(1024):  # 1 GiB of zeros, about 1 MB compressed
            f.write(z.compress(b"\0" * (1 << 20)))
        f.write(z.flush())
    assert path.stat().st_size < 4 << 20
    r = _probe(f"pylake._C.Tokenizer.from_file({str(path)!r})", fixtures_dir)
    _refused(r, "ValueError", "bomb.txt.gz", "vocabulary size limit")
    # `lake export --vocab` reads the file it embeds through the same bounded reader.
    r = _probe(f"pylake.export._read_vocab({str(path)!r})", fixtures_dir)
    _refused(r, "ValueError", "bomb.txt.gz", "vocabulary size limit")


def test_oversized_plain_vocabulary_is_not_read(tmp_path, fixtures_dir):
    path = tmp_path / "huge_merges.txt"
    with open(path, "wb") as f:  # 20 GB, sparse: refused by its size before a byte is read
        f.truncate(20 << 30)
    r = _probe(f"pylake._C.Tokenizer.from_file({str(path)!r})", fixtures_dir)
    _refused(r, "ValueError", "huge_merges.txt", "21474836480 bytes", "vocabulary size limit of 67108864")


def _jpeg_segments(data: bytes):
    """(marker, bytes) of each segment of a baseline or progressive JPEG; a scan (SOS) runs
    to the next marker that is not a restart or a stuffed 0xFF."""
    i, segs = 2, []
    while i < len(data):
        assert data[i] == 0xFF, f"no marker at byte {i}"
        m = data[i + 1]
        if m == 0xD9:
            segs.append((m, data[i:i + 2]))
            break
        j = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if m == 0xDA:
            while not (data[j] == 0xFF and data[j + 1] != 0 and not 0xD0 <= data[j + 1] <= 0xD7):
                j += 1
        segs.append((m, data[i:j]))
        i = j
    return segs


def test_progressive_jpeg_with_too_many_scans(tmp_path):
    """A 64 x 64 progressive JPEG whose last refinement scan is repeated: at 3 extra scans it
    decodes as PIL decodes it; past the limit (limits.h kMaxJpegScans, 500) it is refused
    by the scan count before the scans are decoded."""
    import io  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", progressive=True,
                                                                           quality=90)
    segs = _jpeg_segments(buf.getvalue())
    scans = [s for m, s in segs if m == 0xDA]
    assert len(scans) >= 5  # PIL wrote a progressive file
    head = buf.getvalue()[:2] + b"".join(s for _, s in segs[:-1])

    few = tmp_path / "few_scans.jpg"
    few.write_bytes(head + scans[-1] * 3 + b"\xff\xd9")
    ours = pylake.read_image(str(few)).permute(1, 2, 0).numpy()
    assert np.array_equal(ours, np.asarray(Image.open(few).convert("RGB")))

    many = tmp_path / "many_scans.jpg"
    many.write_bytes(head + scans[-1] * 600 + b"\xff\xd9")
    assert many.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match=r"many_scans\.jpg.*more than 500 scans, the JPEG scan limit"):
        pylake.read_image(str(many))
