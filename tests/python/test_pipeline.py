"""The input pipeline (pylake.pipeline): prepared images scored in batches equal the one-file
path bit for bit at batch size 1 and to float rounding beyond; order, errors and the
prefetch bound; `lake predict` / `lake eval` with --batch-size / --io-threads; the overlays'
shared colour scale."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pylake
from pylake import datasets, pipeline, predict
from pylake.evaluate import write_heatmap

OPTS = dict(image_size=32, k=16)


@pytest.fixture(scope="module")
def clip(fixtures_dir):
    return pylake.load_clip(fixtures_dir / "tiny_export.pt")


@pytest.fixture(scope="module")
def grid(shared_dir):
    g = shared_dir / "data" / "mvtec_ad" / "grid"
    if not g.is_dir():
        pytest.skip(f"{g} is absent: the pipeline tests score real images from ../shared/data")
    return g


@pytest.fixture(scope="module")
def fitted(clip, grid):
    train = datasets.image_files(grid / "train" / "good")
    return pylake.NormalityModel(clip, class_name="grid", **OPTS).fit(train).calibrate(train, leave_one_out=True)


@pytest.fixture(scope="module")
def mixed(grid, tmp_path_factory):
    """Test images of the grid at their own size and resized to other sizes (maps differ in shape)."""
    d = tmp_path_factory.mktemp("mixed")
    files = sorted((grid / "test").rglob("*.png"))[:6]
    out = []
    for i, f in enumerate(files):
        if i % 3 == 0:
            out.append(f)
            continue
        im = Image.open(f).convert("RGB").resize((200 + 37 * i, 150 + 11 * i), Image.BILINEAR)
        p = d / f"{i}_{f.parent.name}.png"
        im.save(p)
        out.append(p)
    return out


def test_batch_one_is_bitwise_the_one_file_path(fitted, mixed):
    got = list(pipeline.scored(fitted, mixed, batch_size=1, io_threads=2, depth=3))
    assert [i for i, _, _ in got] == list(range(len(mixed)))
    for (i, pred, extra), path in zip(got, mixed):
        ref = fitted.score(path)
        assert extra is None
        assert tuple(pred.anomaly_map.shape) == tuple(ref.anomaly_map.shape)
        assert torch.equal(pred.anomaly_map, ref.anomaly_map), path
        assert torch.equal(pred.pred_score, ref.pred_score)
        assert torch.equal(pred.pred_label, ref.pred_label)
    sizes = {tuple(p.anomaly_map.shape) for _, p, _ in got}
    assert len(sizes) >= 3  # the batches really mixed file sizes


@pytest.mark.parametrize("batch_size", [2, 4])
def test_larger_batches_agree_to_float_rounding(fitted, mixed, batch_size):
    one = [p for _, p, _ in pipeline.scored(fitted, mixed, batch_size=1, io_threads=0)]
    many = [p for _, p, _ in pipeline.scored(fitted, mixed, batch_size=batch_size, io_threads=1)]
    for a, b in zip(one, many):
        assert torch.allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=1e-5)
        assert abs(float(a.pred_score[0]) - float(b.pred_score[0])) <= 1e-5


def test_score_prepared_checks_its_input(fitted, clip, mixed):
    good = fitted.prepare(mixed[0])
    with pytest.raises(ValueError, match="at least one prepared image"):
        fitted.score_prepared([])
    other = pylake.NormalityModel(clip, class_name="grid", image_size=48, k=16)
    with pytest.raises(ValueError, match=r"image 1 expected \(3, 32, 32\) float32 pixels"):
        fitted.score_prepared([good, other.prepare(mixed[0])])
    with pytest.raises(ValueError, match="batch_size must be >= 0"):
        fitted.score_prepared([good], batch_size=-1)


def test_a_bad_file_raises_or_is_yielded_in_place(fitted, mixed, tmp_path):
    bad = tmp_path / "truncated.png"
    bad.write_bytes(Path(mixed[1]).read_bytes()[:200])
    paths = [mixed[0], mixed[1], bad, mixed[2]]
    with pytest.raises(ValueError, match="truncated.png"):
        list(pipeline.scored(fitted, paths, batch_size=2, io_threads=2))
    got = list(pipeline.scored(fitted, paths, batch_size=2, io_threads=2, on_error="yield"))
    assert [i for i, _, _ in got] == [0, 1, 2, 3]
    assert isinstance(got[2][1], ValueError) and "truncated.png" in str(got[2][1])
    for i in (0, 1, 3):
        assert torch.allclose(got[i][1].anomaly_map, fitted.score(paths[i]).anomaly_map, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="on_error"):
        list(pipeline.scored(fitted, paths, on_error="skip"))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(pipeline.scored(fitted, paths, batch_size=0))


def test_prefetch_keeps_order_and_its_bound():
    started, consumed, ahead = [], [], []
    lock = threading.Lock()

    def work(x):
        with lock:
            started.append(x)
            ahead.append(len(started) - len(consumed))
        time.sleep(0.002 * (x % 3))  # results finish out of order
        if x == 7:
            raise KeyError("seven")
        return x * x

    got = []
    for x, r in pipeline.prefetch(range(20), work, threads=3, depth=4):
        with lock:
            consumed.append(x)
        time.sleep(0.003)  # a slow consumer: the producer must wait, not run ahead
        got.append((x, r))
    assert [x for x, _ in got] == list(range(20))
    assert all(r == x * x for x, r in got if x != 7) and isinstance(got[7][1], KeyError)
    assert max(ahead) <= 4 + 1  # at most `depth` submitted and not yet taken (+ the one being taken)
    inline = list(pipeline.prefetch(range(5), lambda x: 10 // (x - 2), threads=0))
    assert isinstance(inline[2][1], ZeroDivisionError) and inline[0][1] == -5


def test_writer_reports_the_first_error_and_bounds_its_queue(tmp_path):
    done = []
    w = pipeline.Writer(depth=2)
    for i in range(6):
        w.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
    w.close()
    assert sorted(done) == list(range(6))
    w = pipeline.Writer(depth=2)
    w.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        for _ in range(5):
            time.sleep(0.01)
            w.submit(lambda: None)
        w.close()


def test_default_batch_size_is_per_device():
    assert pipeline.default_batch_size("cpu") == pipeline.CPU_BATCH_SIZE == 1
    assert pipeline.default_batch_size(torch.device("cuda", 0)) == pipeline.CUDA_BATCH_SIZE > 1


def test_default_io_threads_leave_a_busy_cpu_alone(monkeypatch):
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert pipeline.default_io_threads("cpu") == 0       # every core runs the backbone
        assert pipeline.default_io_threads("cuda:0") == 2    # the CPU is free for decoding
        torch.set_num_threads(1)
        assert pipeline.default_io_threads("cpu") == 2       # a core to spare (a 1-thread Dask worker)
    finally:
        torch.set_num_threads(before)


def test_predict_overlays_share_the_calibrated_scale(fitted, grid, tmp_path):
    images = [grid / "test" / "good" / "000.png", grid / "test" / "bent" / "000.png"]
    rows = predict.run(fitted, images, tmp_path / "out", batch_size=2, io_threads=2)
    t = fitted.pixel_threshold
    assert t is not None and predict.overlay_scale(fitted)[0] == (0.0, t)
    for path, row in zip(images, rows):
        amap = torch.from_numpy(np.load(tmp_path / "out" / "maps" / f"{row['key']}.npy"))
        assert abs(row["score"] - float(fitted.score(path).pred_score[0])) <= 1e-5
        ref = write_heatmap(tmp_path / "ref" / f"{row['key']}.png", path, amap, 0.0, t)
        got = tmp_path / "out" / "overlays" / f"{row['key']}.png"
        assert torch.equal(pylake.read_image(str(got)), pylake.read_image(str(ref)))
    # Without a pixel threshold each overlay is on its own range, and the note says so.
    fitted_copy = pylake.NormalityModel(fitted.clip, class_name="grid", **OPTS).fit(images[:1])
    assert predict.overlay_scale(fitted_copy)[0] is None
    assert "own maximum" in predict.overlay_scale(fitted_copy)[1]
