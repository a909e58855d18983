"""`lake eval` on a Dask cluster: per run a fit task, chunks of test images and a finishing task."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import _outputs, datasets, pipeline
from .. import evaluate as _evaluate
from .. import predict as _predict
from .. import report as _report
from ._common import (PARTS, Backbone, PathLike, _as_client, _check_job, _chunks, _setup, _token, _wait,
                      _worker_stats, dashboard, file_sha256, n_workers, remove_temporaries, require,
                      worker_clip, worker_model)


# ----------------------------------------------------------------------------- evaluate

@dataclass(frozen=True)
class _EvalJob:
    backbone: Backbone
    out: str
    options: dict
    batch_size: Optional[int]
    io_threads: Optional[int]
    on_error: str
    save_maps: bool


def _run_parts(job: _EvalJob, category: str, shots: int, seed: int) -> Path:
    return Path(job.out) / PARTS / "eval" / _evaluate.run_dir(category, shots, seed)


def _map_file(job: _EvalJob, category: str, shots: int, seed: int, key: str) -> Path:
    """Where a chunk task leaves a test image's map for the run's finishing task: the
    ``--save-maps`` output itself, else a scratch file removed once the run is finished."""
    if job.save_maps:
        return Path(job.out) / "maps" / _evaluate.run_dir(category, shots, seed) / f"{key}.npy"
    return _run_parts(job, category, shots, seed) / "maps" / f"{key}.npy"


def _fit_task(job: _EvalJob, category: datasets.Category, shots: int, seed: int) -> Tuple[str, str, float]:
    """The run's model, fitted once: ``(its .lake file, SHA-256, seconds)``."""
    t0 = time.perf_counter()
    path = _run_parts(job, category.name, shots, seed) / "model.lake"
    if not path.exists():
        model = _evaluate.fit_run(worker_clip(job.backbone), category, shots, seed, job.options)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)  # atomic
    return str(path), file_sha256(path), time.perf_counter() - t0


def _eval_chunk(job: _EvalJob, category: datasets.Category, shots: int, seed: int, fitted: tuple,
                indices: Sequence[int]) -> dict:
    """One task: score test images ``indices`` of a run (those not done before), leaving
    each map and a record ``{score, pred_label}`` (or ``{error}``) behind."""
    t0 = time.perf_counter()
    keys = _outputs.output_keys([s.path for s in category.test])
    parts = _run_parts(job, category.name, shots, seed)
    entries: Dict[int, dict] = {}
    todo = []
    for i in indices:
        rec = parts / "images" / f"{keys[i]}.json"
        if rec.exists() and _map_file(job, category.name, shots, seed, keys[i]).exists():
            entries[i] = json.loads(rec.read_text())
        else:
            todo.append(i)
    if todo:
        model = worker_model(job.backbone, fitted[0], fitted[1])

        def write(i: int, amap: torch.Tensor, entry: dict) -> None:
            _outputs.save_npy(_map_file(job, category.name, shots, seed, keys[i]), amap)
            _outputs.write_text(parts / "images" / f"{keys[i]}.json", json.dumps(entry))  # last: the image is done

        with pipeline.Writer() as writer:
            for j, pred, _ in pipeline.scored(model, [category.test[i].path for i in todo], job.batch_size,
                                              job.io_threads, on_error="raise" if job.on_error == "fail" else "yield"):
                i = todo[j]
                if isinstance(pred, BaseException):
                    entries[i] = {"error": str(pred)}  # no record: a re-run tries the file again
                    continue
                entries[i] = {"score": float(pred.pred_score[0]),
                              "pred_label": None if pred.pred_label is None else int(pred.pred_label[0])}
                writer.submit(write, i, pred.anomaly_map[0], entries[i])
    return {"entries": entries, "seconds": time.perf_counter() - t0, "scored": len(todo),
            "skipped": len(indices) - len(todo), **_worker_stats()}


def _finish_task(job: _EvalJob, category: datasets.Category, shots: int, seed: int, n_heatmaps: int,
                 keep_maps: bool, fitted: tuple, *chunks: dict) -> dict:
    """One run's end, on a worker: its maps (read back in input order) through the run's
    :class:`pylake.evaluate.RunAccumulator`, the heatmaps and, with ``keep_maps``, its part of
    report.html; the result is recorded so that a re-run skips the run."""
    from .._normality import Prediction  # noqa: PLC0415

    t0 = time.perf_counter()
    model = worker_model(job.backbone, fitted[0], fitted[1])
    entries: Dict[int, dict] = {}
    for c in chunks:
        entries.update(c["entries"])
    out = Path(job.out)
    acc = _evaluate.RunAccumulator(model, category, shots, seed, out, n_heatmaps, keep_maps)
    for i in range(len(category.test)):
        e = entries[i]
        if "error" in e:
            acc.add_error(i, e["error"])
            continue
        amap = torch.from_numpy(np.load(_map_file(job, category.name, shots, seed, acc.keys[i])))
        pred = Prediction(torch.tensor([e["score"]], dtype=torch.float32), amap.unsqueeze(0),
                          None if e["pred_label"] is None else torch.tensor([bool(e["pred_label"])]))
        mask = _evaluate.ground_truth(category, i, amap.shape[0], amap.shape[1]) if acc.needs_masks else None
        acc.add(i, pred, mask)
    seconds = fitted[2] + sum(c["seconds"] for c in chunks) + time.perf_counter() - t0
    r = acc.finish(seconds, keep_maps)
    section = None
    if r.report is not None:
        section = _report.write_run(out, r.report)
        r.report = None
    done = {"result": asdict(r), "section": section}
    parts = _run_parts(job, category.name, shots, seed)
    _outputs.write_text(parts / "run.json", _outputs.dumps(done) + "\n")
    shutil.rmtree(parts / "maps", ignore_errors=True)  # scratch maps (none with save_maps)
    return {**done, **_worker_stats()}


def _backbone_info(backbone: Backbone) -> str:
    clip = worker_clip(backbone)
    return f"{clip!r}, fingerprint {clip.fingerprint()}"


def _load_run(path: Path) -> Tuple[_evaluate.RunResult, Optional[dict]]:
    d = json.loads(path.read_text())
    return _evaluate.RunResult(**d["result"]), d["section"]


def evaluate(client, categories: Sequence[datasets.Category], shots: Sequence[int], seeds: Sequence[int],
             out: PathLike, *, model: str, options: Optional[dict] = None, meta: Optional[dict] = None,
             n_heatmaps: int = 3, progress: bool = True, log: Callable[[str], None] = lambda s: None,
             allow_one_class: bool = False, save_maps: bool = False, html: Optional[bool] = None,
             batch_size: Optional[int] = None, io_threads: Optional[int] = None, chunk_size: Optional[int] = None,
             on_error: str = "record", device: str = "cpu", torch_threads: Optional[int] = None) -> Dict[str, Path]:
    """:func:`pylake.evaluate.run` on a Dask cluster (``client``: a ``distributed.Client`` or a
    scheduler address; ``model``: the CLIP archive, at that path on every worker; the data set
    and ``out`` on storage that every worker and this process see). The report, the per-image
    table, heatmaps, maps and report.html are those of ``lake eval``, bit for bit at the
    default batch size on the CPU (the runs' ``seconds`` are the tasks' compute time).
    Finished runs and images are recorded under ``OUT/.lake-parts/`` and skipped by a re-run.
    ``on_error="record"``: a test image that fails to decode gets an error row in images.csv,
    is left out of its run's metrics and the report warns; ``"fail"``: the job fails."""
    require()
    _predict.check_on_error(on_error)
    out = Path(out)
    warnings = _evaluate.one_class_warnings(categories, allow_one_class, log)
    html = _report.available() if html is None else html
    if html:
        _report.require()
    meta = dict(meta or {})
    backbone = Backbone(str(model), device)
    runs = [(cat, k, seed, i) for cat in categories for k in shots for i, seed in enumerate(seeds)]
    with _as_client(client) as client:
        _setup(client, torch_threads)
        board = dashboard(client)
        if board:
            log(f"Dask dashboard: {board}")
        meta.setdefault("backbone", client.submit(_backbone_info, backbone, pure=False).result())
        job = _EvalJob(backbone, str(out.resolve()), dict(options or {}), batch_size, io_threads, on_error,
                       bool(save_maps))
        out.mkdir(parents=True, exist_ok=True)
        _check_job(out, "eval", {"backbone": meta["backbone"], "options": _outputs.finite_or_none(job.options),
                                 "save_maps": bool(save_maps), "html": bool(html)})
        marker = _outputs.RunMarker(out, f"lake eval ({meta.get('dataset') or 'distributed.evaluate'})")
        remove_temporaries(out)
        finished: Dict[int, Tuple[_evaluate.RunResult, Optional[dict]]] = {}
        futures, steps, finish_of = [], {}, {}
        token = _token()
        workers = n_workers(client)
        for r, (cat, k, seed, i) in enumerate(runs):
            done = _run_parts(job, cat.name, k, seed) / "run.json"
            if done.exists():
                finished[r] = _load_run(done)
                continue
            name = f"{cat.name}-{k}shot-seed{seed}-{token}"
            fit = client.submit(_fit_task, job, cat, k, seed, key=f"lake-fit-{name}")
            parts = []
            for n, idx in enumerate(_chunks(len(cat.test), chunk_size, workers)):
                f = client.submit(_eval_chunk, job, cat, k, seed, fit, list(idx), key=f"lake-score-{name}-{n:05d}")
                parts.append(f)
                steps[f.key] = len(idx)
            fin = client.submit(_finish_task, job, cat, k, seed, n_heatmaps if i == 0 else 0, bool(html and i == 0),
                                fit, *parts, key=f"lake-finish-{name}")
            finish_of[fin.key] = r
            futures += [fit, *parts, fin]

        def take(f, res) -> None:
            if f.key not in finish_of:
                return
            rr = _evaluate.RunResult(**res["result"])
            finished[finish_of[f.key]] = (rr, res["section"])
            log(f"{rr.category} {rr.shots}-shot seed {rr.seed}: " + ", ".join(
                f"{key} {100 * v:.1f}" for key, v in rr.metrics.items() if v is not None))

        _wait(client, futures, steps, "eval", progress, take, log, out)
    remove_temporaries(out)
    results, sections = [], []
    for r in range(len(runs)):
        rr, section = finished[r]
        results.append(rr)
        if section is not None:
            sections.append(section)
        if _evaluate.unread_warning(rr):
            warnings.append(_evaluate.unread_warning(rr))
            log("warning: " + warnings[-1])
    files = _evaluate.write_report(out, results, meta, warnings)
    if html:
        files["html"] = _report.write_eval_report(out, sections, _evaluate.summarise(results), meta, warnings,
                                                  [c.name for c in categories])
    marker.done()
    return files
