"""Image decoding, masks and CLIP preprocessing, checked against PIL and torchvision.

LAKE's decoders must give the tensors Python users get from
``Image.open(p).convert("RGB")``: real files from ../shared/data (skipped when absent) and
images of every PNG/JPEG flavour generated here.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pylake import _C

ROOT = Path(__file__).resolve().parents[2]
DATA = (ROOT.parent / "shared" / "data").resolve()
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def data_files() -> list[Path]:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent: the shared test images are not available")
    files = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert files, f"no PNG/JPEG under {DATA}"
    return files


def pil_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def pil_mask(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def ours_rgb(path, **kw) -> np.ndarray:
    t = _C.read_image(path, **kw)
    assert t.dtype == torch.uint8 and t.dim() == 3 and t.shape[0] == 3 and t.is_contiguous()
    return t.permute(1, 2, 0).numpy()


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max()) if a.size else 0


def test_shared_images_match_pil(data_files):
    seen = set()
    jpeg_worst = 0
    for p in data_files:
        with Image.open(p) as im:
            kind = (im.format, im.mode)
        seen.add(kind)
        d = max_diff(ours_rgb(p), pil_rgb(p))
        if kind[0] == "PNG":
            assert d == 0, f"{p}: differs from PIL by up to {d}"
        else:
            jpeg_worst = max(jpeg_worst, d)
            # Same libjpeg-turbo settings as PIL (ISLOW DCT, fancy upsampling): measured 0.
            assert d <= 2, f"{p}: differs from PIL by up to {d}"
    # The walk met every kind the shared sets hold.
    assert {("PNG", "L"), ("PNG", "RGB"), ("JPEG", "RGB")} <= seen, seen


def test_shared_masks_match_pil(data_files):
    masks = [p for p in data_files if "ground_truth" in p.parts]
    assert masks
    # Masks as stored, and every other image through the luminance path.
    for p in masks + [p for p in data_files if "ground_truth" not in p.parts][::4]:
        m = _C.read_mask(p)
        assert m.dtype == torch.bool
        np.testing.assert_array_equal(m.numpy(), pil_mask(p), err_msg=str(p))


# ---- generated images -------------------------------------------------------------------

def _pattern(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: every value 0..255 appears, edges and flat parts."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for c in range(channels):
        base = (x * (3 + c) + y * (5 - c)) % 256
        out.append(np.clip(base + rng.integers(-20, 21, (h, w)), 0, 255))
    return np.stack(out, -1).astype(np.uint8).squeeze()


def _make(tmp_path: Path, kind: str) -> Path:
    h, w = 37, 53
    p = tmp_path / f"{kind}.png"
    if kind == "L":
        Image.fromarray(_pattern(h, w, 1), "L").save(p)
    elif kind == "LA":
        Image.fromarray(_pattern(h, w, 2), "LA").save(p)
    elif kind == "RGB":
        Image.fromarray(_pattern(h, w, 3), "RGB").save(p)
    elif kind == "RGBA":
        Image.fromarray(_pattern(h, w, 4), "RGBA").save(p)
    elif kind in ("P", "P_trns", "P4"):
        n = 16 if kind == "P4" else 200
        idx = (_pattern(h, w, 1).astype(int) % n).astype(np.uint8)
        im = Image.fromarray(idx, "P")
        im.putpalette(list(np.random.default_rng(1).integers(0, 256, 3 * n)))
        kw = {"transparency": 3} if kind == "P_trns" else {}
        if kind == "P4":
            kw["bits"] = 4
        im.save(p, **kw)
    elif kind == "1":
        Image.fromarray(_pattern(h, w, 1) > 127).convert("1").save(p)
    elif kind.startswith("jpeg"):
        p = tmp_path / f"{kind}.jpg"
        if kind == "jpeg_grey":
            Image.fromarray(_pattern(h, w, 1), "L").save(p, quality=90)
        elif kind == "jpeg_cmyk":
            Image.fromarray(_pattern(h, w, 4), "CMYK").save(p, quality=90)
        elif kind == "jpeg_420":
            Image.fromarray(_pattern(h, w, 3), "RGB").save(p, quality=85, subsampling=2)
        elif kind == "jpeg_422_progressive":
            Image.fromarray(_pattern(h, w, 3), "RGB").save(p, quality=95, subsampling=1, progressive=True)
        else:
            Image.fromarray(_pattern(h, w, 3), "RGB").save(p, quality=75, subsampling=0)
    else:
        raise AssertionError(kind)
    return p


@pytest.mark.parametrize(
    "kind",
    ["L", "LA", "RGB", "RGBA", "P", "P_trns", "P4", "1",
     "jpeg_444", "jpeg_420", "jpeg_422_progressive", "jpeg_grey", "jpeg_cmyk"],
)
def test_generated_images_match_pil(tmp_path, kind):
    p = _make(tmp_path, kind)
    assert max_diff(ours_rgb(p), pil_rgb(p)) == 0
    np.testing.assert_array_equal(_C.read_mask(p).numpy(), pil_mask(p))
    # The format comes from the bytes, not the name.
    swapped = p.with_name("swapped" + (".jpg" if p.suffix == ".png" else ".png"))
    swapped.write_bytes(p.read_bytes())
    assert max_diff(ours_rgb(swapped), pil_rgb(p)) == 0


def _png_bytes(arr: np.ndarray, bit_depth: int, color_type: int, interlace: bool = False) -> bytes:
    """A PNG written by hand (PIL writes neither 16-bit RGB nor interlaced PNGs)."""
    h, w = arr.shape[:2]
    samples = arr.astype(">u2" if bit_depth == 16 else "u1").reshape(h, w, -1)

    def rows(a):
        return b"".join(b"\0" + r.tobytes() for r in a)

    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b"".join(rows(samples[y0::dy, x0::dx]) for x0, y0, dx, dy in passes
                       if samples[y0::dy, x0::dx].size)
    else:
        raw = rows(samples)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_interlaced_png(tmp_path):
    for ct, ch in ((0, 1), (2, 3), (6, 4)):
        arr = _pattern(29, 43, ch, seed=ct)
        p = tmp_path / f"adam7_{ct}.png"
        p.write_bytes(_png_bytes(arr, 8, ct, interlace=True))
        assert max_diff(ours_rgb(p), pil_rgb(p)) == 0
        assert max_diff(ours_rgb(p), pil_rgb(_save(tmp_path, arr, f"plain_{ct}.png"))) == 0


def _save(tmp_path, arr, name):
    p = tmp_path / name
    Image.fromarray(arr).save(p)
    return p


def _rule16(v: np.ndarray) -> np.ndarray:
    return (v.astype(np.int64) * 255 + 32767) // 65535


def test_16bit_grey(tmp_path):
    """16-bit grey: LAKE scales, (v * 255 + 32767) // 65535. PIL opens it as "I;16" and its
    convert("RGB") / convert("L") *clip* to min(v, 255); the two agree only at 0 and 65535."""
    v = np.array([[0, 1, 127, 128, 255, 256, 385, 386, 32767, 32768, 65406, 65407, 65535]], np.uint16)
    v = np.repeat(v, 3, 0)
    p = tmp_path / "g16.png"
    Image.fromarray(v).save(p)
    with Image.open(p) as im:
        assert im.mode == "I;16"
    ours = ours_rgb(p)
    for c in range(3):
        np.testing.assert_array_equal(ours[..., c], _rule16(v))
    np.testing.assert_array_equal(_C.read_mask(p).numpy(), _rule16(v) > 127)
    pil = pil_rgb(p)[..., 0].astype(np.int64)
    np.testing.assert_array_equal(pil, np.minimum(v, 255))  # PIL's rule, documented in image_io.h
    ends = (v == 0) | (v == 65535)
    np.testing.assert_array_equal(ours[..., 0][ends], pil[ends])


def test_16bit_colour(tmp_path):
    """16-bit RGB / RGBA / grey+alpha: PIL keeps the high byte (v >> 8), LAKE rounds: within 1."""
    rng = np.random.default_rng(3)
    for ct, ch in ((2, 3), (6, 4), (4, 2)):
        v = rng.integers(0, 65536, (11, 17, ch)).astype(np.uint16)
        v[0, :4, 0] = [0, 255, 65407, 65535]
        p = tmp_path / f"c16_{ct}.png"
        p.write_bytes(_png_bytes(v, 16, ct))
        ours = ours_rgb(p)
        expect = _rule16(v[..., :3] if ch >= 3 else np.repeat(v[..., :1], 3, -1))
        np.testing.assert_array_equal(ours, expect)
        pil = pil_rgb(p)
        assert max_diff(pil, (v[..., :3] if ch >= 3 else np.repeat(v[..., :1], 3, -1)) >> 8) == 0
        assert max_diff(ours, pil) <= 1


# ---- preprocessing -----------------------------------------------------------------------

def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    """(3, S, S) normalised -> values in units of 1/255."""
    return (x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255


def _preprocess_cases(data_files):
    cases = []
    if data_files:
        by_size = {}
        for p in data_files:
            if "ground_truth" in p.parts or p.suffix not in (".png", ".jpg"):
                continue
            with Image.open(p) as im:
                by_size.setdefault((im.format, im.size), p)
        cases += [Image.open(p).convert("RGB") for p in by_size.values()]
    rng = np.random.default_rng(5)
    for w, h in ((640, 300), (300, 640), (200, 610), (97, 61), (50, 50), (1000, 999)):
        arr = _pattern(h, w, 3, seed=w) // 2 + rng.integers(0, 128, (h, w, 3)).astype(np.uint8)
        cases.append(Image.fromarray(arr, "RGB"))
    return cases


@pytest.fixture(scope="module")
def preprocess_cases():
    """One image of each (format, size) in the shared data, when there, and generated ones:
    wide, tall (> 2x, where Pillow resizes vertically first), tiny (upscaled), odd sizes."""
    return _preprocess_cases(_shared_or_none())


@pytest.mark.parametrize("size", [224, 336, 240])
def test_clip_preprocess_matches_torchvision(preprocess_cases, size):
    T = pytest.importorskip("torchvision.transforms")
    clip = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(MEAN, STD)])
    for im in preprocess_cases:
        img = torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous()
        ours = _C.clip_preprocess(img, size, MEAN, STD, center_crop=True)
        ref = clip(im)
        assert ours.shape == ref.shape == (3, size, size) and ours.dtype == torch.float32
        d = (_unnormalise(ours) - _unnormalise(ref)).abs()
        # PIL's fixed-point weights make a few pixels differ by one level.
        assert d.max().item() <= 1 + 1e-3, (im.size, d.max().item())
        assert (d > 0.5).float().mean().item() < 5e-3, im.size


@pytest.mark.parametrize("size", [224, 336])
def test_clip_preprocess_square_matches_pil_resize(preprocess_cases, size):
    for im in preprocess_cases:
        img = torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous()
        ours = _unnormalise(_C.clip_preprocess(img, size, MEAN, STD))
        ref = torch.from_numpy(np.array(im.resize((size, size), Image.BICUBIC))).permute(2, 0, 1).float()
        d = (ours - ref).abs()
        assert d.max().item() <= 1 + 1e-3, (im.size, d.max().item())
        assert (d > 0.5).float().mean().item() < 5e-3, im.size


def test_clip_preprocess_bad_input():
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="mean must have 3 values"):
        _C.clip_preprocess(img, 4, MEAN[:2], STD)
    with pytest.raises(ValueError, match=r"expected a \(3, H, W\) RGB image"):
        _C.clip_preprocess(img[None], 4, MEAN, STD)
    with pytest.raises(ValueError, match="expected a uint8 image"):
        _C.clip_preprocess(img.float(), 4, MEAN, STD)
    with pytest.raises(ValueError, match="size must be positive"):
        _C.clip_preprocess(img, 0, MEAN, STD)
    with pytest.raises(ValueError, match=r"std\[2\]"):
        _C.clip_preprocess(img, 4, MEAN, (1.0, 1.0, 0.0))


# ---- masks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,out", [((100, 100), (224, 224)), ((1024, 1024), (224, 224)),
                                       ((37, 53), (20, 90)), ((800, 1600), (256, 256)), ((5, 7), (5, 7))])
def test_resize_mask_nearest(shape, out):
    rng = np.random.default_rng(7)
    m = rng.random(shape) > 0.5
    ours = _C.resize_mask(torch.from_numpy(m), *out)
    assert ours.dtype == torch.bool and tuple(ours.shape) == out
    # PIL's NEAREST, pixel for pixel.
    pil = np.asarray(Image.fromarray(m).resize(out[::-1], Image.NEAREST))
    np.testing.assert_array_equal(ours.numpy(), pil)
    # The centre rule floor((i + 0.5) * in / out) in exact arithmetic: the same source pixels
    # except where a centre falls exactly on a cell boundary (a tie; PIL's float sum decides).
    exact = [((2 * np.arange(o) + 1) * n) // (2 * o) for n, o in zip(shape, out)]
    ties = [((2 * np.arange(o) + 1) * n) % (2 * o) == 0 for n, o in zip(shape, out)]
    differs = ours.numpy() != m[exact[0]][:, exact[1]]
    assert not differs[~ties[0]][:, ~ties[1]].any()


def test_resize_mask_bad_input():
    with pytest.raises(ValueError, match="expected a bool mask"):
        _C.resize_mask(torch.zeros(4, 4), 2, 2)
    with pytest.raises(ValueError, match=r"expected a \(H, W\) bool mask"):
        _C.resize_mask(torch.zeros(1, 4, 4, dtype=torch.bool), 2, 2)
    with pytest.raises(ValueError, match="positive output size"):
        _C.resize_mask(torch.zeros(4, 4, dtype=torch.bool), 0, 2)


# ---- bad files -----------------------------------------------------------------------------

def _real(tmp_path, data_files_or_none, suffix):
    """A real file of the format (from the shared data when there), as bytes."""
    for p in data_files_or_none or []:
        if p.suffix == suffix and "ground_truth" not in p.parts:
            return p.read_bytes()
    return _make(tmp_path, "RGB" if suffix == ".png" else "jpeg_420").read_bytes()


def _shared_or_none():
    return sorted(p for p in DATA.rglob("*") if p.is_file()) if DATA.is_dir() else None


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files(tmp_path, suffix):
    data = _real(tmp_path, _shared_or_none(), suffix)
    for frac in (0.5, 0.1, 0.9):
        p = tmp_path / f"cut_{frac}{suffix}"
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ValueError, match=rf"'{p}' is a corrupt or truncated (PNG|JPEG)"):
            _C.read_image(p)
        with pytest.raises(ValueError, match=rf"cut_{frac}"):
            _C.read_mask(str(p))


def test_not_an_image(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match=r"'.*missing\.png' does not exist"):
        _C.read_image(missing)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.jpg' is empty"):
        _C.read_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("this is a text file, not a PNG\n")
    with pytest.raises(ValueError, match=r"notes\.png' is not a PNG or JPEG file"):
        _C.read_image(text)
    bmp = tmp_path / "img.png"
    Image.fromarray(_pattern(4, 4, 3)).save(bmp, format="BMP")
    with pytest.raises(ValueError, match=r"img\.png' is a BMP file; LAKE reads PNG and JPEG only"):
        _C.read_mask(bmp)
    with pytest.raises(ValueError, match="is a directory"):
        _C.read_image(tmp_path)


def test_decompression_bombs(tmp_path):
    # A valid signature and IHDR claiming 100000 x 100000 RGB pixels (CRC via zlib.crc32).
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    p = tmp_path / "bomb.png"
    p.write_bytes(bomb)
    with pytest.raises(ValueError, match=r"bomb\.png' is a PNG of 100000x100000 = 10000000000 pixels, "
                                         r"more than max_pixels = 178956970"):
        _C.read_image(p)
    with pytest.raises(ValueError, match=r"bomb\.png' is a PNG of 100000x100000"):
        _C.read_mask(p)

    # A JPEG whose frame header claims 60000 x 60000.
    data = bytearray(_make(tmp_path, "jpeg_444").read_bytes())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 9] = struct.pack(">HH", 60000, 60000)
    j = tmp_path / "bomb.jpg"
    j.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bomb\.jpg' is a JPEG of 60000x60000 = 3600000000 pixels"):
        _C.read_image(j)

    # max_pixels is the limit, inclusive.
    small = _make(tmp_path, "L")  # 53 x 37
    assert _C.read_image(small, max_pixels=53 * 37).shape == (3, 37, 53)
    with pytest.raises(ValueError, match=r"L\.png' is a PNG of 53x37 = 1961 pixels, more than max_pixels = 1960"):
        _C.read_image(small, max_pixels=53 * 37 - 1)
