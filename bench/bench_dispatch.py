"""Benchmark: the cost of calling the head's kernels through the dispatcher, on small inputs.

    PYTHONPATH=python python bench/bench_dispatch.py --before /tmp/lake_before [--pairs 6] [--calls 3000]
    PYTHONPATH=python python bench/bench_dispatch.py            # this tree only

Since the ops are dispatcher ops (src/ops/registration.cpp), `pylake._C.ops.*` and the C++
entry points `lake::ops::*` call them through `c10::Dispatcher` (a cached handle, the
RecordFunction check, the autograd fallback) instead of calling the kernel directly. The
inputs are tiny so that the call itself dominates:

  upsample_blur      (1, 4, 4) -> (8, 8), sigma 1
  nearest_neighbors  (1, 16, 8) queries, (1, 32, 8) gallery

`--before DIR` names a copy of an older `pylake` package (DIR/pylake, with its built _C),
e.g. the tree before the dispatcher ops. Each measurement is a fresh process (one thread)
timing `--calls` calls, five rounds, median per call; processes alternate before / after
(A B A B ...) `--pairs` times; the median and the minimum of those are printed (the
minimum is the least disturbed by other load on a shared machine). The after process also
times `torch.ops.lake.*` from Python. Numbers, not assertions.
"""

from __future__ import annotations

from _common import CHILD_TIMER, call_bench_main

CHILD = CHILD_TIMER + r"""
import torch, pylake
torch.set_num_threads(1); pylake.set_num_threads(1)
calls = int(sys.argv[1])
g = torch.Generator().manual_seed(0)
maps = torch.rand(1, 4, 4, generator=g)
q = torch.nn.functional.normalize(torch.randn(1, 16, 8, generator=g), dim=-1)
gal = torch.nn.functional.normalize(torch.randn(1, 32, 8, generator=g), dim=-1)
C = pylake._C.ops
fns = {"upsample_blur": lambda: C.upsample_blur(maps, 8, 8, 1.0),
       "nearest_neighbors": lambda: C.nearest_neighbors(q, gal, 512, 0, 0)}
if hasattr(torch.ops, "lake") and hasattr(torch.ops.lake, "upsample_blur"):
    fns["torch.ops upsample_blur"] = lambda: torch.ops.lake.upsample_blur(maps, 8, 8, 1.0)
    fns["torch.ops nearest_neighbors"] = lambda: torch.ops.lake.nearest_neighbors(q, gal, 512, 0, 0)
print_medians(fns, calls, 200, 1e6)  # grad mode on, as a caller gets by default
"""


def main(argv=None) -> None:
    call_bench_main(__doc__, CHILD, calls=3000, argv=argv, order=lambda n: (n.startswith("torch"), n))


if __name__ == "__main__":
    main()
