"""`lake predict` / `lake eval` on a Dask cluster (pylake.distributed) against the single-process
commands, on a real `distributed.LocalCluster` of 2 worker processes (1 thread each) on
127.0.0.1: the same bytes in every output (tables, maps, overlays, heatmaps, report files);
the backbone loaded once per worker process; a worker killed with SIGKILL mid-job (its tasks
rerun elsewhere, every image written exactly once, no partial file); resume after Ctrl-C and
after lost records; a corrupt image in the middle; an unreachable scheduler."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (pylake[distributed])")

import pylake  # noqa: E402
from conftest import ROOT  # noqa: E402
from pylake import _outputs, datasets, evaluate, predict  # noqa: E402
from pylake import distributed as lakedist  # noqa: E402

OPTS = dict(image_size=32, k=16)
SIDE = 384  # the test images' side: real content, small enough for a quick test


@pytest.fixture(scope="module")
def mvtec(shared_dir) -> Path:
    root = shared_dir / "data" / "mvtec_ad"
    if not (root / "grid").is_dir():
        pytest.skip(f"{root / 'grid'} is absent: these tests score real images from ../shared/data")
    return root


@pytest.fixture(scope="module")
def images(shared_dir, mvtec, tmp_path_factory):
    """40 real images (grid and bottle, train and test) resized to SIDE px, in sub-folders, so
    that equal file names in different folders must stay apart."""
    from PIL import Image

    src = sorted((mvtec / "grid").rglob("*.png")) + sorted((shared_dir / "data" / "mvtec_ad_nomask").rglob("*.png"))
    src = [p for p in src if "ground_truth" not in p.parts][:40]
    assert len(src) == 40, f"expected 40 images in ../shared/data, found {len(src)}"
    d = tmp_path_factory.mktemp("images")
    out = []
    for p in src:
        rel = p.relative_to(shared_dir / "data")
        q = d / rel
        q.parent.mkdir(parents=True, exist_ok=True)
        Image.open(p).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR).save(q)
        out.append(q)
    return out


@pytest.fixture(scope="module")
def model_file(clip, mvtec, tmp_path_factory) -> Path:
    train = datasets.image_files(mvtec / "grid" / "train" / "good")
    m = pylake.NormalityModel(clip, class_name="grid", **OPTS).fit(train).calibrate(train, leave_one_out=True)
    path = tmp_path_factory.mktemp("model") / "grid.lake"
    m.save(path)
    return path


@pytest.fixture(scope="module")
def reference(clip, model_file, images, tmp_path_factory) -> Path:
    """The single-process `lake predict` (its library call) on the 40 images."""
    out = tmp_path_factory.mktemp("single")
    predict.run(pylake.NormalityModel.load(model_file, clip), images, out)
    return out


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        yield c


def files_of(out: Path):
    """Every file under ``out`` but the resume records, relative."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and lakedist.PARTS not in p.relative_to(out).parts)


def assert_same_outputs(single: Path, dist: Path, skip=()) -> None:
    names = files_of(single)
    assert files_of(dist) == names
    for name in names:
        if name not in skip:
            assert (single / name).read_bytes() == (dist / name).read_bytes(), name
    assert not lakedist.temporaries(dist)
    assert not (dist / _outputs.INCOMPLETE).exists()


# ----------------------------------------------------------------------------- predict

def test_predict_equals_the_single_process_command(client, archive, model_file, images, reference, tmp_path):
    out = tmp_path / "dist"
    res = lakedist.predict(client, model_file, images, out, model=archive, chunk_size=3)
    assert_same_outputs(reference, out)  # predictions.csv/json, 40 maps, 40 overlays: the same bytes
    assert len(files_of(out)) == 2 + 2 * len(images)
    assert [r["key"] for r in res.rows] == _outputs.output_keys(images)  # input order
    # 14 tasks on 2 processes: each process loaded the backbone and the model once, not per task.
    assert len(res.tasks) == 14 and sum(t["scored"] for t in res.tasks.values()) == 40
    pids = {t["pid"] for t in res.tasks.values()}
    assert len(pids) == 2
    for t in res.tasks.values():
        assert t["loads"]["clip"] == 1
    # A rerun finds everything done and scores nothing.
    again = lakedist.predict(client, model_file, images, out, model=archive, chunk_size=3)
    assert sum(t["scored"] for t in again.tasks.values()) == 0 and again.rows == res.rows
    assert_same_outputs(reference, out)


def test_predict_into_another_jobs_folder_is_refused(client, archive, clip, model_file, images, mvtec, tmp_path):
    out = tmp_path / "o"
    lakedist.predict(client, model_file, images[:2], out, model=archive)
    other = tmp_path / "other.lake"
    train = datasets.image_files(mvtec / "grid" / "train" / "good")[:3]
    pylake.NormalityModel(clip, class_name="grid", **OPTS).fit(train).save(other)
    with pytest.raises(ValueError, match="holds the results of another predict job"):
        lakedist.predict(client, other, images[:2], out, model=archive)


def test_corrupt_image_in_the_middle(client, archive, model_file, images, reference, tmp_path):
    bad = tmp_path / "in" / "zz" / "corrupt.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20)
    batch = images[:5] + [bad] + images[5:10]
    out = tmp_path / "o"
    res = lakedist.predict(client, model_file, batch, out, model=archive, chunk_size=2, html=True)
    ref = {r["path"]: r for r in json.loads((reference / "predictions.json").read_text())}
    rows = json.loads((out / "predictions.json").read_text())
    assert [r["path"] for r in rows] == [str(p) for p in batch]
    err = rows[5]
    assert err["score"] is None and err["pred_label"] is None and "corrupt.png" in err["error"]
    for r in rows[:5] + rows[6:]:
        assert r["error"] is None and {k: r[k] for k in predict.PREDICT_FIELDS if k != "key"} == {
            k: ref[r["path"]][k] for k in predict.PREDICT_FIELDS if k != "key"}
    assert "error" in (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert len(list((out / "maps").rglob("*.npy"))) == 10 and not list((out / "maps").rglob("corrupt*"))
    assert res.rows[5]["error"] == err["error"]
    # The single-process command with --on-error record writes the same table, outputs and report.html.
    single = tmp_path / "single"
    predict.run(pylake.NormalityModel.load(model_file, pylake.load_clip(archive)), batch, single, on_error="record",
                html=True)
    assert (out / "report.html").exists() and list((out / "report_files").rglob("*.png"))
    assert_same_outputs(single, out)
    # By flag, the job fails instead, naming the file.
    with pytest.raises(ValueError, match="corrupt.png"):
        lakedist.predict(client, model_file, batch, tmp_path / "f", model=archive, chunk_size=2, on_error="fail")
    assert (tmp_path / "f" / _outputs.INCOMPLETE).exists()


@pytest.mark.slow
def test_worker_killed_mid_predict(archive, model_file, images, reference, tmp_path):
    """SIGKILL one of 2 worker processes once some outputs exist: Dask reruns its tasks on the
    other (and on the worker the nanny restarts); every image is written exactly once."""
    out = tmp_path / "dist"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        result = {}

        def job():
            try:
                result["res"] = lakedist.predict(c, model_file, images, out, model=archive, chunk_size=2)
            except BaseException as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=job)
        t.start()
        deadline = time.monotonic() + 120
        while not list((out / lakedist.PARTS / "predict").rglob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        pids = c.run(os.getpid)
        victim, running = next(((w, keys) for w, keys in c.processing().items() if keys), (None, None))
        assert victim is not None, "no task was running when the first outputs appeared"
        os.kill(pids[victim], signal.SIGKILL)
        killed_at = len(list((out / lakedist.PARTS / "predict").rglob("*.json")))
        t.join(300)
        assert not t.is_alive() and "error" not in result, result.get("error")
    res = result["res"]
    assert 0 < killed_at < 40
    # The tasks the killed worker held were finished by another process (one of them may have
    # finished on it in the instant between the scheduler's answer and the kill).
    rerun = [k for k in running if res.tasks[k]["pid"] != pids[victim]]
    assert rerun, (running, {k: res.tasks[k]["pid"] for k in running})
    assert sum(t["scored"] + t["skipped"] for t in res.tasks.values()) == 40 and len(res.tasks) == 20
    # Exactly the expected outputs: 40 maps, 40 overlays, 40 records, the table; the same bytes.
    assert_same_outputs(reference, out)
    assert len(list((out / "maps").rglob("*.npy"))) == 40 and len(list((out / "overlays").rglob("*.png"))) == 40
    assert len(list((out / lakedist.PARTS / "predict").rglob("*.json"))) == 40
    print(f"\nkilled worker pid {pids[victim]} after {killed_at} images; tasks it held: {len(running)}, "
          f"{len(rerun)} rerun on pid {sorted({res.tasks[k]['pid'] for k in rerun})}; tasks that found images "
          f"done before them: {sum(1 for t in res.tasks.values() if t['skipped'])}; pids of the tasks: "
          f"{sorted({t['pid'] for t in res.tasks.values()})}")


def lake(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    return subprocess.Popen([sys.executable, "-m", "pylake", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, **kw)


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_folder(archive, model_file, images, reference, tmp_path):
    out = tmp_path / "o"
    args = ("predict", model_file, *images, "--model", archive, "--out", out, "--workers", "2", "--chunk-size", "1")
    p = lake(*args)
    records = out / lakedist.PARTS / "predict"
    deadline = time.monotonic() + 120
    while len(list(records.rglob("*.json"))) < 6 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted" in err and (out / _outputs.INCOMPLETE).exists()
    done = {r.relative_to(records).as_posix()[:-5]: (out / "maps" / (r.relative_to(records).as_posix()[:-5] + ".npy"))
            for r in records.rglob("*.json")}
    assert 6 <= len(done) < 40
    stamps = {k: (m.stat().st_ino, m.stat().st_mtime_ns) for k, m in done.items()}
    p = lake(*args)
    outp, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert f"resumed: {len(done)} of 40 images were already done" in err
    for k, m in done.items():  # not written again
        assert (m.stat().st_ino, m.stat().st_mtime_ns) == stamps[k], k
    assert_same_outputs(reference, out)
    assert len(outp.strip().splitlines()) == 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_flags_and_an_unreachable_scheduler(archive, model_file, images, tmp_path):
    t0 = time.monotonic()
    p = lake("predict", model_file, images[0], "--model", archive, "--out", tmp_path / "o",
             "--scheduler", f"tcp://127.0.0.1:{free_port()}", "--scheduler-timeout", "2")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and "could not reach the Dask scheduler" in err, err
    assert time.monotonic() - t0 < 60 and not (tmp_path / "o").exists()
    for extra, msg in ((("--workers", "2", "--scheduler", "tcp://127.0.0.1:1"), "give one"),
                       (("--chunk-size", "4"), "apply with --scheduler or --workers only"),
                       (("--workers", "0"), "at least 1 worker")):
        p = lake("predict", model_file, images[0], "--model", archive, "--out", tmp_path / "o", *extra)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and msg in err, err


# ----------------------------------------------------------------------------- eval

@pytest.fixture(scope="module")
def eval_reference(clip, mvtec, tmp_path_factory):
    cats = datasets.mvtec(mvtec, ["grid"])
    out = tmp_path_factory.mktemp("eval_single")
    evaluate.run(clip, cats, [1, 2], [0, 1], out, OPTS, {"dataset": "mvtec"}, progress=False, save_maps=True)
    return cats, out


def report_without_seconds(out: Path) -> dict:
    d = json.loads((out / "report.json").read_text())
    for r in d["runs"]:
        assert r.pop("seconds") > 0
    return d


def test_eval_equals_the_single_process_command(client, archive, eval_reference, tmp_path):
    cats, single = eval_reference
    out = tmp_path / "dist"
    files = lakedist.evaluate(client, cats, [1, 2], [0, 1], out, model=archive, options=OPTS,
                              meta={"dataset": "mvtec"}, progress=False, save_maps=True, chunk_size=4)
    assert report_without_seconds(out) == report_without_seconds(single)
    # report.csv/md, images.csv/json, every raw map, the heatmaps, report.html and its PNGs: the same bytes.
    assert_same_outputs(single, out, skip=("report.json",))
    assert files["html"] == out / "report.html"
    n_maps = len(list((out / "maps").rglob("*.npy")))
    assert n_maps == 4 * len(cats[0].test)
    # Resume: a finished run whose record is lost, and images of another whose records are lost,
    # are done again; the rest is taken from the records; the report is the same.
    parts = out / lakedist.PARTS / "eval" / "grid"
    (parts / "2shot_seed1" / "run.json").unlink()
    (parts / "1shot_seed0" / "run.json").unlink()
    for rec in sorted((parts / "1shot_seed0" / "images").rglob("*.json"))[:5]:
        rec.unlink()
    lakedist.evaluate(client, cats, [1, 2], [0, 1], out, model=archive, options=OPTS, meta={"dataset": "mvtec"},
                      progress=False, save_maps=True, chunk_size=4)
    assert report_without_seconds(out) == report_without_seconds(single)
    assert_same_outputs(single, out, skip=("report.json",))


@pytest.mark.slow
def test_eval_cli_with_workers(archive, mvtec, tmp_path):
    common = ("eval", "--model", archive, "--dataset", "mvtec", "--root", mvtec, "--categories", "grid", "--shots",
              "2", "--seeds", "0", "--image-size", "32", "--k", "16", "--heatmaps", "2")
    a = lake(*common, "--out", tmp_path / "a")
    b = lake(*common, "--out", tmp_path / "b", "--workers", "2")
    (a_out, a_err), (b_out, b_err) = a.communicate(timeout=300), b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, (a_err, b_err)
    assert a_out == b_out  # the printed table
    meta = dict(report_without_seconds(tmp_path / "a"))
    assert report_without_seconds(tmp_path / "b") == meta
    assert_same_outputs(tmp_path / "a", tmp_path / "b", skip=("report.json",))


def test_eval_with_a_corrupt_test_image(client, archive, clip, tmp_path):
    """A test image that fails to decode: an error row in images.csv, left out of the metrics,
    a warning; the same report as the single-process command with --on-error record."""
    from pylake import synthetic

    root = synthetic.generate(tmp_path / "syn", categories=["dots"], n_train=3, n_test_good=3, n_test_defect=4,
                              size=64)
    cats = datasets.mvtec(root)
    bad = cats[0].test[2].path
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated PNG
    kw = dict(progress=False, html=False, n_heatmaps=2)
    evaluate.run(clip, cats, [2], [0], tmp_path / "single", OPTS, {"dataset": "mvtec"}, on_error="record", **kw)
    lakedist.evaluate(client, cats, [2], [0], tmp_path / "dist", model=archive, options=OPTS,
                      meta={"dataset": "mvtec"}, **kw)
    rep = report_without_seconds(tmp_path / "dist")
    assert rep == report_without_seconds(tmp_path / "single")
    assert_same_outputs(tmp_path / "single", tmp_path / "dist", skip=("report.json",))
    assert rep["warnings"] == ["1 test image of dots (2-shot, seed 0) could not be read: left out of the metrics "
                               "(images.csv, column error)"]
    rows = json.loads((tmp_path / "dist" / "images.json").read_text())
    assert len(rows) == len(cats[0].test) and rows[2]["score"] is None and str(bad.name) in rows[2]["error"]
    # The metrics are those of the other images alone.
    good = [r for r in rows if r["error"] is None]
    want = pylake.metrics.image_auroc([r["score"] for r in good], [r["label"] for r in good])
    assert rep["runs"][0]["image_auroc"] == want
    with pytest.raises(ValueError, match=bad.name):
        lakedist.evaluate(client, cats, [2], [0], tmp_path / "fail", model=archive, options=OPTS, on_error="fail",
                          **kw)
