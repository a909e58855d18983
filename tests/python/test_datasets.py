"""pylake.datasets (readers, few-shot draws, masks) and pylake.synthetic (the generated set).

Real sets: ../shared/data (skipped, saying why, when absent); their counts are those of
../shared/data/README.md, checked by listing the folders. Other layouts (BTAD, official MVTec
LOCO, VisA, plain folders) are generated in tmp_path.
"""

from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pylake import datasets as D
from pylake import synthetic

ROOT = Path(__file__).resolve().parents[2]
DATA = (ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="module")
def data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent: the shared test images (../shared/data) are not available")
    return DATA


# (kind, set folder, category, train, test good, test defective, masks, defect types, image size (W, H))
SHARED_SETS = [
    ("mvtec", "mvtec_ad", "grid", 7, 3, 11, 11, {"bent", "broken", "glue", "metal_contamination", "thread"}, (1024, 1024)),
    ("mvtec", "hazelnut_toy", "hazelnut", 28, 6, 17, 17, {"colour"}, (512, 512)),
    ("loco", "mvtec_loco", "juice_bottle", 8, 4, 8, 8, {"logical_anomalies"}, (800, 1600)),  # README "1600x800" is H x W: PIL (W, H) = (800, 1600)
    ("mvtec", "mvtec_ad_nomask", "bottle", 8, 4, 12, 0, {"broken_large", "broken_small", "contamination"}, (900, 900)),
]


@pytest.mark.parametrize("kind,folder,cat,n_train,n_good,n_bad,n_masks,defects,size", SHARED_SETS, ids=[s[1] for s in SHARED_SETS])
def test_shared_sets(data, kind, folder, cat, n_train, n_good, n_bad, n_masks, defects, size):
    cats = D.open_dataset(kind, data / folder)
    assert [c.name for c in cats] == [cat]
    c = cats[0]
    assert len(c.train) == n_train and c.train == sorted(c.train)
    assert all(p.parent == data / folder / cat / "train" / "good" for p in c.train)
    good = [s for s in c.test if s.label == 0]
    bad = [s for s in c.test if s.label == 1]
    assert len(good) == n_good and len(bad) == n_bad
    assert {s.defect for s in good} == {"good"} and {s.defect for s in bad} == defects
    assert c.test == sorted(c.test, key=lambda s: (s.defect, s.path.name))
    assert c.num_masks == n_masks and c.has_masks == (n_masks > 0)
    assert all(s.mask_path is None for s in good)
    for s in bad:
        assert s.path.parent.name == s.defect
        if not c.has_masks:
            assert s.mask_path is None
            assert D.read_mask(s, 8, 8, allow_missing=True) is None
            with pytest.raises(ValueError, match=s.path.name):
                D.read_mask(s, 8, 8)
            continue
        # pairing: same defect folder, same stem (MVTec adds _mask), same size as the image
        assert s.mask_path.is_file()
        assert s.mask_path.parent == data / folder / cat / "ground_truth" / s.defect
        assert s.mask_path.stem in (s.path.stem, s.path.stem + "_mask")
        with Image.open(s.path) as im, Image.open(s.mask_path) as m:
            assert im.size == m.size == size
    # masks read: non-empty for anomalous images, empty for normal ones
    if c.has_masks:
        for s in bad[:3]:
            m = D.read_mask(s, size[1] // 8, size[0] // 8)
            assert m.dtype == torch.bool and m.shape == (size[1] // 8, size[0] // 8) and m.any()
    m = D.read_mask(good[0], 10, 20)
    assert m.shape == (10, 20) and not m.any()


def test_shared_mask_rules(data):
    """The mask names differ from set to set: MVTec <stem>_mask.png, hazelnut_toy <stem>.png from
    a .jpg, LOCO (shared subset) one <NNN>.png per image."""
    grid = D.mvtec(data / "mvtec_ad")[0]
    assert all(s.mask_path.name == s.path.stem + "_mask.png" for s in grid.test if s.label)
    haz = D.mvtec(data / "hazelnut_toy", categories=["hazelnut"])[0]
    assert all(s.path.suffix == ".jpg" and s.mask_path.name == s.path.stem + ".png" for s in haz.test if s.label)
    lo = D.loco(data / "mvtec_loco")[0]
    assert all(s.mask_path.is_file() and s.mask_path.name == s.path.name for s in lo.test if s.label)
    # the mask read at full size equals thresholding the file directly
    s = next(s for s in grid.test if s.label)
    ref = torch.from_numpy(np.asarray(Image.open(s.mask_path).convert("L")) > 127)
    assert torch.equal(D.read_mask(s, 1024, 1024), ref)


def test_shared_mvtec_nomask_strict(data):
    c = D.mvtec(data / "mvtec_ad_nomask")[0]
    assert not c.has_masks and c.num_anomalous == 12


def test_shared_missing_category(data):
    with pytest.raises(ValueError, match="category 'carpet' not found"):
        D.mvtec(data / "mvtec_ad", categories=["carpet"])


# ----------------------------------------------------------------------------- generated layouts


def _img(p: Path, size=(32, 24), value=128, mode="RGB"):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(p)
    return p


def _mask(p: Path, box, size=(32, 24), value=255):
    p.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[1], size[0]), np.uint8)
    y0, y1, x0, x1 = box
    a[y0:y1, x0:x1] = value
    Image.fromarray(a, "L").save(p)
    return p


def _mvtec_like(root: Path, cat="cat", rule="{stem}_mask.png", ext=".png", normal="good", defect="crack", n=3):
    c = root / cat
    for i in range(4):
        _img(c / "train" / normal / f"{i:03d}{ext}")
    for i in range(2):
        _img(c / "test" / normal / f"{i:03d}{ext}")
    for i in range(n):
        _img(c / "test" / defect / f"{i:03d}{ext}")
        _mask(c / "ground_truth" / defect / rule.format(stem=f"{i:03d}"), (2, 6, 3, 9))
    return root


def test_btad_layout(tmp_path):
    """BTAD: ok/ko folders, .bmp images in some categories, masks <stem>.png without _mask."""
    _mvtec_like(tmp_path, "01", rule="{stem}.png", ext=".bmp", normal="ok", defect="ko")
    _mvtec_like(tmp_path, "02", rule="{stem}.png", ext=".png", normal="ok", defect="ko")
    cats = D.open_dataset("btad", tmp_path)
    assert [c.name for c in cats] == ["01", "02"]
    for c in cats:
        assert len(c.train) == 4 and c.has_masks and c.num_masks == 3
        assert {s.defect for s in c.test} == {"good", "ko"}
        for s in c.test:
            if s.label:
                assert s.mask_path.name == s.path.stem + ".png"
                m = D.read_mask(s, 24, 32)
                assert m.sum().item() == 4 * 6
    assert cats[0].train[0].suffix == ".bmp"
    # the mvtec reader also accepts the bare stem; MPDD-style _mask too
    assert D.mvtec(tmp_path, ["01"])[0].num_masks == 3
    _mvtec_like(tmp_path / "mpdd", "bracket", rule="{stem}_mask.png")
    assert D.open_dataset("mpdd", tmp_path / "mpdd")[0].num_masks == 3


def test_root_is_one_category(tmp_path):
    _mvtec_like(tmp_path, "bottle")
    cats = D.mvtec(tmp_path / "bottle")
    assert [c.name for c in cats] == ["bottle"] and len(cats[0].test) == 5


def test_loco_official_mask_folders(tmp_path):
    """Official MVTec LOCO: ground_truth/<type>/<NNN>/ holds one mask per defect; they are united."""
    c = tmp_path / "breakfast_box"
    for i in range(3):
        _img(c / "train" / "good" / f"{i:03d}.png")
    _img(c / "validation" / "good" / "000.png")
    _img(c / "test" / "good" / "000.png")
    _img(c / "test" / "logical_anomalies" / "000.png")
    _mask(c / "ground_truth" / "logical_anomalies" / "000" / "000.png", (0, 4, 0, 4))
    _mask(c / "ground_truth" / "logical_anomalies" / "000" / "001.png", (10, 12, 20, 30))
    _img(c / "test" / "structural_anomalies" / "000.png")
    _mask(c / "ground_truth" / "structural_anomalies" / "000" / "000.png", (5, 7, 5, 7), value=200)
    # a value at or below 127 is not anomalous
    _mask(c / "ground_truth" / "structural_anomalies" / "000" / "001.png", (15, 20, 15, 20), value=127)
    cat = D.loco(tmp_path)[0]
    assert cat.name == "breakfast_box" and len(cat.train) == 3 and len(cat.test) == 3
    log = next(s for s in cat.test if s.defect == "logical_anomalies")
    assert log.mask_path.is_dir()
    m = D.read_mask(log, 24, 32)
    assert m.sum().item() == 16 + 2 * 10 and m[0, 0] and m[11, 25] and not m[8, 8]
    st = next(s for s in cat.test if s.defect == "structural_anomalies")
    assert D.read_mask(st, 24, 32).sum().item() == 4
    # resized nearest
    assert D.read_mask(log, 12, 16).sum().item() == 4 + 5
    # an empty mask folder is an error naming it
    (c / "ground_truth" / "logical_anomalies" / "000" / "000.png").unlink()
    (c / "ground_truth" / "logical_anomalies" / "000" / "001.png").unlink()
    with pytest.raises(ValueError, match=r"no mask.*test/logical_anomalies/000\.png"):
        D.loco(tmp_path)


def test_visa_csv(tmp_path):
    rows = []
    for obj in ("candle", "pcb1"):
        for i in range(3):
            p = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            _img(tmp_path / p)
            rows.append([obj, "train", "normal", p, ""])
        p = f"{obj}/Data/Images/Normal/0100.JPG"
        _img(tmp_path / p)
        rows.append([obj, "test", "normal", p, ""])
        for i in range(2):
            p = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG"
            m = f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
            _img(tmp_path / p)
            _mask(tmp_path / m, (1, 3, 1, 3), value=255)
            rows.append([obj, "test", "anomaly", p, m])
    csv_path = tmp_path / "split_csv" / "1cls.csv"
    csv_path.parent.mkdir()
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)
    cats = D.visa(tmp_path)
    assert [c.name for c in cats] == ["candle", "pcb1"]
    for c in cats:
        assert len(c.train) == 3 and len(c.test) == 3 and c.num_masks == 2 and c.has_masks
        assert {s.defect for s in c.test} == {"good", "anomaly"}
        s = next(s for s in c.test if s.label)
        assert D.read_mask(s, 24, 32).sum().item() == 4
    assert [c.name for c in D.open_dataset("visa", tmp_path, ["pcb1"], split_csv="split_csv/1cls.csv")] == ["pcb1"]
    with pytest.raises(ValueError, match="category 'pcb9' not found"):
        D.visa(tmp_path, ["pcb9"])
    # missing columns
    bad = tmp_path / "bad.csv"
    bad.write_text("object,split,image\ncandle,train,x.png\n")
    with pytest.raises(ValueError, match="lacks column.*label.*mask"):
        D.visa(tmp_path, split_csv=bad)
    with pytest.raises(ValueError, match="does not exist"):
        D.visa(tmp_path, split_csv=tmp_path / "nope.csv")
    # a listed mask that is missing
    (tmp_path / "candle/Data/Masks/Anomaly/001.png").unlink()
    with pytest.raises(ValueError, match="001.png"):
        D.visa(tmp_path, ["candle"])
    c = D.visa(tmp_path, ["candle"], allow_missing_masks=True)[0]
    assert c.num_masks == 1 and c.num_anomalous == 2


def test_folder_with_mask_rule(tmp_path):
    for i in range(5):
        _img(tmp_path / "normal" / f"n{i}.png")
    for i in range(2):
        _img(tmp_path / "test_normal" / f"t{i}.png")
    for i in range(3):
        _img(tmp_path / "bad" / f"b{i}.jpg")
        _mask(tmp_path / "masks" / f"gt_b{i}.png", (0, 2, 0, 2))
    cats = D.folder(
        tmp_path / "normal", tmp_path / "bad", tmp_path / "masks", mask_rule="gt_{stem}.png",
        test_normal_dir=tmp_path / "test_normal", name="widget",
    )
    c = cats[0]
    assert c.name == "widget" and len(c.train) == 5 and len(c.test) == 5 and c.has_masks and c.num_masks == 3
    assert {s.defect for s in c.test} == {"good", "bad"}
    assert all(D.read_mask(s, 24, 32).sum().item() == (4 if s.label else 0) for s in c.test)
    c2 = D.open_dataset("folder", tmp_path / "normal", abnormal_dir=tmp_path / "bad", name="w")[0]
    assert not c2.has_masks and c2.num_anomalous == 3 and c2.num_masks == 0
    # the default rule {stem}_mask.png does not match gt_<stem>.png: an error naming the expected file
    with pytest.raises(ValueError, match=r"b0_mask\.png"):
        D.folder(tmp_path / "normal", tmp_path / "bad", tmp_path / "masks")
    with pytest.raises(ValueError, match="does not exist"):
        D.folder(tmp_path / "nowhere")


def test_folder_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty category"):
        D.folder(tmp_path / "empty")


# ----------------------------------------------------------------------------- bad inputs


def test_missing_root(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        D.mvtec(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown data set kind"):
        D.open_dataset("coco", tmp_path)


def test_no_categories(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match="no categories found"):
        D.mvtec(tmp_path)


def test_missing_category(tmp_path):
    _mvtec_like(tmp_path, "bottle")
    with pytest.raises(ValueError, match="category 'cable' not found.*bottle"):
        D.mvtec(tmp_path, categories=["cable"])


def test_empty_category(tmp_path):
    _mvtec_like(tmp_path, "bottle")
    (tmp_path / "cable" / "train" / "good").mkdir(parents=True)
    _img(tmp_path / "cable" / "test" / "good" / "000.png")
    with pytest.raises(ValueError, match="empty category 'cable'"):
        D.mvtec(tmp_path)
    assert len(D.mvtec(tmp_path, ["bottle"])) == 1


def test_image_without_mask(tmp_path):
    """One anomalous image lacks its mask: an error naming it, or mask_path=None when allowed."""
    _mvtec_like(tmp_path, "bottle")
    (tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(ValueError, match=r"test/crack/001\.png"):
        D.mvtec(tmp_path)
    c = D.mvtec(tmp_path, allow_missing_masks=True)[0]
    assert c.has_masks and c.num_masks == 2
    s = next(s for s in c.test if s.path.name == "001.png" and s.label)
    assert s.mask_path is None
    with pytest.raises(ValueError, match=r"001\.png"):
        D.read_mask(s, 4, 4)
    assert D.read_mask(s, 4, 4, allow_missing=True) is None


def test_defect_type_without_masks(tmp_path):
    """A set with masks where a whole defect type's ground_truth folder is missing."""
    _mvtec_like(tmp_path, "bottle")
    for i in range(2):
        _img(tmp_path / "bottle" / "test" / "scratch" / f"{i:03d}.png")
    with pytest.raises(ValueError, match=r"2 anomalous test image.*scratch/000\.png"):
        D.mvtec(tmp_path)


def test_unreadable_mask(tmp_path):
    _mvtec_like(tmp_path, "bottle")
    (tmp_path / "bottle" / "ground_truth" / "crack" / "000_mask.png").write_bytes(b"not a png")
    s = next(s for s in D.mvtec(tmp_path)[0].test if s.label)
    with pytest.raises(ValueError, match="mask file '.*000_mask.png' could not be read: .* is not a PNG or JPEG file"):
        D.read_mask(s, 4, 4)


# ----------------------------------------------------------------------------- few-shot


def test_few_shot():
    train = [Path(f"/x/{i:03d}.png") for i in range(20)]
    a = D.few_shot(train, 4, seed=0)
    assert a == D.few_shot(train, 4, seed=0)
    assert len(a) == 4 and len(set(a)) == 4 and set(a) <= set(train)
    assert a != D.few_shot(train, 4, seed=1)
    assert len({tuple(D.few_shot(train, 4, seed=s)) for s in range(3)}) == 3
    assert D.few_shot(train, 0, seed=0) == []
    assert sorted(D.few_shot(train, 20, seed=5)) == train
    with pytest.raises(ValueError, match=r"k = 21.*only 20"):
        D.few_shot(train, 21, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        D.few_shot(train, -1, seed=0)


def test_few_shot_real(data):
    train = D.mvtec(data / "mvtec_ad")[0].train
    with pytest.raises(ValueError, match=r"k = 8.*only 7"):
        D.few_shot(train, 8, seed=0)
    assert D.few_shot(train, 2, seed=3) == D.few_shot(list(train), 2, seed=3)


# ----------------------------------------------------------------------------- synthetic


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_synthetic(tmp_path):
    t0 = time.perf_counter()
    root = synthetic.generate(tmp_path / "a", seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"generator took {elapsed:.2f} s for the default set"
    cats = D.mvtec(root)
    assert [c.name for c in cats] == sorted(synthetic.CATEGORIES)
    for c in cats:
        assert len(c.train) == 8 and c.has_masks
        assert sum(1 for s in c.test if s.label == 0) == 4
        assert c.num_anomalous == 8 and c.num_masks == 8
        assert {s.defect for s in c.test} - {"good"} == set(synthetic.DEFECTS[c.name])
        for s in c.test:
            with Image.open(s.path) as im:
                assert im.size == (256, 256) and im.mode == "RGB"
            if s.label:
                raw = np.asarray(Image.open(s.mask_path))
                assert raw.shape == (256, 256) and set(np.unique(raw)) <= {0, 255}
                m = D.read_mask(s, 256, 256)
                area = m.float().mean().item()
                assert 0 < area < 0.25, (s.path, area)
                # the mask is inside the image: not touching every border
                assert not (m[0].all() or m[-1].all() or m[:, 0].all() or m[:, -1].all())
            else:
                assert s.mask_path is None
    # masks exist exactly for the defect images
    gts = sorted(p.relative_to(root) for p in root.rglob("ground_truth/*/*"))
    bad = sorted(s.path.relative_to(root) for c in cats for s in c.test if s.label)
    assert [str(p).replace("ground_truth", "test").replace("_mask", "") for p in gts] == [str(p) for p in bad]
    # deterministic by seed
    synthetic.generate(tmp_path / "b", seed=0)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    synthetic.generate(tmp_path / "c", seed=1)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_synthetic_defects_change_pixels(tmp_path):
    """Every defect of the object, including the cut-out sector, at another size and seed;
    the masked pixels differ from the image's normal look (mean colour inside vs. a normal image)."""
    root = synthetic.generate(tmp_path, categories=("disc",), n_train=1, n_test_good=0, n_test_defect=4, size=128, seed=3)
    c = D.mvtec(root)[0]
    assert sorted(s.defect for s in c.test) == ["hole", "missing", "scratch", "stain"]
    normal = np.asarray(Image.open(c.train[0]), np.float32)
    for s in c.test:
        m = D.read_mask(s, 128, 128).numpy()
        assert m.sum() >= 4
        img = np.asarray(Image.open(s.path), np.float32)
        assert np.abs(img[m] - normal[m]).mean() > 10, s.path


def test_synthetic_cli_and_errors(tmp_path):
    assert synthetic.main(["--out", str(tmp_path / "o"), "--categories", "dots", "--n-train", "2",
                           "--n-test-good", "1", "--n-test-defect", "3", "--size", "64", "--quiet"]) == 0
    c = D.mvtec(tmp_path / "o")[0]
    assert c.name == "dots" and len(c.train) == 2 and len(c.test) == 4
    with pytest.raises(ValueError, match="unknown category 'wood'"):
        synthetic.generate(tmp_path / "x", categories=("wood",))
