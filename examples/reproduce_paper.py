"""Reproduce the paper's few-shot table: image and pixel metrics on MVTec AD, VisA and BTAD
at 1/2/4 shots over seeds 0/1/2, with the paper's and the peers' published numbers beside.

    python examples/reproduce_paper.py --model ViT-L-14-336.pt --mvtec /data/mvtec_ad \\
        [--visa /data/visa] [--btad /data/btad] [--shots 1 2 4] [--seeds 0 1 2] [--out reports/]

The same runs one data set at a time through `lake eval`. Any CLIP archive works
(`pylake.load_clip`); the paper used a CLIP ViT-L/14@336 at 518 px (the default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from pylake import cli  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    for name in ("mvtec", "visa", "btad"):
        ap.add_argument(f"--{name}", help=f"{name} root folder")
    ap.add_argument("--categories", nargs="+", help="restrict to these categories (every set)")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="reports")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--random-weights", action="store_true", help="mark the reports as from a random backbone")
    args, extra = ap.parse_known_args(argv)
    sets = [(n, getattr(args, n)) for n in ("mvtec", "visa", "btad") if getattr(args, n)]
    if not sets:
        ap.error("give at least one of --mvtec, --visa, --btad")
    for name, root in sets:
        cmd = ["eval", "--model", args.model, "--dataset", name, "--root", root, "--out", str(Path(args.out) / name),
               "--shots", *map(str, args.shots), "--seeds", *map(str, args.seeds), *extra]
        if args.categories:
            cmd += ["--categories", *args.categories]
        if args.image_size:
            cmd += ["--image-size", str(args.image_size)]
        if args.random_weights:
            cmd.append("--random-weights")
        code = cli.main(cmd)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
