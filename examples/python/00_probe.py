"""Load a CLIP, probe real product images, and print what the neurons show.

    python examples/python/00_probe.py [--model M.pt] [--data DIR] [--workdir DIR]

Without --model (or $LAKE_MODEL) a random-weight CLIP ViT-B/16 is generated in the exact
OpenAI layout: no model hub is reachable here, so the numbers below then show that the
machinery works, not what a pretrained CLIP sees. C++ twin: examples/cpp/00_probe.cpp.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import pylake  # noqa: E402


def generated_model(workdir: Path) -> Path:
    """A random-weight CLIP ViT-B/16 in the OpenAI layout, written as a LAKE export."""
    path = workdir / "random_vit_b16.lake.safetensors"
    if not path.exists():
        sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
        import clip_factory  # the project's generator of random-weight OpenAI-layout CLIPs
        from pylake.export import export_clip

        print("generating a random-weight CLIP ViT-B/16 (OpenAI layout) ...", flush=True)
        export_clip(clip_factory.make_clip("b16", seed=0), path, source="random weights (examples/python/00_probe.py)")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("LAKE_MODEL"), help="a CLIP archive (default: generate one)")
    ap.add_argument("--data", default=os.environ.get("LAKE_DATA", str(ROOT.parent / "shared" / "data" / "mvtec_ad")),
                    help="an MVTec-style folder holding <category>/train/good and <category>/test")
    ap.add_argument("--category", default="grid")
    ap.add_argument("--workdir", default=str(ROOT / "build" / "demo"))
    ap.add_argument("--cpp-example", default=None, help="path of the built examples/cpp/00_probe to run as well")
    args = ap.parse_args()

    pylake.set_num_threads(0)
    torch.set_num_threads(os.cpu_count() or 1)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    random_weights = args.model is None
    model_path = Path(args.model) if args.model else generated_model(workdir)

    t0 = time.perf_counter()
    model = pylake.load_clip(model_path)
    c = model.config
    print(f"loaded {model_path.name} in {time.perf_counter() - t0:.2f} s: {c}")
    if random_weights:
        print("NOTE: this backbone has RANDOM weights (no pretrained CLIP is reachable here); "
              "pass --model or LAKE_MODEL=/path/to/ViT-L-14-336.pt for real ones.")

    cat = Path(args.data) / args.category
    if not cat.is_dir():
        print(f"no data at {cat}: pass --data DIR (an MVTec-style folder)", file=sys.stderr)
        return 2
    normal = sorted((cat / "train" / "good").iterdir())[:4]
    held_out = sorted((cat / "test" / "good").iterdir())[0]
    defect_dir = sorted(d for d in (cat / "test").iterdir() if d.name != "good")[0]
    defective = sorted(defect_dir.iterdir())[0]
    size = c.image_size
    # CLIP's preprocessing (shorter side to `size`, centre crop, normalise), in C++.
    load = lambda p: pylake.clip_preprocess(pylake.read_image(p), size, c.image_mean, c.image_std,  # noqa: E731
                                            center_crop=True)
    train = torch.stack([load(p) for p in normal])
    tests = torch.stack([load(held_out), load(defective)])
    print(f"images: {len(normal)} normal from {cat / 'train' / 'good'}, test: {held_out.name} (good), "
          f"{defect_dir.name}/{defective.name} (defective), {size} px")

    depth = c.vision_layers
    layers = sorted({max(1, depth * q // 4) for q in (1, 2, 3, 4)})
    probe = pylake.NeuronProbe(model, layers=layers, kind="residual", project_layer=-1)
    t0 = time.perf_counter()
    taps_train = probe(train)
    dt = time.perf_counter() - t0
    taps_test = probe(tests)
    h, w = taps_train.grid
    print(f"probed blocks {layers}: {h}x{h} patches of width {probe.channels}, "
          f"{dt / len(normal) * 1000:.0f} ms per image")

    k = 10
    for layer in layers:
        feats = taps_train.activations[layer].flatten(0, 1)          # (n*N, D)
        var = feats.double().var(0)
        top = torch.topk(var, k).indices.sort().values               # the most variable neurons
        gallery = torch.nn.functional.normalize(feats[:, top], dim=1)
        scores = []
        for i in range(2):
            q = torch.nn.functional.normalize(taps_test.activations[layer][i][:, top], dim=1)
            dist = (1 - q @ gallery.T).min(1).values / 2               # nearest-neighbour cosine distance
            scores.append(dist.max().item())
        print(f"  block {layer:2d}: top-{k} variance neurons {top.tolist()}; "
              f"max patch distance good {scores[0]:.4f}, defective {scores[1]:.4f}")

    prompts = [f"a photo of a flawless {args.category}.", f"a photo of a damaged {args.category}."]
    tok = model.tokenizer() or None
    text = torch.nn.functional.normalize(model.encode_text(pylake.tokenize(prompts, vocab=tok)), dim=-1)
    patches = torch.nn.functional.normalize(taps_test.projected, dim=-1)  # (2, N, E)
    anomalous = torch.softmax(100 * patches @ text.T, dim=-1)[..., 1].amax(1)
    print(f"text branch: max P('{prompts[1]}') over patches: good {anomalous[0]:.3f}, defective {anomalous[1]:.3f}")

    if args.cpp_example:
        tensor_path = workdir / "demo_images.pt"
        torch.save(tests.contiguous(), tensor_path)
        print(f"\nthe same from C++ ({args.cpp_example}):", flush=True)
        subprocess.run([args.cpp_example, str(model_path), str(tensor_path)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
