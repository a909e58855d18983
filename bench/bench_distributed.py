"""Benchmark: `lake predict` on a Dask cluster (pylake.distributed) against the single-process
command (docs/benchmarks.md, "Distributed predict (Dask)").

    PYTHONPATH=python python bench/bench_distributed.py [--spec b16] [--size 224] [--images 32] [--repeat 3]
    PYTHONPATH=python python bench/bench_distributed.py --quick      # smoke run: tiny model, 8 images, 1 round

A random-weight ViT (--spec, tests/fixtures/clip_factory.py) is exported, a model is fitted on
2 of --images PNGs (--side px, written from ../shared/data/mvtec_ad/grid) at --size, and the
images are scored into a fresh output folder per pass (every output written, as the commands do):

* ``single, T threads``: :func:`pylake.predict.run` in this process (what `lake predict` runs)
  with T = 1 and 2 intra-op threads;
* ``dask, W workers``: :func:`pylake.distributed.predict` on a ``LocalCluster`` of W = 1 and 2
  worker processes with one thread each, started and warmed up (backbone loaded) beforehand,
  the default chunking.

Each variant runs once to warm up, then the four alternate (A B C D A B C D ...) --repeat
times; medians. Printed: images/s of each, the scaling ratio dask 2 workers / dask 1 worker,
the overhead of the distributed path at 1 worker (dask 1 worker vs single 1 thread, in %), and
single 2 threads / single 1 thread for comparison. Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
from pathlib import Path

from _common import export_random_clip, machine_line, pylake, set_threads, temp_dir

from bench_pipeline import write_images

from pylake import distributed as lakedist
from pylake import predict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="b16", help="clip_factory spec (default b16: ViT-B/16)")
    ap.add_argument("--size", type=int, default=224, help="backbone input side (224)")
    ap.add_argument("--side", type=int, default=256, help="side of the PNG files (256)")
    ap.add_argument("--images", type=int, default=32, help="images per pass (32)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the alternation (3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model at 32 px, 8 images, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.spec, args.size, args.images, args.repeat = "tiny", 32, 8, 1
    import distributed  # noqa: PLC0415

    with temp_dir() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        archive, _, _, _ = export_random_clip(args.spec, tmp)
        (tmp / "img").mkdir()
        images = write_images(tmp / "img", args.images, args.side)
        clip = pylake.load_clip(archive)
        model = pylake.NormalityModel(clip, class_name="grid", image_size=args.size).fit(images[:2])
        model.calibrate(images[:2], leave_one_out=True)
        model_file = tmp / "m.lake"
        model.save(model_file)
        print(f"setup ({args.spec} exported, {args.images} PNGs of {args.side} px, model fitted at {args.size} px): "
              f"{time.perf_counter() - t0:.1f} s")
        n = [0]

        def fresh() -> Path:
            n[0] += 1
            return tmp / f"out{n[0]}"

        def single(threads: int):
            def run():
                set_threads(threads)
                out = fresh()
                predict.run(model, images, out)
                shutil.rmtree(out)
            return run

        clusters = {}

        def dask(workers: int):
            def run():
                out = fresh()
                lakedist.predict(clusters[workers], model_file, images, out, model=str(archive))
                shutil.rmtree(out)
            return run

        stack = []
        try:
            for w in (1, 2):
                lc = distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, host="127.0.0.1",
                                              dashboard_address=":0", silence_logs=logging.ERROR)
                stack.append(lc)
                clusters[w] = distributed.Client(lc)
                stack.append(clusters[w])
            variants = {"single, 1 thread": single(1), "single, 2 threads": single(2),
                        "dask, 1 worker x 1 thread": dask(1), "dask, 2 workers x 1 thread": dask(2)}
            for fn in variants.values():  # warm-up: the workers load the backbone and the model
                fn()
            times = {k: [] for k in variants}
            for _ in range(max(1, args.repeat)):
                for k, fn in variants.items():
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
        finally:
            for x in reversed(stack):
                x.close()
        print(machine_line(2))
        print(f"predict: {args.images} images ({args.side} px files, backbone {args.spec} at {args.size} px, batch 1, "
              f"maps + overlays written), medians of {args.repeat} alternated rounds")
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"  {k:<28s} {args.images / v:7.3f} images/s  {1000 * v / args.images:8.1f} ms/image  "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in times[k])} s)")
        d1, d2 = med["dask, 1 worker x 1 thread"], med["dask, 2 workers x 1 thread"]
        s1, s2 = med["single, 1 thread"], med["single, 2 threads"]
        print(f"  scaling, dask 2 workers / 1 worker:            {d1 / d2:.3f}x")
        print(f"  overhead of the distributed path at 1 worker:  {100 * (d1 / s1 - 1):+.1f} % (vs single, 1 thread)")
        print(f"  single 2 threads / 1 thread:                   {s1 / s2:.3f}x")
        print(f"  dask 2 workers / single 2 threads:             {s2 / d2:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
