"""The .lake file: format version 2 (safetensors + a JSON header) round trips bit for bit, loads
onto every load of the archive it was fitted on (fp16, image-only) and no other; version 1
stays readable; crafted files of either version are each a ValueError naming what is wrong,
and nothing in them runs."""

from __future__ import annotations

import collections
import json
import struct

import pytest
import torch

import clip_factory
import pylake
from conftest import ROOT, max_err

DATA = ROOT / "tests" / "data"
KEY = "lake-normality"
_ST = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.int32: "I32"}


@pytest.fixture(scope="module")
def archive(fixtures_dir):
    return fixtures_dir / "tiny_export.pt"


@pytest.fixture(scope="module")
def clip(archive):
    return pylake.load_clip(archive)


@pytest.fixture(scope="module")
def fitted(clip):
    m = pylake.NormalityModel(clip, k=8, class_name="grid").fit(clip_factory.example_images(2, 32, seed=1))
    return m.calibrate(clip_factory.example_images(2, 32, seed=2), 0.9)


@pytest.fixture()
def saved(fitted, tmp_path):
    path = tmp_path / "m.lake"
    fitted.save(path)
    return path


# -- safetensors written and read here, independently of LAKE's writer and reader -------------

def read_st(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    dtypes = {v: k for k, v in _ST.items()}
    for name, e in header.items():
        b, end = e["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(body[b:end]), dtype=dtypes[e["dtype"]]).reshape(e["shape"]).clone()
    return meta, tensors


def write_st(path, meta, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.numpy().tobytes()
        header[name] = {"dtype": _ST[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if meta is not None:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return path


def rewrite(src, dst, edit_header=None, edit_tensors=None, raw_meta=None):
    """A copy of v2 file `src` with its JSON header and/or tensors changed (checksum kept)."""
    meta, tensors = read_st(src)
    header = json.loads(meta[KEY])
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    return write_st(dst, {KEY: raw_meta if raw_meta is not None else json.dumps(header)}, tensors)


# -- version 2 ---------------------------------------------------------------------------------

def test_v2_round_trip_is_bitwise(clip, fitted, saved):
    back = pylake.NormalityModel.load(saved, clip)
    x = clip_factory.example_images(3, 40, seed=5)
    a, b = fitted.score(x, with_branches=True), back.score(x, with_branches=True)
    for field in ("pred_score", "anomaly_map", "visual_map", "semantic_map", "pred_label", "pred_mask"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert (back.image_threshold, back.pixel_threshold) == (fitted.image_threshold, fitted.pixel_threshold)
    assert (back.layers, back.image_size, back.semantic_layer, back.shots) == \
        (fitted.layers, fitted.image_size, fitted.semantic_layer, fitted.shots)
    ea, eb = fitted.explain(x[0], 5), back.explain(x[0], 5)
    assert [(e.layer, e.channel, e.deviation) for e in ea] == [(e.layer, e.channel, e.deviation) for e in eb]

    # The file is a standard safetensors file (read here without LAKE) whose one metadata
    # entry is the JSON header; read_model_file gives the same tensors.
    meta, tensors = read_st(saved)
    assert list(meta) == [KEY]
    header = json.loads(meta[KEY])
    assert header["format"] == "lake-normality" and header["format_version"] == pylake._C.NORMALITY_FORMAT_VERSION == 2
    assert header["options"]["normal_prompts"] == fitted.normal_prompts and header["shots"] == 2
    raw = pylake.read_model_file(saved)
    assert raw["backbone_fingerprint"] == header["backbone"]["weights_fingerprint"]
    for i, n in enumerate(fitted.neurons):
        for k in ("indices", "scores", "mean", "std"):
            want = getattr(n, k)
            assert torch.equal(raw["neurons"][i][k], want) and torch.equal(tensors[f"neurons.{i}.{k}"], want)
        assert torch.equal(raw["galleries"][i], fitted.galleries[i])
    assert torch.equal(raw["text_embeddings"], fitted.text_embeddings)


def test_v2_is_read_by_the_safetensors_library(saved):
    safetensors = pytest.importorskip("safetensors")
    raw = pylake.read_model_file(saved)
    with safetensors.safe_open(str(saved), "pt") as f:
        assert json.loads(f.metadata()[KEY])["checksum"] == raw["checksum"]
        assert torch.equal(f.get_tensor("galleries.2"), raw["galleries"][2])


def test_zero_shot_round_trip(clip, tmp_path):
    m = pylake.NormalityModel(clip, class_name="grid").fit(torch.empty(0, 3, 32, 32))
    m.save(tmp_path / "z.lake")
    back = pylake.NormalityModel.load(tmp_path / "z.lake", clip)
    x = clip_factory.example_images(2, 32, seed=6)
    assert back.shots == 0 and torch.equal(back.score(x).anomaly_map, m.score(x).anomaly_map)


def test_read_model_file_gives_one_dict_for_both_versions():
    v1, v2 = pylake.read_model_file(DATA / "normality_v1.lake"), pylake.read_model_file(DATA / "normality_v2.lake")
    assert sorted(v1) == sorted(v2) and sorted(v1["options"]) == sorted(v2["options"])
    assert (v1["format_version"], v2["format_version"]) == (1, 2)
    assert v1["backbone_config"] is None and v2["backbone_config"]["activation"] == "quick_gelu"
    for a, b in zip(v1["neurons"], v2["neurons"]):
        assert sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype for k in ("indices", "scores", "mean", "std"))
    assert [g.shape for g in v1["galleries"]] == [g.shape for g in v2["galleries"]]
    # Both fixtures were made by one recipe (tools/make_normality_fixture.py; only defaults
    # such as gallery_tile moved in between).
    same = ("layers", "k", "score", "kind", "image_size", "class_name", "normal_prompts", "blur_sigma", "text_weight")
    assert all(v1["options"][k] == v2["options"][k] for k in same)
    assert v1["image_threshold"] == pytest.approx(v2["image_threshold"], abs=1e-6)


def test_committed_fixtures_load_and_agree(clip):
    x = clip_factory.example_images(2, 32, seed=103)
    a = pylake.NormalityModel.load(DATA / "normality_v1.lake", clip).score(x, with_branches=True)
    b = pylake.NormalityModel.load(DATA / "normality_v2.lake", clip).score(x, with_branches=True)
    assert max_err(a.anomaly_map, b.anomaly_map) <= 1e-6 and max_err(a.semantic_map, b.semantic_map) <= 1e-6


# -- the backbone: the archive's stored image tower -------------------------------------------

def test_loads_onto_fp16_and_image_only_loads_of_the_archive(archive, clip, fitted, saved):
    x = clip_factory.example_images(2, 32, seed=7)
    ref = fitted.score(x)
    image_only = pylake.NormalityModel.load(saved, pylake.load_clip(archive, load_text=False))
    assert torch.equal(image_only.score(x).anomaly_map, ref.anomaly_map)  # the same fp32 image tower
    half = pylake.load_clip(archive, dtype=torch.float16)
    assert half.fingerprint() != clip.fingerprint()  # as loaded: fp16 rounding; v1 would refuse
    p = pylake.NormalityModel.load(saved, half).score(x)
    assert max_err(p.anomaly_map, ref.anomaly_map) < 2e-2


def test_refuses_other_archives_and_settings(archive, saved, fixtures_dir):
    for other in ("plus240_state_dict.pt", "tiny_openai_jit_fp16.pt"):  # other weights / stored in fp16
        with pytest.raises(ValueError, match=r"m.lake': was fitted with a different backbone \(weights fingerprint"):
            pylake.NormalityModel.load(saved, pylake.load_clip(fixtures_dir / other))
    with pytest.raises(ValueError, match="backbone's activation = quick_gelu; the given model .* has activation = gelu"):
        pylake.NormalityModel.load(saved, pylake.load_clip(archive, activation="gelu"))
    with pytest.raises(ValueError, match="vision_heads = 2; .* has vision_heads = 4"):
        pylake.NormalityModel.load(saved, pylake.load_clip(archive, vision_heads=4))


# -- crafted version-2 files ------------------------------------------------------------------

def _set(path, value):
    def edit(h):
        *keys, last = path
        for k in keys:
            h = h[k]
        h[last] = value
    return edit


@pytest.mark.parametrize("name, kwargs, message", [
    ("field changed", dict(edit_header=_set(["options", "blur_sigma"], 2.0)),
     "bad.lake': is corrupted: its checksum does not match its contents"),
    ("threshold changed", dict(edit_header=_set(["image_threshold"], 0.5)), "checksum does not match"),
    ("gallery shape", dict(edit_tensors=lambda t: t.__setitem__("galleries.1", t["galleries.1"][:-1])),
     r"tensor 'galleries.1' is \[31, 8\] Float, expected \[32, 8\] Float \(gallery_rows x neurons\[1\].k = 8\)"),
    ("neuron shape", dict(edit_tensors=lambda t: t.__setitem__("neurons.0.mean", t["neurons.0.mean"][:4])),
     r"tensor 'neurons.0.mean' is \[4\] Double, expected \[8\] Double"),
    ("wrong dtype", dict(edit_tensors=lambda t: t.__setitem__("neurons.2.indices", t["neurons.2.indices"].int())),
     r"tensor 'neurons.2.indices' is \[8\] Int, expected \[8\] Long"),
    ("missing tensor", dict(edit_tensors=lambda t: t.pop("neurons.0.std")), "has no tensor 'neurons.0.std'"),
    ("missing text", dict(edit_tensors=lambda t: t.pop("text_embeddings")), "has no tensor 'text_embeddings'"),
    ("extra tensor", dict(edit_tensors=lambda t: t.__setitem__("x", torch.zeros(2))),
     "holds a tensor 'x' that its header does not list"),
    ("k lies", dict(edit_header=_set(["neurons", 1, "k"], 7)),
     r"tensor 'neurons.1.indices' is \[8\] Long, expected \[7\] Long \(neurons\[1\].k = 7\)"),
    ("k beyond channels", dict(edit_header=_set(["neurons", 1, "k"], 1000)),
     r"field 'neurons\[1\].k' is 1000, expected 1..channels = 128"),
    ("options.k lies", dict(edit_header=_set(["options", "k"], 9)),
     r"expected \(K\) int64 neuron indices with K = options.k = 9, got \[8\] Long"),
    ("wrong JSON type", dict(edit_header=_set(["shots"], "2")), r"field 'shots' is \"2\", expected an integer"),
    ("float for int", dict(edit_header=_set(["options", "gallery_tile"], 512.0)),
     r"field 'options.gallery_tile' is 512.0, expected an integer"),
    ("out of range", dict(edit_header=_set(["options", "text_weight"], 1.5)),
     r"'options.text_weight' is 1.5, expected a number in \[0, 1\]"),
    ("unknown score", dict(edit_header=_set(["options", "score"], "entropy")),
     "field 'options.score' is 'entropy', not a value this LAKE writes"),
    ("missing field", dict(edit_header=lambda h: h["options"].pop("pooling")), "the header has no 'options.pooling' field"),
    ("layers lie", dict(edit_header=_set(["options", "layers"], [1, 2])),
     r"holds 3 neuron layers and 3 galleries, expected 2 \(one per tapped block\)"),
    ("newer", dict(edit_header=_set(["format_version"], 3)), r"format version 3; this LAKE \(.*\) reads versions 1..2: upgrade LAKE"),
    ("v1 in safetensors", dict(edit_header=_set(["format_version"], 1)), "says format version 1 but is a safetensors file"),
    ("not JSON", dict(raw_meta="{not json"), "its 'lake-normality' metadata is not valid JSON"),
    ("not an object", dict(raw_meta="[1, 2]"), "its 'lake-normality' metadata is not a JSON object"),
    ("NaN", dict(raw_meta='{"format": "lake-normality", "image_threshold": NaN}'), "is not valid JSON"),
])
def test_crafted_v2_files_are_refused(clip, saved, tmp_path, name, kwargs, message):
    bad = rewrite(saved, tmp_path / "bad.lake", **kwargs)
    with pytest.raises(ValueError, match=message):
        pylake.NormalityModel.load(bad, clip)


def test_out_of_range_indices_v2(clip, saved, tmp_path):
    def edit(t):
        t["neurons.1.indices"] = t["neurons.1.indices"].clone()
        t["neurons.1.indices"][-1] = 128
    with pytest.raises(ValueError, match=r"neuron layer 1 \(block 2\) has neuron indices in \[\d+, 128\], expected \[0, 128\)"):
        pylake.NormalityModel.load(rewrite(saved, tmp_path / "bad.lake", edit_tensors=edit), clip)


def test_truncated_and_foreign_files(clip, saved, tmp_path, fixtures_dir):
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 100, 12):
        (tmp_path / "cut.lake").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut.lake'(: is truncated or corrupted| is not a LAKE normality model)"):
            pylake.NormalityModel.load(tmp_path / "cut.lake", clip)
        with pytest.raises(ValueError, match="cut.lake"):
            pylake.read_model_file(tmp_path / "cut.lake")
    no_meta = write_st(tmp_path / "plain.lake", {"format": "pt"}, {"w": torch.zeros(3)})
    with pytest.raises(ValueError, match="plain.lake' is not a LAKE normality model file .*without the 'lake-normality'"):
        pylake.NormalityModel.load(no_meta, clip)
    (tmp_path / "text.lake").write_text("hello")
    with pytest.raises(ValueError, match="text.lake' is not a LAKE normality model file"):
        pylake.NormalityModel.load(tmp_path / "text.lake", clip)


# -- crafted version-1 files (torch.save zips) --------------------------------------------------

@pytest.fixture()
def v1():
    raw = pylake.read_model_file(DATA / "normality_v1.lake")
    raw.pop("backbone_config")
    return raw


class _TensorView:
    """Pickles as torch._utils._rebuild_tensor_v2 over `base`'s storage with any sizes/strides/offset
    (what a crafted file can claim)."""

    def __init__(self, base, sizes, strides, offset=0):
        self.base, self.sizes, self.strides, self.offset = base, sizes, strides, offset

    def __reduce_ex__(self, protocol):
        return (torch._utils._rebuild_tensor_v2,
                (self.base._typed_storage(), self.offset, self.sizes, self.strides, False, collections.OrderedDict()))


def test_v1_fixture_round_trips_through_the_v1_reader(clip, v1, tmp_path):
    torch.save(v1, tmp_path / "copy.lake")  # Python's pickler this time, not LibTorch's
    x = clip_factory.example_images(2, 32, seed=8)
    a = pylake.NormalityModel.load(DATA / "normality_v1.lake", clip).score(x)
    b = pylake.NormalityModel.load(tmp_path / "copy.lake", clip).score(x)
    assert torch.equal(a.anomaly_map, b.anomaly_map)


@pytest.mark.parametrize("name, edit, message", [
    ("sizes past storage", lambda r: r["galleries"].__setitem__(0, _TensorView(r["galleries"][0], (1000, 4), (4, 1))),
     r"sizes \[1000, 4\], strides \[4, 1\], offset 0 but its storage holds 64 elements: it reaches past its storage"),
    ("offset past storage", lambda r: r["galleries"].__setitem__(0, _TensorView(r["galleries"][0], (16, 4), (4, 1), 10)),
     "reaches past its storage"),
    ("negative stride", lambda r: r["galleries"].__setitem__(0, _TensorView(r["galleries"][0], (16, 4), (-4, 1))),
     "expected non-negative sizes and strides"),
    ("wrong dtype", lambda r: r["galleries"].__setitem__(1, r["galleries"][1].double()),
     r"gallery 1 \(block 2\) is \[16, 4\] Double, expected \(M, 4\) float32"),
    ("gallery disagrees with neurons", lambda r: r["galleries"].__setitem__(2, r["galleries"][2][:, :3].clone()),
     r"gallery 2 \(block 3\) is \[16, 3\] Float, expected \(M, 4\) float32"),
    ("statistics disagree", lambda r: r["neurons"][0].__setitem__("std", r["neurons"][0]["std"][:2].clone()),
     r"neuron layer 0 \(block 1\): expected \(4\) float64 neuron std, got \[2\] Double"),
    ("index dtype", lambda r: r["neurons"][0].__setitem__("indices", r["neurons"][0]["indices"].int()),
     r"expected \(K\) int64 neuron indices with K = options.k = 4, got \[4\] Int"),
    ("out of range", lambda r: r["neurons"][2].__setitem__("indices", torch.tensor([0, 1, 2, 128])),
     r"neuron layer 2 \(block 3\) has neuron indices in \[0, 128\], expected \[0, 128\)"),
    ("layers disagree", lambda r: r["neurons"][1].__setitem__("layer", 3), r"neuron layer 1 \(block 3\) is for block 3, expected block 2"),
    ("bad checksum", lambda r: r.__setitem__("pixel_threshold", 0.5), "is corrupted: its checksum does not match"),
    ("not a number", lambda r: r.__setitem__("image_threshold", "high"), "entry 'image_threshold' is a string, expected a number"),
    ("missing", lambda r: r.pop("channels"), "has no 'channels' entry"),
])
def test_crafted_v1_files_are_refused(clip, v1, tmp_path, name, edit, message):
    v1["neurons"] = [dict(n) for n in v1["neurons"]]
    v1["galleries"] = list(v1["galleries"])
    edit(v1)
    torch.save(v1, tmp_path / "bad.lake")
    with pytest.raises(ValueError, match=message):
        pylake.NormalityModel.load(tmp_path / "bad.lake", clip)


def test_v1_truncated_and_code_free(clip, tmp_path):
    data = (DATA / "normality_v1.lake").read_bytes()
    (tmp_path / "cut.lake").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.lake'.*truncated or corrupted"):
        pylake.NormalityModel.load(tmp_path / "cut.lake", clip)

    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "lake-normality", "format_version": 1, "backbone_fingerprint": RunsCode()},
               tmp_path / "evil.lake")
    with pytest.raises(ValueError, match="evil.lake"):
        pylake.NormalityModel.load(tmp_path / "evil.lake", clip)
    assert not marker.exists()


def test_sources_never_unpickle_with_code():
    """No test, doc or example unpickles with code allowed (torch.load with weights_only off)."""
    needle = "weights_only=" + "False"
    hits = [str(p.relative_to(ROOT)) for folder in ("tests", "docs", "examples", "python", "tools", "README.md")
            for p in ([ROOT / folder] if (ROOT / folder).is_file() else (ROOT / folder).rglob("*"))
            if p.is_file() and p.suffix in (".py", ".md", ".ipynb", ".cpp", "") and needle in p.read_text(errors="ignore")]
    assert hits == []


def test_weights_fingerprint_is_the_stored_image_tower(fixtures_dir):
    # Python sees the identity a .lake file records: the same for another dtype and an
    # image-only load of one archive, different from fingerprint() (weights as loaded).
    path = fixtures_dir / "tiny_state_dict.pt"
    a = pylake.load_clip(path, activation="quick_gelu")
    b = pylake.load_clip(path, activation="quick_gelu", dtype=torch.float64, load_text=False)
    assert a.weights_fingerprint() == b.weights_fingerprint()
    assert a.fingerprint() != b.fingerprint()
    other = pylake.load_clip(fixtures_dir / "plus240_state_dict.pt")
    assert other.weights_fingerprint() != a.weights_fingerprint()
