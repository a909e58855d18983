#!/usr/bin/env python3
"""Writes the fuzz seeds: tests/fuzz/seeds/<target>/, a few tiny files per reader (each < 20 KB).

Run from the repository root with the project's virtual environment (torch, PIL, safetensors):
    .venv/bin/python tests/fuzz/make_seeds.py
The files are committed; rerun only to change them. No model weights: the CLIP-shaped state
dicts are random tensors of a 1-layer, width-8 image tower.
"""
import collections
import argparse
import gzip
import io
import os
import shutil
import sys
import zipfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save as st_save

ARCHIVES = False
ROOT = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(ROOT, "seeds")
# Seeds that are generated archives (torch.save / safetensors files of tiny CLIP towers) are not
# committed (no generated archives in git): `make fuzz` writes them into build-fuzz/seeds.
ARCHIVE_TARGETS = ("zip_archive", "safetensors")
REPO = os.path.dirname(os.path.dirname(ROOT))
VOCAB = os.path.join(REPO, "..", "shared", "clip", "bpe_simple_vocab_16e6.txt.gz")


def put(target, name, data):
    if (target in ARCHIVE_TARGETS) != ARCHIVES:
        return
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 20 * 1024, (target, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def torch_save_bytes(obj):
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


def tiny_visual(width=8, patch=4, image=8, embed=4):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    grid = (image // patch) ** 2
    sd = collections.OrderedDict()
    sd["visual.class_embedding"] = r(width)
    sd["visual.positional_embedding"] = r(grid + 1, width)
    sd["visual.proj"] = r(width, embed)
    sd["visual.conv1.weight"] = r(width, 3, patch, patch)
    for n in ("ln_pre", "ln_post"):
        sd[f"visual.{n}.weight"] = torch.ones(width)
        sd[f"visual.{n}.bias"] = torch.zeros(width)
    p = "visual.transformer.resblocks.0."
    sd[p + "attn.in_proj_weight"] = r(3 * width, width)
    sd[p + "attn.in_proj_bias"] = r(3 * width)
    sd[p + "attn.out_proj.weight"] = r(width, width)
    sd[p + "attn.out_proj.bias"] = r(width)
    for n in ("ln_1", "ln_2"):
        sd[p + n + ".weight"] = torch.ones(width)
        sd[p + n + ".bias"] = torch.zeros(width)
    sd[p + "mlp.c_fc.weight"] = r(4 * width, width)
    sd[p + "mlp.c_fc.bias"] = r(4 * width)
    sd[p + "mlp.c_proj.weight"] = r(width, 4 * width)
    sd[p + "mlp.c_proj.bias"] = r(width)
    return sd


def data_pkl(zip_bytes):
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
        (name,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
        return z.read(name)


def main():
    global SEEDS, ARCHIVES
    ap = argparse.ArgumentParser(description="write the fuzz seeds")
    ap.add_argument("--archives", metavar="DIR", help="write the archive seeds (" + ", ".join(ARCHIVE_TARGETS)
                    + ") into DIR (make fuzz: build-fuzz/seeds) instead of the committed ones into tests/fuzz/seeds")
    args = ap.parse_args()
    ARCHIVES = args.archives is not None
    if ARCHIVES:
        SEEDS = os.path.abspath(args.archives)
    shutil.rmtree(SEEDS, ignore_errors=True)
    # ---- images
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    for name, img, kw in [
        ("rgb.png", rgb, {}),
        ("grey.png", rgb.convert("L"), {}),
        ("rgba.png", rgb.convert("RGBA"), {}),
        ("palette.png", rgb.convert("P"), {}),
        ("bits1.png", rgb.convert("1"), {}),
        ("rgb.jpg", rgb, {"quality": 90}),
        ("grey.jpg", rgb.convert("L"), {}),
        ("progressive.jpg", rgb, {"progressive": True}),
        ("cmyk.jpg", rgb.convert("CMYK"), {}),
    ]:
        b = io.BytesIO()
        img.save(b, format="PNG" if name.endswith("png") else "JPEG", **kw)
        put("png_jpeg", name, b.getvalue())
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 65536, (4, 4), dtype=np.uint16)).save(b, format="PNG")
    put("png_jpeg", "grey16.png", b.getvalue())

    # ---- pickles: data.pkl of torch.save files whose storages are 4, 16, 64 and 256 bytes
    # (the records fuzz_pickle puts beside the pickle)
    tensors = collections.OrderedDict(
        a=torch.ones(1), b=torch.arange(4, dtype=torch.float32), c=torch.zeros(16), d=torch.zeros(64))
    put("pickle", "state_dict.pkl", data_pkl(torch_save_bytes(tensors)))
    put("pickle", "views.pkl", data_pkl(torch_save_bytes(
        {"a": torch.ones(1), "b": torch.arange(4, dtype=torch.float32)[1:3], "c": torch.zeros(16).view(4, 4).t()})))
    put("pickle", "values.pkl", data_pkl(torch_save_bytes(
        {"epoch": 3, "lr": 0.5, "name": "ViT-B-32", "flags": [True, False, None], "t": (1, 2.0, "x", b"\x00\xff"),
         "big": 2 ** 70, "neg": -1, "nested": {"a": [{"b": ()}]}})))
    put("pickle", "half.pkl", data_pkl(torch_save_bytes({"h": torch.zeros(2, dtype=torch.float16)})))

    # ---- archives for load_clip: torch.save state dicts / checkpoints, safetensors, a zip
    sd = tiny_visual()
    put("zip_archive", "state_dict.pt", torch_save_bytes(sd))
    put("zip_archive", "checkpoint.pt", torch_save_bytes({"epoch": 1, "state_dict": {"module." + k: v for k, v in sd.items()}}))
    put("zip_archive", "model.safetensors", st_save(dict(sd)))
    put("zip_archive", "fp16.pt", torch_save_bytes({k: v.half() for k, v in sd.items()}))
    put("zip_archive", "not_clip.pt", torch_save_bytes({"weight": torch.zeros(2, 2)}))

    # ---- safetensors
    put("safetensors", "tiny.safetensors", st_save({"w": torch.arange(6, dtype=torch.float32).view(2, 3),
                                                    "b": torch.zeros(3, dtype=torch.float16),
                                                    "i": torch.arange(2, dtype=torch.int64)},
                                                   metadata={"format": "pt"}))
    put("safetensors", "empty.safetensors", st_save({}))
    put("safetensors", "visual.safetensors", st_save({k: v for k, v in list(sd.items())[:6]}))

    # ---- .lake files: the committed fixtures (tests/data, fitted on the tiny CLIP fixture)
    for v in ("normality_v1.lake", "normality_v2.lake"):
        with open(os.path.join(REPO, "tests", "data", v), "rb") as f:
            put("lake_file", v, f.read())

    # ---- tokenizer text
    for i, t in enumerate(["a photo of a cat", "A PHOTO of a Bad-Screw!!  &amp; 42 it's",
                           "caf\u00e9 \u00fcber \u4e2d\u6587 \U0001f600 <|endoftext|>", "   \t\n", "a" * 300,
                           "&lt;b&gt;html&amp;amp;", "don't we'll I'm they've 1,000,000"]):
        put("tokenizer", f"text{i}.txt", t.encode("utf-8"))

    # ---- vocabularies: CLIP's header and first merges (plain and gzipped); refused as too
    # short, but they reach the line parser
    if os.path.exists(VOCAB):
        with gzip.open(VOCAB, "rb") as f:
            head = b"".join(f.readline() for _ in range(300))
        put("vocabulary", "head.txt", head)
        put("vocabulary", "head.txt.gz", gzip.compress(head[:4000], mtime=0))
    put("vocabulary", "tiny.txt", b"#version: 0.2\ni n\nt h\na n\nr e\nth e</w>\n")

    # ---- key=value text (a LAKE export's lake_config.txt)
    put("key_values", "lake_config.txt",
        b"# LAKE export\nformat=lake-clip-export\nformat_version=1\nactivation=gelu\n\nimage_size=224\r\nname=ViT-B-32\n")
    put("key_values", "bad.txt", b"key=value\n=value\nnoequals\n")
    print("seeds written to", SEEDS)


if __name__ == "__main__":
    sys.exit(main())
