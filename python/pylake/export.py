"""Export a CLIP ViT model to LAKE's self-contained TorchScript archive.

This module depends on ``torch`` only (``open_clip`` is used when present or
when asked for); it never imports ``pylake._C``, so it runs where the compiled
extension is not built.

Archive layout (one file, written by ``torch.jit.save``):

* a scripted container module whose ``named_parameters()`` are exactly the
  model's OpenAI-layout state-dict entries (``visual.conv1.weight``
  (D, 3, P, P), ``visual.class_embedding`` (D,),
  ``visual.positional_embedding`` (1 + G*G, D), ``visual.ln_pre.{weight,bias}``
  (D,), ``visual.transformer.resblocks.{i}.attn.in_proj_weight`` (3D, D), ...,
  ``visual.proj`` (D, E), ``token_embedding.weight`` (V, W),
  ``positional_embedding`` (L, W), ``text_projection`` (W, E),
  ``logit_scale`` ()), all in one dtype (float32 by default);
* ``extra/lake_config.txt``: ``key=value`` lines (see :data:`CONFIG_KEYS`);
* ``extra/lake_vocab.txt.gz``: the CLIP BPE merges file, byte for byte.

Command line::

    python -m pylake.export --open-clip ViT-B-16 --pretrained openai --out b16.pt
    python -m pylake.export --state-dict ckpt.pt --activation gelu --out model.pt
    python -m pylake.export --openai-jit ViT-B-16.pt --out model.pt
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import math
import os
import re
import sys
import warnings
import zipfile
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

__all__ = [
    "export_clip",
    "infer_config",
    "read_export",
    "parse_config",
    "format_config",
    "load_state_dict_file",
    "load_openai_jit",
    "default_vocab_path",
    "CONFIG_KEYS",
    "ACTIVATIONS",
    "main",
]

FORMAT = "lake-clip"
FORMAT_VERSION = 1
CONFIG_FILE = "lake_config.txt"
VOCAB_FILE = "lake_vocab.txt.gz"
ACTIVATIONS = ("quick_gelu", "gelu")
CONFIG_KEYS = (
    "format", "format_version", "activation",
    "image_size", "patch_size", "vision_width", "vision_layers", "vision_heads",
    "embed_dim", "context_length", "vocab_size", "text_width", "text_layers", "text_heads",
    "mean", "std", "source",
)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
# OpenAI archives carry these int64 scalars in their state_dict; open_clip's
# traced models also carry the causal attention mask. None are weights.
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")

_BLOCK_LEAVES = (
    "ln_1.weight", "ln_1.bias",
    "attn.in_proj_weight", "attn.in_proj_bias",
    "attn.out_proj.weight", "attn.out_proj.bias",
    "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias",
)


# --------------------------------------------------------------------------
# container module
# --------------------------------------------------------------------------

class LakeNode(nn.Module):
    """A plain node of the parameter tree (no forward of its own)."""


class LakeClipWeights(nn.Module):
    """Root of the exported parameter tree; ``forward`` is a placeholder so
    ``torch.jit.script`` has a method to compile."""

    def forward(self) -> int:
        return 1  # == FORMAT_VERSION (TorchScript cannot read module globals)


def _build_container(state: Mapping[str, torch.Tensor]) -> nn.Module:
    root = LakeClipWeights()
    for name, tensor in state.items():
        parts = name.split(".")
        node: nn.Module = root
        for part in parts[:-1]:
            child = node._modules.get(part)
            if child is None:
                if part in node._parameters:
                    raise ValueError(f"{name!r}: {part!r} is both a parameter and a module")
                child = LakeNode()
                node.add_module(part, child)
            node = child
        leaf = parts[-1]
        if leaf in node._modules:
            raise ValueError(f"{name!r}: {leaf!r} is both a parameter and a module")
        node.register_parameter(leaf, nn.Parameter(tensor.detach(), requires_grad=False))
    return root


# --------------------------------------------------------------------------
# reading a model's weights and hyper-parameters
# --------------------------------------------------------------------------

def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    keys = list(sd)
    for prefix in ("module.", "_orig_mod."):
        if keys and all(k.startswith(prefix) for k in keys):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
            keys = list(sd)
    return dict(sd)


def _unwrap_checkpoint(obj: Any) -> Dict[str, torch.Tensor]:
    """A state dict from a plain state dict or a training checkpoint
    (``{"state_dict": {...}}`` / ``{"model": {...}}``), "module." removed."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (mapping of names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"not a state dict: entries {bad[:5]} are not tensors")
    return _strip_prefix(obj)


def _unwrap_module(model: Any) -> Any:
    # DataParallel / DistributedDataParallel / torch.compile wrappers
    while isinstance(model, nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


def _weights_of(model: Any) -> Dict[str, torch.Tensor]:
    if isinstance(model, (nn.Module, torch.jit.ScriptModule)):
        sd = model.state_dict()
    else:
        sd = _unwrap_checkpoint(model)
    return OrderedDict((k, v) for k, v in _strip_prefix(sd).items() if k not in _NON_WEIGHT_KEYS)


def _block_indices(sd: Mapping[str, torch.Tensor], prefix: str) -> list:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd for m in [pat.match(k)] if m})


def _reject_non_vit(sd: Mapping[str, torch.Tensor]) -> None:
    keys = list(sd)
    resnet = [k for k in keys if k.startswith(("visual.layer1.", "visual.attnpool.", "visual.bn1."))]
    if resnet:
        shown = [k for k in ("visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding")
                 if k in sd] or sorted(resnet)[:2]
        raise ValueError(
            "this is a ResNet CLIP (OpenAI ModifiedResNet vision tower: found "
            f"{', '.join(shown)}, ...); LAKE reads ViT CLIP models only")
    timm = [k for k in keys if k.startswith("visual.trunk.")]
    if timm:
        raise ValueError(f"this is a timm-backbone CLIP (found {timm[0]}, ...); LAKE reads "
                         "OpenAI-layout ViT CLIP models only")
    hf = [k for k in keys if k.startswith(("vision_model.", "text_model.", "text."))]
    if hf and "visual.conv1.weight" not in sd:
        raise ValueError(f"unsupported layout (found {hf[0]}, ...): LAKE reads OpenAI-layout "
                         "ViT CLIP models (visual.conv1.weight, visual.transformer.resblocks.N...)")
    needed = ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding",
              "visual.proj", "token_embedding.weight", "positional_embedding", "ln_final.weight",
              "text_projection")
    missing = [k for k in needed if k not in sd]
    if missing:
        sample = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise ValueError(f"not an OpenAI-layout ViT CLIP: missing {missing} (keys found: {sample})")


def _submodule(model: Any, name: str) -> Optional[nn.Module]:
    if not isinstance(model, nn.Module):
        return None
    try:
        return dict(model.named_modules()).get(name)
    except Exception:  # pragma: no cover
        return None


def _class_names(mod: nn.Module) -> Tuple[str, ...]:
    names = [c.__name__ for c in type(mod).__mro__]
    original = getattr(mod, "original_name", None)  # ScriptModule: the Python class name
    if isinstance(original, str):
        names.insert(0, original)
    return tuple(names)


def _detect_activation(model: Any) -> Optional[str]:
    """'quick_gelu' / 'gelu' from the first vision block's MLP activation
    module, None when ``model`` has no modules (a state dict)."""
    mlp = _submodule(model, "visual.transformer.resblocks.0.mlp")
    if mlp is None:
        return None
    children = dict(mlp.named_children())  # (ScriptModule._modules has no .get)
    act = children.get("gelu")
    candidates = [act] if act is not None else [
        m for n, m in children.items() if n not in ("c_fc", "c_proj")]
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


def _heads_of(model: Any, attn_name: str, width: int) -> int:
    attn = _submodule(model, attn_name)
    heads = getattr(attn, "num_heads", None) if attn is not None else None
    if isinstance(heads, int) and heads > 0:
        return heads
    return max(1, width // 64)  # OpenAI's rule (build_model)


def _preprocess_of(model: Any) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    visual = getattr(model, "visual", None) if isinstance(model, nn.Module) else None
    mean = std = None
    if visual is not None:
        cfg = getattr(visual, "preprocess_cfg", None)
        if isinstance(cfg, Mapping):
            mean, std = cfg.get("mean"), cfg.get("std")
        mean = mean if mean is not None else getattr(visual, "image_mean", None)
        std = std if std is not None else getattr(visual, "image_std", None)

    def norm(v, default):
        if v is None:
            return default
        if isinstance(v, (int, float)):
            v = (v, v, v)
        v = tuple(float(x) for x in v)
        if len(v) != 3:
            raise ValueError(f"expected 3 normalisation values, got {v}")
        return v

    return norm(mean, OPENAI_MEAN), norm(std, OPENAI_STD)


def infer_config(model: Any, activation: Optional[str] = None, source: str = "") -> Dict[str, str]:
    """Hyper-parameters of a CLIP ViT, inferred from parameter shapes like
    OpenAI's ``build_model``; returned as the ``lake_config.txt`` mapping
    (all values strings, ordered as :data:`CONFIG_KEYS`).

    model: an ``nn.Module`` (open_clip ``CLIP``, a loaded OpenAI TorchScript
      archive, ...) or a state dict / training checkpoint mapping.
    activation: 'quick_gelu' or 'gelu'; None detects it from the module
      (required for a bare state dict).
    Raises ValueError for non-ViT models (ResNet, timm, HF layouts), missing or
    unexpected parameters, and inconsistent shapes.
    """
    model = _unwrap_module(model)
    sd = _weights_of(model)
    return _infer(model, sd, activation, source)


def _infer(model: Any, sd: Mapping[str, torch.Tensor], activation: Optional[str], source: str) -> Dict[str, str]:
    if activation is not None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    _reject_non_vit(sd)

    conv = sd["visual.conv1.weight"]
    if conv.dim() != 4 or conv.shape[1] != 3 or conv.shape[2] != conv.shape[3]:
        raise ValueError(f"visual.conv1.weight has shape {tuple(conv.shape)}; expected (D, 3, P, P)")
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    v_layers = _block_indices(sd, "visual.transformer.resblocks.")
    t_layers = _block_indices(sd, "transformer.resblocks.")
    if not v_layers or v_layers != list(range(len(v_layers))):
        raise ValueError(f"vision blocks are not numbered 0..n-1: {v_layers}")
    if not t_layers or t_layers != list(range(len(t_layers))):
        raise ValueError(f"text blocks are not numbered 0..n-1: {t_layers}")
    pos = sd["visual.positional_embedding"]
    grid = int(round(math.sqrt(pos.shape[0] - 1)))
    if pos.dim() != 2 or grid * grid != pos.shape[0] - 1 or pos.shape[1] != width:
        raise ValueError(f"visual.positional_embedding has shape {tuple(pos.shape)}; expected "
                         f"(1 + grid*grid, {width})")
    embed_dim = int(sd["visual.proj"].shape[1])
    if tuple(sd["visual.proj"].shape) != (width, embed_dim):
        raise ValueError(f"visual.proj has shape {tuple(sd['visual.proj'].shape)}")
    vocab_size, text_width = (int(s) for s in sd["token_embedding.weight"].shape)
    context_length = int(sd["positional_embedding"].shape[0])
    if tuple(sd["text_projection"].shape) != (text_width, embed_dim):
        raise ValueError(f"text_projection has shape {tuple(sd['text_projection'].shape)}; "
                         f"expected ({text_width}, {embed_dim})")

    expected = {"visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding",
                "visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight",
                "visual.ln_post.bias", "visual.proj", "token_embedding.weight",
                "positional_embedding", "ln_final.weight", "ln_final.bias", "text_projection",
                "logit_scale"}
    for i in v_layers:
        expected.update(f"visual.transformer.resblocks.{i}.{leaf}" for leaf in _BLOCK_LEAVES)
    for i in t_layers:
        expected.update(f"transformer.resblocks.{i}.{leaf}" for leaf in _BLOCK_LEAVES)
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        msg = []
        if missing:
            msg.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            msg.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        raise ValueError("parameters do not match the OpenAI CLIP ViT layout: " + "; ".join(msg))

    _check_shapes(sd, width, patch, grid, embed_dim, text_width, context_length, vocab_size,
                  len(v_layers), len(t_layers))

    v_heads = _heads_of(model, "visual.transformer.resblocks.0.attn", width)
    t_heads = _heads_of(model, "transformer.resblocks.0.attn", text_width)
    if width % v_heads or text_width % t_heads:
        raise ValueError(f"widths {width}/{text_width} not divisible by heads {v_heads}/{t_heads}")

    if activation is None:
        activation = _detect_activation(model)
        if activation is None:
            raise ValueError("a bare state dict does not say which activation the model uses: "
                             "pass activation='quick_gelu' (OpenAI CLIP) or 'gelu' "
                             "(most OpenCLIP-trained models)")
    mean, std = _preprocess_of(model)
    source = " ".join(str(source).split())  # one line

    cfg = OrderedDict()
    cfg["format"] = FORMAT
    cfg["format_version"] = str(FORMAT_VERSION)
    cfg["activation"] = activation
    cfg["image_size"] = str(patch * grid)
    cfg["patch_size"] = str(patch)
    cfg["vision_width"] = str(width)
    cfg["vision_layers"] = str(len(v_layers))
    cfg["vision_heads"] = str(v_heads)
    cfg["embed_dim"] = str(embed_dim)
    cfg["context_length"] = str(context_length)
    cfg["vocab_size"] = str(vocab_size)
    cfg["text_width"] = str(text_width)
    cfg["text_layers"] = str(len(t_layers))
    cfg["text_heads"] = str(t_heads)
    cfg["mean"] = ",".join(repr(x) for x in mean)
    cfg["std"] = ",".join(repr(x) for x in std)
    cfg["source"] = source
    return dict(cfg)


def _check_shapes(sd: Mapping[str, torch.Tensor], width: int, patch: int, grid: int, embed: int,
                  text_width: int, context: int, vocab: int, v_layers: int, t_layers: int) -> None:
    """Every parameter's shape against the one the hyper-parameters imply
    (the MLP width M is read from each tower's first block)."""
    expected: Dict[str, Tuple[int, ...]] = {
        "visual.conv1.weight": (width, 3, patch, patch),
        "visual.class_embedding": (width,),
        "visual.positional_embedding": (grid * grid + 1, width),
        "visual.ln_pre.weight": (width,), "visual.ln_pre.bias": (width,),
        "visual.ln_post.weight": (width,), "visual.ln_post.bias": (width,),
        "visual.proj": (width, embed),
        "token_embedding.weight": (vocab, text_width),
        "positional_embedding": (context, text_width),
        "ln_final.weight": (text_width,), "ln_final.bias": (text_width,),
        "text_projection": (text_width, embed),
    }
    for prefix, d, n in (("visual.transformer.resblocks.", width, v_layers),
                         ("transformer.resblocks.", text_width, t_layers)):
        m = int(sd[f"{prefix}0.mlp.c_fc.weight"].shape[0])
        for i in range(n):
            b = f"{prefix}{i}."
            expected.update({
                b + "ln_1.weight": (d,), b + "ln_1.bias": (d,),
                b + "attn.in_proj_weight": (3 * d, d), b + "attn.in_proj_bias": (3 * d,),
                b + "attn.out_proj.weight": (d, d), b + "attn.out_proj.bias": (d,),
                b + "ln_2.weight": (d,), b + "ln_2.bias": (d,),
                b + "mlp.c_fc.weight": (m, d), b + "mlp.c_fc.bias": (m,),
                b + "mlp.c_proj.weight": (d, m), b + "mlp.c_proj.bias": (d,),
            })
    for name, shape in expected.items():
        got = tuple(int(x) for x in sd[name].shape)
        if got != shape:
            raise ValueError(f"parameter '{name}' has shape {list(got)}, expected {list(shape)}")
    if sd["logit_scale"].numel() != 1:
        raise ValueError(f"parameter 'logit_scale' has shape {list(sd['logit_scale'].shape)}, "
                         "expected a scalar")
    bad = [k for k, v in sd.items() if not v.is_floating_point()]
    if bad:
        raise ValueError(f"parameters {bad[:4]} are not floating-point tensors")


def format_config(cfg: Mapping[str, str]) -> str:
    """``key=value`` lines, one per key, ending with a newline."""
    lines = []
    for k, v in cfg.items():
        v = str(v)
        if "\n" in v or "\r" in v or "=" in k:
            raise ValueError(f"config entry {k!r} cannot be written on one line")
        lines.append(f"{k}={v}")
    return "\n".join(lines) + "\n"


def parse_config(text: Union[str, bytes]) -> Dict[str, str]:
    """Parse ``lake_config.txt`` (``key=value`` lines; blank lines and lines
    starting with '#' ignored; the value is everything after the first '=')."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    out: Dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"line {n} of {CONFIG_FILE} is not key=value: {line!r}")
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# --------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------

def default_vocab_path() -> Optional[str]:
    """open_clip's bundled ``bpe_simple_vocab_16e6.txt.gz`` when open_clip is
    installed (located without importing it), else None."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = os.path.join(loc, "bpe_simple_vocab_16e6.txt.gz")
        if os.path.isfile(path):
            return path
    return None


def _read_vocab(vocab_path: Optional[str]) -> bytes:
    path = vocab_path if vocab_path is not None else default_vocab_path()
    if path is None:
        raise FileNotFoundError(
            "no CLIP BPE vocabulary found: open_clip is not installed, so pass "
            "vocab_path= (CLI: --vocab) pointing at bpe_simple_vocab_16e6.txt.gz")
    with open(path, "rb") as f:
        data = f.read()
    try:
        head = gzip.decompress(data)[:200].decode("utf-8")
    except Exception as e:
        raise ValueError(f"{path} is not a gzip-compressed BPE merges file: {e}") from None
    if not head.strip():
        raise ValueError(f"{path} is an empty vocabulary")
    return data


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------

def export_clip(
    model: Any,
    path: Union[str, os.PathLike],
    *,
    activation: Optional[str] = None,
    vocab_path: Optional[str] = None,
    dtype: Union[str, torch.dtype] = "float32",
    source: str = "",
) -> Dict[str, str]:
    """Write ``model`` to ``path`` as one LAKE TorchScript archive.

    model: an open_clip ``CLIP`` (ViT), a loaded OpenAI TorchScript archive, or
      an OpenAI-layout state dict / training checkpoint mapping.
    activation: 'quick_gelu' | 'gelu'; None detects it from the module
      (``visual.transformer.resblocks[0].mlp.gelu``); required for a state dict.
    vocab_path: BPE merges file (.txt.gz) to embed; default open_clip's bundled one.
    dtype: dtype of the stored weights: 'float32' (default), 'float16', 'bfloat16'.
    source: free text recorded as ``source=`` (newlines folded to spaces).

    The archive's ``named_parameters()`` are the state dict's entries (minus
    ``input_resolution``/``context_length``/``vocab_size``/``attn_mask``), cast to
    ``dtype``.  Written to ``path + ".tmp"`` then renamed over ``path``; on any
    failure nothing is left behind.  Returns the config written.
    Raises ValueError for non-ViT models, bad activation/dtype, layout mismatches.
    """
    path = os.fspath(path)
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if isinstance(dtype, torch.dtype):
        torch_dtype = dtype
        if torch_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"unsupported dtype {dtype}")
    else:
        if str(dtype) not in _DTYPES:
            raise ValueError(f"dtype must be one of float32, float16, bfloat16; got {dtype!r}")
        torch_dtype = _DTYPES[str(dtype)]

    model = _unwrap_module(model)
    sd = _weights_of(model)
    cfg = _infer(model, sd, activation, source)
    vocab = _read_vocab(vocab_path)

    state = OrderedDict()
    for k, v in sd.items():
        t = v.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch_dtype)
        state[k] = t.contiguous()

    extra = {CONFIG_FILE: format_config(cfg).encode("utf-8"), VOCAB_FILE: vocab}
    tmp = path + ".tmp"
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 marks torch.jit.* deprecated; the C++ side reads TorchScript
            warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated",
                                    category=DeprecationWarning)
            container = torch.jit.script(_build_container(state))
            torch.jit.save(container, tmp, _extra_files=extra)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    return cfg


def read_export(path: Union[str, os.PathLike]) -> Tuple[torch.jit.ScriptModule, Dict[str, str], bytes]:
    """Load an exported archive: (module, config, vocab .gz bytes)."""
    extra = {CONFIG_FILE: "", VOCAB_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated",
                                category=DeprecationWarning)
        module = torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    if not extra[CONFIG_FILE]:
        raise ValueError(f"{path} has no {CONFIG_FILE}: not a LAKE export")
    return module, parse_config(extra[CONFIG_FILE]), bytes(extra[VOCAB_FILE])


# --------------------------------------------------------------------------
# loading users' files
# --------------------------------------------------------------------------

def _is_torchscript_zip(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a ``torch.save`` file: a plain state dict or an
    OpenCLIP training checkpoint (``{"state_dict": {"module." + k: v}}``)."""
    if _is_torchscript_zip(path):
        raise ValueError(f"{path} is a TorchScript archive: use --openai-jit (load_openai_jit)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # torch.save zip / legacy pickle
        raise ValueError(f"{path} is not a PyTorch file (neither a torch.save zip archive "
                         "nor a pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read {path} as a state dict: {first[:300]}") from None
    return _unwrap_checkpoint(obj)


def load_openai_jit(path: str) -> Any:
    """OpenAI's released CLIP ``.pt``: ``torch.jit.load(map_location="cpu")``
    (archives traced on a GPU load fine: their cuda device constants only
    matter when the traced code runs).  Falls back to a plain state dict file
    as OpenAI's ``clip.load`` does; returns the module or the state dict."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated",
                                    category=DeprecationWarning)
            return torch.jit.load(path, map_location="cpu").eval()
    except Exception as jit_error:
        try:
            return load_state_dict_file(path)
        except Exception:
            raise ValueError(f"cannot read {path} as a TorchScript archive ({jit_error}) "
                             "nor as a state dict") from None


def _parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pylake.export",
        description="Export a CLIP ViT model to LAKE's self-contained TorchScript archive "
                    "(weights under their OpenAI names + lake_config.txt + lake_vocab.txt.gz).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--open-clip", metavar="NAME",
                     help="an open_clip model name, e.g. ViT-B-16 (built with "
                          "open_clip.create_model_and_transforms; the --pretrained weights "
                          "must already be available locally / in the cache: nothing is "
                          "downloaded when offline)")
    src.add_argument("--state-dict", metavar="FILE",
                     help="a torch.save'd OpenAI-layout state dict or OpenCLIP checkpoint "
                          "(needs --activation)")
    src.add_argument("--openai-jit", metavar="FILE",
                     help="an OpenAI CLIP TorchScript archive (e.g. ViT-B-16.pt)")
    p.add_argument("--pretrained", metavar="TAG_OR_FILE", default=None,
                   help="with --open-clip: pretrained tag (e.g. openai, laion2b_s34b_b88k) or a "
                        "local checkpoint file")
    p.add_argument("--cache-dir", default=None, help="with --open-clip: open_clip cache folder")
    p.add_argument("--out", required=True, help="output archive path")
    p.add_argument("--activation", choices=ACTIVATIONS, default=None,
                   help="MLP activation; detected from the model when omitted (required with "
                        "--state-dict)")
    p.add_argument("--vocab", default=None,
                   help="BPE merges file to embed (default: open_clip's bundled "
                        "bpe_simple_vocab_16e6.txt.gz)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="dtype of the stored weights (default float32)")
    p.add_argument("--source", default=None, help="free text stored as source= (default: the input)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.open_clip:
        try:
            import open_clip
        except ImportError:
            raise ValueError("--open-clip needs the open_clip_torch package") from None
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                args.open_clip, pretrained=args.pretrained, cache_dir=args.cache_dir, device="cpu")
        except Exception as e:
            raise ValueError(f"open_clip could not build {args.open_clip!r} with pretrained="
                             f"{args.pretrained!r} (the weights must already be available "
                             f"locally or in the cache): {e}") from None
        model = model.eval()
        source = f"open_clip:{args.open_clip}" + (f"/{args.pretrained}" if args.pretrained else "")
    elif args.state_dict:
        model = load_state_dict_file(args.state_dict)
        source = f"state_dict:{os.path.basename(args.state_dict)}"
    else:
        model = load_openai_jit(args.openai_jit)
        source = f"openai_jit:{os.path.basename(args.openai_jit)}"
        if args.activation is None and not isinstance(model, nn.Module):
            args.activation = "quick_gelu"  # every OpenAI CLIP uses QuickGELU
    cfg = export_clip(model, args.out, activation=args.activation, vocab_path=args.vocab,
                      dtype=args.dtype, source=args.source if args.source is not None else source)
    print(f"wrote {args.out}: " + ", ".join(f"{k}={cfg[k]}" for k in CONFIG_KEYS[2:14]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
