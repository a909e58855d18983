"""`make demo`: the whole LAKE path on a fresh machine, with nothing downloaded.

Generates a synthetic inspection data set (textures and an object with scratches, holes,
stains and missing parts, with masks) and a random-weight CLIP ViT-B/16 in the OpenAI
layout, then fits, evaluates at 1/2/4 shots, writes the report and heatmaps, and prints
where they are. LAKE_MODEL=/path/to/ViT-L-14-336.pt and LAKE_DATA=/path/to/mvtec_ad
(an MVTec-style root) replace the generated model and data.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import pylake  # noqa: E402
from pylake import datasets, evaluate, synthetic  # noqa: E402
from pylake.paper import paper_table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(ROOT / "build" / "demo"))
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--image-size", type=int, default=None, help="backbone input (default: 224 for the generated model)")
    args = ap.parse_args()
    pylake.set_num_threads(0)
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    model_path = os.environ.get("LAKE_MODEL")
    random_weights = not model_path
    if random_weights:
        model_path = str(work / "random_vit_b16.lake.safetensors")
        if not Path(model_path).exists():
            sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
            import clip_factory  # noqa: PLC0415  (random-weight OpenAI-layout CLIPs)

            print("generating a random-weight CLIP ViT-B/16 (OpenAI layout) ...", flush=True)
            pylake.export.export_clip(clip_factory.make_clip("b16", seed=0), model_path, source="random weights (make demo)")
    data = os.environ.get("LAKE_DATA")
    if not data:
        data = str(work / "synthetic")
        if not (Path(data) / ".complete").exists():
            print("generating the synthetic data set ...", flush=True)
            synthetic.generate(data, seed=0)
            (Path(data) / ".complete").write_text("ok\n")

    clip = pylake.load_clip(model_path)
    print(f"model: {model_path}\n  {clip.config}")
    if random_weights:
        print("  NOTE: RANDOM WEIGHTS. No pretrained CLIP can be downloaded here; this run proves the pipeline, "
              "and its metrics say nothing about LAKE's accuracy. Set LAKE_MODEL for a real CLIP.")
    cats = datasets.open_dataset("mvtec", data)
    print(f"data: {data} ({len(cats)} categories: {', '.join(c.name for c in cats)})")
    options = {"image_size": args.image_size or (224 if random_weights else None)}
    out = work / "report"
    meta = {"model": model_path, "dataset": "synthetic" if not os.environ.get("LAKE_DATA") else "mvtec",
            "root": data, "shots": args.shots, "seeds": args.seeds, "random_weights": random_weights}
    files = evaluate.run(clip, cats, args.shots, args.seeds, out, options, meta, n_heatmaps=2, progress=True,
                         log=print)
    print()
    print(files["md"].read_text())
    import json  # noqa: PLC0415

    table = paper_table("mvtec" if os.environ.get("LAKE_DATA") else "synthetic",
                        json.loads(files["json"].read_text())["summary"], [c.name for c in cats])
    print(table or "(no paper table: the published numbers are for MVTec AD, VisA and BTAD, not this set)")
    print(f"\nreport: {files['md']}\n        {files['csv']}\n        {files['json']}\nheatmaps: {out / 'heatmaps'}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
