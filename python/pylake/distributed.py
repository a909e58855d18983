"""`lake predict` and `lake eval` on a Dask cluster (``pip install 'pylake[distributed]'``).

    from distributed import Client
    from pylake import distributed as lakedist
    with Client("tcp://scheduler:8786") as client:
        lakedist.predict(client, "grid.lake", images, "out/", model="ViT-L-14-336.pt")
        lakedist.evaluate(client, categories, [1, 2, 4], [0, 1, 2], "report/", model="ViT-L-14-336.pt")

The work is cut into tasks that Dask schedules (docs/distributed.md):

- ``predict``: chunks of images. A task reads its files from their paths (a file system that
  every worker sees), scores them with the backbone its worker process loaded once
  (:func:`worker_model`, a per-process cache keyed by the archive and the ``.lake`` file's
  SHA-256) and writes each image's outputs into the output folder itself, atomically, by the
  steps of :mod:`pylake.predict`. Only paths, scores and rows travel through the scheduler.
- ``evaluate``: per (category, shots, seed) run a fit task (its ``.lake`` file is written into
  the output folder and read by the other tasks), chunks of test images (maps written next to
  the outputs), and a finishing task that feeds the maps, in input order, to the run's
  :class:`pylake.evaluate.RunAccumulator`, the one `lake eval` uses, so the metrics, rows,
  heatmaps and report are those of the single-process command, bit for bit.

Resume: every finished image leaves a record under ``OUT/.lake-parts/`` (written after its
outputs), and every finished eval run its result; a second run of the same command skips
them. A worker killed mid-task loses nothing that was recorded: Dask reruns its tasks
elsewhere and they skip what is done. Leftover temporary files of killed writers are removed
before and after a run, so the folder never holds a partial file once the command returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import _outputs, datasets, pipeline
from . import evaluate as _evaluate
from . import predict as _predict
from . import report as _report

try:  # the optional extra: everything else in pylake works without it
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - exercised where dask is absent
    _WorkerPluginBase = object

PARTS = ".lake-parts"          # OUT/.lake-parts/: per-image records, fitted runs, scratch maps
SCHEDULER_TIMEOUT = 10.0       # seconds to reach a scheduler before giving up (--scheduler-timeout)
WORKER_TIMEOUT = 120.0         # seconds to wait for a first worker on a scheduler without any
MODELS_PER_WORKER = 8          # fitted models kept loaded per worker process (a sweep has many)
MAX_CHUNK = 64                 # images per task at most (the default chunking)
CHUNKS_PER_WORKER = 4          # default chunking: about this many tasks per worker and run
NEEDS_DASK = "the distributed commands need dask and distributed: pip install 'pylake[distributed]'"

PathLike = Union[str, os.PathLike]


def available() -> bool:
    """Whether dask.distributed is importable."""
    return _WorkerPluginBase is not object


def require() -> None:
    if not available():
        raise ImportError(NEEDS_DASK)


# ----------------------------------------------------------------------------- the cluster

@contextlib.contextmanager
def connect(scheduler: Optional[str] = None, workers: Optional[int] = None,
            timeout: float = SCHEDULER_TIMEOUT) -> Iterator["object"]:
    """A ``distributed.Client``: connected to the scheduler at ``scheduler``
    (``tcp://host:8786``), or to a ``LocalCluster`` of ``workers`` worker processes on this
    machine with one thread each (closed on exit). An unreachable scheduler is a
    RuntimeError after ``timeout`` seconds."""
    require()
    from distributed import Client, LocalCluster  # noqa: PLC0415

    if (scheduler is None) == (workers is None):
        raise ValueError("connect: pass a scheduler address (CLI: --scheduler) or a number of local workers "
                         "(CLI: --workers), one of them")
    if workers is not None:
        if int(workers) < 1:
            raise ValueError(f"--workers: expected at least 1 worker process, got {workers}")
        with LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            yield client
        return
    if not re.match(r"^[a-z0-9+]+://", str(scheduler)):
        raise ValueError(f"--scheduler: expected an address such as tcp://host:8786, got {scheduler!r}")
    try:
        client = Client(str(scheduler), timeout=float(timeout))
    except (OSError, TimeoutError) as e:
        raise RuntimeError(f"could not reach the Dask scheduler at {scheduler} within {timeout:g} s ({e}); "
                           "is `dask scheduler` running there, and is the port open?") from None
    with client:
        yield client


def _has_bokeh() -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("bokeh") is not None


def dashboard(client) -> Optional[str]:
    """The Dask dashboard's address, when the scheduler serves one (it needs bokeh there)."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}) or (
                client.scheduler.address.startswith(("tcp://127.0.0.1:", "inproc://")) and not _has_bokeh()):
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001  (a pointer only)
        return None


@contextlib.contextmanager
def _as_client(client):
    """``client`` itself, or a Client connected to it when it is an address."""
    if isinstance(client, str):
        with connect(scheduler=client) as c:
            yield c
    else:
        yield client


def n_workers(client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


# glibc's malloc in a Dask worker: the nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536,
# and setting it turns off glibc's adaptive mmap threshold, so every block of 128 KiB or more
# (each image, map and activation) is a fresh mmap, page-faulted in and unmapped again: 25 % of
# a tiny model's predict time here (docs/benchmarks.md). The worker gets the thresholds that
# the adaptive rule reaches in a plain process (mmap at 32 MiB, DEFAULT_MMAP_THRESHOLD_MAX on
# 64-bit, trim at twice that).
MMAP_THRESHOLD = 32 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def tune_malloc() -> bool:
    """Sets glibc's mmap and trim thresholds of this process (:data:`MMAP_THRESHOLD`); False
    where the C library is not glibc."""
    import ctypes  # noqa: PLC0415

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


class WorkerSetup(_WorkerPluginBase):
    """Registered on every worker (also those that join or restart later): sets LibTorch's
    threads to the worker's thread count (``dask worker --nthreads``), or ``torch_threads``,
    and glibc's malloc thresholds (:func:`tune_malloc`)."""

    name = "pylake-setup"

    def __init__(self, torch_threads: Optional[int] = None) -> None:
        self.torch_threads = torch_threads

    def setup(self, worker) -> None:
        torch.set_num_threads(int(self.torch_threads or worker.state.nthreads or 1))
        tune_malloc()


def _setup(client, torch_threads: Optional[int] = None, worker_timeout: float = WORKER_TIMEOUT) -> None:
    """Waits for a first worker (a RuntimeError after ``worker_timeout`` seconds) and registers
    :class:`WorkerSetup` on every worker."""
    try:
        client.wait_for_workers(1, timeout=worker_timeout)
    except (TimeoutError, OSError) as e:
        raise RuntimeError(f"no Dask worker joined the scheduler at {client.scheduler.address} within "
                           f"{worker_timeout:g} s ({e}): start workers with `dask worker "
                           f"{client.scheduler.address}`") from None
    client.register_plugin(WorkerSetup(torch_threads), name=WorkerSetup.name)


# ----------------------------------------------------------------------------- per-worker models

@dataclass(frozen=True)
class Backbone:
    """The CLIP every worker loads: ``model`` (a file, folder or model name, as ``--model``;
    files must be at that path on every worker) on ``device`` (``"auto"``: CUDA where the
    worker sees a GPU, else the CPU)."""

    model: str
    device: str = "cpu"

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def key(self) -> tuple:
        """The cache key: the archive (its path, size and modification time, so a replaced file
        is loaded again) and the device."""
        p = Path(self.model)
        if p.exists():
            st = p.stat()
            return (str(p.resolve()), st.st_size, st.st_mtime_ns, self.resolved_device())
        return (self.model, 0, 0, self.resolved_device())


_lock = threading.Lock()
_clips: Dict[tuple, object] = {}
_models: "OrderedDict[tuple, object]" = OrderedDict()
_loads = {"clip": 0, "model": 0}  # how often this process loaded each (the tests read it)


def worker_clip(backbone: Backbone):
    """This process's :class:`pylake.ClipModel` for ``backbone``, loaded once."""
    from ._clip import load_clip  # noqa: PLC0415

    key = backbone.key()
    with _lock:
        clip = _clips.get(key)
        if clip is None:
            clip = _clips[key] = load_clip(backbone.model, backbone.resolved_device(), progress=False)
            _loads["clip"] += 1
        return clip


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def worker_model(backbone: Backbone, model_file: PathLike, sha256: str):
    """This process's :class:`pylake.NormalityModel` of ``model_file`` (a ``.lake`` file every
    worker can read) over ``backbone``, loaded once per file content (the last
    :data:`MODELS_PER_WORKER` kept). A file whose SHA-256 is no longer ``sha256`` (replaced
    while the job ran) is a ValueError."""
    from ._normality import NormalityModel  # noqa: PLC0415

    key = (backbone.key(), sha256)
    with _lock:
        m = _models.get(key)
        if m is not None:
            _models.move_to_end(key)
            return m
    clip = worker_clip(backbone)
    got = file_sha256(model_file)
    if got != sha256:
        raise ValueError(f"model file '{model_file}' changed while the job ran (SHA-256 {got[:16]}..., expected "
                         f"{sha256[:16]}...): start the job again")
    m = NormalityModel.load(model_file, clip)
    with _lock:
        _models[key] = m
        _loads["model"] += 1
        while len(_models) > MODELS_PER_WORKER:
            _models.popitem(last=False)
    return m


def _worker_stats() -> dict:
    return {"pid": os.getpid(), "loads": dict(_loads)}


# ----------------------------------------------------------------------------- output folder

_PY_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # pylake._outputs.write_bytes: .<name>.<random>.tmp
_CPP_TEMP = re.compile(r".\.tmp\.\d+\.\d+$")             # lake::detail::write_file_atomically: <name>.tmp.<pid>.<n>


def temporaries(out: PathLike) -> List[Path]:
    """The temporary files of atomic writes under ``out`` (left by a writer that was killed)."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p for p in out.rglob("*") if (_PY_TEMP.match(p.name) or _CPP_TEMP.search(p.name)) and p.is_file())


def remove_temporaries(out: PathLike) -> int:
    """Removes :func:`temporaries` (only call it while no job writes into ``out``)."""
    found = temporaries(out)
    for p in found:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return len(found)


def _check_job(out: Path, name: str, identity: dict) -> None:
    """``OUT/.lake-parts/<name>.json`` holds what the folder's records were made with; a folder
    of another job is a ValueError (its records must not be taken for this one's)."""
    path = out / PARTS / f"{name}.json"
    if path.exists():
        have = json.loads(path.read_text())
        if have != identity:
            diff = ", ".join(f"{k}: {have.get(k)!r} there, {v!r} now" for k, v in identity.items() if have.get(k) != v)
            raise ValueError(f"output folder '{out}' holds the results of another {name} job ({diff}): use another "
                             f"--out, or delete '{out}' to start afresh")
        return
    _outputs.write_text(path, json.dumps(identity, indent=1) + "\n")


def _chunks(n: int, size: Optional[int], workers: int) -> List[range]:
    if size is None:
        size = min(MAX_CHUNK, max(1, math.ceil(n / (CHUNKS_PER_WORKER * workers))))
    if int(size) < 1:
        raise ValueError(f"chunk_size (CLI: --chunk-size) must be >= 1, got {size}")
    return [range(a, min(a + int(size), n)) for a in range(0, n, int(size))]


def _wait(client, futures: Sequence, steps: Dict[str, int], label: str, progress: bool,
          on_result: Callable[[object, object], None], log: Callable[[str], None], out: Path) -> None:
    """Waits for ``futures`` as they complete, one progress bar (``steps``: images per
    future's key) over all; the first failure cancels the rest and is raised. Ctrl-C cancels
    too and leaves ``out`` to be resumed."""
    from distributed import as_completed  # noqa: PLC0415

    bar = _evaluate.Progress(sum(steps.values()), label, progress)
    try:
        for f in as_completed(futures):
            if f.status == "error":
                f.result()  # raises the task's exception here
            on_result(f, f.result())
            bar.step(steps.get(f.key, 0))
    except KeyboardInterrupt:
        client.cancel(list(futures))
        log(f"interrupted: '{out}' holds what was finished; run the same command again to resume")
        raise
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        bar.close()


def _token() -> str:
    return uuid.uuid4().hex[:8]


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
    from ._normality import Prediction  # noqa: PLC0415

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
