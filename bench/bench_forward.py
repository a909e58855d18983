"""Benchmark: LAKE's C++ image forward vs OpenCLIP's PyTorch forward on the same random
weights, same thread count; the cost of the LAKE head on top of it; GPU throughput.

    PYTHONPATH=python python bench/bench_forward.py [--spec b16] [--size 224 [336 ...]] [--batch 8]
        [--repeat 3] [--threads 2] [--no-head]
    PYTHONPATH=python python bench/bench_forward.py --spec l14 --size 336 518 --no-head
    PYTHONPATH=python python bench/bench_forward.py --spec l14 --size 518 --device cuda --dtype float16
    PYTHONPATH=python python bench/bench_forward.py --quick          # tiny /14 model, smoke run

CPU (default): for every --size, ms per image of both forwards, their ratio and the largest
difference of the embeddings (same weights: it should be float rounding), then fit / score
times of a NormalityModel (default options, 1 shot) and the head's share of a score call
(--no-head skips it; bench/bench_head.py measures the head in detail).

CUDA (--device cuda; only runs when torch.cuda.is_available()): the model is loaded on the
GPU in --dtype; for every --size and every --gpu-batch (default 1 and 32), ms/image and
images/s of LAKE's forward, of OpenCLIP's forward in the same dtype, and of a full
NormalityModel score (--shots normal images, batch_size = the batch), next to the published
per-image times of AnomalyDINO (~60 ms) and AnomalyCLIP (~71 ms). Inputs are on the GPU
already (host-to-device copies are not timed).

Defaults: batch 8 and best of 3, except on ViT-L-sized models (width >= 1024): batch 2,
best of 2 (a ViT-L/14 at 518 px is about 1 TFLOP per image). Numbers, not assertions:
record them in docs/benchmarks.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import sys

from _common import (DTYPES, PUBLISHED_MS_PER_IMAGE, best_of, clip_factory, export_random_clip, machine_line,
                     model_size, pylake, set_reference_image_size, set_threads, temp_dir, timed, torch)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def run_cpu(args, model, ref, base_pos) -> None:
    c = model.config
    for size in args.size:
        x = clip_factory.example_images(args.batch, size, seed=1)
        set_reference_image_size(ref, base_pos, size)
        out = {}
        with torch.no_grad():
            t_ref = best_of(lambda: out.__setitem__("ref", ref.encode_image(x)), args.repeat) / args.batch
        t_lake = best_of(lambda: out.__setitem__("lake", model.encode_image(x)), args.repeat) / args.batch
        grid = size // c.patch_size
        print(f"[{size} px, {grid}x{grid} patches, batch {args.batch}] image forward: "
              f"LAKE C++ {1000 * t_lake:.1f} ms/image, OpenCLIP {1000 * t_ref:.1f} ms/image, "
              f"ratio OpenCLIP/LAKE {t_ref / t_lake:.2f} (best of {args.repeat}); "
              f"max |LAKE - OpenCLIP| / max |OpenCLIP| = {max_rel_diff(out['lake'], out['ref']):.1e}", flush=True)
        if args.no_head:
            continue
        nm = pylake.NormalityModel(model, image_size=size)
        t_fit, _ = timed(lambda: nm.fit(x[:1]))
        t_score = best_of(lambda: nm.score(x[:1]), args.repeat)
        probe = pylake.NeuronProbe(model, layers=nm.layers, project_layer=nm.semantic_layer)
        t_probe = best_of(lambda: probe(x[:1]), args.repeat)
        head = max(t_score - t_probe, 0.0)
        print(f"[{size} px] NormalityModel (defaults, layers {nm.layers}, K 100): fit 1 shot {1000 * t_fit:.0f} ms, "
              f"score {1000 * t_score:.0f} ms/image, backbone taps {1000 * t_probe:.0f} ms, "
              f"head {1000 * head:.0f} ms = {100 * head / t_probe:.1f} % of the backbone (batch 1)", flush=True)


def run_cuda(args, path, ref, base_pos) -> None:
    dtype = DTYPES[args.dtype]
    t_load, model = timed(lambda: pylake.load_clip(path, device="cuda", dtype=dtype))
    ref = ref.to("cuda", dtype)
    print(f"LAKE model loaded on {torch.cuda.get_device_name()} in {args.dtype}: {t_load:.1f} s")
    pub = ", ".join(f"{k} ~{v:.0f} ms/image ({1000 / v:.1f} images/s)" for k, v in PUBLISHED_MS_PER_IMAGE.items())
    print(f"published per-image times (their hardware): {pub}")
    for size in args.size:
        set_reference_image_size(ref, base_pos, size)
        normal = clip_factory.example_images(args.shots, size, seed=2).cuda()
        for b in args.gpu_batch:
            x = clip_factory.example_images(b, size, seed=1).cuda()
            xr = x.to(dtype)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t_lake = best_of(lambda: model.encode_image(x), args.repeat, device="cuda") / b
            peak_lake = torch.cuda.max_memory_allocated() - base
            with torch.no_grad():
                try:
                    t_ref = best_of(lambda: ref.encode_image(xr), args.repeat, device="cuda") / b
                    ref_txt = f"OpenCLIP {1000 * t_ref:.2f} ms/image ({1 / t_ref:.1f} images/s), " \
                              f"ratio OpenCLIP/LAKE {t_ref / t_lake:.2f}"
                except Exception as e:  # noqa: BLE001 - report, go on
                    ref_txt = f"OpenCLIP failed: {type(e).__name__}: {e}"
            print(f"[cuda {args.dtype}, {size} px, batch {b}] forward: LAKE {1000 * t_lake:.2f} ms/image "
                  f"({1 / t_lake:.1f} images/s, peak {peak_lake / 2**20:.0f} MiB above weights and inputs); {ref_txt}",
                  flush=True)
            try:
                nm = pylake.NormalityModel(model, image_size=size, batch_size=b)
                t_fit, _ = timed(lambda: nm.fit(normal), device="cuda")
                t_score = best_of(lambda: nm.score(x), args.repeat, device="cuda") / b
                vs = ", ".join(f"{k} {v / (1000 * t_score):.1f}x" for k, v in PUBLISHED_MS_PER_IMAGE.items())
                print(f"[cuda {args.dtype}, {size} px, batch {b}] NormalityModel ({args.shots} shots, defaults): "
                      f"fit {t_fit:.2f} s, score {1000 * t_score:.2f} ms/image ({1 / t_score:.1f} images/s); "
                      f"published time / LAKE: {vs}", flush=True)
            except Exception as e:  # noqa: BLE001 - report, go on
                print(f"[cuda {args.dtype}, {size} px, batch {b}] NormalityModel failed: {type(e).__name__}: {e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=None, choices=sorted(clip_factory.SPECS), help="model (default b16)")
    ap.add_argument("--size", type=int, nargs="+", default=None,
                    help="input side(s), each a multiple of the patch (default: the model's own)")
    ap.add_argument("--batch", type=int, default=None, help="CPU batch (default 8; 2 on ViT-L)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and LAKE (default 2)")
    ap.add_argument("--repeat", type=int, default=None, help="timed calls after a warm-up (default 3; 2 on ViT-L)")
    ap.add_argument("--no-head", action="store_true", help="CPU: skip the NormalityModel fit/score part")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                    help="CUDA compute dtype (default float16); the CPU runs float32")
    ap.add_argument("--gpu-batch", type=int, nargs="+", default=[1, 32], help="CUDA batches (default 1 32)")
    ap.add_argument("--shots", type=int, default=4, help="CUDA: normal images of the NormalityModel (default 4)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny /14 model at 224 and 518, batch 2")
    args = ap.parse_args()
    if args.quick:
        args.spec = args.spec or "tiny14"
        args.size = args.size or [224, 518]
        args.batch = args.batch or 2
        args.repeat = args.repeat or 2
        args.gpu_batch = [1, 4] if args.gpu_batch == [1, 32] else args.gpu_batch
    args.spec = args.spec or "b16"
    big = clip_factory.SPECS[args.spec]["vision"]["width"] >= 1024
    args.size = args.size or [model_size(args.spec, None)]
    args.batch = args.batch or (2 if big else 8)
    args.repeat = args.repeat or (2 if big else 3)
    if args.device == "cpu" and args.dtype not in (None, "float32"):
        ap.error("the CPU forward runs float32 only: --dtype float16/bfloat16 needs --device cuda")
    args.dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
    patch = clip_factory.SPECS[args.spec]["vision"]["patch_size"]
    bad = [s for s in args.size if s % patch]
    if bad:
        ap.error(f"--size {bad}: not a multiple of the patch {patch} of {args.spec}")
    set_threads(args.threads)
    print(machine_line(args.threads, args.device))
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here (torch.cuda.is_available() is False): nothing to measure on the GPU")
        return 0

    with temp_dir() as tmp:
        path, ref, t_make, t_export = export_random_clip(args.spec, tmp, keep_reference=True)
        if args.device == "cuda":
            print(f"model: {args.spec} (random weights; built {t_make:.1f} s, exported {t_export:.1f} s), "
                  f"inputs {args.size} px, batches {args.gpu_batch}, {args.dtype}")
            run_cuda(args, path, ref, ref.visual.positional_embedding.detach().clone())
            return 0
        t_load, model = timed(lambda: pylake.load_clip(path, load_text=not args.no_head))
    c = model.config
    print(f"model: {args.spec} {c}, inputs {args.size} px, batch {args.batch} "
          f"(random weights; built {t_make:.1f} s, exported {t_export:.1f} s, loaded by LAKE {t_load:.1f} s)")
    run_cpu(args, model, ref, ref.visual.positional_embedding.detach().clone())
    return 0


if __name__ == "__main__":
    sys.exit(main())
