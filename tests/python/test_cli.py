"""The `lake` command end to end on ../shared/data, compared with the Python API on the same
inputs: fit -> save -> load -> predict -> eval, inspect, outputs that cannot collide, strict
JSON, reader flags, --quiet, failed runs, exit codes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pylake
from conftest import ROOT
from pylake import _outputs, datasets

FAST = ["--image-size", "32", "--k", "16"]
OPTS = dict(image_size=32, k=16)


def lake(*args, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    r = subprocess.run([sys.executable, "-m", "pylake", *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def strict_json(path: Path):
    """json.loads that refuses NaN / Infinity tokens, as strict parsers do."""
    def refuse(token):
        raise AssertionError(f"{path} holds the non-JSON token {token}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return fixtures_dir / "tiny_export.pt"


@pytest.fixture(scope="module")
def clip(model):
    return pylake.load_clip(model)


@pytest.fixture(scope="module")
def grid(shared_dir):
    return shared_dir / "data" / "mvtec_ad" / "grid"


# ----------------------------------------------------------------------------- fit / predict / inspect

def test_fit_predict_inspect_equal_the_python_api(model, clip, grid, tmp_path):
    out = tmp_path / "grid.lake"
    r = lake("fit", "--model", model, "--class-name", "grid", "--normal", grid / "train" / "good", "--out", out, *FAST)
    info = json.loads(r.stdout)
    train = datasets.image_files(grid / "train" / "good")
    ref = pylake.NormalityModel(clip, class_name="grid", **OPTS).fit(train).calibrate(train, leave_one_out=True)
    assert info["shots"] == 7 and info["image_threshold"] == ref.image_threshold
    assert info["pixel_threshold"] == ref.pixel_threshold
    # Equal stems in different folders: two sets of outputs, named by the relative path.
    tests = [grid / "test" / "good" / "000.png", grid / "test" / "bent" / "000.png"]
    r = lake("predict", out, *tests, "--model", model, "--out", tmp_path / "pred")
    lines = r.stdout.strip().splitlines()
    rows = strict_json(tmp_path / "pred" / "predictions.json")
    assert [row["key"] for row in rows] == ["good/000.png", "bent/000.png"]
    for t, line, row in zip(tests, lines, rows):
        p = ref.score(t)
        assert row["score"] == float(p.pred_score[0])  # bitwise: float32 -> float64 is exact
        assert line.split("\t") == [str(t), repr(row["score"]),
                                    "anomalous" if bool(p.pred_label[0]) else "normal"]
        assert row["pred_label"] == int(p.pred_label[0])
        amap = np.load(tmp_path / "pred" / "maps" / f"{row['key']}.npy")
        assert amap.shape == (1024, 1024) and np.array_equal(amap, p.anomaly_map[0].numpy())
        overlay = pylake.read_image(tmp_path / "pred" / "overlays" / f"{row['key']}.png")
        assert tuple(overlay.shape) == (3, 1024, 2048)  # image | overlay
        assert torch.equal(overlay[:, :, :1024], pylake.read_image(t))
    csv_rows = (tmp_path / "pred" / "predictions.csv").read_text().splitlines()
    assert csv_rows[0] == "path,key,category,defect,label,score,pred_label" and len(csv_rows) == 3
    assert not (tmp_path / "pred" / _outputs.INCOMPLETE).exists()
    # 16-bit PNG maps: the map clamped to [0, 1] in units of 1 / 65535.
    lake("predict", out, tests[1], "--model", model, "--out", tmp_path / "p16", "--map-format", "png16", "--quiet")
    from PIL import Image

    png16 = np.asarray(Image.open(tmp_path / "p16" / "maps" / "000.png.png")).astype(np.int64)
    want = np.floor(np.clip(ref.score(tests[1]).anomaly_map[0].numpy(), 0, 1) * 65535 + 0.5).astype(np.int64)
    assert np.array_equal(png16, want)
    # inspect explains through the same file rule.
    r = lake("inspect", out, tests[1], "--model", model, "--top", "3")
    explained = [line for line in r.stdout.splitlines() if line.startswith("explain:")]
    want = ref.explain(tests[1], top=3)
    assert [line.split()[4] for line in explained] == [str(d["channel"]) for d in want]
    assert "layer 1: 16 neurons" in r.stdout


def test_duplicate_inputs_and_key_rule(model, grid, tmp_path):
    keys = _outputs.output_keys(["x/a.png", "x/a.jpg", "y/a.png", "x/sub/a.png"])
    assert keys == ["x/a.png", "x/a.jpg", "y/a.png", "x/sub/a.png"] and len(set(keys)) == 4
    assert _outputs.output_keys([grid / "test" / "good" / "000.png"]) == ["000.png"]
    with pytest.raises(ValueError, match="listed twice"):
        _outputs.output_keys(["x/a.png", "x/../x/a.png"])
    m = tmp_path / "g.lake"
    lake("fit", "--model", model, "--class-name", "grid", "--normal", grid / "train" / "good", "--out", m, "--quiet",
         *FAST)
    t = grid / "test" / "good" / "000.png"
    r = lake("predict", m, t, grid / "test" / "good", "--model", model, "--out", tmp_path / "o", check=False)
    assert r.returncode == 2 and "listed twice" in r.stderr and not (tmp_path / "o").exists()


def test_one_image_fit_explains_the_missing_threshold(model, grid, tmp_path):
    one = grid / "train" / "good" / "000.png"
    r = lake("fit", "--model", model, "--class-name", "grid", "--normal", one, "--out", tmp_path / "one.lake", *FAST)
    assert json.loads(r.stdout)["image_threshold"] is None
    assert "needs at least 2 normal images (got 1)" in r.stderr and "--calibration-images" in r.stderr
    r = lake("predict", tmp_path / "one.lake", grid / "test" / "good" / "001.png", "--model", model, "--out",
             tmp_path / "p")
    assert r.stdout.strip().endswith("\t-") and "no image threshold" in r.stderr and "--calibration-images" in r.stderr
    # Held-out normal images give the thresholds: their 99 % quantile, as the Python API.
    held = sorted(datasets.image_files(grid / "train" / "good"))[1:4]
    r = lake("fit", "--model", model, "--class-name", "grid", "--normal", one, "--calibration-images", *held, "--out",
             tmp_path / "cal.lake", *FAST)
    clip = pylake.load_clip(model)
    ref = pylake.NormalityModel(clip, class_name="grid", **OPTS).fit([one]).calibrate(held)
    assert json.loads(r.stdout)["image_threshold"] == ref.image_threshold


def test_quiet_prints_nothing(model, grid, tmp_path):
    runs = [("fit", "--model", model, "--class-name", "grid", "--normal", grid / "train" / "good", "--out",
             tmp_path / "m.lake", *FAST),
            ("predict", tmp_path / "m.lake", grid / "test" / "good" / "000.png", "--model", model, "--out",
             tmp_path / "p"),
            ("eval", "--model", model, "--dataset", "mvtec", "--root", grid, "--shots", "1", "--seeds", "0", "--out",
             tmp_path / "e", "--heatmaps", "0", *FAST)]
    for args in runs:
        r = lake(*args, "--quiet")
        assert r.stdout == "" and r.stderr == "", (args[0], r.stdout, r.stderr)
    assert strict_json(tmp_path / "e" / "report.json")["summary"]


# ----------------------------------------------------------------------------- every entry point, one result

def small_set(grid: Path, root: Path) -> Path:
    """An MVTec-layout category `grid` with 2 normal training images, one normal and one
    anomalous test image of the same stem, and the anomalous image's mask."""
    cat = root / "grid"
    for src, dst in [(grid / "train" / "good" / "000.png", cat / "train" / "good" / "000.png"),
                     (grid / "train" / "good" / "001.png", cat / "train" / "good" / "001.png"),
                     (grid / "test" / "good" / "000.png", cat / "test" / "good" / "000.png"),
                     (grid / "test" / "bent" / "000.png", cat / "test" / "bent" / "000.png"),
                     (grid / "ground_truth" / "bent" / "000_mask.png", cat / "ground_truth" / "bent" / "000_mask.png")]:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return cat


def cpp_example() -> Path:
    exe = ROOT / "build" / "examples" / "01_fit_and_score"
    if not exe.exists():
        pytest.skip(f"{exe} is not built (make build builds it)")
    return exe


def test_every_entry_point_gives_the_same_score_and_map(model, clip, grid, tmp_path):
    cat = small_set(grid, tmp_path / "set")
    train = datasets.image_files(cat / "train" / "good")
    # The seed whose 2-shot draw is the sorted order (the C++ example takes the first files).
    seed = next(s for s in range(50) if datasets.few_shot(train, 2, s) == train)
    tests = [cat / "test" / "bent" / "000.png", cat / "test" / "good" / "000.png"]

    # 1. Python API (the C++ example's options: image size 32, the default K).
    size = ["--image-size", "32"]
    ref = pylake.NormalityModel(clip, class_name="grid", image_size=32).fit(train).calibrate(train, leave_one_out=True)
    py = {t.parent.name: ref.score(t) for t in tests}
    # 2. lake fit + lake predict.
    lake("fit", "--model", model, "--class-name", "grid", "--normal", *train, "--out", tmp_path / "m.lake", "--quiet",
         *size)
    # A folder is searched with its sub-folders: test/bent/000.png and test/good/000.png.
    lake("predict", tmp_path / "m.lake", cat / "test", "--model", model, "--out", tmp_path / "pred", "--quiet")
    predicted = {Path(r["key"]).parent.name: r for r in strict_json(tmp_path / "pred" / "predictions.json")}
    assert sorted(r["key"] for r in predicted.values()) == ["bent/000.png", "good/000.png"]
    # 3. lake eval on the set (folder reader, all flags), raw maps saved.
    lake("eval", "--model", model, "--dataset", "folder", "--root", cat / "train" / "good", "--name", "grid",
         "--abnormal", cat / "test" / "bent", "--normal-test", cat / "test" / "good", "--masks",
         cat / "ground_truth" / "bent", "--shots", "2", "--seeds", str(seed), "--out", tmp_path / "ev", "--save-maps",
         "--quiet", *size)
    evaluated = {("good" if r["label"] == 0 else r["defect"]): r for r in strict_json(tmp_path / "ev" / "images.json")}
    # 4. The C++ example on the same folder.
    r = subprocess.run([str(cpp_example()), str(model), str(tmp_path / "set"), "grid", "2", "32",
                        str(tmp_path / "cpp.lake")], capture_output=True, text=True, check=True)
    cpp = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[3] == "map":
            cpp[parts[0].split("/")[0]] = (np.float32(parts[1]), parts[2], parts[4], float(parts[6]))

    for defect, p in py.items():
        score = float(p.pred_score[0])
        amap = p.anomaly_map[0].numpy()
        word = "anomalous" if bool(p.pred_label[0]) else "normal"
        assert predicted[defect]["score"] == score and evaluated[defect]["score"] == score
        assert predicted[defect]["pred_label"] == evaluated[defect]["pred_label"] == int(p.pred_label[0])
        assert cpp[defect][0] == np.float32(score) and cpp[defect][1] == word
        assert np.array_equal(np.load(tmp_path / "pred" / "maps" / (predicted[defect]["key"] + ".npy")), amap)
        assert np.array_equal(np.load(tmp_path / "ev" / "maps" / f"grid/2shot_seed{seed}" /
                                      (evaluated[defect]["key"] + ".npy")), amap)
        assert cpp[defect][2] == "1024x1024" and cpp[defect][3] == float(np.cumsum(amap.astype(np.float64))[-1])
    # The map is at the file's resolution; the backbone saw the file at S x S by the one rule.
    assert amap.shape == (1024, 1024)
    x = ref.prepare(tests[0])
    rgb = pylake.read_image(tests[0])
    assert torch.equal(x.pixels, pylake.clip_preprocess(rgb, 32, clip.config.image_mean, clip.config.image_std))
    # The report's metrics are those of the per-image rows (sklearn as the reference).
    from sklearn.metrics import roc_auc_score

    rows = strict_json(tmp_path / "ev" / "images.json")
    run = strict_json(tmp_path / "ev" / "report.json")["runs"][0]
    assert run["image_auroc"] == roc_auc_score([r["label"] for r in rows], [r["score"] for r in rows])


# ----------------------------------------------------------------------------- eval: data sets, reports

def test_eval_reports_are_strict_json_and_match_the_api(model, clip, grid, shared_dir, tmp_path):
    r = lake("eval", "--model", model, "--dataset", "mvtec", "--root", shared_dir / "data" / "mvtec_ad",
             "--shots", "1", "2", "--seeds", "0", "1", "--out", tmp_path / "rep", *FAST)
    assert "Image AUROC (%), MVTec AD" in r.stdout and "1 of its 15 categories" in r.stdout
    assert "WinCLIP+ (published) | 93.1 | 94.4 | 95.2" in r.stdout
    report = strict_json(tmp_path / "rep" / "report.json")
    assert len(report["runs"]) == 4 and not (tmp_path / "rep" / _outputs.INCOMPLETE).exists()
    images = strict_json(tmp_path / "rep" / "images.json")
    assert len(images) == 4 * 14 and {(r["shots"], r["seed"]) for r in images} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    # One run recomputed through the Python API.
    cat = datasets.mvtec(shared_dir / "data" / "mvtec_ad", ["grid"])[0]
    train = datasets.few_shot(cat.train, 2, 1)
    m = pylake.NormalityModel(clip, class_name="grid", **OPTS).fit(train).calibrate(train, leave_one_out=True)
    rows = [r for r in images if (r["shots"], r["seed"]) == (2, 1)]
    for s, row in zip(cat.test, rows):
        p = m.score(s.path)
        assert row["path"] == str(s.path) and row["score"] == float(p.pred_score[0])
        assert row["pred_label"] == int(p.pred_label[0]) and row["label"] == s.label
    run = [x for x in report["runs"] if (x["shots"], x["seed"]) == (2, 1)][0]
    scores = torch.tensor([r["score"] for r in rows])
    labels = torch.tensor([r["label"] for r in rows])
    assert run["image_auroc"] == pylake.metrics.image_auroc(scores, labels)
    pm = pylake.metrics.PixelMetrics()
    for s in cat.test:
        pm.update(m.score(s.path).anomaly_map, datasets.read_mask(s).unsqueeze(0))
    assert math.isclose(run["pixel_aupro"], pm.compute().aupro, rel_tol=0, abs_tol=1e-12)
    assert (tmp_path / "rep" / "report.csv").exists() and "| grid | 1 |" in (tmp_path / "rep" / "report.md").read_text()
    heat = list((tmp_path / "rep" / "heatmaps" / "grid" / "1shot_seed0").rglob("*.png"))
    assert len(heat) == 3 and all(h.relative_to(tmp_path / "rep").parts[3] != "good" for h in heat)


@pytest.mark.parametrize("kind,root,size", [("loco", "mvtec_loco", (1600, 800)), ("mvtec", "hazelnut_toy", (512, 512)),
                                            ("mvtec", "mvtec_ad_nomask", (900, 900))])
def test_eval_other_shared_sets(model, shared_dir, tmp_path, kind, root, size):
    r = lake("eval", "--model", model, "--dataset", kind, "--root", shared_dir / "data" / root, "--shots", "1",
             "--seeds", "0", "--out", tmp_path / "rep", "--heatmaps", "0", "--save-maps", *FAST)
    summary = strict_json(tmp_path / "rep" / "report.json")["summary"]
    mean = [x for x in summary if x["category"] == "mean"][0]
    assert 0 <= mean["image_auroc"] <= 1
    maps = sorted((tmp_path / "rep" / "maps").rglob("*.npy"))
    assert maps and all(np.load(m).shape == size for m in maps)  # at each file's resolution
    if root == "mvtec_ad_nomask":
        assert mean["pixel_auroc"] is None and mean["pixel_aupro"] is None  # image labels only: null, not NaN
    if kind == "loco":
        assert "published" not in r.stdout and "| mean | 1 |" in r.stdout  # no paper table for LOCO


def test_eval_one_class_and_missing_masks_need_a_flag(model, grid, tmp_path):
    cat = small_set(grid, tmp_path / "set")
    base = ["eval", "--model", model, "--dataset", "folder", "--root", cat / "train" / "good", "--abnormal",
            cat / "test" / "bent", "--shots", "1", "--seeds", "0", *FAST]
    r = lake(*base, "--out", tmp_path / "a", check=False)
    assert r.returncode == 2 and "no normal test images" in r.stderr and "--normal-test" in r.stderr
    assert "--allow-one-class" in r.stderr and not (tmp_path / "a").exists()
    r = lake(*base, "--out", tmp_path / "b", "--allow-one-class")
    report = strict_json(tmp_path / "b" / "report.json")
    run = report["runs"][0]
    assert run["image_auroc"] is None and run["image_ap"] is None and run["image_f1_max"] is None
    assert report["warnings"] and "no normal test images" in r.stderr
    # A missing mask: the error names the CLI flag; with it, the image counts for the image metrics only.
    (cat / "ground_truth" / "bent" / "000_mask.png").rename(cat / "ground_truth" / "bent" / "other.png")
    args = ["--normal-test", cat / "test" / "good", "--masks", cat / "ground_truth" / "bent"]
    r = lake(*base, *args, "--out", tmp_path / "c", check=False)
    assert r.returncode == 2 and "--allow-missing-masks" in r.stderr
    lake(*base, *args, "--out", tmp_path / "d", "--allow-missing-masks", "--quiet")
    run = strict_json(tmp_path / "d" / "report.json")["runs"][0]
    assert run["image_auroc"] is not None and run["pixel_auroc"] is None  # no mask left: no pixel metrics
    r = lake(*base, "--split-csv", "x.csv", "--out", tmp_path / "e", check=False)
    assert r.returncode == 2 and "--split-csv applies to --dataset visa only" in r.stderr


def test_failed_runs_are_marked_incomplete(model, grid, tmp_path):
    cat = small_set(grid, tmp_path / "set")
    (cat / "test" / "bent" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)  # corrupt, after 000.png
    (cat / "ground_truth" / "bent" / "001_mask.png").write_bytes((cat / "ground_truth" / "bent" / "000_mask.png")
                                                                 .read_bytes())
    r = lake("eval", "--model", model, "--dataset", "mvtec", "--root", tmp_path / "set", "--shots", "1", "--seeds", "0",
             "--out", tmp_path / "ev", "--quiet", *FAST, check=False)
    assert r.returncode == 2 and "001.png" in r.stderr and "incomplete" in r.stderr
    assert (tmp_path / "ev" / _outputs.INCOMPLETE).exists() and not (tmp_path / "ev" / "report.json").exists()
    m = tmp_path / "m.lake"
    lake("fit", "--model", model, "--class-name", "grid", "--normal", cat / "train" / "good", "--out", m, "--quiet",
         *FAST)
    out = tmp_path / "pred"
    r = lake("predict", m, cat / "test" / "bent", "--model", model, "--out", out, "--quiet", check=False)
    assert r.returncode == 2 and (out / _outputs.INCOMPLETE).exists() and not (out / "predictions.json").exists()
    assert np.load(out / "maps" / "000.png.npy").shape == (1024, 1024)  # what was written is complete
    assert not list(out.rglob("*.tmp"))
    # A rerun that succeeds clears the marker; a run failing before its first output leaves the folder as it was.
    lake("predict", m, cat / "test" / "bent" / "000.png", "--model", model, "--out", out, "--quiet")
    assert not (out / _outputs.INCOMPLETE).exists()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    r = lake("predict", tmp_path / "missing.lake", cat / "test" / "bent" / "000.png", "--model", model, "--out", out,
             check=False)
    assert r.returncode == 2 and sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_paper_table_only_for_paper_sets():
    from pylake.paper import CATEGORIES, paper_table

    summary = [{"category": "mean", "shots": 1, "image_auroc": 0.9}]
    full = paper_table("mvtec", summary, CATEGORIES["mvtec"])
    assert "LAKE (ours, this run) | 90.0 | - | - |" in full and "not comparable" not in full
    assert "LAKE (paper, shots not stated) | 94.7" in full
    assert "2 of its 3 categories" in paper_table("btad", summary, ["01", "02"])
    assert paper_table("mvtec", summary, ["grid", "my_widget"]) == ""  # an MVTec-layout set of other classes
    assert paper_table("folder", summary, ["folder"]) == "" and paper_table("mpdd", summary, ["bracket_black"]) == ""


def test_exit_codes(model, grid, tmp_path):
    r = lake("fit", "--model", tmp_path / "missing.pt", "--class-name", "x", "--normal", grid / "train" / "good",
             "--out", tmp_path / "m.lake", check=False)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = lake("eval", "--model", model, "--dataset", "nope", "--root", ".", "--out", tmp_path, check=False)
    assert r.returncode == 2 and "invalid choice" in r.stderr  # argparse
    bad = tmp_path / "bad.lake"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    r = lake("predict", bad, grid / "test" / "good" / "000.png", "--model", model, "--out", tmp_path / "o", check=False)
    assert r.returncode == 2 and "bad.lake" in r.stderr  # a corrupt file is bad input (ValueError)
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
                        *FAST], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    # grid is an MVTec AD category: its table, marked as partial; hazelnut is not a BTAD category.
    assert "LAKE (paper, shots not stated) | 94.7" in r.stdout and "1 of its 15 categories" in r.stdout
    assert "LAKE (paper, shots not stated) | 96.2" not in r.stdout
    assert "AnomalyDINO (published) | 96.6 | 96.9 | 97.7" in r.stdout
    assert "Random-weight backbone" in (tmp_path / "mvtec" / "report.md").read_text()
