"""Benchmark: LAKE's fused nearest-neighbour search vs torch.cdist + min, time and peak memory.

    PYTHONPATH=python python bench/bench_nn.py [--shots 1 4 16] [--patches 1369] [--k 100] [--layers 4]
        [--tile 512] [--repeat 5] [--threads 2] [--device cpu|cuda] [--dtype float32] [--no-memory]
    PYTHONPATH=python python bench/bench_nn.py --quick          # 16 x 16 patches, 1 and 4 shots

The shape is the head's at 518 px on a /14 model: Q = 37 x 37 = 1369 query patches, K = 100
selected neurons, L = 4 layers; the gallery holds M = shots x Q rows per layer. Rows are
random and L2-normalised. For every shot count it prints the best-of-N time of

  fused  pylake._C.ops.nearest_neighbors(queries (L, Q, K), gallery (L, M, K), tile): all
         layers in one call, the (Q x M) matrix never formed;
  cdist  for each layer, torch.cdist(q[l], g[l]).min(1) (what a PyTorch head would do);
  mm     for each layer, (q[l] @ g[l].T).max(1) (the plain cosine formulation, for reference);

their ratios to the fused search, and the PEAK MEMORY of one call of each: on the CPU, the
increase of the peak resident set over the resident set before the call, in a fresh
subprocess per measurement that already holds the inputs (warmed up on a small slice; the
peak is reset through /proc/self/clear_refs where the kernel allows it); on CUDA,
torch.cuda.max_memory_allocated above what was allocated before the call. The size of one
(Q x M) float32 matrix is printed for reference, and the agreement of the two searches:
max |d_fused - d_cdist| with d = (1 - cos) / 2 = |q - g|^2 / 4, and the share of equal
nearest-neighbour indices. Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys

from _common import DTYPES, best_of, machine_line, mb, pylake, set_threads, sync, torch

METHODS = ("fused", "cdist", "mm")


def make_inputs(L: int, Q: int, M: int, K: int, device: str, dtype: torch.dtype, seed: int = 0):
    """(L, Q, K) queries and (L, M, K) gallery rows, L2-normalised, built without large
    temporaries (so a process's peak before the call is its inputs)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in (Q, M):
        x = torch.randn(L, n, K, generator=gen)
        x /= x.norm(dim=-1, keepdim=True)
        out.append(x.to(device, dtype) if (device != "cpu" or dtype != torch.float32) else x)
    return out


def runner(method: str, tile: int):
    """fn(q, g) -> (distance (L, Q) float32, index (L, Q) int64) for a method."""
    if method == "fused":
        return lambda q, g: pylake._C.ops.nearest_neighbors(q, g, tile)
    if method == "cdist":
        def cdist(q, g):
            d, i = zip(*(torch.cdist(q[l], g[l]).min(1) for l in range(q.shape[0])))
            return (torch.stack(d).float().square() / 4).clamp(0, 1), torch.stack(i)
        return cdist
    if method == "mm":
        def mm(q, g):
            s, i = zip(*((q[l] @ g[l].T).max(1) for l in range(q.shape[0])))
            return ((1 - torch.stack(s).float()) / 2).clamp(0, 1), torch.stack(i)
        return mm
    raise ValueError(method)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def child(spec: dict) -> int:
    """One memory measurement (run in a fresh interpreter): prints a JSON line."""
    set_threads(spec["threads"])
    dev, dtype = spec["device"], DTYPES[spec["dtype"]]
    q, g = make_inputs(spec["L"], spec["Q"], spec["M"], spec["K"], dev, dtype)
    fn = runner(spec["method"], spec["tile"])
    fn(q[:, :64], g[:, :256])  # lazy initialisation (thread pool, kernels) outside the measurement
    gc.collect()
    out = {"method": spec["method"]}
    if dev == "cpu":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident set (Linux >= 4.0)
            out["reset"] = True
        except OSError:
            out["reset"] = False
        before, hwm0 = _status_kb("VmRSS"), _status_kb("VmHWM")
        r = fn(q, g)
        hwm1 = _status_kb("VmHWM")
        del r
        # Without a reset the peak of the call is only seen when it exceeds the earlier one.
        out["peak_bytes"] = 1024 * max(0, hwm1 - (before if out["reset"] else max(before, hwm0)))
    else:
        sync(dev)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        r = fn(q, g)
        sync(dev)
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - base
        out["reset"] = True
    print("CHILD " + json.dumps(out), flush=True)
    return 0


def measure_memory(spec: dict) -> str:
    # _common puts the repository's python/ on sys.path, as in this process.
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", json.dumps(spec)],
                       capture_output=True, text=True)
    line = next((l for l in p.stdout.splitlines() if l.startswith("CHILD ")), None)
    if p.returncode != 0 or line is None:
        err = (p.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed ({err[:60]})"
    r = json.loads(line[6:])
    return ("" if r["reset"] else ">= ") + mb(r["peak_bytes"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, nargs="+", default=None, help="gallery sizes in images (default 1 4 16)")
    ap.add_argument("--patches", type=int, default=None, help="Q, patches per image (default 1369 = 37 x 37)")
    ap.add_argument("--k", type=int, default=100, help="K, neurons per layer (default 100)")
    ap.add_argument("--layers", type=int, default=4, help="L, layers searched at once (default 4)")
    ap.add_argument("--tile", type=int, default=512, help="gallery rows per tile of the fused search (default 512)")
    ap.add_argument("--repeat", type=int, default=None, help="timed calls after a warm-up (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and LAKE (default 2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                    help="dtype of queries and gallery (float16/bfloat16: CUDA)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="smoke run: Q = 256 (16 x 16), shots 1 4, best of 3")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        return child(json.loads(args._child))
    if args.quick:
        args.shots = args.shots or [1, 4]
        args.patches = args.patches or 256
        args.repeat = args.repeat or 3
    args.shots = args.shots or [1, 4, 16]
    args.patches = args.patches or 1369
    args.repeat = args.repeat or 5
    if args.device == "cpu" and args.dtype != "float32":
        ap.error("the CPU comparison runs float32 (torch.cdist has no half CPU kernel worth timing)")
    set_threads(args.threads)
    print(machine_line(args.threads, args.device))
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here (torch.cuda.is_available() is False): nothing to measure on the GPU")
        return 0
    if "fused" not in args.methods:
        args.methods = ["fused"] + args.methods
    L, Q, K, dtype = args.layers, args.patches, args.k, DTYPES[args.dtype]
    memory = ("peak memory = peak RSS increase of one call (fresh subprocess)" if args.device == "cpu"
              else "peak memory = max_memory_allocated above the inputs (fresh subprocess)")
    print(f"nearest neighbours: L {L} layers, Q {Q} queries, K {K}, gallery M = shots x {Q}; {args.dtype} on "
          f"{args.device}; fused tile {args.tile}; best of {args.repeat}; {memory}")
    for shots in args.shots:
        M = shots * Q
        q, g = make_inputs(L, Q, M, K, args.device, dtype)
        times, results = {}, {}
        for m in args.methods:
            fn = runner(m, args.tile)
            try:
                times[m] = best_of(lambda: results.__setitem__(m, fn(q, g)), args.repeat, device=args.device)
            except Exception as e:  # noqa: BLE001 - report, go on
                times[m] = None
                results[m] = f"{type(e).__name__}: {str(e)[:80]}"
        tf = times["fused"]
        gflops = 2 * L * Q * M * K / 1e9
        parts = [f"fused {1000 * tf:.1f} ms ({gflops / tf:.0f} GFLOP/s)"]
        for m in args.methods:
            if m == "fused":
                continue
            parts.append(f"{m} {1000 * times[m]:.1f} ms ({times[m] / tf:.2f}x the fused time)" if times[m]
                         else f"{m} failed: {results[m]}")
        print(f"[{shots:2d} shots, M {M}] time: " + ", ".join(parts), flush=True)
        if "cdist" in args.methods and times.get("cdist"):
            (df, i_f), (dc, i_c) = results["fused"], results["cdist"]
            diff = float((df.float().cpu() - dc.float().cpu()).abs().max())
            same = float((i_f.cpu() == i_c.cpu()).double().mean())
            print(f"[{shots:2d} shots] agreement fused vs cdist: max |d| diff {diff:.1e}, "
                  f"equal indices {100 * same:.2f} %")
        del q, g, results
        gc.collect()
        if args.no_memory:
            continue
        mem = []
        for m in args.methods:
            spec = dict(method=m, L=L, Q=Q, M=M, K=K, tile=args.tile, threads=args.threads, device=args.device,
                        dtype=args.dtype)
            mem.append(f"{m} {measure_memory(spec)}")
        print(f"[{shots:2d} shots] peak memory: " + ", ".join(mem)
              + f"; inputs {mb((L * Q + L * M) * K * torch.finfo(dtype).bits // 8)}; one (Q x M) float32 matrix "
              f"{mb(Q * M * 4)}, all L layers' {mb(L * Q * M * 4)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
