"""Model names: find CLIP weights where the real tools put them, download what is missing.

The C++ resolver (``lake/models.h``, bound as ``_C.locate_model``) decides what a name means
and where its files are; it never touches the network. This module adds the downloads,
into the same places the resolver searches, so a name resolves the same way before and
after, from C++ and from Python:

* OpenAI names (``"ViT-L/14@336px"``): OpenAI's published URL, verified against the SHA-256
  in it, into LAKE's cache (``LAKE_HOME``, else ``~/.cache/lake``) under ``clip/``.
* Hub repositories (``"openai/clip-vit-large-patch14-336"``, transformers' layout;
  ``"hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K"``, OpenCLIP's): ``huggingface_hub``
  into the Hugging Face cache, the layout transformers and OpenCLIP read.

Offline (``HF_HUB_OFFLINE=1`` or ``LAKE_OFFLINE=1``) nothing is downloaded and the error
names the missing files and where to put them.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Union

from . import _C

KnownModel = _C.KnownModel
ModelLocation = _C.ModelLocation

__all__ = ["KnownModel", "ModelLocation", "known_models", "locate_model", "download_model", "resolve_model",
           "cache_dirs"]


def known_models() -> List[KnownModel]:
    """LAKE's table of model names (``lake models``), in display order."""
    return list(_C.known_models())


def locate_model(name_or_path: Union[str, os.PathLike]) -> ModelLocation:
    """Where ``name_or_path`` is on this machine (``.path``, empty when absent), what was
    searched (``.searched``) and what a download would fetch. No network."""
    return _C.locate_model(os.fspath(name_or_path))


def cache_dirs() -> Dict[str, str]:
    """The caches searched, from the environment now: ``hf_hub``, ``clip``, ``lake``."""
    return {"hf_hub": _C.hf_hub_cache_dir(), "clip": _C.clip_cache_dir(), "lake": _C.lake_cache_dir()}


def _hub_shards(index_path: str) -> List[str]:
    with open(index_path, "rb") as f:
        data = json.load(f)
    wm = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise ValueError(f"'{index_path}' has no \"weight_map\" object naming the shard of each tensor")
    return sorted(set(wm.values()))


def download_model(name: str, *, progress: bool = True, endpoint: Optional[str] = None) -> str:
    """Download the files of model ``name`` that are not on this machine; returns the local
    weights path (what :func:`locate_model` then finds). A name already present downloads
    nothing.

    Raises:
        ValueError: not a model name, a checksum mismatch, a repository without the files
            LAKE reads.
        RuntimeError: offline, the network failed (a partial download is kept to resume),
            the repository does not exist.
    """
    from . import _download  # noqa: PLC0415

    loc = locate_model(name)
    if not loc.is_name:
        raise ValueError(f"'{name}' is a path, not a model name")
    if loc.path:
        return loc.path
    if _download.is_offline():
        raise RuntimeError(loc.missing_message() + " (offline: HF_HUB_OFFLINE / LAKE_OFFLINE is set)")
    if loc.source == "openai":
        _download.download_url(loc.url, loc.download_to, sha256=loc.sha256, progress=progress)
    else:
        cache = _C.hf_hub_cache_dir()
        for group in loc.hub_files:
            got = _download.hub_download(loc.repo, list(group), revision=loc.revision, cache_dir=cache,
                                         endpoint=endpoint, progress=progress)
            if got.endswith(".index.json"):
                for shard in _hub_shards(got):
                    _download.hub_download(loc.repo, [shard], revision=loc.revision, cache_dir=cache,
                                           endpoint=endpoint, progress=progress)
    found = locate_model(name)
    if not found.path:  # the resolver and the download disagree: a bug, say what happened
        raise RuntimeError(f"downloaded '{name}' but LAKE's resolver does not find it: " + found.missing_message())
    return found.path


def resolve_model(name_or_path: Union[str, os.PathLike], *, download: bool = True, progress: bool = True) -> str:
    """The local path for a name or path: an existing path as is; a name from the caches,
    downloaded first when ``download`` and absent. Errors as :func:`download_model`; with
    ``download=False`` a missing model is a ValueError naming where it was looked for."""
    s = os.fspath(name_or_path)
    loc = locate_model(s)
    if not loc.is_name or loc.path:
        return loc.path
    if not download:
        raise ValueError(loc.missing_message())
    return download_model(s, progress=progress)
