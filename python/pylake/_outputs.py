"""Writing results: atomic files, strict JSON, per-image tables, output names that cannot
collide, and the marker of an unfinished run. Used by `lake predict`, `lake eval` and
:mod:`pylake.evaluate` (one place for these rules)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from . import _C

PathLike = Union[str, os.PathLike]

INCOMPLETE = "INCOMPLETE"  # the marker file of a run that has not finished (or failed)


# ----------------------------------------------------------------------------- files

def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, through LAKE's one atomic writer
    (``lake::write_file_atomically``, GIL released): a temporary file in the same folder,
    fsynced, then renamed over ``path``. On failure (a ValueError when the temporary file
    cannot be created, a RuntimeError when writing fails, naming the file and the cause) the
    temporary file is removed and an existing file at ``path`` is left as it was. Missing
    parent folders are created first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _C.write_file_atomically(path, data, "write_bytes")
    return path


def write_text(path: PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def save_npy(path: PathLike, array: Union[np.ndarray, torch.Tensor]) -> Path:
    """``np.save`` of ``array``, written atomically."""
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def write_png(path: PathLike, image: torch.Tensor) -> Path:
    """A PNG through the C++ encoder (atomic): (H, W) uint8/uint16 grey or (3, H, W) uint8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _C.write_png(path, image)
    return path


# ----------------------------------------------------------------------------- JSON

def finite_or_none(x: Any) -> Any:
    """NaN and infinities (undefined metrics) become ``None``, recursively; numpy/torch
    scalars become Python numbers."""
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    if isinstance(x, (np.generic, torch.Tensor)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def dumps(obj: Any) -> str:
    """Strict JSON (RFC 8259): undefined metrics are ``null``, never a bare ``NaN``."""
    return json.dumps(finite_or_none(obj), indent=2, allow_nan=False, default=str)


# ----------------------------------------------------------------------------- tables

def write_table(rows: Sequence[Dict[str, Any]], stem: PathLike, fields: Optional[Sequence[str]] = None,
                formats: Sequence[str] = ("csv", "json")) -> Dict[str, Path]:
    """``rows`` as ``<stem>.csv`` (an empty cell for ``None``) and/or ``<stem>.json`` (a list
    of objects, strict JSON), each written atomically. Floats keep every digit (``repr``)."""
    stem = Path(stem)
    fields = list(fields or (rows[0].keys() if rows else []))
    written: Dict[str, Path] = {}
    if "csv" in formats:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if finite_or_none(r.get(k)) is None else finite_or_none(r.get(k)) for k in fields})
        written["csv"] = write_text(stem.with_suffix(".csv"), buf.getvalue())
    if "json" in formats:
        written["json"] = write_text(stem.with_suffix(".json"), dumps([{k: r.get(k) for k in fields} for r in rows]) + "\n")
    return written


# ----------------------------------------------------------------------------- names

def output_keys(paths: Sequence[PathLike]) -> List[str]:
    """A distinct output name per input: its path relative to the inputs' common folder
    (with its suffix, so ``a.png`` and ``a.jpg`` stay apart). Outputs are then named
    ``<key><suffix>`` in mirrored folders, a one-to-one map by construction. The same
    file listed twice is a ValueError."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    seen: Dict[Path, int] = {}
    for i, p in enumerate(absolute):
        if p in seen:
            raise ValueError(f"image '{paths[i]}' is listed twice (also as '{paths[seen[p]]}'): each input "
                             "gets one set of outputs, so list every image once")
        seen[p] = i
    if not absolute:
        return []
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    return [p.relative_to(root).as_posix() for p in absolute]


# ----------------------------------------------------------------------------- run marker

class RunMarker:
    """The output folder of a running command holds ``INCOMPLETE`` (what ran, since when);
    :meth:`done` removes it once every output is written. A failed or interrupted run
    leaves it, so its folder is clearly marked as unfinished; files written so far are
    each complete (atomic)."""

    def __init__(self, out: PathLike, command: str) -> None:
        self.out = Path(out)
        self.path = self.out / INCOMPLETE
        write_text(self.path, f"{command}\nstarted {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                              "This run has not finished (or it failed): the outputs in this folder are partial.\n")

    def done(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
