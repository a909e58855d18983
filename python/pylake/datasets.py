"""Readers of anomaly-detection data sets: MVTec AD (and MPDD, BTAD), MVTec LOCO, VisA, folders.

Every reader returns one :class:`Category` per object/texture class: its normal training
images (``train/good``) and its labelled test images, each with the path of its ground-truth
mask when the set has masks.

>>> from pylake import datasets
>>> cats = datasets.open_dataset("mvtec", "/data/mvtec_ad", categories=["grid"])
>>> support = datasets.few_shot(cats[0].train, k=4, seed=0)         # the k-shot normal set
>>> s = cats[0].test[0]
>>> gt = datasets.read_mask(s, 1024, 1024)                          # (H, W) bool

Mask names differ from set to set; the readers try the known rules of the set kind:

- MVTec AD, MPDD: ``ground_truth/<defect>/<stem>_mask.png``; ``mvtec`` also accepts the
  bare stem ``ground_truth/<defect>/<stem>.png`` (as BTAD, and e.g. ``hazelnut_toy``).
- BTAD: ``ground_truth/<defect>/<stem>.png`` (images are ``.bmp`` in some categories; the
  normal folders are called ``ok`` in the original release, the defect folder ``ko``).
- MVTec LOCO: the official ``ground_truth/<type>/<NNN>/`` folder with one mask per defect of
  the image (they are united), or one mask per image ``ground_truth/<type>/<NNN>.png``.
- VisA: the ``mask`` column of its split CSV.
- folder: ``mask_rule`` in ``mask_dir`` (``{stem}``, ``{name}``, ``{suffix}`` are filled in).

A set without any ``ground_truth`` (image-level labels only) gives ``has_masks=False`` and
``mask_path=None`` everywhere. In a set with masks, an anomalous test image without its mask
is an error, unless ``allow_missing_masks=True``: the sample then has ``mask_path=None``
and the caller skips it for the pixel metrics. A mask is anomalous where its grey value is
above 127.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_NORMAL_NAMES = ("good", "ok")  # "ok": BTAD's original name for the normal folders
_MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")

__all__ = [
    "Category",
    "Sample",
    "few_shot",
    "image_files",
    "image_paths",
    "folder",
    "loco",
    "mvtec",
    "open_dataset",
    "read_mask",
    "visa",
    "IMAGE_SUFFIXES",
    "KINDS",
]


@dataclass(frozen=True)
class Sample:
    """One test image.

    Attributes:
        path: the test image.
        label: 0 normal, 1 anomalous.
        defect: ``"good"`` or the defect folder name (VisA: ``"anomaly"``).
        mask_path: the ground-truth mask (a file, or for MVTec LOCO's official layout a folder
            of masks to unite); ``None`` for normal images and for anomalous images of a set
            without masks (or whose mask is missing, with ``allow_missing_masks=True``).
    """

    path: Path
    label: int
    defect: str
    mask_path: Optional[Path]


@dataclass(frozen=True)
class Category:
    """One class of a data set.

    Attributes:
        name: the category (folder name, VisA ``object``).
        train: the normal training images, sorted.
        test: the test samples, sorted by (defect, file name).
        has_masks: whether the set has pixel-level ground truth for this category (False for
            image-label-only sets; then every ``mask_path`` is ``None``).
    """

    name: str
    train: List[Path]
    test: List[Sample]
    has_masks: bool

    @property
    def num_anomalous(self) -> int:
        return sum(s.label for s in self.test)

    @property
    def num_masks(self) -> int:
        return sum(s.mask_path is not None for s in self.test)


# ----------------------------------------------------------------------------- helpers


def image_files(d: Path) -> List[Path]:
    """The image files of a folder (by suffix, hidden files skipped), sorted; [] if not a folder."""
    d = Path(d)
    if not d.is_dir():
        return []
    return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))



def image_paths(items: Union[PathLike, Sequence[PathLike]], recursive: bool = False) -> List[Path]:
    """Image inputs as files: a file, a folder (its images; with ``recursive``, also those of
    its sub-folders, in sorted path order), or a list of either. A missing file or a folder
    without images is a ValueError naming it."""
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    out: List[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = image_files(p)
            if recursive:
                found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                               and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in folder '{p}'"
                                 + ("" if recursive else " (sub-folders are not searched)"))
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise ValueError(f"image file '{p}' does not exist")
    return out


def _root(root: PathLike, what: str) -> Path:
    if root is None:
        raise ValueError(f"{what}: no data set root given")
    p = Path(root).expanduser()
    if not p.exists():
        raise ValueError(f"{what}: data set root '{p}' does not exist")
    if not p.is_dir():
        raise ValueError(f"{what}: data set root '{p}' is not a folder")
    return p


def _sort_key(s: Sample):
    return (s.defect, s.path.name)


def _is_category_dir(d: Path) -> bool:
    return d.is_dir() and ((d / "train").is_dir() or (d / "test").is_dir())


def _category_dirs(root: Path, categories: Optional[Sequence[str]], what: str) -> List[Path]:
    if isinstance(categories, str):
        categories = [categories]
    if _is_category_dir(root):
        # the root is one category itself (root/train, root/test)
        found = {root.name: root}
    else:
        found = {d.name: d for d in sorted(root.iterdir()) if _is_category_dir(d) and not d.name.startswith(".")}
    if not found:
        raise ValueError(
            f"{what}: no categories found in '{root}' (expected folders <category>/train/good and <category>/test)"
        )
    if categories is None:
        return [found[n] for n in sorted(found)]
    out = []
    for c in categories:
        if c not in found:
            raise ValueError(f"{what}: category '{c}' not found in '{root}' (available: {', '.join(sorted(found))})")
        out.append(found[c])
    return out


def _train_images(cat_dir: Path, what: str) -> List[Path]:
    for n in _NORMAL_NAMES:
        files = image_files(cat_dir / "train" / n)
        if files:
            return files
    raise ValueError(
        f"{what}: empty category '{cat_dir.name}': no normal training images in '{cat_dir / 'train' / 'good'}'"
    )


def _has_files(d: Path) -> bool:
    return d.is_dir() and any(True for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))


def _stem_rules(rules: Iterable[str]) -> Callable[[Path, Path, str], Optional[Path]]:
    """A resolver trying ``gt/<defect>/<rule formatted with stem>`` in order."""

    rules = tuple(rules)

    def resolve(gt: Path, image: Path, defect: str) -> Optional[Path]:
        for rule in rules:
            cand = gt / defect / rule.format(stem=image.stem, name=image.name, suffix=image.suffix)
            if cand.is_file():
                return cand
        return None

    resolve.rules = rules  # type: ignore[attr-defined]
    return resolve


def _with_suffixes(patterns: Sequence[str]) -> List[str]:
    return [p + s for p in patterns for s in _MASK_SUFFIXES]


# Known mask naming rules, tried in order.
MASK_RULES: Dict[str, List[str]] = {
    "mvtec": _with_suffixes(["{stem}_mask", "{stem}"]),
    "mpdd": _with_suffixes(["{stem}_mask", "{stem}"]),
    "btad": _with_suffixes(["{stem}", "{stem}_mask"]),
}


def _loco_resolver(gt: Path, image: Path, defect: str) -> Optional[Path]:
    d = gt / defect / image.stem
    if d.is_dir() and image_files(d):
        return d  # official layout: a folder of masks, united by read_mask
    for s in _MASK_SUFFIXES:
        for name in (image.stem + s, image.stem + "_mask" + s):
            f = gt / defect / name
            if f.is_file():
                return f
    return None


def _layout_category(cat_dir: Path, resolver, what: str, allow_missing_masks: bool) -> Category:
    train = _train_images(cat_dir, what)
    gt = cat_dir / "ground_truth"
    has_masks = _has_files(gt)
    test: List[Sample] = []
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise ValueError(f"{what}: category '{cat_dir.name}' has no test folder '{test_dir}'")
    missing: List[str] = []
    for d in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        normal = d.name in _NORMAL_NAMES
        defect = "good" if normal else d.name
        for img in image_files(d):
            mask = None
            if not normal and has_masks:
                mask = resolver(gt, img, d.name)
                if mask is None:
                    if not allow_missing_masks:
                        missing.append(str(img))
            test.append(Sample(path=img, label=0 if normal else 1, defect=defect, mask_path=mask))
    if missing:
        rules = getattr(resolver, "rules", ("<stem>/ (a folder of masks)", "<stem>.png"))
        raise ValueError(
            f"{what}: {len(missing)} anomalous test image(s) of category '{cat_dir.name}' have no mask in "
            f"'{gt}/<defect>/' (tried {', '.join(rules)}), e.g. '{missing[0]}'; "
            "pass allow_missing_masks=True (CLI: --allow-missing-masks) to keep them without pixel ground truth"
        )
    if not test:
        raise ValueError(f"{what}: category '{cat_dir.name}' has no test images in '{test_dir}'")
    test.sort(key=_sort_key)
    return Category(name=cat_dir.name, train=train, test=test, has_masks=has_masks)


# ----------------------------------------------------------------------------- readers


def mvtec(
    root: PathLike, categories: Optional[Sequence[str]] = None, *, kind: str = "mvtec", allow_missing_masks: bool = False
) -> List[Category]:
    """Read a set in the MVTec AD layout: ``<category>/train/good``, ``<category>/test/<defect|good>``,
    ``<category>/ground_truth/<defect>/``. Also MPDD (``kind="mpdd"``) and BTAD (``kind="btad"``).

    ``root`` is the set's folder (or one category folder). ``categories``: names to keep
    (default: all, sorted). Masks are resolved by the rules ``MASK_RULES[kind]``.
    """
    if kind not in MASK_RULES:
        raise ValueError(f"mvtec: unknown layout kind '{kind}' (expected one of {', '.join(MASK_RULES)})")
    r = _root(root, kind)
    resolver = _stem_rules(MASK_RULES[kind])
    return [_layout_category(d, resolver, kind, allow_missing_masks) for d in _category_dirs(r, categories, kind)]


def loco(root: PathLike, categories: Optional[Sequence[str]] = None, *, allow_missing_masks: bool = False) -> List[Category]:
    """Read MVTec LOCO AD: test types ``good``, ``logical_anomalies``, ``structural_anomalies``.

    Ground truth: the official ``ground_truth/<type>/<NNN>/`` (a folder with one mask per
    defect; ``read_mask`` unites them, > 127), or one mask per image ``ground_truth/<type>/<NNN>.png``.
    The ``validation`` split is not read.
    """
    r = _root(root, "loco")
    return [_layout_category(d, _loco_resolver, "loco", allow_missing_masks) for d in _category_dirs(r, categories, "loco")]


_VISA_COLUMNS = ("object", "split", "label", "image", "mask")


def visa(
    root: PathLike,
    categories: Optional[Sequence[str]] = None,
    split_csv: Optional[PathLike] = None,
    *,
    allow_missing_masks: bool = False,
) -> List[Category]:
    """Read VisA through its split CSV (columns ``object,split,label,image,mask``; paths relative
    to ``root``). ``split_csv``: the CSV (default ``<root>/split_csv/1cls.csv``; a relative path
    that does not exist as given is looked up under ``root``).

    Rows with split ``train`` and a normal label form the training set; the ``test`` rows the
    test set. Labels: ``normal``/``good``/``0`` are normal, ``anomaly``/``1`` (anything else)
    anomalous. VisA has no defect types: anomalous samples get ``defect="anomaly"``.
    """
    r = _root(root, "visa")
    if split_csv is None:
        csv_path = r / "split_csv" / "1cls.csv"
    else:
        csv_path = Path(split_csv)
        if not csv_path.is_file() and not csv_path.is_absolute() and (r / csv_path).is_file():
            csv_path = r / csv_path
    if not csv_path.is_file():
        raise ValueError(f"visa: split CSV '{csv_path}' does not exist (pass split_csv=..., CLI: --split-csv)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        lacking = [c for c in _VISA_COLUMNS if c not in fields]
        if lacking:
            raise ValueError(
                f"visa: split CSV '{csv_path}' lacks column(s) {', '.join(lacking)} "
                f"(expected {','.join(_VISA_COLUMNS)}; found {','.join(fields) or 'none'})"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]

    by_cat: Dict[str, Dict[str, list]] = {}
    for row in rows:
        c = by_cat.setdefault(row["object"], {"train": [], "test": []})
        split = row["split"].lower()
        if split in ("train", "test"):
            c[split].append(row)
    if not by_cat:
        raise ValueError(f"visa: no categories found in split CSV '{csv_path}'")
    if isinstance(categories, str):
        categories = [categories]
    names = sorted(by_cat) if categories is None else list(categories)
    out = []
    for name in names:
        if name not in by_cat:
            raise ValueError(f"visa: category '{name}' not found in '{csv_path}' (available: {', '.join(sorted(by_cat))})")
        rows_c = by_cat[name]

        def _is_normal(lbl: str) -> bool:
            return lbl.lower() in ("normal", "good", "0", "ok")

        train = []
        for row in rows_c["train"]:
            if not _is_normal(row["label"]):
                continue
            p = r / row["image"]
            if not p.is_file():
                raise ValueError(f"visa: training image '{p}' (listed in '{csv_path}') does not exist")
            train.append(p)
        if not train:
            raise ValueError(f"visa: empty category '{name}': no normal training rows in '{csv_path}'")
        train.sort()
        test: List[Sample] = []
        missing: List[str] = []
        for row in rows_c["test"]:
            p = r / row["image"]
            if not p.is_file():
                raise ValueError(f"visa: test image '{p}' (listed in '{csv_path}') does not exist")
            if _is_normal(row["label"]):
                test.append(Sample(p, 0, "good", None))
                continue
            mask = None
            if row["mask"]:
                m = r / row["mask"]
                if m.is_file():
                    mask = m
                elif not allow_missing_masks:
                    missing.append(f"'{m}' (for '{p}')")
            elif not allow_missing_masks:
                missing.append(f"none listed (for '{p}')")
            test.append(Sample(p, 1, "anomaly", mask))
        if missing:
            raise ValueError(
                f"visa: {len(missing)} anomalous test image(s) of category '{name}' have no mask file, e.g. mask "
                f"{missing[0]}; pass allow_missing_masks=True (CLI: --allow-missing-masks) to keep them without pixel ground truth"
            )
        if not test:
            raise ValueError(f"visa: category '{name}' has no test rows in '{csv_path}'")
        test.sort(key=_sort_key)
        out.append(Category(name=name, train=train, test=test, has_masks=any(s.mask_path is not None for s in test)))
    return out


def folder(
    normal_dir: PathLike,
    abnormal_dir: Optional[PathLike] = None,
    mask_dir: Optional[PathLike] = None,
    mask_rule: str = "{stem}_mask.png",
    test_normal_dir: Optional[PathLike] = None,
    name: str = "folder",
    *,
    allow_missing_masks: bool = False,
) -> List[Category]:
    """A one-category set from plain folders.

    ``normal_dir``: the normal training images. ``abnormal_dir``: anomalous test images, either
    directly (defect = the folder's name) or in sub-folders, one per defect type.
    ``test_normal_dir``: normal test images. ``mask_dir``: the masks, named by ``mask_rule``
    (``{stem}``, ``{name}``, ``{suffix}`` of the image), looked up in ``mask_dir/<defect>/`` and
    then ``mask_dir/``; without ``mask_dir`` the set has image-level labels only.
    """
    what = f"folder '{name}'"
    nd = _root(normal_dir, what)
    train = image_files(nd)
    if not train:
        raise ValueError(f"{what}: empty category '{name}': no images in normal folder '{nd}'")
    test: List[Sample] = []
    if test_normal_dir is not None:
        tn = _root(test_normal_dir, what)
        test += [Sample(p, 0, "good", None) for p in image_files(tn)]
    md = _root(mask_dir, what) if mask_dir is not None else None
    missing: List[str] = []
    if abnormal_dir is not None:
        ad = _root(abnormal_dir, what)
        groups = [(ad.name, image_files(ad), None)]
        groups += [(d.name, image_files(d), d.name) for d in sorted(ad.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        for defect, files, sub in groups:
            for img in files:
                mask = None
                if md is not None:
                    fname = mask_rule.format(stem=img.stem, name=img.name, suffix=img.suffix)
                    cands = ([md / sub / fname] if sub else []) + [md / fname]
                    mask = next((c for c in cands if c.is_file()), None)
                    if mask is None and not allow_missing_masks:
                        missing.append(f"'{cands[0]}' (for '{img}')")
                test.append(Sample(img, 1, defect, mask))
        if not any(s.label for s in test):
            raise ValueError(f"{what}: no images in anomalous folder '{ad}'")
    if missing:
        raise ValueError(
            f"{what}: {len(missing)} anomalous image(s) have no mask by rule '{mask_rule}', e.g. expected "
            f"{missing[0]}; pass allow_missing_masks=True (CLI: --allow-missing-masks) to keep them without pixel ground truth"
        )
    test.sort(key=_sort_key)
    return [Category(name=name, train=train, test=test, has_masks=md is not None)]


KINDS = ("mvtec", "mpdd", "btad", "loco", "visa", "folder")


def open_dataset(kind: str, root: PathLike, categories: Optional[Sequence[str]] = None, **kw) -> List[Category]:
    """Read a set of kind ``mvtec | mpdd | btad | loco | visa | folder``.

    ``folder``: ``root`` is the normal training folder; the other arguments of :func:`folder`
    go in ``kw`` (``categories`` must then be ``None`` or contain ``name``).
    """
    k = kind.lower()
    if k in ("mvtec", "mpdd", "btad"):
        return mvtec(root, categories, kind=k, **kw)
    if k == "loco":
        return loco(root, categories, **kw)
    if k == "visa":
        return visa(root, categories, **kw)
    if k == "folder":
        cats = folder(root, **kw)
        if categories is not None:
            wanted = [categories] if isinstance(categories, str) else list(categories)
            for c in wanted:
                if c != cats[0].name:
                    raise ValueError(f"folder: category '{c}' not found (the folder set is called '{cats[0].name}')")
        return cats
    raise ValueError(f"unknown data set kind '{kind}' (expected one of {', '.join(KINDS)})")


# ----------------------------------------------------------------------------- few-shot and masks


def few_shot(train: Sequence[Path], k: int, seed: int) -> List[Path]:
    """``k`` distinct images of ``train`` drawn with ``random.Random(seed)`` (in draw order).

    The same (train, k, seed) always gives the same list. ``k == 0`` gives ``[]``.
    """
    train = list(train)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"few_shot: k must be a non-negative integer, got {k!r}")
    if k > len(train):
        raise ValueError(f"few_shot: k = {k} shots requested but only {len(train)} training images are available")
    if k == 0:
        return []
    return random.Random(seed).sample(train, k)


def _load_mask(p: Path, height: Optional[int], width: Optional[int]) -> torch.Tensor:
    """One mask file through the C++ reader (:func:`pylake.read_mask`: > 127 after PIL's
    ``convert("L")``), nearest-resized (:func:`pylake.resize_mask`, as PIL) when a size is given."""
    from . import _C  # noqa: PLC0415  (datasets itself needs no extension)

    try:
        m = _C.read_mask(os.fspath(p))
    except ValueError as e:
        raise ValueError(f"mask file '{p}' could not be read: {e}") from None
    if height is not None and tuple(m.shape) != (height, width):
        m = _C.resize_mask(m, int(height), int(width))
    return m


def read_mask(sample: Sample, height: Optional[int] = None, width: Optional[int] = None,
              allow_missing: bool = False) -> Optional[torch.Tensor]:
    """The ground truth of ``sample`` as an ``(height, width)`` bool tensor (nearest resize,
    anomalous where the grey value > 127). ``height`` / ``width`` ``None``: the size of the
    sample's image file (the resolution of its anomaly map). Normal samples: all False. A
    folder of masks (MVTec LOCO) is united. An anomalous sample without a mask raises
    ``ValueError``, or gives ``None`` with ``allow_missing=True``.
    """
    if (height is None) != (width is None):
        raise ValueError(f"read_mask: pass both height and width, or neither, got {height} x {width}")
    if height is not None and (height <= 0 or width <= 0):
        raise ValueError(f"read_mask: size must be positive, got {height} x {width}")
    if height is None:
        from . import _C  # noqa: PLC0415

        img = _C.read_image(os.fspath(sample.path))
        height, width = int(img.shape[1]), int(img.shape[2])
    if sample.label == 0:
        return torch.zeros(height, width, dtype=torch.bool)
    if sample.mask_path is None:
        if allow_missing:
            return None
        raise ValueError(f"read_mask: anomalous image '{sample.path}' has no ground-truth mask")
    p = Path(sample.mask_path)
    if p.is_dir():
        files = image_files(p)
        if not files:
            raise ValueError(f"read_mask: mask folder '{p}' (for '{sample.path}') contains no mask images")
        out = torch.zeros(height, width, dtype=torch.bool)
        for f in files:
            out |= _load_mask(f, height, width)
        return out
    return _load_mask(p, height, width)
