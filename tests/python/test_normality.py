"""NormalityModel from Python: inputs (tensors, paths, folders), save/load and its
versioned format, and every bad input named by the method issue."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import clip_factory
import pylake
from conftest import ROOT, max_err

DATA = ROOT / "tests" / "data"


def _fixture_tool():
    spec = importlib.util.spec_from_file_location("make_normality_fixture", ROOT / "tools" / "make_normality_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def clip(fixtures_dir):
    return pylake.load_clip(fixtures_dir / "tiny_export.pt")


@pytest.fixture(scope="module")
def fitted(clip):
    return pylake.NormalityModel(clip, k=8, class_name="grid").fit(clip_factory.example_images(2, 32, seed=1))


# -- inputs -----------------------------------------------------------------------------

def test_fit_and_score_from_paths_and_folders(clip, shared_dir):
    grid = shared_dir / "data" / "mvtec_ad" / "grid"
    m = pylake.NormalityModel(clip, k=8, image_size=64, class_name="grid")
    train = sorted((grid / "train" / "good").iterdir())[:2]
    m.fit(train)
    assert m.shots == 2 and m.image_size == 64
    test = sorted((grid / "test" / "bent").iterdir())[:1]
    p = m.score(test, with_branches=True)
    assert p.anomaly_map.shape == (1, 1024, 1024)  # at the file's resolution
    # The backbone saw the file by the one rule: C++ decoding, PIL's bicubic on uint8 to S.
    rgb = pylake.read_image(test[0])
    prepared = m.prepare(test[0])
    assert (prepared.height, prepared.width) == (1024, 1024)
    assert torch.equal(prepared.pixels, pylake.clip_preprocess(rgb, 64, clip.config.image_mean, clip.config.image_std))
    assert torch.equal(pylake.load_images(test, clip, 64)[0], prepared.pixels)
    # A file scores the same alone, in a batch of files, and through a folder.
    both = m.score([test[0], test[0].parent / "001.png"])
    assert torch.equal(both.anomaly_map[0], p.anomaly_map[0]) and torch.equal(both.pred_score[:1], p.pred_score)
    # The same file as a tensor at its own resolution: maps at H x W too, but its backbone
    # input is a float resize of the normalised pixels, so the result is close, not equal.
    x = pylake.load_images(test, clip)
    assert x.shape == (1, 3, 1024, 1024)
    t = m.score(x)
    assert t.anomaly_map.shape == p.anomaly_map.shape and not torch.equal(t.anomaly_map, p.anomaly_map)
    assert (t.anomaly_map - p.anomaly_map).abs().max() < 0.05
    with pytest.raises(ValueError, match="score files of different sizes in separate calls"):
        m.score([test[0], shared_dir / "data" / "hazelnut_toy" / "hazelnut" / "train" / "good" / "00.jpg"])
    assert m.fit(grid / "train" / "good").shots == len(list((grid / "train" / "good").iterdir()))


def test_bad_inputs(clip, fitted, tmp_path):
    with pytest.raises(ValueError, match="k = 500 neurons requested"):
        pylake.NormalityModel(clip, k=500)
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        pylake.NormalityModel(clip, layers=[9])
    with pytest.raises(ValueError, match="unknown sensitivity score 'entropy'"):
        pylake.NormalityModel(clip, score="entropy")
    with pytest.raises(ValueError, match="unknown pooling 'mean'"):
        pylake.NormalityModel(clip, pooling="mean")
    with pytest.raises(ValueError, match=r"text_weight must lie in \[0, 1\]"):
        pylake.NormalityModel(clip, text_weight=1.5)
    with pytest.raises(RuntimeError, match="not fitted"):
        pylake.NormalityModel(clip).score(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected \(k, 3, H, W\)"):
        pylake.NormalityModel(clip).fit(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="non-empty batch"):
        fitted.score(torch.randn(0, 3, 32, 32))
    with pytest.raises(ValueError, match="non-empty"):
        fitted.calibrate(torch.randn(0, 3, 32, 32))
    with pytest.raises(ValueError, match="no images"):
        pylake.NormalityModel(clip).fit(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        fitted.score([tmp_path / "missing.png"])
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="a.png"):
        fitted.score([tmp_path / "a.png"])
    with pytest.raises(ValueError, match="expected images as"):
        fitted.score(42)


# -- save / load ------------------------------------------------------------------------

def test_save_load_roundtrip(clip, fitted, tmp_path):
    fitted.calibrate(clip_factory.example_images(3, 32, seed=4), 0.95)
    path = tmp_path / "m.lake"
    fitted.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.lake"]  # no temporary file left
    back = pylake.NormalityModel.load(path, clip)
    x = clip_factory.example_images(2, 40, seed=5)
    a, b = fitted.score(x, with_branches=True), back.score(x, with_branches=True)
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.pred_label, b.pred_label)
    assert back.image_threshold == fitted.image_threshold and back.layers == fitted.layers
    for n1, n2 in zip(fitted.neurons, back.neurons):
        assert torch.equal(n1.indices, n2.indices) and torch.equal(n1.std, n2.std)
    # The file (format version 2: safetensors + a JSON header) is inspectable without a
    # backbone, and without running code from it.
    raw = pylake.read_model_file(path)
    assert raw["format"] == "lake-normality" and raw["format_version"] == 2
    assert raw["galleries"][0].shape == (2 * 16, 8)


def test_old_format_versions_stay_readable(clip):
    """Every committed fixture loads, and scores as a fresh fit with the same settings."""
    tool = _fixture_tool()
    shots, calib, test = tool.fixture_images()
    fresh = pylake.NormalityModel(clip, **tool.FIXTURE_OPTIONS).fit(shots).calibrate(calib, 0.9)
    files = sorted(DATA.glob("normality_v*.lake"))
    assert [f.name for f in files][:1] == ["normality_v1.lake"]
    for f in files:
        old = pylake.NormalityModel.load(f, clip)
        assert old.shots == 1 and old.image_threshold == pytest.approx(fresh.image_threshold, abs=1e-6)
        assert max_err(old.score(test).anomaly_map, fresh.score(test).anomaly_map) <= 1e-6


def test_refuses_bad_files(clip, fitted, tmp_path, fixtures_dir):
    path = tmp_path / "m.lake"
    fitted.save(path)
    # Format version 1 files (torch.save zips) altered from the committed fixture; version 2
    # files are crafted in test_normality_io.py.
    raw = pylake.read_model_file(DATA / "normality_v1.lake")

    newer = dict(raw, format_version=3)
    torch.save(newer, tmp_path / "newer.lake")
    with pytest.raises(ValueError, match="format version 3; this LAKE .* reads versions 1..2: upgrade LAKE"):
        pylake.NormalityModel.load(tmp_path / "newer.lake", clip)

    corrupted = dict(raw, galleries=[g.clone() for g in raw["galleries"]])
    corrupted["galleries"][1][3, 2] += 0.25
    torch.save(corrupted, tmp_path / "corrupted.lake")
    with pytest.raises(ValueError, match="corrupted: its checksum does not match"):
        pylake.NormalityModel.load(tmp_path / "corrupted.lake", clip)

    # The neuron indices are validated once, at load (the scoring path then gathers unchecked).
    channels = raw["channels"]
    for bad, message in ((channels, rf"neuron indices in \[\d+, {channels}\], expected \[0, {channels}\)"),
                         (-1, rf"neuron indices in \[-1, \d+\], expected \[0, {channels}\)")):
        neurons = [dict(n) for n in raw["neurons"]]
        neurons[1]["indices"] = neurons[1]["indices"].clone()
        neurons[1]["indices"][-1 if bad > 0 else 0] = bad
        torch.save(dict(raw, neurons=neurons), tmp_path / "bad_index.lake")
        with pytest.raises(ValueError, match=message):
            pylake.NormalityModel.load(tmp_path / "bad_index.lake", clip)
    neurons = [dict(n) for n in raw["neurons"]]
    neurons[0]["indices"] = neurons[0]["indices"].double()
    torch.save(dict(raw, neurons=neurons), tmp_path / "bad_index.lake")
    with pytest.raises(ValueError, match=r"expected \(K\) int64 neuron indices"):
        pylake.NormalityModel.load(tmp_path / "bad_index.lake", clip)

    data = path.read_bytes()
    (tmp_path / "truncated.lake").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        pylake.NormalityModel.load(tmp_path / "truncated.lake", clip)

    other = pylake.load_clip(fixtures_dir / "plus240_state_dict.pt")
    with pytest.raises(ValueError, match="fitted with a different backbone"):
        pylake.NormalityModel.load(path, other)
    with pytest.raises(ValueError, match="not a LAKE normality model file"):
        pylake.NormalityModel.load(fixtures_dir / "tiny_state_dict.pt", clip)


def test_failed_save_loses_nothing(fitted, tmp_path):
    """A save that fails leaves no partial or temporary file and does not touch what was there."""
    target = tmp_path / "model.lake"
    target.mkdir()  # the final rename onto a folder fails after the data was written
    (target / "inside.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="model.lake' failed"):
        fitted.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.lake"]
    assert (target / "inside.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="cannot create"):
        fitted.save(tmp_path / "no" / "such" / "dir.lake")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.lake"]


def test_model_size_per_shot(clip, tmp_path):
    """The file grows by N x K x layers float32 per shot (plus a small header)."""
    sizes = []
    for shots in (1, 2, 4):
        m = pylake.NormalityModel(clip, k=16).fit(clip_factory.example_images(shots, 32, seed=9))
        m.save(tmp_path / f"{shots}.lake")
        sizes.append((tmp_path / f"{shots}.lake").stat().st_size)
    per_shot = (sizes[2] - sizes[0]) / 3
    assert per_shot == pytest.approx(16 * 16 * 3 * 4, rel=0.05)


class _RunsCode:
    """An object whose unpickling would call os.system (what a crafted file can hold)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_read_model_file_runs_no_code(tmp_path, fitted):
    fitted.save(tmp_path / "m.lake")
    assert pylake.read_model_file(tmp_path / "m.lake")["format"] == "lake-normality"
    marker = tmp_path / "ran"
    torch.save({"format": "lake-normality", "x": _RunsCode(marker)}, tmp_path / "evil.lake")
    import pickle

    with pytest.raises(pickle.UnpicklingError, match="os.system|posix.system|Unsupported global"):
        pylake.read_model_file(tmp_path / "evil.lake")
    assert not marker.exists()
