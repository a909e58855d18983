"""The `lake` command end to end on ../shared/data: fit -> save -> load -> predict -> eval,
inspect, the paper-table script, and exit codes for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

FAST = ["--image-size", "32", "--k", "16"]


def lake(*args, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    r = subprocess.run([sys.executable, "-m", "pylake", *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return fixtures_dir / "tiny_export.pt"


@pytest.fixture(scope="module")
def grid(shared_dir):
    return shared_dir / "data" / "mvtec_ad" / "grid"


def test_fit_predict_inspect(model, grid, tmp_path):
    out = tmp_path / "grid.lake"
    r = lake("fit", "--model", model, "--class-name", "grid", "--normal", grid / "train" / "good", "--out", out, *FAST)
    info = json.loads(r.stdout)
    assert out.exists() and info["shots"] == 7 and info["image_threshold"] is not None
    tests = sorted((grid / "test" / "bent").iterdir())[:2]
    r = lake("predict", out, *tests, "--model", model, "--out", tmp_path / "pred", "--quiet")
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all(l.split("\t")[2] in ("normal", "anomalous") for l in lines)
    rows = json.loads((tmp_path / "pred" / "scores.json").read_text())
    assert [Path(x["image"]).name for x in rows] == [t.name for t in tests]
    import numpy as np

    amap = np.load(tmp_path / "pred" / f"{tests[0].stem}_map.npy")
    assert amap.shape == (32, 32) and (tmp_path / "pred" / f"{tests[0].stem}_overlay.png").exists()
    r = lake("predict", out, tests[0], "--model", model, "--out", tmp_path / "p16", "--map-format", "png16", "--quiet")
    assert (tmp_path / "p16" / f"{tests[0].stem}_map.png").exists()
    r = lake("inspect", out, tests[0], "--model", model, "--top", "3")
    assert r.stdout.count("explain: layer") == 3 and "layer 1: 16 neurons" in r.stdout


def test_eval_writes_reports(model, shared_dir, tmp_path):
    r = lake("eval", "--model", model, "--dataset", "mvtec", "--root", shared_dir / "data" / "mvtec_ad",
             "--shots", "1", "2", "--seeds", "0", "1", "--out", tmp_path / "rep", "--quiet", *FAST)
    assert "Image AUROC (%), mvtec" in r.stdout and "WinCLIP+ (published) | 93.1 | 94.4 | 95.2" in r.stdout
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(report["runs"]) == 4  # grid x 2 shots x 2 seeds
    means = [row for row in report["summary"] if row["category"] == "mean"]
    assert [m["shots"] for m in means] == [1, 2]
    for m in means:
        assert 0 <= m["image_auroc"] <= 1 and 0 <= m["pixel_aupro"] <= 1
    assert (tmp_path / "rep" / "report.csv").exists() and (tmp_path / "rep" / "report.md").exists()
    assert list((tmp_path / "rep" / "heatmaps").glob("grid_*.png"))


@pytest.mark.parametrize("kind,root", [("loco", "mvtec_loco"), ("mvtec", "hazelnut_toy"), ("mvtec", "mvtec_ad_nomask")])
def test_eval_other_shared_sets(model, shared_dir, tmp_path, kind, root):
    lake("eval", "--model", model, "--dataset", kind, "--root", shared_dir / "data" / root, "--shots", "1",
         "--seeds", "0", "--out", tmp_path / "rep", "--quiet", "--heatmaps", "0", *FAST)
    summary = json.loads((tmp_path / "rep" / "report.json").read_text())["summary"]
    mean = [r for r in summary if r["category"] == "mean"][0]
    assert 0 <= mean["image_auroc"] <= 1
    if root == "mvtec_ad_nomask":
        assert mean["pixel_auroc"] != mean["pixel_auroc"]  # NaN: image labels only


def test_exit_codes(model, grid, tmp_path):
    r = lake("fit", "--model", tmp_path / "missing.pt", "--class-name", "x", "--normal", grid / "train" / "good",
             "--out", tmp_path / "m.lake", check=False)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = lake("eval", "--model", model, "--dataset", "nope", "--root", ".", "--out", tmp_path, check=False)
    assert r.returncode == 2  # argparse: invalid choice
    bad = tmp_path / "bad.lake"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    r = lake("predict", bad, grid / "test" / "good" / "000.png", "--model", model, "--out", tmp_path / "o", check=False)
    assert r.returncode == 1 and "bad.lake" in r.stderr
    r = lake("eval", "--model", model, "--dataset", "mvtec", "--root", tmp_path / "none", "--out", tmp_path / "r",
             check=False)
    assert r.returncode == 2 and "none" in r.stderr
    for sub in ("fit", "predict", "eval", "inspect"):
        assert lake(sub, "--help").stdout.startswith("usage: lake " + sub)


@pytest.mark.slow
def test_reproduce_paper_script(model, shared_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "reproduce_paper.py"), "--model", str(model),
                        "--mvtec", str(shared_dir / "data" / "mvtec_ad"), "--btad", str(shared_dir / "data" / "hazelnut_toy"),
                        "--shots", "1", "2", "4", "--seeds", "0", "--out", str(tmp_path), "--random-weights",
                        "--quiet", *FAST], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "LAKE (paper, shots not stated) | 94.7" in r.stdout and "LAKE (paper, shots not stated) | 96.2" in r.stdout
    assert "AnomalyDINO (published) | 96.6 | 96.9 | 97.7" in r.stdout
    assert "Random-weight backbone" in (tmp_path / "mvtec" / "report.md").read_text()
