"""The cluster side shared by distributed predict and eval: connecting, the worker plugin,
the per-worker model cache, the output folder's records and temporaries, chunking, waiting."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch

from .. import _outputs
from .. import evaluate as _evaluate

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
    from .._clip import load_clip  # noqa: PLC0415

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
    from .._normality import NormalityModel  # noqa: PLC0415

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
