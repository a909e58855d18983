#pragma once
// Reading the three archive kinds into one flat map of named tensors (internal).

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>

#include "lake/clip_config.h"
#include "lake/clip_model.h"

namespace lake::detail {

/// An archive's contents before interpretation.
struct RawArchive {
  ArchiveKind kind = ArchiveKind::StateDict;
  /// Every tensor by its OpenAI-layout name, as stored (dtype, CPU).
  std::map<std::string, at::Tensor> tensors;
  /// LAKE exports: the key=value lines of `lake_config.txt`.
  std::map<std::string, std::string> lake_config;
  /// LAKE exports: the bytes of the embedded BPE vocabulary (empty otherwise).
  std::string vocabulary;
  /// What the archive itself says about the MLP activation, if anything.
  std::optional<Activation> activation_hint;
};

/// Reads `path`. Errors name the file and say what was expected.
RawArchive read_archive(const std::string& path);

/// Interprets an archive's tensors as a CLIP ViT (load_clip is read_archive + this); `path`
/// names the archive in errors and becomes ClipModel::path(). Also builds models from
/// tensors made in memory (lake::doctor's random tiny ViT).
ClipModel build_clip(RawArchive raw, const std::string& path, const LoadOptions& options);

/// Parses "key=value" lines (blank lines and lines starting with '#' ignored).
std::map<std::string, std::string> parse_key_values(const std::string& text, const std::string& source);

}  // namespace lake::detail
