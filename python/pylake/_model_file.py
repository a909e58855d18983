"""Reading a ``.lake`` file's contents for inspection, without a backbone and without running
code from the file (:func:`read_model_file`). The layout is in docs/method.md ("Save and load")."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple, Union

import torch

# safetensors dtype names -> torch dtypes (those a .lake file can hold).
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_MAX_HEADER_BYTES = 100 << 20  # as the C++ reader (detail::SafetensorsLimits)
METADATA_KEY = "lake-normality"


def read_model_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The contents of a ``.lake`` file, for inspection without a backbone. No code from the
    file runs: format version 2 (safetensors + a JSON header) is parsed here with ``json``
    and every tensor is checked against the data area; version 1 (a ``torch.save`` zip) is
    read with ``torch.load(weights_only=True)``, allowing only TorchScript's typed-list
    builders (LibTorch's pickler writes them; they return their argument).

    Both versions give one dict (CPU tensors)::

        format           "lake-normality"
        format_version   1 or 2
        lake_version     the writer's version
        backbone_fingerprint, backbone   the backbone's identity, and ClipConfig.describe():
                         v2: ClipModel.weights_fingerprint (the image tower as stored in its
                         archive); v1: ClipModel.fingerprint() (the parameters as loaded)
        backbone_config  v2: {weights_fingerprint, describe, activation, vision_heads,
                         patch_size, vision_width, embed_dim, image_mean, image_std}; v1: None
        options          {layers, k, score, seed, kind, image_size, text_weight, class_name,
                         normal_prompts, anomaly_prompts, semantic_layer, pooling, blur_sigma,
                         gallery_tile, batch_size}
        shots, channels  int
        neurons          [{layer, indices (K) int64, scores, mean, std (K) float64}] per tapped block
        galleries        [(M, K) float32] per tapped block
        text_embeddings  (2, E) float32 or None
        image_threshold, pixel_threshold   float or None
        checksum         16 hex digits

    Bad files are a ``ValueError`` naming the file (a crafted pickle: ``pickle.UnpicklingError``).
    To use a model, call :meth:`NormalityModel.load`, which checks every field against the
    file and the backbone."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return _read_v1(path)
    if len(head) == 9 and head[8:9] == b"{":
        return _read_v2(path)
    raise ValueError(f"'{path}' is not a LAKE normality model file (expected the safetensors file of format "
                     "version 2, or the zip archive of version 1, written by NormalityModel.save)")


def _read_safetensors(path: str) -> Tuple[Dict[str, str], Dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file, every header entry checked against the file."""
    data = memoryview(open(path, "rb").read())

    def bad(what: str) -> ValueError:
        return ValueError(f"normality model file '{path}': {what}")

    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if n < 2 or n > _MAX_HEADER_BYTES or 8 + n > len(data):
        raise bad(f"is truncated or corrupted: a safetensors header of {n} bytes in a file of {len(data)}")
    try:
        header = json.loads(bytes(data[8:8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"is truncated or corrupted: its safetensors header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("is corrupted: its safetensors header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict):
        raise bad("is corrupted: '__metadata__' is not an object")
    body = data[8 + n:]
    tensors = {}
    for name, e in header.items():
        dtype = _DTYPES.get(e.get("dtype")) if isinstance(e, dict) else None
        shape, offsets = (e.get("shape"), e.get("data_offsets")) if isinstance(e, dict) else (None, None)
        if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise bad(f"tensor '{name}' has a bad dtype or shape: {e}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= len(body)):
            raise bad(f"is truncated or corrupted: tensor '{name}' has data_offsets {offsets} outside the "
                      f"{len(body)} data bytes")
        numel = 1
        for s in shape:
            numel *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if offsets[1] - offsets[0] != numel * itemsize:
            raise bad(f"tensor '{name}' spans {offsets[1] - offsets[0]} bytes, but {e['dtype']} x {shape} "
                      f"needs {numel * itemsize}")
        raw = bytearray(body[offsets[0]:offsets[1]])
        tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(shape) if numel else torch.empty(shape, dtype=dtype)
    return {k: v for k, v in meta.items() if isinstance(v, str)}, tensors


def _read_v2(path: str) -> Dict[str, Any]:
    meta, tensors = _read_safetensors(path)
    if METADATA_KEY not in meta:
        raise ValueError(f"'{path}' is not a LAKE normality model file (a safetensors file without the "
                         f"'{METADATA_KEY}' metadata entry)")
    try:
        h = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"normality model file '{path}': its '{METADATA_KEY}' metadata is not valid JSON "
                         f"(corrupted?): {e}") from None

    def tensor(name: str) -> torch.Tensor:
        if name not in tensors:
            raise ValueError(f"normality model file '{path}' has no tensor '{name}'")
        return tensors[name]

    try:
        if h.get("format") != "lake-normality":
            raise ValueError(f"'{path}' is not a LAKE normality model file (no format=lake-normality)")
        neurons = [{"layer": n["layer"], **{k: tensor(f"neurons.{i}.{k}") for k in ("indices", "scores", "mean", "std")}}
                   for i, n in enumerate(h["neurons"])]
        return {
            "format": h["format"], "format_version": h["format_version"], "lake_version": h["lake_version"],
            "backbone_fingerprint": h["backbone"]["weights_fingerprint"], "backbone": h["backbone"]["describe"],
            "backbone_config": h["backbone"], "options": h["options"], "shots": h["shots"],
            "channels": h["channels"], "neurons": neurons,
            "galleries": [tensor(f"galleries.{i}") for i in range(len(neurons))],
            "text_embeddings": tensor("text_embeddings") if h["text_embeddings"] else None,
            "image_threshold": h["image_threshold"], "pixel_threshold": h["pixel_threshold"],
            "checksum": h["checksum"],
        }
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"normality model file '{path}': its header lacks or misshapes {e} (corrupted?)") from None


def _read_v1(path: str) -> Dict[str, Any]:
    import torch.jit._pickle as jit_pickle  # noqa: PLC0415

    builders = [jit_pickle.restore_type_tag, jit_pickle.build_intlist, jit_pickle.build_doublelist,
                jit_pickle.build_boollist, jit_pickle.build_tensorlist]
    with torch.serialization.safe_globals(builders):
        raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != "lake-normality":
        raise ValueError(f"'{path}' is not a LAKE normality model file (no format=lake-normality)")
    out = dict(raw)
    out.setdefault("backbone_config", None)
    if isinstance(out.get("options"), dict):
        out["options"] = dict(out["options"])
        out["options"].setdefault("batch_size", 1)  # written since a later version 1
    return out
