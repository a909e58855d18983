"""Benchmark: the LAKE head (select, nearest neighbours, semantic branch, fusion, map) as a
share of the backbone, and where fit and head time go.

    PYTHONPATH=python python bench/bench_head.py [--spec b16] [--size 224] [--shots 4] [--repeat 3] [--threads 2]
    PYTHONPATH=python python bench/bench_head.py --spec l14 --size 518
    PYTHONPATH=python python bench/bench_head.py --quick          # tiny /14 backbone, head at the 518 px grid

A random-weight model of --spec (tests/fixtures/clip_factory.py) is exported and loaded by
LAKE; a NormalityModel with default options (4 layers, K = 100, batch_size 1, gallery_tile
512) is fitted on --shots images at --size. Prints:

* fit: total time, the prompt ensemble through the text tower (timed on its own), the
  backbone over the shots (a probe call per shot) and the rest (selection statistics and
  gallery building), per shot;
* score vs backbone, one image (batch 1): a ``score`` call and a ``pylake.NeuronProbe``
  with the model's layers and project_layer (the backbone part of score), timed alternately,
  best of --repeat each; head = score - backbone, in ms and % of the backbone;
* the head's pieces at that shape through ``pylake._C.ops`` on the real taps: the gather +
  L2 normalisation over L layers, the nearest-neighbour search (L, N, K) against a 1-shot
  (L, N, K) and the --shots (L, shots N, K) gallery, the semantic branch (ATen, as the C++
  does it), the fusion, upsample_blur of one map to the image size, and their sum.

Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import (best_of, clip_factory, export_random_clip, machine_line, model_size, pylake, set_threads,
                     temp_dir, timed, torch)


def alternate_best(fns: dict, repeat: int) -> dict:
    """Best time of each of ``fns`` ({name: fn}), called in turn ``repeat`` times after one
    warm-up round, so slow drifts of a shared machine hit all of them alike."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(max(1, repeat)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=None, choices=sorted(clip_factory.SPECS), help="model (default b16)")
    ap.add_argument("--size", type=int, default=None, help="input side S (default: the model's own)")
    ap.add_argument("--shots", type=int, default=4, help="normal images fitted on (default 4)")
    ap.add_argument("--repeat", type=int, default=None, help="timed calls after a warm-up (default 3)")
    ap.add_argument("--op-repeat", type=int, default=10, help="timed calls of each head op (default 10)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and LAKE (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny /14 model at 518 px, best of 2")
    args = ap.parse_args()
    if args.quick:
        args.spec = args.spec or "tiny14"
        args.size = args.size or 518
        args.repeat = args.repeat or 2
    args.spec = args.spec or "b16"
    args.size = model_size(args.spec, args.size)
    args.repeat = args.repeat or 3
    set_threads(args.threads)
    print(machine_line(args.threads))

    with temp_dir() as tmp:
        path, _, t_make, t_export = export_random_clip(args.spec, tmp)
        t_load, model = timed(lambda: pylake.load_clip(path))
    c = model.config
    nm = pylake.NormalityModel(model, image_size=args.size)
    S, grid = args.size, args.size // c.patch_size
    N = grid * grid
    print(f"model: {args.spec} {c} (random weights; built {t_make:.1f} s, exported {t_export:.1f} s, "
          f"loaded {t_load:.1f} s)")
    print(f"NormalityModel defaults: layers {nm.layers}, semantic layer {nm.semantic_layer}, K 100, input {S} px "
          f"({grid}x{grid} = {N} patches), {args.shots} shots, batch_size 1")

    normal = clip_factory.example_images(args.shots, S, seed=2)
    x = clip_factory.example_images(1, S, seed=1)
    probe = pylake.NeuronProbe(model, layers=nm.layers, project_layer=nm.semantic_layer)

    # ---- fit: text prompts, backbone, the rest
    tok = model.tokenizer() or pylake.default_vocabulary_path()
    prompts = pylake.default_prompts("object", False) + pylake.default_prompts("object", True)
    probe(x)  # warm-up: fills the positional-embedding cache for S, first-call allocations
    model.encode_text(pylake.tokenize(prompts[:1], vocab=tok))
    t_fit, _ = timed(lambda: nm.fit(normal))
    t_text = best_of(lambda: model.encode_text(pylake.tokenize(prompts, vocab=tok)), 1, warmup=0)
    t_fit_backbone = best_of(lambda: [probe(normal[i:i + 1]) for i in range(args.shots)], 1, warmup=0)
    rest = t_fit - t_text - t_fit_backbone
    print(f"fit {args.shots} shots: {t_fit:.2f} s = text prompts ({len(prompts)} through the text tower, once per fit) "
          f"{t_text:.2f} s + backbone {t_fit_backbone:.2f} s ({1000 * t_fit_backbone / args.shots:.0f} ms/shot) "
          f"+ the rest (selection, gallery; the difference) {rest:.2f} s; "
          f"without the text: {1000 * (t_fit - t_text) / args.shots:.0f} ms/shot", flush=True)

    # ---- score vs backbone
    best = alternate_best({"score": lambda: nm.score(x), "backbone": lambda: probe(x)}, args.repeat)
    t_score, t_bb = best["score"], best["backbone"]
    head = t_score - t_bb
    print(f"score 1 image: {1000 * t_score:.1f} ms, backbone (probe, same taps) {1000 * t_bb:.1f} ms, "
          f"head {1000 * head:.1f} ms = {100 * head / t_bb:.2f} % of the backbone (best of {args.repeat}, alternated)",
          flush=True)

    # ---- the head's pieces, on the real taps of x
    r = probe(x)
    L = len(nm.layers)
    acts = [r.activations[l][0] for l in nm.layers]
    idx = [n["indices"] for n in nm.neurons]
    K = int(idx[0].numel())
    ops = pylake._C.ops
    queries = torch.stack([ops.gather_normalize(a, i) for a, i in zip(acts, idx)])
    gallery = torch.stack(nm.galleries)  # (L, shots N, K)
    gallery1 = gallery[:, :N].contiguous()
    text = nm.text_embeddings
    proj = r.projected[0]
    lam = 0.3
    dist = ops.nearest_neighbors(queries, gallery, 512)[0]

    def semantic():
        z = proj.float()
        z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.softmax((z @ text.T) * 100.0, -1)[:, 1].contiguous().view(grid, grid)

    def visual():
        d = ops.nearest_neighbors(queries, gallery, 512)[0]
        return (d.sum(0) / L).view(grid, grid)

    vis, sem = visual(), semantic()
    pieces = {
        f"gather+normalise x{L} layers": lambda: [ops.gather_normalize(a, i) for a, i in zip(acts, idx)],
        f"NN (L {L}, {N}, {K}) vs 1 shot ({N} rows)": lambda: ops.nearest_neighbors(queries, gallery1, 512),
        f"NN vs {args.shots} shots ({gallery.shape[1]} rows)": lambda: ops.nearest_neighbors(queries, gallery, 512),
        "layer mean of the distances": lambda: (dist.sum(0) / L).view(grid, grid),
        "semantic branch (ln'd tokens . text, softmax)": semantic,
        "fusion": lambda: (1 - lam) * vis + lam * sem,
        f"upsample_blur 1 map {grid}x{grid} -> {S}x{S}, sigma 4":
            lambda: ops.upsample_blur(vis.unsqueeze(0), S, S, 4.0),
        "max pooling": lambda: vis.max(),
    }
    times = {k: best_of(fn, args.op_repeat) for k, fn in pieces.items()}
    k_nn1 = [k for k in times if k.startswith("NN (L")][0]  # for comparison, not part of the sum
    total = sum(t for k, t in times.items() if k != k_nn1)
    print(f"head pieces ({args.shots}-shot model, best of {args.op_repeat}):")
    for k, t in times.items():
        share = "" if k == k_nn1 else f"  {100 * t / total:5.1f} % of the sum"
        print(f"  {k:<48s} {1000 * t:8.2f} ms{share}")
    print(f"  {'sum (without the 1-shot NN line)':<48s} {1000 * total:8.2f} ms = {100 * total / t_bb:.2f} % of the "
          f"backbone; measured head {1000 * head:.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
