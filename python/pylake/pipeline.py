"""The input pipeline of `lake predict` and `lake eval`: the next images are decoded,
resized and normalised (the C++ ``prepare_image``, GIL released) by a small thread pool
while the backbone runs on the current batch, and outputs are written behind it.

- :func:`prefetch` maps a function over items in order, at most ``depth`` results ahead
  (memory bounded by the queue: ``depth`` prepared images of ``3 x S x S`` float32).
- :func:`scored` is the loop both commands run: prepared files in batches of
  ``batch_size`` through :meth:`pylake.NormalityModel.score_prepared`, one
  :class:`pylake.Prediction` per file, in input order.
- :class:`Writer` runs output writes (overlays, maps) in a background thread, bounded too.

Batch size (docs/evaluation.md, "Batch size"): :func:`default_batch_size` is the one
default, 1 on the CPU (every result bit-identical to ``NormalityModel.score(path)``) and
:data:`CUDA_BATCH_SIZE` on CUDA (equal to batch 1 to float rounding, about 1e-6; tested to 1e-5).
"""

from __future__ import annotations

import collections
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import torch

T = TypeVar("T")
R = TypeVar("R")

CPU_BATCH_SIZE = 1    # bitwise: a file's result does not depend on the batch it comes in
CUDA_BATCH_SIZE = 16  # fills the GPU at 224-518 px; results equal to batch 1 within 1e-5


def default_batch_size(device: Union[str, torch.device]) -> int:
    """Images per backbone forward in `lake predict` / `lake eval` on ``device`` (the one default)."""
    return CUDA_BATCH_SIZE if torch.device(device).type == "cuda" else CPU_BATCH_SIZE


def default_io_threads(device: Union[str, torch.device] = "cpu") -> int:
    """Threads that decode and resize images ahead of the backbone (the one default).

    On a CPU backbone whose intra-op threads already take every core, 0: prefetching threads
    then compete with LibTorch's OpenMP pool and stall its barriers (measured on 2 cores,
    ViT-B/16 at 224 px from 1024 px PNGs: 0.73 of the backbone alone with 2 prefetch threads,
    0.82 without; docs/benchmarks.md, "Input pipeline and batch size"). Otherwise (a GPU
    backbone, or spare cores) 2, or 1 on a one-core machine."""
    cores = os.cpu_count() or 1
    if torch.device(device).type == "cpu" and torch.get_num_threads() >= cores:
        return 0
    return 1 if cores < 2 else 2


def prefetch(items: Iterable[T], fn: Callable[[T], R], threads: int = 1, depth: int = 4
             ) -> Iterator[Tuple[T, Union[R, BaseException]]]:
    """``(item, fn(item))`` in the order of ``items``, ``fn`` running in ``threads`` threads at
    most ``depth`` items ahead of the consumer. An exception raised by ``fn`` is yielded in
    place of its result (the caller decides: raise it, or record it and go on). ``threads=0``
    runs ``fn`` inline (no threads). Leaving the loop early cancels what has not started."""
    if threads <= 0:
        for it in items:
            try:
                yield it, fn(it)
            except Exception as e:  # noqa: BLE001  (handed to the caller)
                yield it, e
        return
    depth = max(int(depth), 1)
    source = iter(items)
    pending: collections.deque = collections.deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lake-prefetch") as pool:
        try:
            for it in source:
                pending.append((it, pool.submit(fn, it)))
                if len(pending) >= depth:
                    yield _take(pending)
            while pending:
                yield _take(pending)
        finally:
            for _, f in pending:
                f.cancel()


def _take(pending: collections.deque):
    it, f = pending.popleft()
    e = f.exception()
    return (it, e) if e is not None else (it, f.result())


def scored(model, paths: Sequence[Union[str, os.PathLike]], batch_size: Optional[int] = None,
           io_threads: Optional[int] = None, depth: Optional[int] = None, with_branches: bool = False,
           on_error: str = "raise", extra: Optional[Callable[[int, object], object]] = None
           ) -> Iterator[Tuple[int, Union["object", BaseException], object]]:
    """Score image files with ``model`` (a :class:`pylake.NormalityModel`): ``(index,
    Prediction, extra)`` per file in input order, the prediction's maps at the file's
    resolution. ``extra(index, prepared)``, when given, runs in the decoding threads too
    (reading the file's mask, say) and its result comes third (else ``None``).

    ``batch_size``: images per backbone forward (``None``: :func:`default_batch_size` of the
    model's device). ``io_threads``: decoding threads (``None``: :func:`default_io_threads` of the model's
    device; 0: decode inline, no overlap). ``depth``: prepared images held ahead (default
    ``2 * batch_size + io_threads``). ``on_error="raise"``: a file that fails to decode raises
    its ValueError; ``"yield"``: ``(index, exception, None)`` in its place and the rest go on."""
    if on_error not in ("raise", "yield"):
        raise ValueError(f"on_error must be 'raise' or 'yield', got {on_error!r}")
    bs = default_batch_size(model.clip.device) if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    threads = default_io_threads(model.clip.device) if io_threads is None else int(io_threads)
    if threads < 0:
        raise ValueError(f"io_threads must be >= 0, got {threads}")
    depth = 2 * bs + threads if depth is None else int(depth)
    batch: List[Tuple[int, object, object]] = []

    def load(j: int):
        prepared = model.prepare(paths[j])
        return prepared, (extra(j, prepared) if extra is not None else None)

    def flush():
        preds = model.score_prepared([p for _, p, _ in batch], with_branches=with_branches, batch_size=bs)
        out = [(i, pred, x) for (i, _, x), pred in zip(batch, preds)]
        batch.clear()
        return out

    for i, loaded in prefetch(range(len(paths)), load, threads, depth):
        if isinstance(loaded, BaseException):
            if on_error == "raise":
                raise loaded
            yield from flush() if batch else ()
            yield i, loaded, None
            continue
        batch.append((i, *loaded))
        if len(batch) >= bs:
            yield from flush()
    if batch:
        yield from flush()


class Writer:
    """Runs output writes in one background thread, at most ``depth`` queued (the caller
    blocks beyond that, so memory stays bounded). :meth:`close` waits for every write and
    raises the first error; writes already done stay (each file is written atomically)."""

    def __init__(self, depth: int = 8, threads: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="lake-writer")
        self._slots = threading.Semaphore(max(depth, 1))
        self._futures: List[Future] = []

    def submit(self, fn: Callable[..., object], *args, **kwargs) -> None:
        self._raise_first(done_only=True)
        self._slots.acquire()
        f = self._pool.submit(fn, *args, **kwargs)
        f.add_done_callback(lambda _: self._slots.release())
        self._futures.append(f)

    def _raise_first(self, done_only: bool) -> None:
        keep = []
        for f in self._futures:
            if done_only and not f.done():
                keep.append(f)
                continue
            e = f.exception()
            if e is not None:
                self._futures = []
                raise e
        self._futures = keep

    def close(self) -> None:
        try:
            self._raise_first(done_only=False)
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # an error in the loop: let queued writes finish, report the loop's error
            self._pool.shutdown(wait=True)
