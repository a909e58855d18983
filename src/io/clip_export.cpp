// LAKE's own CLIP export: lake::save_clip writes format version 2 (safetensors, config and
// vocabulary in its metadata); the checks shared by the v1 (TorchScript) and v2 readers.

#include "detail/lake_export.h"

#include <ATen/ATen.h>

#include "lake/dtype.h"
#include "detail/base64.h"
#include "detail/clip_impl.h"
#include "detail/format.h"

namespace lake {
namespace detail {

bool is_lake_export(const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find("format");
  return it != metadata.end() && it->second == kLakeExportFormat;
}

void check_lake_export_config(RawArchive& raw, const std::string& path, int container_version) {
  const auto& cfg = raw.lake_config;
  const std::string& where = raw.lake_config_where;
  auto format = cfg.find("format");
  TORCH_CHECK_VALUE(format != cfg.end() && format->second == kLakeExportFormat,
                    fmt::format("CLIP archive '{}': {} does not say format={}", path, where, kLakeExportFormat));
  auto ver = cfg.find("format_version");
  TORCH_CHECK_VALUE(ver != cfg.end(), fmt::format("CLIP archive '{}': {} has no format_version", path, where));
  const std::string& v = ver->second;
  TORCH_CHECK_VALUE(v == fmt::to_string(kLakeExportTorchScriptVersion) || v == fmt::to_string(kLakeExportVersion),
                    fmt::format("CLIP archive '{}' is a LAKE export of format version {}; this build of LAKE reads "
                                "versions {} and {} (upgrade LAKE)",
                                path, v, kLakeExportTorchScriptVersion, kLakeExportVersion));
  TORCH_CHECK_VALUE(v == fmt::to_string(container_version),
                    fmt::format("CLIP archive '{}': {} says format_version={}, but LAKE exports of version {} are "
                                "TorchScript archives and those of version {} safetensors files (this one is {})",
                                path, where, v, kLakeExportTorchScriptVersion, kLakeExportVersion,
                                container_version == kLakeExportVersion ? "a safetensors file" : "a TorchScript archive"));
  raw.kind = ArchiveKind::LakeExport;
  auto act = cfg.find("activation");
  if (act != cfg.end()) {
    try {
      raw.activation_hint = parse_activation(act->second);
    } catch (const c10::ValueError&) {
      TORCH_CHECK_VALUE(false,
                        fmt::format("CLIP archive '{}': {} has activation={}, expected quick_gelu or gelu",
                                    path, where, act->second));
    }
  }
}

RawArchive read_lake_safetensors(const std::string& path, SafetensorsFile file) {
  RawArchive out;
  out.tensors = std::move(file.tensors);
  out.lake_config = std::move(file.metadata);
  out.lake_config_where = "__metadata__";
  auto vocab = out.lake_config.find(kLakeVocabularyKey);
  if (vocab != out.lake_config.end()) {
    TORCH_CHECK_VALUE(base64_decode(vocab->second, out.vocabulary),
                      fmt::format("CLIP archive '{}': __metadata__ key '{}' is not valid base64 ({} characters)",
                                  path, kLakeVocabularyKey, vocab->second.size()));
    out.vocabulary_where = fmt::format("__metadata__ key '{}'", kLakeVocabularyKey);
    out.lake_config.erase(vocab);
  }
  check_lake_export_config(out, path, kLakeExportVersion);
  TORCH_CHECK_VALUE(!out.tensors.empty(), fmt::format("CLIP archive '{}' is a LAKE export without any tensors", path));
  return out;
}

}  // namespace detail

ClipModel clip_from_state_dict(std::map<std::string, at::Tensor> tensors, const LoadOptions& options,
                               const std::string& name, const std::vector<float>& image_mean,
                               const std::vector<float>& image_std) {
  detail::RawArchive raw;
  raw.kind = ArchiveKind::StateDict;
  raw.tensors = detail::strip_wrapper_prefixes(std::move(tensors));  // as the file readers do
  raw.lake_config_where = "clip_from_state_dict";
  for (auto [key, v] : {std::pair<const char*, const std::vector<float>*>{"mean", &image_mean}, {"std", &image_std}}) {
    if (v->empty()) continue;
    TORCH_CHECK_VALUE(v->size() == 3,
                      fmt::format("clip_from_state_dict: image_{} must hold 3 values, got {}", key, v->size()));
    raw.lake_config[key] = detail::config_floats(v->data());  // read back by build_clip
  }
  return detail::build_clip(std::move(raw), name, options);
}

std::map<std::string, std::string> save_clip(const ClipModel& model, const std::string& path,
                                             const SaveClipOptions& options) {
  TORCH_CHECK_VALUE(!path.empty(), "save_clip: the output path is empty");
  check_dtype(options.dtype, kSaveClipDtypes, "save_clip: dtype");
  const ClipConfig& c = model.config();
  std::map<std::string, std::string> meta{
      {"format", detail::kLakeExportFormat},
      {"format_version", fmt::to_string(detail::kLakeExportVersion)},
      {"activation", to_string(c.activation)},
      {"image_size", fmt::to_string(c.image_size)},
      {"patch_size", fmt::to_string(c.patch_size)},
      {"vision_width", fmt::to_string(c.vision_width)},
      {"vision_layers", fmt::to_string(c.vision_layers)},
      {"vision_heads", fmt::to_string(c.vision_heads)},
      {"embed_dim", fmt::to_string(c.embed_dim)},
      {"context_length", fmt::to_string(c.context_length)},
      {"vocab_size", fmt::to_string(c.vocab_size)},
      {"text_width", fmt::to_string(c.text_width)},
      {"text_layers", fmt::to_string(c.text_layers)},
      {"text_heads", fmt::to_string(c.text_heads)},
      {"mean", detail::config_floats(c.image_mean)},
      {"std", detail::config_floats(c.image_std)},
      {"source", options.source},
  };
  const std::string& vocabulary = options.vocabulary.empty() ? model.impl().vocabulary : options.vocabulary;
  std::map<std::string, std::string> written = meta;
  if (!vocabulary.empty()) {
    try {  // a file whose vocabulary loads, or no file
      (void)Tokenizer::from_bytes(vocabulary, "save_clip: the vocabulary");
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false,
                        fmt::format("save_clip: the vocabulary is not a CLIP BPE merges file: {}",
                                    e.what_without_backtrace()));
    }
    written[detail::kLakeVocabularyKey] = detail::base64_encode(vocabulary);
  }
  std::map<std::string, at::Tensor> tensors;
  for (const auto& name : model.parameter_names()) tensors.emplace(name, model.parameter(name));
  detail::write_safetensors(path, tensors, written, options.dtype, "save_clip");
  return meta;
}

}  // namespace lake
