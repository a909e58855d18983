"""`lake predict` on a Dask cluster: chunks of images, outputs written per image by the workers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import _outputs, pipeline
from .. import predict as _predict
from .. import report as _report
from ._common import (PARTS, Backbone, PathLike, _as_client, _check_job, _chunks, _setup, _token, _wait,
                      _worker_stats, dashboard, file_sha256, n_workers, remove_temporaries, require,
                      worker_model)


# ----------------------------------------------------------------------------- predict

@dataclass(frozen=True)
class _PredictJob:
    backbone: Backbone
    model_file: str
    sha256: str
    out: str
    map_format: str
    scale: Optional[Tuple[float, float]]
    batch_size: Optional[int]
    io_threads: Optional[int]
    on_error: str
    html: bool


def _record(out: PathLike, section: str, key: str) -> Path:
    return Path(out) / PARTS / section / f"{key}.json"


def _small_map(out: PathLike, key: str) -> Path:
    return Path(out) / PARTS / "report_maps" / f"{key}.npy"


def _predict_done(job: _PredictJob, key: str) -> Optional[dict]:
    """The row of an image a previous task finished (its record and its outputs exist)."""
    rec = _record(job.out, "predict", key)
    if not rec.exists():
        return None
    paths = _predict.output_paths(job.out, key, job.map_format)
    if not all(p.exists() for p in paths.values()) or (job.html and not _small_map(job.out, key).exists()):
        return None
    return json.loads(rec.read_text())["row"]


def _write_predicted(job: _PredictJob, key: str, image: str, amap: torch.Tensor, row: dict) -> None:
    _predict.write_image_outputs(job.out, key, image, amap, job.map_format, job.scale)
    if job.html:
        _outputs.save_npy(_small_map(job.out, key), _report.downscale_map(amap))
    _outputs.write_text(_record(job.out, "predict", key), json.dumps({"row": row}))  # last: the image is complete


def _predict_chunk(job: _PredictJob, chunk: Sequence[Tuple[int, str, str]]) -> dict:
    """One task: score the chunk's images that are not done yet and write their outputs."""
    t0 = time.perf_counter()
    rows: Dict[int, dict] = {}
    todo = []
    for i, path, key in chunk:
        row = _predict_done(job, key)
        if row is None:
            todo.append((i, path, key))
        else:
            rows[i] = row
    errors = 0
    if todo:
        model = worker_model(job.backbone, job.model_file, job.sha256)
        with pipeline.Writer() as writer:
            for j, pred, _ in pipeline.scored(model, [p for _, p, _ in todo], job.batch_size, job.io_threads,
                                              on_error="raise" if job.on_error == "fail" else "yield"):
                i, path, key = todo[j]
                if isinstance(pred, BaseException):
                    rows[i] = _predict.error_row(path, key, model.class_name, pred)
                    errors += 1
                    continue
                rows[i] = _predict.prediction_row(path, key, model, pred)
                writer.submit(_write_predicted, job, key, path, pred.anomaly_map[0], rows[i])
    return {"rows": rows, "scored": len(todo) - errors, "skipped": len(chunk) - len(todo), "errors": errors,
            "seconds": time.perf_counter() - t0, **_worker_stats()}


def _model_info(backbone: Backbone, model_file: str, sha256: str) -> dict:
    model = worker_model(backbone, model_file, sha256)
    scale, note = _predict.overlay_scale(model)
    clip = model.clip
    return {"class_name": model.class_name, "shots": model.shots, "image_threshold": model.image_threshold,
            "pixel_threshold": model.pixel_threshold, "scale": scale, "scale_note": note,
            "backbone": f"{clip!r}, fingerprint {clip.fingerprint()}"}


@dataclass
class PredictResult:
    """What :func:`predict` did: ``rows`` (the table, in input order), ``tasks`` (per task:
    the worker's ``pid``, images ``scored`` / ``skipped`` (done before) / ``errors``,
    ``seconds``), ``info`` (the model's class name, thresholds, backbone) and the
    ``dashboard`` address when there is one."""

    rows: List[dict]
    tasks: Dict[str, dict] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    dashboard: Optional[str] = None


def predict(client, model_file: PathLike, images: Sequence[PathLike], out: PathLike, *, model: str,
            device: str = "cpu", map_format: str = "npy", batch_size: Optional[int] = None,
            io_threads: Optional[int] = None, html: bool = False, meta: Optional[dict] = None,
            chunk_size: Optional[int] = None, on_error: str = "record", progress: bool = False,
            command: str = "lake predict (distributed)", log: Callable[[str], None] = lambda s: None,
            torch_threads: Optional[int] = None) -> PredictResult:
    """:func:`pylake.predict.run` on a Dask cluster: ``client`` a ``distributed.Client`` (or a
    scheduler address), ``model_file`` the ``.lake`` file and ``model`` the CLIP archive it was
    fitted with (both, and the ``images``, at these paths on every worker). The outputs in
    ``out`` (which this process must see too) are those of ``lake predict``, bit for bit at the
    default batch size on the CPU, plus ``OUT/.lake-parts/`` (the records a re-run resumes
    from). ``on_error``: ``"record"`` an image that fails to decode as an error row, or
    ``"fail"`` the job. ``chunk_size``: images per task (default: about
    :data:`CHUNKS_PER_WORKER` tasks per worker, at most :data:`MAX_CHUNK` images)."""
    require()
    _predict.output_paths(out, "x", map_format)
    _predict.check_on_error(on_error)
    if html:
        _report.require()
    images = [Path(p) for p in images]
    keys = _outputs.output_keys(images)  # a duplicate input is an error before anything runs
    out = Path(out)
    model_file = Path(model_file).resolve()
    if not model_file.is_file():
        raise FileNotFoundError(f"model file '{model_file}' does not exist")
    sha = file_sha256(model_file)
    backbone = Backbone(str(model), device)
    with _as_client(client) as client:
        _setup(client, torch_threads)
        board = dashboard(client)
        if board:
            log(f"Dask dashboard: {board}")
        info = client.submit(_model_info, backbone, str(model_file), sha, pure=False).result()
        log("note: " + info["scale_note"])
        job = _PredictJob(backbone, str(model_file), sha, str(out.resolve()), map_format,
                          None if info["scale"] is None else tuple(info["scale"]), batch_size, io_threads, on_error,
                          bool(html))
        out.mkdir(parents=True, exist_ok=True)
        _check_job(out, "predict", {"model_file_sha256": sha, "map_format": map_format, "html": bool(html)})
        marker = _outputs.RunMarker(out, command)
        remove_temporaries(out)
        token = _token()
        futures, steps = [], {}
        for n, r in enumerate(_chunks(len(images), chunk_size, n_workers(client))):
            chunk = [(i, str(images[i]), keys[i]) for i in r]
            f = client.submit(_predict_chunk, job, chunk, key=f"lake-predict-{token}-{n:05d}")
            futures.append(f)
            steps[f.key] = len(chunk)
        rows: List[Optional[dict]] = [None] * len(images)
        result = PredictResult([], info=info, dashboard=board)

        def take(f, res) -> None:
            for i, row in res.pop("rows").items():
                rows[i] = row
                if "error" in row:
                    log(f"error: {row['error']}")
            result.tasks[f.key] = res

        _wait(client, futures, steps, "predict", progress, take, log, out)
    remove_temporaries(out)  # of writers killed during this run
    assert all(r is not None for r in rows), "a task returned without all its rows"
    _predict.write_predictions(out, rows)
    if html:
        scored = [r for r in rows if "error" not in r]
        maps = [torch.from_numpy(np.load(_small_map(out, r["key"]))) for r in scored]
        _report.write_predict_report(out, scored, maps, dict(meta or {}), info["image_threshold"])
    marker.done()
    result.rows = rows
    return result
