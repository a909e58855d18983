"""A procedural anomaly-detection data set in the MVTec AD layout, with exact masks.

Categories:

- ``weave``: a woven texture (over/under threads), colour and phase jittered per image;
- ``dots``: a grid of dots with jittered positions and radii;
- ``disc``: an object (a nut-like disc with a hole and a marker notch) on a textured
  background, with a small pose jitter (offset and rotation).

Defects, each with its mask (0/255 PNG, ``ground_truth/<defect>/<stem>_mask.png``):
``scratch`` (thin random polylines), ``hole`` (dark irregular blobs), ``stain`` (colour
blotches), and for the object ``missing`` (a sector cut out of the disc). A mask is exactly the
set of pixels that the defect changed (restricted to the object for ``disc``).

Layout written under ``root``::

    <category>/train/good/000.png ...                 n_train normal images
    <category>/test/good/000.png ...                  n_test_good normal images
    <category>/test/<defect>/000.png ...              n_test_defect images in all, spread round-robin over the defects
    <category>/ground_truth/<defect>/000_mask.png ...

Deterministic by ``seed`` (the same files byte for byte). Command line::

    python -m pylake.synthetic --out DIR [--categories weave dots disc] [--seed 0] [--size 256]

Drawing and writing the images needs Pillow, which ``import pylake`` does not: it is the
optional extra ``pip install pylake[synthetic]`` (or ``pip install pillow``), imported only
when a set is generated.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

CATEGORIES = ("weave", "dots", "disc")
DEFECTS: Dict[str, Tuple[str, ...]] = {
    "weave": ("scratch", "hole", "stain"),
    "dots": ("scratch", "hole", "stain"),
    "disc": ("scratch", "hole", "stain", "missing"),
}

__all__ = ["CATEGORIES", "DEFECTS", "generate", "main"]


def _pil():
    """``(PIL.Image, PIL.ImageDraw)``, imported on first use: Pillow is an optional extra."""
    try:
        from PIL import Image, ImageDraw  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(
            "pylake.synthetic needs Pillow to draw and write the images: pip install pillow "
            "(or the extra: pip install 'pylake[synthetic]')"
        ) from e
    return Image, ImageDraw


# ----------------------------------------------------------------------------- normal images


def _grid(size: int):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def _weave(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    y, x = _grid(size)
    period = 16.0 * size / 256.0
    py, px = rng.uniform(0, period, 2)
    u, v = (x + px) / period, (y + py) / period
    # threads: horizontal (weft) and vertical (warp) with a rounded profile
    warp = np.abs(np.sin(math.pi * u)) ** 0.6
    weft = np.abs(np.sin(math.pi * v)) ** 0.6
    over = ((np.floor(u) + np.floor(v)) % 2) == 0
    height = np.where(over, warp, weft)
    base = np.array([176, 150, 112], np.float32) + rng.normal(0, 4, 3).astype(np.float32)
    shade = 0.55 + 0.45 * height
    img = base[None, None, :] * shade[..., None]
    img += rng.normal(0, 3.0, (size, size, 1)).astype(np.float32)
    return np.clip(img, 0, 255), np.ones((size, size), bool)


def _dots(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    y, x = _grid(size)
    cell = 24.0 * size / 256.0
    n = int(math.ceil(size / cell)) + 1
    jit = rng.uniform(-0.12, 0.12, (n, n, 2)).astype(np.float32) * cell
    rad = rng.uniform(0.22, 0.30, (n, n)).astype(np.float32) * cell
    iy, ix = np.floor(y / cell).astype(int), np.floor(x / cell).astype(int)
    cy = (iy + 0.5) * cell + jit[iy, ix, 0]
    cx = (ix + 0.5) * cell + jit[iy, ix, 1]
    d = np.hypot(y - cy, x - cx) - rad[iy, ix]
    dot = np.clip(0.5 - d, 0.0, 1.0)  # antialiased edge
    bg = np.array([222, 224, 214], np.float32) + rng.normal(0, 3, 3).astype(np.float32)
    fg = np.array([52, 86, 140], np.float32) + rng.normal(0, 4, 3).astype(np.float32)
    img = bg * (1 - dot[..., None]) + fg * dot[..., None]
    img += rng.normal(0, 2.5, (size, size, 1)).astype(np.float32)
    return np.clip(img, 0, 255), np.ones((size, size), bool)


def _disc_background(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    g = 70 + 25 * (y / size) + 10 * (x / size)
    img = np.stack([g, g + 4, g + 8], -1).astype(np.float32)
    img += rng.normal(0, 3.0, (size, size, 1)).astype(np.float32)
    return np.clip(img, 0, 255)


def _disc(rng: np.random.Generator, size: int, background: np.ndarray) -> Tuple[np.ndarray, np.ndarray, dict]:
    y, x = _grid(size)
    cy, cx = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    theta = rng.uniform(-math.radians(8), math.radians(8))
    r_out, r_in = 0.36 * size, 0.12 * size
    dy, dx = y - cy, x - cx
    r = np.hypot(dy, dx)
    ang = np.arctan2(dy, dx) - theta
    obj = (r <= r_out) & (r >= r_in)
    # a marker notch on the rim, which makes the pose visible
    notch = (np.abs(np.angle(np.exp(1j * ang))) < 0.12) & (r > r_out - 0.06 * size)
    obj &= ~notch
    light = 0.75 + 0.25 * np.cos(ang + 0.8)  # directional shading
    ring = 1.0 - 0.15 * (np.abs(r - 0.24 * size) < 0.01 * size)  # an engraved ring
    col = np.array([196, 170, 120], np.float32) + rng.normal(0, 3, 3).astype(np.float32)
    metal = col[None, None, :] * (light * ring)[..., None]
    metal += rng.normal(0, 2.5, (size, size, 1)).astype(np.float32)
    img = np.where(obj[..., None], metal, background)
    return np.clip(img, 0, 255), obj, {"cy": cy, "cx": cx, "r_out": r_out, "r_in": r_in, "theta": theta}


# ----------------------------------------------------------------------------- defects


def _point_in(rng: np.random.Generator, region: np.ndarray, margin: int) -> Tuple[float, float]:
    size = region.shape[0]
    ys, xs = np.nonzero(region[margin : size - margin, margin : size - margin])
    i = rng.integers(len(ys))
    return float(ys[i] + margin), float(xs[i] + margin)


def _scratch(rng, img, region, size) -> np.ndarray:
    Image, ImageDraw = _pil()
    m = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(m)
    for _ in range(int(rng.integers(1, 3))):
        py, px = _point_in(rng, region, size // 8)
        ang = rng.uniform(0, 2 * math.pi)
        pts = [(px, py)]
        for _ in range(int(rng.integers(3, 6))):
            ang += rng.uniform(-0.5, 0.5)
            step = rng.uniform(0.04, 0.09) * size
            px, py = px + step * math.cos(ang), py + step * math.sin(ang)
            pts.append((px, py))
        draw.line(pts, fill=255, width=max(2, size // 128))
    mask = (np.asarray(m) > 127) & region
    tone = np.float32(235 if rng.random() < 0.5 else 35)
    img[mask] = 0.2 * img[mask] + 0.8 * tone
    return mask


def _blob(rng, size, cy, cx, radius) -> np.ndarray:
    y, x = _grid(size)
    dy, dx = y - cy, x - cx
    a = np.arctan2(dy, dx)
    rr = np.full_like(a, radius)
    for k in (2, 3, 5):
        rr += radius * rng.uniform(0.05, 0.18) * np.cos(k * a + rng.uniform(0, 2 * math.pi))
    return np.hypot(dy, dx) <= rr


def _hole(rng, img, region, size) -> np.ndarray:
    radius = rng.uniform(0.03, 0.06) * size
    cy, cx = _point_in(rng, _eroded(region, int(radius * 1.4)), size // 8)
    mask = _blob(rng, size, cy, cx, radius) & region
    dark = np.float32(rng.uniform(10, 30))
    img[mask] = dark + rng.normal(0, 2, (int(mask.sum()), 1)).astype(np.float32)
    return mask


def _stain(rng, img, region, size) -> np.ndarray:
    cy, cx = _point_in(rng, _eroded(region, size // 12), size // 6)
    y, x = _grid(size)
    field = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        oy, ox = rng.normal(0, 0.03 * size, 2)
        s = rng.uniform(0.025, 0.05) * size
        field += np.exp(-((y - cy - oy) ** 2 + (x - cx - ox) ** 2) / (2 * s * s))
    mask = (field > 0.5) & region
    colour = np.array(rng.choice([[150, 60, 40], [60, 120, 50], [120, 60, 140]]), np.float32)
    img[mask] = 0.35 * img[mask] + 0.65 * colour
    return mask


def _missing(rng, img, region, size, background, pose) -> np.ndarray:
    y, x = _grid(size)
    a = np.arctan2(y - pose["cy"], x - pose["cx"])
    a0 = rng.uniform(0, 2 * math.pi)
    width = math.radians(rng.uniform(30, 70))
    rel = np.mod(a - a0, 2 * math.pi)
    mask = (rel < width) & region
    img[mask] = background[mask]
    return mask


def _eroded(region: np.ndarray, r: int) -> np.ndarray:
    """Points of ``region`` at least about ``r`` pixels inside it (box erosion by shifts)."""
    if r <= 0 or region.all():
        return region
    out = region.copy()
    for dy, dx in ((r, 0), (-r, 0), (0, r), (0, -r), (r, r), (-r, -r), (r, -r), (-r, r)):
        out &= np.roll(region, (dy, dx), (0, 1))
    return out if out.any() else region


# ----------------------------------------------------------------------------- writer


def _rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    key = [seed & 0xFFFFFFFF, CATEGORIES.index(category) if category in CATEGORIES else sum(map(ord, category))]
    key += [{"train": 0, "good": 1}.get(split, 2 + sum(map(ord, split))), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def _normal(category: str, rng: np.random.Generator, size: int):
    if category == "weave":
        img, region = _weave(rng, size)
        return img, region, None, None
    if category == "dots":
        img, region = _dots(rng, size)
        return img, region, None, None
    if category == "disc":
        bg = _disc_background(rng, size)
        img, region, pose = _disc(rng, size, bg)
        return img, region, bg, pose
    raise ValueError(f"synthetic: unknown category '{category}' (known: {', '.join(CATEGORIES)})")


def _defective(category: str, defect: str, rng: np.random.Generator, size: int):
    img, region, bg, pose = _normal(category, rng, size)
    for _ in range(10):  # a defect lands on its region; retry in the rare case it is empty
        work = img.copy()
        if defect == "scratch":
            mask = _scratch(rng, work, region, size)
        elif defect == "hole":
            mask = _hole(rng, work, region, size)
        elif defect == "stain":
            mask = _stain(rng, work, region, size)
        elif defect == "missing" and bg is not None:
            mask = _missing(rng, work, region, size, bg, pose)
        else:
            raise ValueError(f"synthetic: defect '{defect}' is not defined for category '{category}'")
        if mask.sum() >= 4:
            return work, mask
    raise RuntimeError(f"synthetic: could not place a '{defect}' defect on '{category}'")  # pragma: no cover


def _save_rgb(a: np.ndarray, p: Path) -> None:
    Image, _ = _pil()
    Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB").save(p, optimize=False, compress_level=1)


def _save_mask(m: np.ndarray, p: Path) -> None:
    Image, _ = _pil()
    Image.fromarray(m.astype(np.uint8) * 255, "L").save(p, optimize=False, compress_level=1)


def generate(
    root: Union[str, os.PathLike],
    categories: Sequence[str] = CATEGORIES,
    n_train: int = 8,
    n_test_good: int = 4,
    n_test_defect: int = 8,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write a synthetic set in the MVTec AD layout under ``root``; returns ``root``.

    ``n_test_defect``: defective test images per category, spread round-robin over the
    category's defects (``DEFECTS``). Readable with ``pylake.datasets.mvtec(root)``.
    """
    if isinstance(categories, str):
        categories = [categories]
    for c in categories:
        if c not in DEFECTS:
            raise ValueError(f"synthetic: unknown category '{c}' (known: {', '.join(CATEGORIES)})")
    if n_train < 1:
        raise ValueError(f"synthetic: n_train must be >= 1, got {n_train}")
    if n_test_good < 0 or n_test_defect < 0:
        raise ValueError(f"synthetic: test counts must be >= 0, got {n_test_good} and {n_test_defect}")
    if size < 32:
        raise ValueError(f"synthetic: size must be >= 32, got {size}")
    _pil()  # a missing Pillow is said before any file is written
    root = Path(root)
    for cat in categories:
        base = root / cat
        d = base / "train" / "good"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_train):
            _save_rgb(_normal(cat, _rng(seed, cat, "train", i), size)[0], d / f"{i:03d}.png")
        d = base / "test" / "good"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_test_good):
            _save_rgb(_normal(cat, _rng(seed, cat, "good", i), size)[0], d / f"{i:03d}.png")
        defects = DEFECTS[cat]
        counts: Dict[str, int] = {}
        for j in range(n_test_defect):
            defect = defects[j % len(defects)]
            i = counts.get(defect, 0)
            counts[defect] = i + 1
            img, mask = _defective(cat, defect, _rng(seed, cat, defect, i), size)
            td, gd = base / "test" / defect, base / "ground_truth" / defect
            td.mkdir(parents=True, exist_ok=True)
            gd.mkdir(parents=True, exist_ok=True)
            _save_rgb(img, td / f"{i:03d}.png")
            _save_mask(mask, gd / f"{i:03d}_mask.png")
    return root


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pylake.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder to write the set into")
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    ap.add_argument("--n-train", type=int, default=8)
    ap.add_argument("--n-test-good", type=int, default=4)
    ap.add_argument("--n-test-defect", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = generate(a.out, a.categories, a.n_train, a.n_test_good, a.n_test_defect, a.size, a.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not a.quiet:
        print(f"wrote synthetic set ({', '.join(a.categories)}) to {out} in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
