#pragma once
// Reading the archive kinds into one flat map of named tensors (internal).

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>

#include "lake/clip_config.h"
#include "lake/clip_model.h"
#include "lake/files.h"

namespace lake::detail {

/// An archive's contents before interpretation.
struct RawArchive {
  ArchiveKind kind = ArchiveKind::StateDict;
  /// Every tensor by its OpenAI-layout name, as stored (dtype, CPU).
  std::map<std::string, at::Tensor> tensors;
  /// LAKE exports: the key=value lines of `lake_config.txt` (v1), the safetensors
  /// `__metadata__` (v2); `lake_config_where` names it in errors.
  std::map<std::string, std::string> lake_config;
  std::string lake_config_where = "lake_config.txt";
  /// LAKE exports: the bytes of the embedded BPE vocabulary (empty otherwise).
  std::string vocabulary;
  std::string vocabulary_where = "lake_vocab.txt.gz";
  /// What the archive itself says about the MLP activation, if anything.
  std::optional<Activation> activation_hint;
};

/// Reads `path`. Errors name the file and say what was expected.
RawArchive read_archive(const std::string& path);

/// Interprets an archive's tensors as a CLIP ViT (load_clip is read_archive + this); `path`
/// names the archive in errors and becomes ClipModel::path(). Also builds models from
/// tensors made in memory (lake::doctor's random tiny ViT).
ClipModel build_clip(RawArchive raw, const std::string& path, const LoadOptions& options);

/// The named tensors of one weights file, as stored: a safetensors file or a torch.save
/// state dict ("module." prefixes removed, a checkpoint's "state_dict" unwrapped).
std::map<std::string, at::Tensor> read_tensor_file(const std::string& path);

/// True when some name is in transformers' CLIP layout (vision_model.*, text_model.*).
bool has_transformers_names(const std::map<std::string, at::Tensor>& tensors);

/// A transformers CLIP checkpoint (src/io/hf_checkpoint.cpp): `path` is its folder (config.json
/// with model.safetensors, model.safetensors.index.json, pytorch_model.bin or its index) or
/// one of its weight files. Tensors are mapped to the OpenAI names; config and shapes are
/// cross-checked. Errors (ValueError) name the file.
RawArchive read_transformers(const std::string& path);

/// An OpenCLIP hub folder (src/io/open_clip_hub.cpp), as open_clip.push_to_hf_hub writes it:
/// `path` is the folder (open_clip_config.json with open_clip_model.safetensors, else
/// open_clip_pytorch_model.bin) or a weights file beside open_clip_config.json. Every
/// model_cfg option is checked against what LAKE computes (others rejected by name) and
/// cross-checked with the weights' shapes; heads, activation and mean/std come from the
/// config. Errors (ValueError) name the file and the key.
RawArchive read_open_clip_hub(const std::string& path);
/// The same for the weights file `weights` whose tensors were already read.
RawArchive read_open_clip_hub(const std::string& weights, std::map<std::string, at::Tensor> tensors);
/// True when `folder` holds an open_clip_config.json.
bool has_open_clip_config(const std::string& folder);

/// The text of the three per-channel floats "mean" / "std" in `lake_config`: each value the
/// shortest decimal that reads back as the same float32 ("0.48145466,0.4578275,0.40821073");
/// build_clip reads it back (src/io/clip_loader.cpp). Written by save_clip and the OpenCLIP
/// hub reader.
std::string config_floats(const float* v);

/// LAKE's one key=value parser (lake/files.h, defined in src/io/clip_archive.cpp): the v1
/// export's lake_config.txt, the fuzz harness, pylake (`_C.parse_key_values`).
using ::lake::parse_key_values;

// ---- what the names and shapes of a state dict say (src/io/clip_loader.cpp) ----------------
// The one implementation of these rules: the archive readers (OpenAI, state dicts,
// transformers, OpenCLIP hub) and clip_from_state_dict (pylake.export's in-memory modules
// and state dicts) all call them.

/// `tensors` with lake::kWrapperPrefixes removed (lake/clip_model.h: while every name has one).
std::map<std::string, at::Tensor> strip_wrapper_prefixes(std::map<std::string, at::Tensor> tensors);

/// The number of residual blocks `prefix`0., `prefix`1., ... (each has "attn.in_proj_weight"),
/// counted as CLIP's build_model counts them.
int64_t count_blocks(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix);

/// The side of the square patch grid of a positional embedding with `rows` rows (1 + grid^2),
/// rounded (build_clip checks that rows is exactly 1 + grid^2).
int64_t position_grid(int64_t rows);

}  // namespace lake::detail
