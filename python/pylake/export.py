"""Export a CLIP ViT as LAKE's own archive: one safetensors file (format version 2).

The file holds every parameter under its OpenAI name (``visual.conv1.weight``
(D, 3, P, P), ``visual.transformer.resblocks.{i}.attn.in_proj_weight`` (3D, D),
..., ``text_projection`` (W, E), ``logit_scale`` ()) in one dtype, and in its
``__metadata__``: ``format=lake-clip``, ``format_version=2``, the activation,
every hyper-parameter, the normalisation ``mean``/``std``, ``source``, and the
CLIP BPE vocabulary (gzip, base64) under ``vocabulary_gz_base64``. The C++
loader does all the work: it reads (or is handed) the weights, infers and checks
the architecture (``lake::load_clip`` / ``lake::clip_from_state_dict``) and
writes the file (``lake::save_clip``), atomically. Old (version 1, TorchScript)
exports stay readable by ``load_clip``. See docs/archives.md, section 3.

Command line (also ``python -m pylake.export``)::

    lake export ViT-B-16.pt --out b16.lake.safetensors          # anything load_clip reads
    lake export weights.safetensors --activation gelu --out m.lake.safetensors
    lake export --open-clip ViT-B-16-plus-240 --pretrained laion400m_e32 --out b16p.lake.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from . import _C
from ._clip import ClipModel, load_clip
from ._tokenize import Tokenizer, default_vocabulary_path

__all__ = ["export_clip", "default_vocab_path", "add_arguments", "run", "main", "ACTIVATIONS", "DTYPES"]

ACTIVATIONS = ("quick_gelu", "gelu")
DTYPES = tuple(_C.save_clip_dtypes)  # lake::kSaveClipDtypes (lake/dtype.h): what save_clip writes


# --------------------------------------------------------------------------
# what the model is
# --------------------------------------------------------------------------
# The architecture (widths, layers, patch size, grid, embedding size, default heads, wrapper
# prefixes, whether the activation is known) is inferred by C++ alone
# (lake::clip_from_state_dict / lake::load_clip, src/io/clip_loader.cpp). What is here is what
# only a live nn.Module knows and its state dict cannot say: the wrapper object around it, its
# MLP activation class, its attention modules' head counts and its normalisation attributes.

def _unwrap_module(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        names = {c.__name__ for c in type(model).__mro__}
        inner = None
        if names & {"DataParallel", "DistributedDataParallel"}:
            inner = getattr(model, "module", None)
        elif "OptimizedModule" in names:
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _state_dict_of(obj: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """A state dict from a plain one or a training checkpoint (``{"state_dict": {...}}``, the
    keys C++ tries in a torch.save file: ``_C.checkpoint_state_dict_keys``). Wrapper prefixes
    ("module.") are C++'s to remove (lake::clip_from_state_dict)."""
    for key in _C.checkpoint_state_dict_keys:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"expected a state dict (names -> tensors): entries {bad[:5]} are not tensors")
    if not obj:
        raise ValueError("expected a state dict (names -> tensors), got an empty mapping")
    return dict(obj)


def _class_names(mod: nn.Module) -> Tuple[str, ...]:
    names = [c.__name__ for c in type(mod).__mro__]
    original = getattr(mod, "original_name", None)  # a TorchScript module: the Python class name
    if isinstance(original, str):
        names.insert(0, original)
    return tuple(names)


def _submodule(model: nn.Module, name: str) -> Optional[nn.Module]:
    return dict(model.named_modules()).get(name)


def _detect_activation(model: nn.Module) -> str:
    """'quick_gelu' / 'gelu' from the class of the first vision block's MLP activation (a state
    dict holds no activation: C++ can only assume one, see ClipConfig.activation_assumed)."""
    mlp = _submodule(model, "visual.transformer.resblocks.0.mlp")
    children = dict(mlp.named_children()) if mlp is not None else {}
    act = children.get("gelu")
    candidates = [act] if act is not None else [m for n, m in children.items() if n not in ("c_fc", "c_proj")]
    for m in candidates:
        names = _class_names(m)
        if "QuickGELU" in names:
            return "quick_gelu"
        if "GELU" in names:
            approx = getattr(m, "approximate", "none")
            if isinstance(approx, str) and approx != "none":
                raise ValueError(f"GELU with approximate={approx!r} is not supported "
                                 "(LAKE implements exact gelu and quick_gelu)")
            return "gelu"
    found = ", ".join(_class_names(m)[0] for m in candidates) or "nothing"
    raise ValueError(f"cannot tell the MLP activation of this model (found {found} in "
                     "visual.transformer.resblocks.0.mlp); pass activation='quick_gelu' or 'gelu'")


def _heads_of(model: nn.Module, attn_name: str) -> int:
    """The module's own head count (the state dict's in_proj_weight is (3D, D) for any head
    count); 0 (C++: recorded, else width / 64, OpenAI's rule) when it has none."""
    attn = _submodule(model, attn_name)
    heads = getattr(attn, "num_heads", None) if attn is not None else None
    return heads if isinstance(heads, int) and heads > 0 else 0


def _normalisation_of(model: nn.Module) -> Tuple[list, list]:
    """open_clip's ``visual.preprocess_cfg`` / ``image_mean`` / ``image_std`` (module attributes,
    not tensors), else [] (C++: OpenAI's)."""
    visual = getattr(model, "visual", None)
    cfg = getattr(visual, "preprocess_cfg", None) if visual is not None else None
    cfg = cfg if isinstance(cfg, Mapping) else {}
    out = []
    for key, attr in (("mean", "image_mean"), ("std", "image_std")):
        v = cfg.get(key)
        v = v if v is not None else getattr(visual, attr, None)
        if v is None:
            out.append([])
            continue
        v = [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]
        if len(v) != 3:
            raise ValueError(f"expected 3 normalisation values for {key}, got {v}")
        out.append(v)
    return out[0], out[1]


def _as_clip_model(model: Any, activation: Optional[str]) -> ClipModel:
    """A ClipModel built by the C++ loader from whatever ``model`` is. An export records the
    activation, so one that C++ could only assume (``config.activation_assumed``: a bare state
    dict, in memory or a file) is a ValueError rather than the loader's warning."""
    if isinstance(model, ClipModel):
        return model
    with warnings.catch_warnings():  # the error below says it better
        warnings.filterwarnings("ignore", message=".*does not record its MLP activation")
        if isinstance(model, (str, os.PathLike)):
            clip, what = load_clip(model, activation=activation), f"{os.fspath(model)} is a bare state dict, which"
        elif isinstance(model, (nn.Module, Mapping)):
            clip, what = _from_memory(model, activation), "a bare state dict"
        else:
            raise ValueError(f"cannot export a {type(model).__name__}: expected a path or model name, a "
                             "pylake.ClipModel, an open_clip CLIP module, an OpenAI TorchScript module or a "
                             "state dict")
    if clip.config.activation_assumed:
        raise ValueError(f"{what} does not say which activation its MLP uses: pass "
                         "activation='quick_gelu' (OpenAI CLIP) or 'gelu' (most OpenCLIP-trained models); "
                         "CLI: --activation")
    return clip


def _from_memory(model: Union[nn.Module, Mapping[str, Any]], activation: Optional[str]) -> ClipModel:
    """lake::clip_from_state_dict of a module's state dict (with what only the module knows) or
    of a mapping."""
    mean, std = [], []
    vision_heads = text_heads = 0
    if isinstance(model, nn.Module):
        model = _unwrap_module(model)
        if activation is None:
            activation = _detect_activation(model)
        vision_heads = _heads_of(model, "visual.transformer.resblocks.0.attn")
        text_heads = _heads_of(model, "transformer.resblocks.0.attn")
        mean, std = _normalisation_of(model)
        tensors, name = model.state_dict(), f"<{type(model).__name__} module>"
    else:
        tensors, name = _state_dict_of(model), "<state dict>"
    tensors = {k: v.detach() for k, v in tensors.items()}
    return _C.clip_from_state_dict(tensors, activation, vision_heads, text_heads, name, mean, std)


# --------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------

# The one vocabulary lookup ($LAKE_BPE_VOCAB, else OpenCLIP's copy), under export's old name.
default_vocab_path = default_vocabulary_path


def _read_vocab(path: Union[str, os.PathLike]) -> bytes:
    """The bytes of a BPE merges file, checked first by the C++ reader (within its size and
    decompression limits, docs/archives.md "Limits"): a bad or oversized file is a ValueError
    naming it, and nothing is read past the limit."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as e:
        raise ValueError(f"cannot read the vocabulary {path}: {e.strerror}") from None
    if magic != b"\x1f\x8b":
        raise ValueError(f"{path} is not a gzip-compressed BPE merges file (CLIP's bpe_simple_vocab_16e6.txt.gz): "
                         "an export embeds the gzipped file")
    try:
        Tokenizer.from_file(path)
    except RuntimeError as e:  # a malformed merges file is bad input
        raise ValueError(str(e)) from None
    with open(path, "rb") as f:
        return f.read()


def _vocabulary_for(clip: ClipModel, vocab_path: Optional[str]) -> bytes:
    """``vocab_path``, else the model's own (b"": C++ re-embeds it), else open_clip's."""
    if vocab_path is not None:
        return _read_vocab(vocab_path)
    if clip.tokenizer() is not None:
        return b""
    path = default_vocab_path()
    if path is None:
        raise ValueError("no CLIP BPE vocabulary to embed: the model has none and open_clip is not installed; "
                         "pass vocab_path= (CLI: --vocab) pointing at bpe_simple_vocab_16e6.txt.gz")
    return _read_vocab(path)


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------

def export_clip(
    model: Any,
    path: Union[str, os.PathLike],
    *,
    activation: Optional[str] = None,
    vocab_path: Optional[Union[str, os.PathLike]] = None,
    dtype: Union[str, torch.dtype] = "float32",
    source: str = "",
) -> Dict[str, str]:
    """Write ``model`` to ``path`` as a LAKE export (safetensors, format version 2).

    model: a path or model name (read with ``pylake.load_clip(model, activation=activation)``),
      a ``pylake.ClipModel``, an open_clip ``CLIP`` (ViT), an OpenAI TorchScript module
      already loaded, or an OpenAI-layout state dict / OpenCLIP training checkpoint mapping.
    activation: 'quick_gelu' | 'gelu'; None: what the file says, or detected from the
      module's classes; required for a bare state dict (in memory or a file).
    vocab_path: the BPE merges file (.txt.gz) to embed; default the model's own (a LAKE
      export's), else open_clip's bundled one.
    dtype: the stored weights' dtype: 'float32' (default), 'float16', 'bfloat16' (or their
      aliases 'float', 'half'; or the torch.dtype).
    source: free text recorded as ``source`` (newlines folded to spaces).

    Written atomically: on any failure nothing is left behind and an existing ``path`` is
    unchanged. Returns the metadata written (without the vocabulary).
    Raises ValueError for bad arguments and for anything the C++ loader rejects (non-ViT
    models, missing or misshapen parameters), naming what was expected.
    """
    path = os.fspath(path)
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    dtype_name = _C.dtype_name(_C.check_dtype(dtype, "save_clip"))  # before any loading
    clip = _as_clip_model(model, activation)
    vocabulary = _vocabulary_for(clip, vocab_path)
    return dict(_C.save_clip(clip, path, dtype_name, vocabulary, " ".join(str(source).split())))


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``lake export`` options."""
    p.add_argument("model", nargs="?", metavar="SOURCE",
                   help="anything pylake.load_clip reads: an OpenAI .pt, a state dict (.pt / .safetensors), a "
                        "transformers or OpenCLIP hub folder, a LAKE export (v1 or v2), a model name")
    p.add_argument("--open-clip", metavar="NAME",
                   help="instead of SOURCE: an open_clip model name, e.g. ViT-B-16 (built with "
                        "open_clip.create_model_and_transforms; the --pretrained weights must already be "
                        "available locally / in the cache: nothing is downloaded when offline)")
    p.add_argument("--pretrained", metavar="TAG_OR_FILE", default=None,
                   help="with --open-clip: pretrained tag (e.g. openai, laion2b_s34b_b88k) or a local checkpoint")
    p.add_argument("--cache-dir", default=None, help="with --open-clip: open_clip cache folder")
    p.add_argument("--out", required=True, help="the file to write (e.g. model.lake.safetensors)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the stored weights (float32)")
    p.add_argument("--activation", choices=ACTIVATIONS, default=None,
                   help="MLP activation; default what SOURCE says or the module's; required for a bare state dict")
    p.add_argument("--vocab", default=None,
                   help="BPE merges file to embed (default: the model's own, else open_clip's bundled "
                        "bpe_simple_vocab_16e6.txt.gz)")
    p.add_argument("--source", default=None, help="free text stored as the source (default: the input)")


def _open_clip_model(name: str, pretrained: Optional[str], cache_dir: Optional[str]) -> nn.Module:
    try:
        import open_clip  # noqa: PLC0415
    except ImportError:
        raise ValueError("--open-clip needs the open_clip_torch package") from None
    try:
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, cache_dir=cache_dir,
                                                            device="cpu")
    except Exception as e:
        raise ValueError(f"open_clip could not build {name!r} with pretrained={pretrained!r} (the weights must "
                         f"already be available locally or in the cache): {e}") from None
    return model.eval()


def run(args: argparse.Namespace) -> int:
    """``lake export``: raises ValueError on bad input (the caller prints it, exit status 2)."""
    if (args.model is None) == (args.open_clip is None):
        raise ValueError("give either SOURCE or --open-clip NAME (one of them)")
    if args.open_clip is None and (args.pretrained is not None or args.cache_dir is not None):
        raise ValueError("--pretrained and --cache-dir go with --open-clip")
    if args.open_clip is not None:
        model = _open_clip_model(args.open_clip, args.pretrained, args.cache_dir)
        source = f"open_clip:{args.open_clip}" + (f"/{args.pretrained}" if args.pretrained else "")
    else:
        model = source = args.model
    meta = export_clip(model, args.out, activation=args.activation, vocab_path=args.vocab, dtype=args.dtype,
                       source=args.source if args.source is not None else source)
    print(json.dumps({"out": args.out, **meta}), flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pylake.export", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
