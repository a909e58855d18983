"""The `lake` command: fit, predict, eval, sweep, inspect.

    lake fit --model M --class-name C --normal DIR_OR_FILES --out F.lake [method options]
    lake predict F.lake IMAGES... --model M --out DIR
    lake eval --model M --dataset mvtec|visa|btad|mpdd|loco|folder --root R --out REPORT [reader options]
    lake sweep --model M --dataset ... --root R --out DIR [--ablations k selection ...]
    lake inspect F.lake [IMAGE] --model M
    lake doctor [--json] [--device DEV ...] [--no-model]
    lake export SOURCE|--open-clip NAME --out F [--dtype float32|float16|bfloat16] [--activation A] [--vocab V]
    lake models [--json] [--download NAME ...]

--model takes a file or folder of CLIP weights (every form in docs/archives.md) or a model
name (`lake models`), downloaded when missing and online.

Exit codes: 0 done; 1 failed while running (a model that could not be downloaded, a FAIL of `lake doctor`,
...); 2 bad usage or input (a missing file, a corrupt or crafted .lake or weights file, an unknown option
value, ...). Progress goes to stderr, results to stdout
and the output folders; ``--quiet`` leaves only errors; the library itself prints nothing.
Every image goes through one rule (C++ ``lake::prepare_image``): backbone at S x S, maps at
the file's resolution, so `lake predict`, `lake eval` and ``NormalityModel.score(path)``
give the same score for the same file and model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from .datasets import image_paths

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


# The method options on the command line: flag dest -> lake::NormalityOptions field. Every
# default is the bound C++ one (pylake.NormalityOptions()); None means the C++ "from the
# model" value (tests/python/test_options.py checks both).
METHOD_FLAGS = {"layers": "layers", "k": "k", "score": "score", "selection_seed": "seed", "kind": "kind",
                "image_size": "image_size", "text_weight": "text_weight", "semantic_layer": "semantic_layer",
                "pooling": "pooling", "blur_sigma": "blur_sigma", "vocabulary": "vocabulary"}


def _method_options(p: argparse.ArgumentParser) -> None:
    from . import _C  # noqa: PLC0415

    d = _C.NormalityOptions()

    def names(enum) -> List[str]:
        return [str(v) for v in enum.__members__.values()]

    g = p.add_argument_group("method options (defaults: METHOD.md; see docs/method.md)")
    g.add_argument("--layers", type=int, nargs="+", help="tapped blocks, 1-based (default: quarter points)")
    g.add_argument("--k", type=int, default=d.k, help=f"sensitive neurons per layer ({d.k})")
    g.add_argument("--score", default=str(d.score), choices=names(_C.SensitivityScore))
    g.add_argument("--selection-seed", type=int, default=d.seed, help="seed of --score random")
    g.add_argument("--kind", default=str(d.kind), choices=names(_C.ProbeKind))
    g.add_argument("--image-size", type=int, help="backbone input side (default: 518 on /14 models)")
    g.add_argument("--text-weight", type=float, default=d.text_weight,
                   help=f"fusion weight of the text branch ({d.text_weight})")
    g.add_argument("--semantic-layer", type=int, help="block that meets the text (default: deepest tapped)")
    g.add_argument("--pooling", default=str(d.pooling), choices=names(_C.Pooling))
    g.add_argument("--blur-sigma", type=float, default=d.blur_sigma)
    g.add_argument("--vocabulary", help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: embedded / OpenCLIP's)")


def _options(args) -> dict:
    """NormalityModel's keyword arguments of the method flags."""
    return {field: getattr(args, dest) for dest, field in METHOD_FLAGS.items()}


class _Log:
    """Progress and notes go to stderr, results to stdout; ``--quiet`` silences both (errors
    are printed by :func:`main` whatever the flag)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def out(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)


def _no_threshold_note(model) -> str:
    return (f"the model has no image threshold (it was fitted on {model.shots} image{'s' if model.shots != 1 else ''} "
            "without calibration), so labels are '-': refit with --calibration-images DIR (normal images not used "
            "for the fit), or with at least 2 normal images for leave-one-out calibration")


def cmd_fit(args) -> int:
    import pylake  # noqa: PLC0415

    log = _Log(args.quiet)
    clip = pylake.load_clip(args.model)
    normal = image_paths(args.normal)
    model = pylake.NormalityModel(clip, class_name=args.class_name, **_options(args))
    log(f"fitting on {len(normal)} normal images at {model.image_size} px, layers {model.layers} ...")
    model.fit(normal)
    if args.quantile > 0 and args.calibration_images:
        held_out = image_paths(args.calibration_images)
        model.calibrate(held_out, args.quantile)
        log(f"calibrated on {len(held_out)} held-out normal images at quantile {args.quantile}")
    elif args.quantile > 0 and len(normal) >= 2:
        model.calibrate(normal, args.quantile, leave_one_out=True)
        log(f"calibrated leave-one-out on the {len(normal)} fit images at quantile {args.quantile}")
    elif args.quantile > 0:
        log("note: thresholds not set: leave-one-out calibration scores each fit image against the others and needs "
            "at least 2 normal images (got 1); pass --calibration-images DIR with other normal images to get "
            "thresholds, or `lake predict` will print scores without labels")
    model.save(args.out)
    log.out(json.dumps({"out": str(args.out), "shots": model.shots, "layers": model.layers,
                        "neurons": sum(len(n.indices) for n in model.neurons),
                        "image_threshold": model.image_threshold, "pixel_threshold": model.pixel_threshold}))
    return EXIT_OK


def cmd_predict(args) -> int:
    import pylake  # noqa: PLC0415
    from . import predict  # noqa: PLC0415

    log = _Log(args.quiet)
    if args.html:
        from . import report  # noqa: PLC0415

        if not report.available():
            raise ValueError("--html: " + report.NEEDS_MATPLOTLIB)
    if _distributed(args):
        return _predict_distributed(args, log)
    if args.on_error is None:
        args.on_error = "fail"
    clip = pylake.load_clip(args.model)
    model = pylake.NormalityModel.load(args.model_file, clip)
    images = image_paths(args.images, recursive=True)
    out = Path(args.out)
    if model.image_threshold is None:
        log("note: " + _no_threshold_note(model))
    meta = {"class_name": model.class_name, "model": args.model, "model_file": str(args.model_file),
            "backbone": f"{clip!r}, fingerprint {clip.fingerprint()}", "random_weights": bool(args.random_weights)}
    rows = predict.run(model, images, out, map_format=args.map_format, batch_size=args.batch_size,
                       io_threads=args.io_threads, html=args.html, meta=meta, progress=not args.quiet,
                       command="lake predict " + " ".join(map(str, sys.argv[1:])), log=log, on_error=args.on_error)
    _print_predictions(args, rows, log)
    return EXIT_OK


def _print_predictions(args, rows, log) -> None:
    out = Path(args.out)
    for r in rows:
        if "error" in r:
            log.out(f"{r['path']}\terror\t{r['error']}")
            continue
        word = "-" if r["pred_label"] is None else ("anomalous" if r["pred_label"] else "normal")
        log.out(f"{r['path']}\t{r['score']!r}\t{word}")
    log(f"outputs: {out / 'predictions.csv'}, {out / 'predictions.json'}, {out / 'maps'}, {out / 'overlays'}"
        + (f", {out / 'report.html'}" if args.html else ""))


# ----------------------------------------------------------------------------- on a Dask cluster

def _distributed(args) -> bool:
    """Whether --scheduler or --workers asks for the Dask path (docs/distributed.md)."""
    if args.scheduler is not None and args.workers is not None:
        raise ValueError("--scheduler and --workers: give one (a running cluster, or N local worker processes)")
    if args.scheduler is None and args.workers is None:
        given = [f for f, v in (("--chunk-size", args.chunk_size), ("--worker-device", args.worker_device)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} apply with --scheduler or --workers only")
        return False
    return True


def _connect(args):
    from . import distributed  # noqa: PLC0415

    if not distributed.available():
        raise ValueError(f"--scheduler / --workers: {distributed.NEEDS_DASK}")
    return distributed.connect(args.scheduler, args.workers, args.scheduler_timeout)


def _predict_distributed(args, log) -> int:
    from types import SimpleNamespace  # noqa: PLC0415

    from . import distributed  # noqa: PLC0415

    images = image_paths(args.images, recursive=True)
    with _connect(args) as client:
        meta = {"model": args.model, "model_file": str(args.model_file), "random_weights": bool(args.random_weights)}
        res = distributed.predict(client, args.model_file, images, args.out, model=args.model,
                                  device=args.worker_device or "cpu", map_format=args.map_format,
                                  batch_size=args.batch_size, io_threads=args.io_threads, html=args.html, meta=meta,
                                  chunk_size=args.chunk_size, on_error=args.on_error or "record",
                                  progress=not args.quiet, log=log,
                                  command="lake predict " + " ".join(map(str, sys.argv[1:])))
    if res.info["image_threshold"] is None:
        log("note: " + _no_threshold_note(SimpleNamespace(shots=res.info["shots"])))
    skipped = sum(t["skipped"] for t in res.tasks.values())
    if skipped:
        log(f"resumed: {skipped} of {len(images)} images were already done in '{args.out}'")
    _print_predictions(args, res.rows, log)
    return EXIT_OK


def _distributed_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("on a Dask cluster (docs/distributed.md; pip install 'pylake[distributed]')")
    g.add_argument("--scheduler", metavar="ADDR", help="run the tasks on the Dask cluster of this scheduler "
                   "(tcp://host:8786); the model, images and --out must be at the same paths on every worker")
    g.add_argument("--workers", type=int, metavar="N", help="run the tasks on N worker processes on this machine "
                   "(a dask LocalCluster, one thread each)")
    g.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="S",
                   help="give up when the scheduler cannot be reached within S seconds (10)")
    g.add_argument("--chunk-size", type=int, metavar="N", help="images per task (default: about 4 tasks per worker, "
                   "at most 64 images; size them so that a task runs for seconds)")
    g.add_argument("--worker-device", choices=["cpu", "cuda", "auto"],
                   help="where each worker runs the backbone (default cpu; auto: CUDA where the worker sees a GPU)")
    g.add_argument("--on-error", choices=["fail", "record"], help="an image that fails to decode: fail the command "
                   "(default without --scheduler / --workers), or record it as an error row and go on (default with "
                   "them)")


def _pipeline_options(p: argparse.ArgumentParser) -> None:
    from .pipeline import CPU_BATCH_SIZE, CUDA_BATCH_SIZE  # noqa: PLC0415

    g = p.add_argument_group("input pipeline (docs/evaluation.md, \"Batch size\")")
    g.add_argument("--batch-size", type=int, metavar="N",
                   help=f"images per backbone forward (default: {CPU_BATCH_SIZE} on the CPU, where every score is "
                        f"bit-identical to scoring the file alone; {CUDA_BATCH_SIZE} on CUDA, equal to batch 1 within "
                        "1e-5). Larger batches are faster, also on the CPU")
    g.add_argument("--io-threads", type=int, metavar="T",
                   help="threads decoding and resizing the next images while the backbone runs (default: 0 when the backbone runs on the CPU with a thread per core, where extra threads only contend; else 2)")



def _dataset_arguments(p: argparse.ArgumentParser) -> None:
    """The data set and its reader options (lake eval, lake sweep)."""
    p.add_argument("--dataset", required=True, choices=["mvtec", "visa", "btad", "mpdd", "loco", "folder"])
    p.add_argument("--root", required=True, help="data set root (for folder: the normal training images' folder)")
    p.add_argument("--categories", nargs="+")
    p.add_argument("--allow-missing-masks", action="store_true",
                   help="keep anomalous test images without a mask (they then count for the image metrics only)")
    p.add_argument("--allow-one-class", action="store_true",
                   help="run on test splits without normal or without anomalous images, reporting the undefined "
                        "metrics as null (default: an error)")
    g = p.add_argument_group("--dataset folder")
    g.add_argument("--abnormal", help="the anomalous test images (or sub-folders of them, one per defect)")
    g.add_argument("--normal-test", help="the normal test images")
    g.add_argument("--masks", help="the masks of the anomalous images")
    g.add_argument("--mask-rule", help="mask file name for an image: {stem}, {name}, {suffix} (default {stem}_mask.png)")
    g.add_argument("--name", help="the category's name (default: folder)")
    p.add_argument("--split-csv", help="--dataset visa: the split CSV (default: ROOT/split_csv/1cls.csv)")


def _dataset_kwargs(args) -> dict:
    """The data-set reader options given on the command line (those of the chosen kind)."""
    kw = {"allow_missing_masks": bool(args.allow_missing_masks)}
    folder_only = {"--abnormal": args.abnormal, "--masks": args.masks, "--normal-test": args.normal_test,
                   "--mask-rule": args.mask_rule, "--name": args.name}
    if args.dataset == "folder":
        kw.update(abnormal_dir=args.abnormal, mask_dir=args.masks, test_normal_dir=args.normal_test)
        if args.mask_rule:
            kw["mask_rule"] = args.mask_rule
        if args.name:
            kw["name"] = args.name
    else:
        given = [flag for flag, v in folder_only.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to --dataset folder only, not to --dataset {args.dataset}")
    if args.split_csv is not None:
        if args.dataset != "visa":
            raise ValueError(f"--split-csv applies to --dataset visa only, not to --dataset {args.dataset}")
        kw["split_csv"] = args.split_csv
    return kw


def cmd_eval(args) -> int:
    import pylake  # noqa: PLC0415
    from . import datasets, evaluate  # noqa: PLC0415
    from .paper import paper_table  # noqa: PLC0415

    from . import report  # noqa: PLC0415

    log = _Log(args.quiet)
    if not report.available():
        log(f"note: {report.NEEDS_MATPLOTLIB} (the tables are written without it)")
    cats = datasets.open_dataset(args.dataset, args.root, categories=args.categories, **_dataset_kwargs(args))
    meta = {"model": args.model, "dataset": args.dataset, "root": args.root, "shots": args.shots, "seeds": args.seeds,
            "random_weights": bool(args.random_weights), "options": _options(args)}
    if _distributed(args):
        from . import distributed  # noqa: PLC0415

        with _connect(args) as client:
            files = distributed.evaluate(client, cats, args.shots, args.seeds, Path(args.out), model=args.model,
                                         options=_options(args), meta=meta, n_heatmaps=args.heatmaps,
                                         progress=not args.quiet, log=log, allow_one_class=args.allow_one_class,
                                         save_maps=args.save_maps, batch_size=args.batch_size,
                                         io_threads=args.io_threads, chunk_size=args.chunk_size,
                                         on_error=args.on_error or "record", device=args.worker_device or "cpu")
    else:
        clip = pylake.load_clip(args.model)
        files = evaluate.run(clip, cats, args.shots, args.seeds, Path(args.out), _options(args), meta,
                             n_heatmaps=args.heatmaps, progress=not args.quiet, log=log,
                             allow_one_class=args.allow_one_class, save_maps=args.save_maps,
                             batch_size=args.batch_size, io_threads=args.io_threads,
                             on_error=args.on_error or "fail")
    summary = json.loads(files["json"].read_text())["summary"]
    table = paper_table(args.dataset, summary, [c.name for c in cats])
    log.out(table if table else evaluate.markdown_table(summary))
    log(f"report: {files['md']} {files['csv']} {files['json']}" + (f" {files['html']}" if "html" in files else "")
        + f"; per image: {files['images_csv']}")
    return EXIT_OK


def cmd_sweep(args) -> int:
    import pylake  # noqa: PLC0415
    from . import datasets, sweep  # noqa: PLC0415

    log = _Log(args.quiet)
    cats = datasets.open_dataset(args.dataset, args.root, categories=args.categories, **_dataset_kwargs(args))
    kw = dict(model=args.model, dataset=args.dataset, root=args.root, options=_options(args), shots=args.shots,
              seeds=args.seeds, ablations=args.ablations or sweep.ABLATIONS, progress=not args.quiet, log=log,
              batch_size=args.batch_size, io_threads=args.io_threads, random_weights=args.random_weights,
              allow_one_class=args.allow_one_class)
    if _distributed(args):
        with _connect(args) as client:
            files = sweep.run(cats, args.out, client=client, chunk_size=args.chunk_size,
                              device=args.worker_device or "cpu", on_error=args.on_error or "record", **kw)
    else:
        files = sweep.run(cats, args.out, clip=pylake.load_clip(args.model), on_error=args.on_error or "fail", **kw)
    log.out(files["md"].read_text().rstrip())
    log(f"tables and plots: {Path(args.out)}/<ablation>.csv, .md, .png; runs: {Path(args.out) / 'runs'}")
    return EXIT_OK


def cmd_inspect(args) -> int:
    import pylake  # noqa: PLC0415

    log = _Log(False)
    clip = pylake.load_clip(args.model)
    model = pylake.NormalityModel.load(args.model_file, clip)
    log.out(f"{model!r}: {model.shots} shots, image size {model.image_size}, semantic layer {model.semantic_layer}, "
            f"thresholds image {model.image_threshold} pixel {model.pixel_threshold}")
    for n in model.neurons:
        top = torch.argsort(n.scores, descending=True)[: args.top]
        log.out(f"layer {n.layer}: {len(n.indices)} neurons; top by score: " + ", ".join(
            f"#{int(n.indices[i])} (score {float(n.scores[i]):.4g}, mean {float(n.mean[i]):.3g}, "
            f"std {float(n.std[i]):.3g})" for i in top))
    if args.image:
        for d in model.explain(args.image, top=args.top):
            log.out(f"explain: layer {d.layer} neuron {d.channel} deviation {d.deviation:.3f} "
                    f"(peak at pixel {divmod(int(d.map.argmax()), d.map.shape[1])})")
    return EXIT_OK


def cmd_doctor(args) -> int:
    import pylake  # noqa: PLC0415

    report = pylake.doctor(devices=args.device, end_to_end=not args.no_model, fault=args.fault)
    print(report.to_json() if args.json else report.to_text(), end="", flush=True)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_models(args) -> int:
    import pylake  # noqa: PLC0415

    log = _Log(args.quiet)
    for name in args.download or []:
        log(f"{name}: downloading what is missing ...")
        log.out(json.dumps({"name": name, "path": pylake.download_model(name, progress=not args.quiet)}))
    if args.download:
        return EXIT_OK
    rows = []
    for k in pylake.known_models():
        loc = pylake.locate_model(k.name)
        rows.append({"name": k.name, "source": k.source, "description": k.description, "path": loc.path or None,
                     "searched": list(loc.searched)})
    if args.json:
        print(json.dumps({"caches": pylake.cache_dirs(), "models": rows}, indent=2), flush=True)
        return EXIT_OK
    caches = pylake.cache_dirs()
    log.out("caches: " + ", ".join(f"{k} {v}" for k, v in caches.items()))
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        log.out(f"{r['name']:<{width}}  {r['source']:<12}  {r['path'] or 'not on this machine':<20}  {r['description']}")
    log.out("any hub repository also works: org/name (transformers layout) or hf-hub:org/name (OpenCLIP layout)")
    return EXIT_OK


_MODEL_HELP = ("CLIP weights: a file or folder (OpenAI .pt, state dict, .safetensors, transformers or OpenCLIP "
               "hub folder, LAKE export) or a model name (`lake models`), downloaded when missing and online")


def _model_arg(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--model", required=True, help=_MODEL_HELP + what)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lake", description="LAKE: few-shot anomaly detection with the sparse "
                                 "sensitive neurons of a frozen CLIP.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a normality model on normal images and save it")
    _model_arg(p)
    p.add_argument("--class-name", required=True, help="the product's name, used in the text prompts")
    p.add_argument("--normal", required=True, nargs="+", help="normal images or folders of them")
    p.add_argument("--out", required=True, help="the .lake file to write")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="calibrate thresholds at this quantile of normal scores (0: no thresholds)")
    p.add_argument("--calibration-images", nargs="+", metavar="IMAGES",
                   help="normal images (or folders) not used for the fit, to calibrate the thresholds on "
                        "(default: leave-one-out on the fit images, which needs at least 2)")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    _method_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="score images with a fitted model: overlays, raw maps, a per-image table",
                       description="Score images. Outputs (each written atomically) are named by the image's path "
                       "relative to the inputs' common folder: OUT/maps/<path>.npy, OUT/overlays/<path>.png, and "
                       "OUT/predictions.csv / .json. Maps are at each image's resolution.")
    p.add_argument("model_file", help="a .lake file written by `lake fit`")
    p.add_argument("images", nargs="+", help="images or folders (searched with their sub-folders)")
    _model_arg(p, "; the one the model was fitted with")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--map-format", default="npy", choices=["npy", "png16"],
                   help="raw map as .npy (float32) or 16-bit PNG (map clamped to [0, 1] x 65535)")
    p.add_argument("--html", action="store_true", help="also write OUT/report.html (every image with its score, "
                   "label and overlay on one colour scale, sorted by score; needs matplotlib: pylake[report])")
    p.add_argument("--random-weights", action="store_true", help="--html: say on the page that the backbone is random")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    _pipeline_options(p)
    _distributed_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="evaluate on a data set: per-category and mean metrics, paper table",
                       description="Evaluate on a data set. Writes OUT/report.json (strict JSON, null for undefined "
                       "metrics), report.csv, report.md, images.csv / images.json (one row per test image and run), "
                       "heatmaps, report.html (plots and a heatmap gallery per category, when matplotlib is installed: "
                       "pylake[report]) and, with --save-maps, every raw map. OUT holds an INCOMPLETE marker until "
                       "the run has finished.")
    _model_arg(p)
    _dataset_arguments(p)
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--heatmaps", type=int, default=3, help="example heatmaps per category")
    p.add_argument("--save-maps", action="store_true", help="write every raw map as OUT/maps/.../<path>.npy")
    p.add_argument("--random-weights", action="store_true", help="say in the report that the backbone is random")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    _method_options(p)
    _pipeline_options(p)
    _distributed_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sweep", help="the paper's ablations over a data set (many eval runs), tables and plots",
                       description="Run the paper's ablations (K, Top-K vs random K, text weight, tapped layers, "
                       "residual vs MLP neurons, shots) as independent lake eval runs, locally or on a Dask cluster, "
                       "and write OUT/<ablation>.csv / .md (ours beside the paper's published points) and "
                       "OUT/<ablation>.png. Runs already finished in OUT are not run again.")
    _model_arg(p)
    _dataset_arguments(p)
    p.add_argument("--ablations", nargs="+", default=None, metavar="A",
                   help="some of k, selection, text_weight, layers, kind, shots (default: all)")
    p.add_argument("--shots", type=int, default=1, help="shots of every ablation but 'shots' (1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", required=True, help="sweep folder")
    p.add_argument("--random-weights", action="store_true", help="say in the reports that the backbone is random")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    _method_options(p)
    _pipeline_options(p)
    _distributed_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("inspect", help="show a model's neurons and explain one image")
    p.add_argument("model_file")
    p.add_argument("image", nargs="?")
    _model_arg(p)
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("doctor", help="check this build on this machine: versions, devices, every kernel against "
                       "a naive reference, a tiny model end to end",
                       description="Print the LAKE, LibTorch and CUDA versions, the build options, threads and "
                       "devices, then run every lake::ops kernel on every available device (the CPU, each CUDA "
                       "device) on small and edge-case inputs against naive references computed on the CPU, and fit "
                       "and score a tiny random-weight NormalityModel on each device. One line per check: name, "
                       "device, max error, tolerance, PASS / FAIL / SKIP (with the reason). Exit status 1 on any "
                       "FAIL. See docs/kernels.md.")
    p.add_argument("--json", action="store_true", help="print the report as strict JSON (every check)")
    p.add_argument("--device", nargs="+", metavar="DEV", help="cpu, cuda or cuda:N (default: the CPU and every CUDA "
                   "device)")
    p.add_argument("--no-model", action="store_true", help="kernels only: skip the end-to-end NormalityModel checks")
    # For testing the doctor itself: perturb one check's kernel outputs so that it must FAIL.
    p.add_argument("--fault", metavar="CHECK", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_doctor)

    from . import export as _export  # noqa: PLC0415

    p = sub.add_parser("export", help="write a CLIP as LAKE's own archive (safetensors: weights, config, vocabulary)",
                       description="Write a CLIP ViT as one safetensors file (LAKE export, format version 2): the "
                       "weights under their OpenAI names, and in its metadata the activation, every hyper-parameter, "
                       "the normalisation and the BPE vocabulary, as the C++ loader inferred them. Written "
                       "atomically. See docs/archives.md, section 3.")
    _export.add_arguments(p)
    p.set_defaults(func=_export.run)

    p = sub.add_parser("models", help="list the known model names and which are on this machine; download them",
                       description="List LAKE's model names with where each is on this machine (the OpenAI clip "
                       "cache, the Hugging Face hub cache, LAKE's cache: see docs/archives.md), or download them. "
                       "Offline (HF_HUB_OFFLINE=1 or LAKE_OFFLINE=1) a download is an error naming the missing files.")
    p.add_argument("--json", action="store_true", help="print strict JSON: the caches and, per name, its path "
                   "(null when absent) and every place searched")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download these names (any hub repository too) "
                   "and print their local paths")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    p.set_defaults(func=cmd_models)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    out = getattr(args, "out", None)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        _error(args, f"error: {e}", out)
        return EXIT_USAGE
    except RuntimeError as e:
        _error(args, f"failed: {e}", out)
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error(args, "interrupted", out)
        return EXIT_INTERRUPTED


def _error(args, msg: str, out) -> None:
    from ._outputs import INCOMPLETE  # noqa: PLC0415

    if out is not None and args.command in ("predict", "eval", "sweep") and (Path(out) / INCOMPLETE).exists():
        msg += f" (the output folder '{out}' is incomplete: it holds the marker file {INCOMPLETE})"
    print(f"lake {args.command}: {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
