"""Benchmark: LAKE end to end from image files: model load, fit and predict images/s, and
the saved model's size per shot.

    PYTHONPATH=python python bench/bench_e2e.py [--data ../shared/data/mvtec_ad] [--kind mvtec] [--category grid]
        [--spec b16] [--size 224] [--shots 4] [--save-shots 1 2 4] [--max-test 0] [--threads 2]
    PYTHONPATH=python python bench/bench_e2e.py --spec l14 --size 518
    PYTHONPATH=python python bench/bench_e2e.py --quick          # tiny /14 model, 1 shot, 4 test images

A random-weight model of --spec (tests/fixtures/clip_factory.py) is exported once to a
temporary folder; then, as a user would run LAKE on a data set (pylake.datasets):

* model load: ``pylake.load_clip`` of the export (and ``NormalityModel.load`` of a saved model);
* fit: a NormalityModel (default options, image_size --size) on --shots normal images
  (``datasets.few_shot(train, k, seed 0)``) given as file paths: decoding, resizing, the
  backbone and the prompt ensemble (once per fit) included; images/s = shots / time;
* predict: ``score(path)`` of every test image, one file per call (decoding, the backbone
  at --size, the head, maps at the file's own resolution); images/s and ms/image (median);
* model file size: the model fitted at each of --save-shots and
  saved; bytes, bytes per shot, and the increment per added shot.

Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import (ROOT, clip_factory, export_random_clip, machine_line, model_size, pylake, set_threads,
                     temp_dir, timed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mvtec_ad",
                    help="data set root (default ../shared/data/mvtec_ad next to the repository)")
    ap.add_argument("--kind", default="mvtec", choices=sorted(pylake.datasets.KINDS), help="data set kind")
    ap.add_argument("--category", default="grid", help="category (default grid)")
    ap.add_argument("--spec", default=None, choices=sorted(clip_factory.SPECS), help="model (default b16)")
    ap.add_argument("--size", type=int, default=None, help="backbone input side (default: the model's own)")
    ap.add_argument("--shots", type=int, default=None, help="normal images to fit on (default 4)")
    ap.add_argument("--save-shots", type=int, nargs="+", default=None,
                    help="shot counts whose saved model size is measured (default 1 2 4)")
    ap.add_argument("--max-test", type=int, default=None, help="score at most this many test images (0: all)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and LAKE (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny /14 model at 224, 1 shot, 4 test images")
    args = ap.parse_args()
    if args.quick:
        args.spec = args.spec or "tiny14"
        args.size = args.size or 224
        args.shots = args.shots or 1
        args.save_shots = args.save_shots or [1, 2]
        args.max_test = 4 if args.max_test is None else args.max_test
    args.spec = args.spec or "b16"
    args.size = model_size(args.spec, args.size)
    args.shots = args.shots or 4
    args.save_shots = args.save_shots or [1, 2, 4]
    args.max_test = args.max_test or 0
    set_threads(args.threads)
    print(machine_line(args.threads))

    try:
        cat = pylake.datasets.open_dataset(args.kind, args.data, categories=[args.category])[0]
    except (OSError, ValueError) as e:
        print(f"no data: {e} (pass --data and --category)")
        return 0
    if len(cat.train) < max([args.shots] + args.save_shots):
        print(f"{args.category}: only {len(cat.train)} training images, fewer than the shots asked for")
        return 0
    test = cat.test[: args.max_test] if args.max_test else cat.test
    print(f"data: {args.data} ({args.kind}) / {cat.name}: {len(cat.train)} train, {len(cat.test)} test images "
          f"({len(test)} scored)")

    with temp_dir() as tmp:
        tmp = Path(tmp)
        path, _, t_make, t_export = export_random_clip(args.spec, tmp)
        t_load, model = timed(lambda: pylake.load_clip(path))
        print(f"model: {args.spec} {model.config}, backbone input {args.size} px (random weights; "
              f"built {t_make:.1f} s, "
              f"exported {t_export:.1f} s; archive {path.stat().st_size / 2**20:.0f} MiB)")
        print(f"model load (pylake.load_clip): {t_load:.2f} s", flush=True)

        # ---- fit from files
        support = pylake.datasets.few_shot(cat.train, k=args.shots, seed=0)
        nm = pylake.NormalityModel(model, image_size=args.size, class_name=cat.name)
        t_fit, _ = timed(lambda: nm.fit([str(p) for p in support]))
        print(f"fit {args.shots} shots from files: {t_fit:.2f} s = {args.shots / t_fit:.2f} images/s "
              f"(prompt ensemble included, once per fit)", flush=True)

        # ---- predict from files, one per call
        times = []
        t0 = time.perf_counter()
        for s in test:
            t1 = time.perf_counter()
            nm.score(str(s.path))
            times.append(time.perf_counter() - t1)
        total = time.perf_counter() - t0
        print(f"predict {len(test)} test images from files, one per call: {total:.2f} s = {len(test) / total:.2f} "
              f"images/s; median {1000 * statistics.median(times):.0f} ms/image, first {1000 * times[0]:.0f} ms, "
              f"fastest {1000 * min(times):.0f} ms", flush=True)

        # ---- saved model size per shot
        sizes = {}
        for k in sorted(set(args.save_shots)):
            m = nm if k == args.shots else pylake.NormalityModel(model, image_size=args.size, class_name=cat.name).fit(
                [str(p) for p in pylake.datasets.few_shot(cat.train, k=k, seed=0)])
            f = tmp / f"normality_{k}.pt"
            m.save(f)
            sizes[k] = f.stat().st_size
        grid = args.size // model.config.patch_size
        print(f"saved NormalityModel ({grid}x{grid} patches, K 100, {len(nm.layers)} layers, float32):")
        prev = None
        for k, b in sizes.items():
            inc = "" if prev is None else f", +{(b - sizes[prev]) / (k - prev):,.0f} bytes per added shot"
            print(f"  {k:2d} shots: {b:,d} bytes = {b / k:,.0f} bytes/shot{inc}")
            prev = k
        k_last = max(sizes)
        t_nm_load, _ = timed(lambda: pylake.NormalityModel.load(tmp / f"normality_{k_last}.pt", model))
        print(f"NormalityModel.load ({k_last} shots): {1000 * t_nm_load:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
