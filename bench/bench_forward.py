"""Benchmark: LAKE's C++ image forward vs OpenCLIP's PyTorch forward on the same
random weights, same thread count; and the cost of the LAKE head on top of it.

    PYTHONPATH=python python bench/bench_forward.py [--spec b16] [--size 224] [--batch 8] [--threads 2]

Prints ms per image for both forwards and their ratio, then fit / score times of a
NormalityModel (default options, 1 shot) and the head's share of a score call. Numbers,
not assertions: record them in docs/benchmarks.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "tests" / "fixtures")]
import clip_factory  # noqa: E402
import pylake  # noqa: E402


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up (also fills the positional-embedding cache)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="b16", choices=sorted(clip_factory.SPECS))
    ap.add_argument("--size", type=int, default=None, help="input side (default: the model's own)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pylake.set_num_threads(args.threads)

    ref = clip_factory.make_clip(args.spec, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.lake.pt"
        pylake.export.export_clip(ref, path)
        model = pylake.load_clip(path)
    c = model.config
    size = args.size or c.image_size
    x = clip_factory.example_images(args.batch, size, seed=1)
    if size != c.image_size:
        ref = clip_factory.with_image_size(ref, size)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
          f"torch {torch.__version__}")
    print(f"model: {args.spec} {c}, input {size} px, batch {args.batch}")

    with torch.no_grad():
        t_ref = best_of(lambda: ref.encode_image(x), args.repeat) / args.batch
    t_lake = best_of(lambda: model.encode_image(x), args.repeat) / args.batch
    print(f"image forward: LAKE C++ {1000 * t_lake:.1f} ms/image, OpenCLIP {1000 * t_ref:.1f} ms/image, "
          f"ratio OpenCLIP/LAKE {t_ref / t_lake:.2f}")

    nm = pylake.NormalityModel(model, image_size=size)
    t_fit = best_of(lambda: nm.fit(x[:1]), 1)
    t_score = best_of(lambda: nm.score(x[:1]), args.repeat)
    probe = pylake.NeuronProbe(model, layers=nm.layers, project_layer=nm.semantic_layer)
    t_probe = best_of(lambda: probe(x[:1]), args.repeat)
    head = max(t_score - t_probe, 0.0)
    print(f"NormalityModel (defaults, layers {nm.layers}, K 100): fit 1 shot {1000 * t_fit:.0f} ms, "
          f"score {1000 * t_score:.0f} ms/image, backbone taps {1000 * t_probe:.0f} ms, "
          f"head {1000 * head:.0f} ms = {100 * head / t_probe:.1f} % of the backbone (batch 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
