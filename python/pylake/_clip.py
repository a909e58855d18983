"""Loading CLIP archives: the Python face of ``lake::load_clip``."""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

from . import _C

ClipModel = _C.ClipModel
ClipModel.__doc__ = """A CLIP ViT loaded by LAKE (weights shared between copies).

Attributes:
    device: the ``torch.device`` the weights live on.
    dtype: the compute ``torch.dtype``.
    config: hyper-parameters inferred from the archive (``image_size``, ``patch_size``,
        ``vision_width``, ``vision_layers``, ``vision_heads``, ``embed_dim``,
        ``context_length``, ``vocab_size``, ``text_width``, ``text_layers``,
        ``text_heads``, ``activation``, ``archive_kind``, ``image_mean``, ``image_std``).

Methods:
    encode_image(images): ``(B, 3, H, W)`` floating CLIP-normalised images, H and W
        multiples of the patch size -> ``(B, embed_dim)`` embeddings (not normalised).
    encode_text(tokens): ``(T, L)`` int64 token ids (``pylake.tokenize``) -> ``(T, embed_dim)``.
    tokenizer(): the BPE vocabulary embedded in a LAKE export, else ``None``.
    fingerprint(): 16 hex digits identifying the weights as loaded (dtype and device included).
    weights_fingerprint(): 16 hex digits identifying the image tower as stored in the file
        (the same for fp16, GPU and image-only loads of one archive; what a .lake file records).
"""

# lake::LoadOptions and lake::Activation as bound (the dtype is checked by the C++ loader).
LoadOptions = _C.LoadOptions
Activation = _C.Activation
_DEFAULTS = LoadOptions()  # the C++ defaults (lake::LoadOptions)


def load_clip(
    path: Union[str, os.PathLike],
    device: Union[str, torch.device] = _DEFAULTS.device,
    activation: Optional[Union[str, Activation]] = _DEFAULTS.activation,
    *,
    dtype: torch.dtype = _DEFAULTS.dtype,
    vision_heads: int = _DEFAULTS.vision_heads,
    text_heads: int = _DEFAULTS.text_heads,
    load_text: bool = _DEFAULTS.load_text,
    download: bool = True,
    progress: bool = True,
) -> ClipModel:
    """Load a CLIP ViT from ``path``: a file or folder, or a model name.

    Model names (``pylake.known_models()``, ``lake models``): OpenAI's (``"ViT-L/14@336px"``),
    a Hugging Face hub repository in transformers' layout (``"openai/clip-vit-large-patch14-336"``)
    or OpenCLIP's (``"hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K"``), optionally
    ``"@revision"``. They resolve to files already on this machine where the OpenAI clip
    package, transformers, OpenCLIP and LAKE put them (see :func:`pylake.locate_model`);
    what is missing is downloaded when ``download`` and online (``HF_HUB_OFFLINE`` /
    ``LAKE_OFFLINE`` unset), OpenAI's archives verified against their published SHA-256.

    Accepted files: OpenAI's released TorchScript archives (fp16 weights are converted
    to ``dtype``), a ``torch.save(state_dict)`` in the OpenAI / OpenCLIP naming (also an
    OpenCLIP training checkpoint with a ``"state_dict"`` entry), the same as a
    ``.safetensors`` file, a transformers CLIP checkpoint (a folder with ``config.json``
    and ``model.safetensors`` / its sharded index / ``pytorch_model.bin``, or one of its
    weight files; ``CLIPModel`` or ``CLIPVisionModelWithProjection``), an OpenCLIP hub
    folder as ``open_clip.push_to_hf_hub`` writes it (``open_clip_config.json`` with
    ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``, or one of those
    files; heads, activation and mean/std from the config), and LAKE's own export
    (``lake export`` / ``pylake.export.export_clip``: safetensors, format version 2;
    the TorchScript version 1 too). Every hyper-parameter is inferred from the parameter
    shapes (and cross-checked with ``config.json`` / ``open_clip_config.json``); see
    docs/archives.md.

    Defaults are the C++ ``lake::LoadOptions`` ones (:class:`pylake.LoadOptions`).

    Args:
        path: the archive file, a transformers checkpoint folder or an OpenCLIP hub folder.
        device: where the weights live and the forward runs (``"cpu"``, ``"cuda:0"``).
        activation: ``"quick_gelu"`` or ``"gelu"`` to override what the archive says
            (or, for a bare state dict, the OpenAI default ``quick_gelu``).
        dtype: compute dtype (float32; float16/bfloat16 on CUDA).
        vision_heads, text_heads: override the head counts (0: width / 64 as in CLIP).
        load_text: also load the text tower.
        download: fetch a named model that is not on this machine (else a ValueError
            naming where it was looked for and where to put it).
        progress: show a download progress bar on stderr.

    Raises:
        ValueError: missing file, not an archive, missing or misshapen parameters,
            a ResNet CLIP, a lying safetensors header, a config.json that disagrees with
            the weights or is not CLIP; the message names the file and what was expected;
            a named model not on this machine with ``download=False``; a download whose
            SHA-256 does not match.
        RuntimeError: a truncated or corrupted archive; a named model missing while
            offline, or a download that failed (a partial file is kept to resume).
    """
    options = LoadOptions(device=torch.device(device), dtype=dtype, activation=activation,
                          vision_heads=int(vision_heads), text_heads=int(text_heads), load_text=bool(load_text))
    path = os.fspath(path)
    if _C.is_model_name(path):
        from ._models import resolve_model  # noqa: PLC0415

        resolve_model(path, download=download, progress=progress)  # the C++ loader resolves the name again
    return _C.load_clip(path, options)
