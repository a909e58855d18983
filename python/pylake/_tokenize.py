"""CLIP's byte-level BPE tokenizer (C++), with the vocabulary found for you."""

from __future__ import annotations

import importlib.util
import os
from typing import Optional, Sequence, Union

import torch

from . import _C

Tokenizer = _C.Tokenizer

_VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
_cache: dict = {}


def default_vocabulary_path() -> Optional[str]:
    """The BPE vocabulary to use when none is given: ``$LAKE_BPE_VOCAB`` if set, else
    the copy shipped inside OpenCLIP (``open_clip``) when that package is installed,
    else ``None``."""
    env = os.environ.get("LAKE_BPE_VOCAB")
    if env:
        return env
    try:  # located without importing open_clip (which would import torchvision, timm, ...)
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(loc, _VOCAB_NAME)
        if os.path.isfile(path):
            return path
    return None


def _tokenizer(vocab: Union[None, str, os.PathLike, "Tokenizer"]) -> "Tokenizer":
    if isinstance(vocab, Tokenizer):
        return vocab
    path = os.fspath(vocab) if vocab is not None else default_vocabulary_path()
    if path is None:
        raise ValueError(
            "tokenize: no BPE vocabulary given and none found: pass vocab=PATH to "
            f"{_VOCAB_NAME}, set LAKE_BPE_VOCAB, install open_clip_torch, or use the "
            "tokenizer embedded in a LAKE export (model.tokenizer())"
        )
    if path not in _cache:
        _cache[path] = Tokenizer.from_file(path)
    return _cache[path]


def tokenize(
    texts: Union[str, Sequence[str]],
    context_length: int = 77,
    *,
    truncate: bool = True,
    vocab: Union[None, str, os.PathLike, "Tokenizer"] = None,
) -> torch.Tensor:
    """Tokenize text as CLIP does: ``(T, context_length)`` int64 ids,
    ``[start] + BPE ids + [end]`` zero-padded. Too-long texts are cut so that the last
    slot holds the end token (``truncate=True``) or raise ``RuntimeError``.

    ``vocab``: a path to CLIP's ``bpe_simple_vocab_16e6.txt.gz``, a :class:`Tokenizer`
    (e.g. ``model.tokenizer()``), or ``None`` for :func:`default_vocabulary_path`.
    """
    if isinstance(texts, str):
        texts = [texts]
    return _tokenizer(vocab).tokenize(list(texts), int(context_length), bool(truncate))
