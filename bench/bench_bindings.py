"""Benchmark: the cost of the extension's glue (argument conversion, bound classes), small calls.

    PYTHONPATH=python python bench/bench_bindings.py --before /tmp/lake_O3/python [--pairs 6] [--calls 20000]
    PYTHONPATH=python python bench/bench_bindings.py            # this tree only

pylake._C is compiled at -O1 in Release builds (CMakeLists.txt: it is glue; liblake, where the
work is done, keeps -O3). This times calls where the glue is most of the cost, so that a
slower extension would show:

  NormalityOptions(k=50)        the keyword constructor of a bound options class
  repr(options), options == o2  its field list walked from Python
  parse_dtype("float16")        a string in, a torch.dtype out
  upsample_blur (1, 4, 4)->8x8  a tensor call through the dispatcher, almost no arithmetic

`--before DIR` names a folder holding another build's pylake package (DIR/pylake with its
_C), e.g. a clone of this tree built with the extension at -O3. Fresh processes, one thread,
alternating before / after (A B A B ...) `--pairs` times; each times `--calls` calls five
times and keeps the median. Numbers, not assertions.
"""

from __future__ import annotations

from _common import CHILD_TIMER, call_bench_main

CHILD = CHILD_TIMER + r"""
import torch, pylake
from pylake import _C
torch.set_num_threads(1); pylake.set_num_threads(1)
calls = int(sys.argv[1])
opts, other = _C.NormalityOptions(k=50), _C.NormalityOptions(k=50)
maps = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0))
fns = {"NormalityOptions(k=50)": lambda: _C.NormalityOptions(k=50),
       "repr(options)": lambda: repr(opts),
       "options == other": lambda: opts == other,
       "parse_dtype('float16')": lambda: _C.parse_dtype("float16"),
       "upsample_blur 4x4 -> 8x8": lambda: _C.ops.upsample_blur(maps, 8, 8, 1.0)}
print_medians(fns, calls, 500, 1e6)
"""


def main(argv=None) -> None:
    call_bench_main(__doc__, CHILD, calls=20000, argv=argv)


if __name__ == "__main__":
    main()
