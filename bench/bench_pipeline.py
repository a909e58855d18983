"""Benchmark: the input pipeline of `lake eval` / `lake predict`, the head's share of a score
call, and the batch-size trade-off (docs/benchmarks.md, "Input pipeline and batch size").

    PYTHONPATH=python python bench/bench_pipeline.py pipeline [--spec b16] [--size 224] [--batch 1] [--repeat 3]
    PYTHONPATH=python python bench/bench_pipeline.py head --spec b16 --size 224 --batches 1 8 --shots 1 4
    PYTHONPATH=python python bench/bench_pipeline.py head --spec l14 --size 518 --batches 1 8 --repeat 1
    PYTHONPATH=python python bench/bench_pipeline.py batch [--batches 1 2 4 8]
    PYTHONPATH=python python bench/bench_pipeline.py all --quick    # every part on a tiny model

A random-weight model of --spec (tests/fixtures/clip_factory.py) is exported and loaded by LAKE.

* ``pipeline``: --images MVTec-sized RGB PNGs (1024 x 1024, written from
  ``../shared/data/mvtec_ad/grid`` or generated) scored by ``pylake.pipeline.scored`` (what
  `lake eval` and `lake predict` run) with the prefetch threads (--io-threads) and without
  (0), against the backbone alone on the same images already in memory (``NeuronProbe`` with
  the model's taps, same batch and threads), and a whole ``evaluate_category`` on the real grid
  category (its 14 test images at 1024 px, masks and metrics included; fit timed apart).
  Ratios: images/s of each against the backbone alone (target >= 0.9 with the pipeline).
* ``head``: ``score_prepared`` vs the bare forward (the probe) on the same prepared images at
  each --batches and --shots; head share = (score - forward) / forward (target <= 2 %).
* ``batch``: images/s of ``score_prepared`` at each --batches against batch 1, and the largest
  difference of maps and scores from batch 1 (batch 1 is the bitwise setting).

Each comparison alternates its variants (A B A B) --repeat times after a warm-up and
reports medians. Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import ROOT, clip_factory, export_random_clip, machine_line, model_size, pylake, set_threads, temp_dir, torch

from pylake import datasets, evaluate, pipeline


def alternate_median(fns: dict, repeat: int) -> dict:
    """Median seconds of each of ``fns`` ({name: fn}), called in turn ``repeat`` times after a warm-up round."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(max(1, repeat)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def write_images(folder: Path, n: int, side: int = 1024) -> list:
    """``n`` RGB PNGs of ``side`` x ``side``: the grid's test images (grey) with the channels
    shifted apart, so each file decodes as a colour MVTec image would; generated noise
    when ../shared/data is absent."""
    from PIL import Image  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    src = sorted((ROOT.parent / "shared" / "data" / "mvtec_ad" / "grid" / "test").rglob("*.png"))
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if src:
            g = np.asarray(Image.open(src[i % len(src)]).convert("L").resize((side, side)))
            rgb = np.stack([g, np.roll(g, 7 * (i + 1), 0), np.roll(g, 5 * (i + 1), 1)], -1)
        else:
            rgb = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        p = folder / f"{i:03d}.png"
        Image.fromarray(rgb).save(p)
        out.append(p)
    return out


def chunks(xs, b):
    return [xs[i:i + b] for i in range(0, len(xs), b)]


def part_pipeline(clip, args, tmp: Path) -> None:
    paths = write_images(tmp, args.images)
    normal = paths[: args.shots]
    model = pylake.NormalityModel(clip, image_size=args.size).fit(normal).calibrate(normal, leave_one_out=True) \
        if args.shots >= 2 else pylake.NormalityModel(clip, image_size=args.size).fit(normal)
    probe = pylake.NeuronProbe(clip, layers=model.layers, project_layer=model.semantic_layer)
    prepared = [model.prepare(p) for p in paths]
    batches = [torch.stack([p.pixels for p in c]) for c in chunks(prepared, args.batch)]
    b, n = args.batch, len(paths)
    t = alternate_median({
        "backbone alone (in memory)": lambda: [probe(x) for x in batches],
        "score, in memory": lambda: model.score_prepared(prepared, batch_size=b),
        f"pipeline, {args.io_threads} io threads": lambda: list(pipeline.scored(model, paths, b, args.io_threads)),
        "pipeline, no prefetch (io_threads 0)": lambda: list(pipeline.scored(model, paths, b, 0)),
    }, args.repeat)
    bb = t["backbone alone (in memory)"]
    print(f"pipeline: {n} RGB PNGs 1024 x 1024 -> {args.size} px, batch {b}, {args.threads} threads, "
          f"medians of {args.repeat} (alternated):")
    for k, v in t.items():
        print(f"  {k:<40s} {n / v:7.3f} images/s  {1000 * v / n:8.1f} ms/image  ratio to the backbone "
              f"{bb / v:.3f}")
    # decode + resize alone, one thread: what the prefetch hides
    t_prep = statistics.median([timed_once(lambda: [model.prepare(p) for p in paths]) for _ in range(args.repeat)])
    print(f"  {'prepare alone (decode + resize, 1 thread)':<40s} {n / t_prep:7.3f} images/s  "
          f"{1000 * t_prep / n:8.1f} ms/image  = {100 * t_prep / bb:.1f} % of the backbone time")

    grid = ROOT.parent / "shared" / "data" / "mvtec_ad"
    if not (grid / "grid").is_dir():
        print("  (../shared/data/mvtec_ad/grid absent: the evaluate_category line is skipped)")
        return
    cat = datasets.mvtec(grid, categories=["grid"])[0]
    shots = min(args.shots, len(cat.train))
    train = datasets.few_shot(cat.train, shots, 0)
    opts = dict(image_size=args.size, class_name="grid")

    def fit_only():
        m = pylake.NormalityModel(clip, **opts).fit(train)
        if shots >= 2:
            m.calibrate(train, leave_one_out=True)

    def eval_run(io):
        return evaluate.evaluate_category(clip, cat, shots, 0, opts, batch_size=b, io_threads=io)

    test_batches = None

    def backbone_test():
        nonlocal test_batches
        if test_batches is None:
            m = pylake.NormalityModel(clip, **opts)
            ps = [m.prepare(s.path) for s in cat.test]
            test_batches = [torch.stack([p.pixels for p in c]) for c in chunks(ps, b)]
        return [probe(x) for x in test_batches]

    backbone_test()
    t = alternate_median({"fit": fit_only, "backbone": backbone_test,
                          "eval": lambda: eval_run(args.io_threads), "eval io0": lambda: eval_run(0)}, args.repeat)
    nt = len(cat.test)
    for k in ("eval", "eval io0"):
        score_part = t[k] - t["fit"]
        print(f"  evaluate_category grid ({nt} test images 1024 px, {shots} shots, masks, metrics; "
              f"{'io threads ' + str(args.io_threads) if k == 'eval' else 'no prefetch'}): {t[k]:.2f} s, of which "
              f"fit + calibrate {t['fit']:.2f} s; scoring {nt / score_part:.3f} images/s vs backbone alone "
              f"{nt / t['backbone']:.3f} images/s: ratio {t['backbone'] / score_part:.3f}")


def timed_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def part_head(clip, args, tmp: Path) -> None:
    print(f"head share: {args.spec} at {args.size} px, {args.threads} threads, medians of {args.repeat} (alternated)")
    n_img = max(args.batches)
    images = clip_factory.example_images(n_img, args.size, seed=1)
    for shots in args.shots_list:
        normal = clip_factory.example_images(shots, args.size, seed=2)
        # batch_size = the largest batch: a score call of b images runs one forward of b, as the probe does
        model = pylake.NormalityModel(clip, image_size=args.size, batch_size=max(args.batches)).fit(normal)
        probe = pylake.NeuronProbe(clip, layers=model.layers, project_layer=model.semantic_layer)
        for b in args.batches:
            x = images[:b]
            t = alternate_median({"score": lambda: model.score(x), "forward": lambda: probe(x)}, args.repeat)
            head = t["score"] - t["forward"]
            print(f"  {shots} shots, batch {b}: score {1000 * t['score'] / b:9.1f} ms/image, forward "
                  f"{1000 * t['forward'] / b:9.1f} ms/image, head {1000 * head / b:7.2f} ms/image = "
                  f"{100 * head / t['forward']:5.2f} % of the forward", flush=True)


def part_batch(clip, args, tmp: Path) -> None:
    n = args.images
    paths = write_images(tmp, n, side=args.size)  # files at S: decoding is not what is measured here
    normal = paths[: args.shots]
    model = pylake.NormalityModel(clip, image_size=args.size).fit(normal)
    prepared = [model.prepare(p) for p in paths]
    t = alternate_median({b: (lambda b=b: model.score_prepared(prepared, batch_size=b)) for b in args.batches},
                         args.repeat)
    ref = model.score_prepared(prepared, batch_size=1)
    print(f"batch size: {n} images at {args.size} px, {args.shots} shots, {args.threads} threads, medians of "
          f"{args.repeat} (alternated)")
    for b in args.batches:
        got = model.score_prepared(prepared, batch_size=b)
        dmap = max(float((a.anomaly_map - r.anomaly_map).abs().max()) for a, r in zip(got, ref))
        dscore = max(abs(float(a.pred_score[0]) - float(r.pred_score[0])) for a, r in zip(got, ref))
        print(f"  batch {b:3d}: {n / t[b]:7.3f} images/s  {1000 * t[b] / n:8.1f} ms/image  speed-up over batch 1 "
              f"{t[args.batches[0]] / t[b]:.3f}; max |map - batch 1| {dmap:.2e}, max |score - batch 1| {dscore:.2e}"
              f"{' (bitwise)' if dmap == 0 and dscore == 0 else ''}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["pipeline", "head", "batch", "all"])
    ap.add_argument("--spec", default=None, choices=sorted(clip_factory.SPECS), help="model (default b16)")
    ap.add_argument("--size", type=int, default=None, help="input side S (default: the model's own)")
    ap.add_argument("--images", type=int, default=16, help="images per timed pass (pipeline, batch; default 16)")
    ap.add_argument("--shots", type=int, default=4, help="normal images fitted on (pipeline, batch; default 4)")
    ap.add_argument("--shots-list", type=int, nargs="+", default=[1, 4], help="head: shot counts (default 1 4)")
    ap.add_argument("--batch", type=int, default=1, help="pipeline: batch size (default 1, the bitwise setting)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="head / batch: batch sizes")
    ap.add_argument("--io-threads", type=int, default=2, help="prefetch threads of the pipeline line (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="alternated timed rounds after a warm-up (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and LAKE (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, few images, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.spec, args.images, args.repeat = args.spec or "tiny", min(args.images, 4), 1
        args.batches = [1, 2]
    args.spec = args.spec or "b16"
    args.size = model_size(args.spec, args.size)
    set_threads(args.threads)
    print(machine_line(args.threads))
    with temp_dir() as tmp:
        path, _, _, _ = export_random_clip(args.spec, Path(tmp))
        clip = pylake.load_clip(path)
        print(f"model: {args.spec} (random weights) at {args.size} px, {clip!r}")
        for part in (["pipeline", "head", "batch"] if args.part == "all" else [args.part]):
            sub = Path(tmp) / part
            sub.mkdir()
            {"pipeline": part_pipeline, "head": part_head, "batch": part_batch}[part](clip, args, sub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
