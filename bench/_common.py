"""Helpers shared by the scripts in bench/ (not a benchmark itself).

Importing it puts the repository's python/ and tests/fixtures/ on sys.path, so the scripts
run from a source tree as ``PYTHONPATH=python python bench/<script>.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT / "tests" / "fixtures"), str(ROOT / "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

import clip_factory  # noqa: E402
import pylake  # noqa: E402

# Published per-image inference times of other few-shot / zero-shot detectors (their papers'
# own hardware, quoted for scale only).
PUBLISHED_MS_PER_IMAGE = {"AnomalyDINO": 60.0, "AnomalyCLIP": 71.0}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def set_threads(n: int) -> None:
    """The same intra-op thread count for PyTorch and LAKE."""
    torch.set_num_threads(n)
    pylake.set_num_threads(n)


def machine_line(threads: int, device: str = "cpu") -> str:
    """One line: processor, cores, threads, torch (and GPU) version, current load."""
    s = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} threads; "
         f"torch {torch.__version__}; pylake {pylake.__version__}")
    if device.startswith("cuda") and torch.cuda.is_available():
        s += (f"; {torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, LAKE CUDA kernels "
              f"{'yes' if pylake._C.ops.cuda_kernels_available() else 'no'})")
    try:
        load = os.getloadavg()[0]
        s += f"; load average {load:.2f}"
        if load > 0.75:
            s += (" (BUSY: other processes compete for the cores; with threads = cores, thread-pool barriers "
                  "then stall and times are not representative)")
    except OSError:  # pragma: no cover
        pass
    return s


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def best_of(fn: Callable[[], object], repeat: int, warmup: int = 1, device: str = "cpu") -> float:
    """Best wall time (seconds) of ``repeat`` calls after ``warmup`` calls (synchronising
    the GPU around each call on CUDA)."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def timed(fn: Callable[[], object], device: str = "cpu") -> Tuple[float, object]:
    """(seconds, result) of one call."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def model_size(spec: str, size: Optional[int]) -> int:
    """The input side a run uses: ``size`` or the spec's own."""
    return int(size or clip_factory.SPECS[spec]["vision"]["image_size"])


def export_random_clip(spec: str, folder: Path, seed: int = 0, keep_reference: bool = False):
    """Build the random-weight OpenCLIP model ``spec`` (tests/fixtures/clip_factory.py) and
    export it as a LAKE archive in ``folder``. Returns (path, OpenCLIP model or None,
    seconds to build, seconds to export). The OpenCLIP model is dropped unless asked for
    (a ViT-L/14 is 1.7 GB of fp32 weights)."""
    t0 = time.perf_counter()
    ref = clip_factory.make_clip(spec, seed=seed)
    t_make = time.perf_counter() - t0
    path = Path(folder) / f"{spec}.lake.safetensors"
    t0 = time.perf_counter()
    pylake.export.export_clip(ref, path, source=f"clip_factory {spec} seed {seed} (bench)")
    t_export = time.perf_counter() - t0
    return path, (ref if keep_reference else None), t_make, t_export


def set_reference_image_size(ref, base_pos: torch.Tensor, size: int) -> None:
    """Resize the OpenCLIP model's visual positional embedding in place, from ``base_pos``
    (its original (1 + g * g, D) table), for ``size x size`` inputs; the same bicubic
    resize as ``clip_factory.with_image_size`` without copying the model."""
    patch = ref.visual.conv1.kernel_size[0]
    if size % patch:
        raise ValueError(f"input side {size} is not a multiple of the patch {patch}")
    w = ref.visual.conv1.weight
    new = clip_factory.resize_pos_embed_reference(base_pos.float().cpu(), size // patch).to(w.device, w.dtype)
    ref.visual.positional_embedding = torch.nn.Parameter(new, requires_grad=False)


def temp_dir(prefix: str = "lake-bench-"):
    """A temporary folder (on $TMPDIR) for exported archives and saved models."""
    return tempfile.TemporaryDirectory(prefix=prefix)


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


# The start of every child script given to alternate_trees: imports, and the one timing rule
# (warm up, then five rounds of `calls` calls; the median round, per call, times `scale`).
CHILD_TIMER = r"""
import json, sys, time


def median_per_call(fn, calls, warmup, scale):
    for _ in range(warmup):
        fn()
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - t) / calls * scale)
    return sorted(rounds)[2]


# The child's last line: {name: median_per_call} as JSON, for alternate_trees.
def print_medians(fns, calls, warmup, scale):
    print(json.dumps({name: median_per_call(fn, calls, warmup, scale) for name, fn in fns.items()}))
"""


def alternate_trees(child: str, args: Sequence[str], before: Optional[Path], pairs: int,
                    threads: int = 1) -> Dict[str, Dict[str, List[float]]]:
    """Run ``python -c child *args`` in fresh processes, alternating an older ``pylake``
    (``before``/pylake with its built _C, when given) and this tree's (A B A B ...) ``pairs``
    times, with OMP_NUM_THREADS=threads. Each child prints a JSON object {name: number} as its
    last line. Returns {"before": {name: [one value per process]}, "after": {...}} ("before"
    only when given), so that both sides see the same drift of a shared machine."""
    variants = {"before": before, "after": ROOT / "python"} if before else {"after": ROOT / "python"}
    results: Dict[str, Dict[str, List[float]]] = {v: {} for v in variants}
    for i in range(pairs):
        for v, path in variants.items():
            env = dict(os.environ, PYTHONPATH=str(path), OMP_NUM_THREADS=str(threads))
            r = subprocess.run([sys.executable, "-c", child, *map(str, args)], env=env, capture_output=True,
                               text=True, check=True)
            for name, value in json.loads(r.stdout.strip().splitlines()[-1]).items():
                results[v].setdefault(name, []).append(value)
        print(f"pair {i + 1}/{pairs} done", flush=True)
    return results


def print_call_table(results: Dict[str, Dict[str, List[float]]], names: Sequence[str], unit: str = "us per call") -> None:
    """Print alternate_trees' results as two tables (median and minimum of the per-process
    values; the minimum is the least disturbed by other load), with after - before and
    after / before columns when both sides ran."""
    variants = list(results)
    both = "before" in results and "after" in results
    for label, summary in (("median", statistics.median), ("min", min)):
        print(f"\n{unit}, {label} of the per-process medians:")
        print(f"{'call':<30}" + "".join(f"{v:>10}" for v in variants) + ("   after - before   after / before" if both else ""))
        for n in names:
            med = {v: summary(results[v][n]) if n in results[v] else None for v in variants}
            row = f"{n:<30}" + "".join(f"{m:>10.2f}" if m is not None else f"{'':>10}" for m in med.values())
            if both and med.get("before") is not None and med.get("after") is not None:
                row += f"   {med['after'] - med['before']:+14.2f}   {med['after'] / med['before']:14.3f}"
            print(row)


def call_bench_main(doc: str, child: str, calls: int, argv: Optional[Sequence[str]] = None,
                    order: Optional[Callable[[str], object]] = None) -> None:
    """The command line of a per-call benchmark (bench_dispatch, bench_bindings): --before DIR,
    --pairs, --calls; runs `child` (which takes the call count) in alternating one-thread
    processes and prints print_call_table, rows sorted by `order` (default: by name)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="a folder holding another build's pylake package (DIR/pylake)")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--calls", type=int, default=calls)
    a = ap.parse_args(argv)
    results = alternate_trees(child, [a.calls], a.before, a.pairs, threads=1)
    print_call_table(results, sorted({n for r in results.values() for n in r}, key=order))
