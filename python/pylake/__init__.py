"""pylake: LAKE (Latent Anomaly Knowledge Excavation) from Python.

Training-free few-shot anomaly detection with the sparse "sensitive neurons" of a frozen
CLIP image encoder. This package wraps the C++ library ``liblake``:

>>> import pylake
>>> model = pylake.load_clip("ViT-L/14@336px")             # a name, or a file / folder of weights
>>> emb = model.encode_image(images)                       # (B, 3, H, W) float32 -> (B, E)
>>> probe = pylake.NeuronProbe(model, layers=[6, 12, 18, 24])
>>> taps = probe(images)
>>> taps.activations[12].shape                              # (B, N, D) patch tokens after block 12
"""

from __future__ import annotations

import torch  # noqa: F401  (loads LibTorch before the extension)

from . import _C, datasets, export, metrics, synthetic
from . import _ops  # noqa: F401  (fake kernels of the dispatcher ops torch.ops.lake.*)
from ._clip import Activation, ClipModel, LoadOptions, load_clip
from ._models import KnownModel, ModelLocation, cache_dirs, download_model, known_models, locate_model, resolve_model
from ._doctor import DoctorCheck, DoctorReport, doctor, doctor_check_names
from ._normality import (LayerNeurons, NeuronDeviation, NormalityModel, NormalityOptions, Pooling, Prediction,
                         SensitivityScore, load_images, read_model_file)
from ._probe import NeuronProbe, ProbeKind, ProbeOptions, ProbeResult
from ._tokenize import Tokenizer, default_vocabulary_path, tokenize

__version__ = _C.__version__
set_num_threads = _C.set_num_threads
SensitivitySelector = _C.SensitivitySelector
SelectorOptions = _C.SelectorOptions
default_prompts = _C.default_prompts
top_k_channels = _C.top_k_channels
# Image decoding (libpng / libjpeg, identical to PIL on PNG and JPEG) and CLIP preprocessing.
read_image = _C.read_image
read_mask = _C.read_mask
clip_preprocess = _C.clip_preprocess
resize_mask = _C.resize_mask
get_num_threads = _C.get_num_threads

__all__ = [
    "Activation",
    "ClipModel",
    "LayerNeurons",
    "LoadOptions",
    "NeuronDeviation",
    "NormalityOptions",
    "Pooling",
    "ProbeKind",
    "ProbeOptions",
    "SelectorOptions",
    "SensitivityScore",
    "KnownModel",
    "ModelLocation",
    "cache_dirs",
    "download_model",
    "known_models",
    "locate_model",
    "resolve_model",
    "DoctorCheck",
    "DoctorReport",
    "NeuronProbe",
    "NormalityModel",
    "Prediction",
    "SensitivitySelector",
    "clip_preprocess",
    "ProbeResult",
    "Tokenizer",
    "default_prompts",
    "default_vocabulary_path",
    "doctor",
    "doctor_check_names",
    "get_num_threads",
    "load_images",
    "read_image",
    "read_mask",
    "read_model_file",
    "resize_mask",
    "load_clip",
    "set_num_threads",
    "tokenize",
    "top_k_channels",
]
