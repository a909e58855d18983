"""The `lake` command: fit, predict, eval, inspect.

    lake fit --model M --class-name C --normal DIR_OR_FILES --out F.lake [method options]
    lake predict F.lake IMAGES... --model M --out DIR
    lake eval --model M --dataset mvtec|visa|btad|mpdd|loco|folder --root R --out REPORT
    lake inspect F.lake [IMAGE] --model M

Exit codes: 0 done; 1 failed while running (a corrupt file, ...); 2 bad usage or input
(a missing file, an unknown option value, ...). Progress goes to stderr, results to stdout
and the output folders; the library itself prints nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from .datasets import image_paths

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _method_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method options (defaults: METHOD.md; see docs/method.md)")
    g.add_argument("--layers", type=int, nargs="+", help="tapped blocks, 1-based (default: quarter points)")
    g.add_argument("--k", type=int, default=100, help="sensitive neurons per layer (100)")
    g.add_argument("--score", default="variance", choices=["variance", "normalized_variance", "cv", "random"])
    g.add_argument("--selection-seed", type=int, default=0, help="seed of --score random")
    g.add_argument("--kind", default="residual", choices=["residual", "mlp"])
    g.add_argument("--image-size", type=int, help="backbone input side (default: 518 on /14 models)")
    g.add_argument("--text-weight", type=float, default=0.3, help="fusion weight of the text branch (0.3)")
    g.add_argument("--semantic-layer", type=int, help="block that meets the text (default: deepest tapped)")
    g.add_argument("--pooling", default="max", choices=["max", "top1pct"])
    g.add_argument("--blur-sigma", type=float, default=4.0)
    g.add_argument("--vocabulary", help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: embedded / OpenCLIP's)")


def _options(args) -> dict:
    return dict(layers=args.layers, k=args.k, score=args.score, seed=args.selection_seed, kind=args.kind,
                image_size=args.image_size, text_weight=args.text_weight, semantic_layer=args.semantic_layer,
                pooling=args.pooling, blur_sigma=args.blur_sigma, vocabulary=args.vocabulary)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_fit(args) -> int:
    import pylake  # noqa: PLC0415

    clip = pylake.load_clip(args.model)
    normal = image_paths(args.normal)
    model = pylake.NormalityModel(clip, class_name=args.class_name, **_options(args))
    x = pylake.load_images(normal, clip, model.image_size)
    _say(f"fitting on {len(normal)} normal images at {model.image_size} px, layers {model.layers} ...")
    model.fit(x)
    if len(normal) >= 2 and args.quantile > 0:
        model.calibrate(x, args.quantile, leave_one_out=True)
    model.save(args.out)
    print(json.dumps({"out": str(args.out), "shots": model.shots, "layers": model.layers,
                      "neurons": sum(len(n["indices"]) for n in model.neurons),
                      "image_threshold": model.image_threshold, "pixel_threshold": model.pixel_threshold}))
    return EXIT_OK


def cmd_predict(args) -> int:
    import numpy as np  # noqa: PLC0415

    import pylake  # noqa: PLC0415
    from .evaluate import Progress, write_heatmap  # noqa: PLC0415

    clip = pylake.load_clip(args.model)
    model = pylake.NormalityModel.load(args.model_file, clip)
    images = image_paths(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = Progress(len(images), "predict", not args.quiet)
    for path in images:
        pred = model.score(pylake.load_images([path], clip, model.image_size))
        amap = pred.anomaly_map[0]
        stem = path.stem
        write_heatmap(out / f"{stem}_overlay.png", path, amap)
        if args.map_format == "npy":
            np.save(out / f"{stem}_map.npy", amap.numpy())
        else:
            from PIL import Image  # noqa: PLC0415

            Image.fromarray((amap.clamp(0, 1) * 65535 + 0.5).to(torch.int32).numpy().astype(np.uint16)).save(
                out / f"{stem}_map.png")
        label = None if pred.pred_label is None else bool(pred.pred_label[0])
        rows.append({"image": str(path), "score": float(pred.pred_score[0]), "label": label})
        bar.step()
    (out / "scores.json").write_text(json.dumps(rows, indent=2))
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "score", "label"])
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"{r['image']}\t{r['score']:.6f}\t{'-' if r['label'] is None else ('anomalous' if r['label'] else 'normal')}")
    return EXIT_OK


def cmd_eval(args) -> int:
    import pylake  # noqa: PLC0415
    from . import datasets, evaluate  # noqa: PLC0415
    from .paper import paper_table  # noqa: PLC0415

    clip = pylake.load_clip(args.model)
    kw = {}
    if args.dataset == "folder":
        kw = dict(abnormal_dir=args.abnormal, mask_dir=args.masks)
    cats = datasets.open_dataset(args.dataset, args.root, categories=args.categories, **kw)
    meta = {"model": args.model, "dataset": args.dataset, "root": args.root, "shots": args.shots, "seeds": args.seeds,
            "random_weights": bool(args.random_weights), "options": _options(args)}
    files = evaluate.run(clip, cats, args.shots, args.seeds, Path(args.out), _options(args), meta,
                         n_heatmaps=args.heatmaps, progress=not args.quiet, log=_say if not args.quiet else (lambda s: None))
    summary = json.loads(files["json"].read_text())["summary"]
    print(paper_table(args.dataset, summary))
    _say(f"report: {files['md']} {files['csv']} {files['json']}")
    return EXIT_OK


def cmd_inspect(args) -> int:
    import pylake  # noqa: PLC0415

    clip = pylake.load_clip(args.model)
    model = pylake.NormalityModel.load(args.model_file, clip)
    print(f"{model!r}: {model.shots} shots, image size {model.image_size}, semantic layer {model.semantic_layer}, "
          f"thresholds image {model.image_threshold} pixel {model.pixel_threshold}")
    for n in model.neurons:
        top = torch.argsort(n["scores"], descending=True)[: args.top]
        print(f"layer {n['layer']}: {len(n['indices'])} neurons; top by score: " + ", ".join(
            f"#{int(n['indices'][i])} (score {float(n['scores'][i]):.4g}, mean {float(n['mean'][i]):.3g}, "
            f"std {float(n['std'][i]):.3g})" for i in top))
    if args.image:
        for d in model.explain(pylake.load_images([args.image], clip, model.image_size), top=args.top):
            print(f"explain: layer {d['layer']} neuron {d['channel']} deviation {d['deviation']:.3f} "
                  f"(peak at pixel {divmod(int(d['map'].argmax()), d['map'].shape[1])})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lake", description="LAKE: few-shot anomaly detection with the sparse "
                                 "sensitive neurons of a frozen CLIP.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a normality model on normal images and save it")
    p.add_argument("--model", required=True, help="CLIP archive (OpenAI .pt, state dict or LAKE export)")
    p.add_argument("--class-name", required=True, help="the product's name, used in the text prompts")
    p.add_argument("--normal", required=True, nargs="+", help="normal images or folders of them")
    p.add_argument("--out", required=True, help="the .lake file to write")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="calibrate thresholds at this quantile of leave-one-out normal scores (0: no thresholds)")
    _method_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="score images with a fitted model: overlays, raw maps, scores")
    p.add_argument("model_file", help="a .lake file written by `lake fit`")
    p.add_argument("images", nargs="+", help="images or folders")
    p.add_argument("--model", required=True, help="the CLIP archive the model was fitted with")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--map-format", default="npy", choices=["npy", "png16"], help="raw map as .npy or 16-bit PNG")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="evaluate on a data set: per-category and mean metrics, paper table")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True, choices=["mvtec", "visa", "btad", "mpdd", "loco", "folder"])
    p.add_argument("--root", required=True, help="data set root (for folder: the normal images' folder)")
    p.add_argument("--abnormal", help="folder: the anomalous test images")
    p.add_argument("--masks", help="folder: the masks of the anomalous images")
    p.add_argument("--categories", nargs="+")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--heatmaps", type=int, default=3, help="example heatmaps per category")
    p.add_argument("--random-weights", action="store_true", help="say in the report that the backbone is random")
    p.add_argument("--quiet", action="store_true")
    _method_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("inspect", help="show a model's neurons and explain one image")
    p.add_argument("model_file")
    p.add_argument("image", nargs="?")
    p.add_argument("--model", required=True)
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(func=cmd_inspect)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        _say(f"lake {args.command}: error: {e}")
        return EXIT_USAGE
    except RuntimeError as e:
        _say(f"lake {args.command}: failed: {e}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
