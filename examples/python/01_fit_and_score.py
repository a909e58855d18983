"""Fit a LAKE normality model on a few normal images, calibrate it, score a test split.

    python examples/python/01_fit_and_score.py [--model M.pt] [--data DIR] [--category grid]
                                               [--shots 7] [--image-size S] [--out DIR]

Steps: load a CLIP; fit a NormalityModel on the first `--shots` images of
<category>/train/good; calibrate its thresholds on those same images with leave-one-out
(each one scored against the others' patches); score every image of <category>/test;
print one line `name score label` per image (label: `anomalous` or `normal`), then the
image AUROC; write heatmap overlays (image | anomaly map | ground truth) as PNGs into `--out`.

Without --model (or $LAKE_MODEL) a random-weight CLIP (4 blocks, width 128, patch 14) is
generated as a LAKE export in `--out`: no model hub is reachable here, so the scores and
the AUROC then only show that the pipeline runs, not how well LAKE detects anything.
The generated model runs at 224 px (the library's default for /14 models is 518 px: the
paper's setting, and about five times the work per image).

C++ twin: examples/cpp/01_fit_and_score.cpp (same steps, same printed lines).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import pylake  # noqa: E402
from pylake.datasets import image_files  # noqa: E402
from pylake.evaluate import write_heatmap  # noqa: E402
from pylake.metrics import image_auroc  # noqa: E402


def generated_model(out: Path) -> Path:
    """A random-weight /14 CLIP (tests/fixtures/clip_factory.py's "tiny14"), as a LAKE export."""
    path = out / "random_tiny14.lake.safetensors"
    if not path.exists():
        sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
        import clip_factory  # noqa: PLC0415  (the project's generator of random-weight CLIPs)
        from pylake.export import export_clip  # noqa: PLC0415

        print("generating a random-weight CLIP (tiny14: patch 14, 4 blocks, width 128) ...", flush=True)
        export_clip(clip_factory.make_clip("tiny14", seed=0), path,
                    source="random weights (examples/python/01_fit_and_score.py)")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("LAKE_MODEL"),
                    help="a CLIP archive: OpenAI .pt, state dict or LAKE export (default: generate a random one)")
    ap.add_argument("--data", default=os.environ.get("LAKE_DATA", str(ROOT.parent / "shared" / "data" / "mvtec_ad")),
                    help="an MVTec-style folder holding <category>/train/good, <category>/test, <category>/ground_truth")
    ap.add_argument("--category", default="grid")
    ap.add_argument("--class-name", default=None, help="the word in the text prompts (default: the category)")
    ap.add_argument("--shots", type=int, default=7, help="normal images to fit on, the first of train/good (7)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="backbone input side (default: 224 for the generated model, else the library's default)")
    ap.add_argument("--heatmaps", type=int, default=6, help="overlays to write: the first image of each test folder")
    ap.add_argument("--out", default=str(ROOT / "build" / "examples" / "01"))
    args = ap.parse_args()

    pylake.set_num_threads(0)  # every core
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cat = Path(args.data) / args.category
    if not (cat / "train" / "good").is_dir() or not (cat / "test").is_dir():
        print(f"no data at {cat}: pass --data DIR (an MVTec-style folder) and --category", file=sys.stderr)
        return 2

    random_weights = args.model is None
    model_path = Path(args.model) if args.model else generated_model(out)
    clip = pylake.load_clip(model_path)
    print(f"model: {model_path} {clip.config}")
    if random_weights:
        print("WARNING: RANDOM WEIGHTS. This CLIP was generated, not trained: the scores and the AUROC below "
              "mean nothing. Pass --model or set LAKE_MODEL=/path/to/ViT-L-14-336.pt for real ones.")
    image_size = args.image_size or (224 if random_weights else None)

    # 1. Fit: sensitive neurons + per-layer galleries of normal patches + text embeddings.
    normal = image_files(cat / "train" / "good")[: max(args.shots, 0)]
    if not normal:
        print(f"no normal images in {cat / 'train' / 'good'} (or --shots 0)", file=sys.stderr)
        return 2
    model = pylake.NormalityModel(clip, image_size=image_size, class_name=args.class_name or args.category)
    size = model.image_size
    t0 = time.perf_counter()
    model.fit(normal)  # files: backbone at S x S, maps at each file's resolution (one rule everywhere)
    print(f"fit: {len(normal)} normal images, {size} px, layers {model.layers}, "
          f"{sum(len(n.indices) for n in model.neurons)} neurons, {time.perf_counter() - t0:.1f} s")

    # 2. Calibrate: thresholds = the 99 % quantile of the fit images' scores and map values,
    #    each fit image scored against the other images' patches (leave-one-out).
    if len(normal) >= 2:
        model.calibrate(normal, quantile=0.99, leave_one_out=True)
        print(f"calibrate: image threshold {model.image_threshold:.9g}, pixel threshold {model.pixel_threshold:.9g}")
    else:
        print("calibrate: skipped (leave-one-out needs at least 2 normal images): no labels")

    # 3. Score the test split, one folder per defect type ("good" = normal), one file at a
    #    time (files may differ in size; the maps come back at each file's resolution).
    tests = [(d.name, p) for d in sorted((cat / "test").iterdir()) if d.is_dir() for p in image_files(d)]
    t0 = time.perf_counter()
    preds = [model.score(p) for _, p in tests]
    per_image_ms = (time.perf_counter() - t0) / len(tests) * 1000
    scores = [float(pr.pred_score[0]) for pr in preds]
    for (defect, p), pr, s in zip(tests, preds, scores):
        word = "-" if pr.pred_label is None else ("anomalous" if bool(pr.pred_label[0]) else "normal")
        amap = pr.anomaly_map[0]
        total = float(np.cumsum(amap.numpy().astype(np.float64))[-1])  # the C++ twin's sequential sum
        print(f"{defect}/{p.name} {s:.9g} {word} map {amap.shape[1]}x{amap.shape[0]} sum {total:.17g}")
    truth = [int(defect != "good") for defect, _ in tests]
    print(f"image AUROC: {image_auroc(scores, truth):.4f} ({sum(truth)} defective, {len(truth) - sum(truth)} good; "
          f"{per_image_ms:.0f} ms per image)")

    # 4. Heatmaps: the first image of each test folder, one colour scale for all.
    lo = min(pr.anomaly_map.min().item() for pr in preds)
    hi = max(pr.anomaly_map.max().item() for pr in preds)
    firsts = {}
    for i, (defect, _) in enumerate(tests):
        firsts.setdefault(defect, i)
    for i in list(firsts.values())[: max(args.heatmaps, 0)]:
        defect, p = tests[i]
        target = out / f"heatmap_{defect}_{p.stem}.png"
        mask = cat / "ground_truth" / defect / f"{p.stem}_mask.png"
        write_heatmap(target, p, preds[i].anomaly_map[0], lo, hi, mask if mask.exists() else None)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
