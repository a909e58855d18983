"""Benchmark: the head's CPU kernels, this tree against an older build (the core's Eigen
kernels against the loops, GCC vector extensions and target_clones they replaced).

    PYTHONPATH=python python bench/bench_kernels.py --before /tmp/lake_before [--pairs 5] [--threads 2]
    PYTHONPATH=python python bench/bench_kernels.py            # this tree only

`--before DIR` names a copy of an older `pylake` package (DIR/pylake with its built _C), e.g.
`cp -r python/pylake DIR/` on a build of the commit before the change. Each measurement is a
fresh process timing every kernel through `torch.ops.lake.*` (the same call in both trees):
warm-up, then five rounds, the median round per call; processes alternate before / after
(A B A B ...) `--pairs` times, and the median of those is printed with the ratio after / before
(below 1: this tree is faster). Sizes are the scoring head's at ViT-L/14, 518 px, 4 shots
(37 x 37 = 1369 patches per image, 1024 channels, K = 100, 4 tapped layers) unless noted:

  channel_moments[f32|f16]   (5476, 1024) tokens: the fit's per-layer statistics
  gather_normalize[f32|f16]  (5476, 1024) tokens -> (5476, 100)
  nearest_neighbors          (4, 1369, 100) queries against a (4, 5476, 100) gallery, tile 512
  upsample_blur              (1, 37, 37) -> (1024, 1024), sigma 4 (a pixel map at eval size)
  top_k                      (4096) scores -> 100 (an MLP layer)

Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from _common import CHILD_TIMER, alternate_trees

CHILD = CHILD_TIMER + r"""
import torch, pylake
threads = int(sys.argv[1])
torch.set_num_threads(threads); pylake.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
tok = torch.randn(5476, 1024, generator=g) + 3.0
tok16 = tok.half()
idx = torch.randperm(1024, generator=g)[:100].sort().values
q = torch.nn.functional.normalize(torch.randn(4, 1369, 100, generator=g), dim=-1)
gal = torch.nn.functional.normalize(torch.randn(4, 5476, 100, generator=g), dim=-1)
maps = torch.rand(1, 37, 37, generator=g)
scores = torch.rand(4096, generator=g, dtype=torch.float64)
L = torch.ops.lake
fns = {
    "channel_moments[f32]": (lambda: L.channel_moments(tok, None), 20),
    "channel_moments[f16]": (lambda: L.channel_moments(tok16, None), 20),
    "gather_normalize[f32]": (lambda: L.gather_normalize(tok, idx, 1e-12), 50),
    "gather_normalize[f16]": (lambda: L.gather_normalize(tok16, idx, 1e-12), 50),
    "nearest_neighbors": (lambda: L.nearest_neighbors(q, gal, 512, 0, 0), 3),
    "upsample_blur": (lambda: L.upsample_blur(maps, 1024, 1024, 4.0), 5),
    "top_k": (lambda: L.top_k(scores, 100), 500),
}
out = {}
with torch.inference_mode():
    for name, (fn, calls) in fns.items():
        out[name] = median_per_call(fn, calls, max(2, calls // 5), 1e3)
print(json.dumps(out))
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="a folder holding an older pylake package (DIR/pylake)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    results = alternate_trees(CHILD, [a.threads], a.before, a.pairs, a.threads)
    variants = list(results)
    print(f"\nms per call ({a.threads} threads), median of {a.pairs} processes each:")
    print(f"{'kernel':<24}" + "".join(f"{v:>10}" for v in variants) + ("   after / before" if a.before else ""))
    for n in results["after"]:
        med = {v: statistics.median(results[v][n]) for v in variants}
        row = f"{n:<24}" + "".join(f"{m:>10.3f}" for m in med.values())
        if a.before:
            row += f"   {med['after'] / med['before']:.3f}"
        print(row)


if __name__ == "__main__":
    main()
