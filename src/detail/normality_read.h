#pragma once
// Reading a `.lake` file (internal): what normality_io.cpp (version 2, the checks, load) and
// normality_io_v1.cpp (the version-1 reader) share. The format is in detail/normality_file.h.

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "detail/format.h"
#include "lake/normality_model.h"

namespace lake::normality_io_detail {

using nlohmann::json;

// What a file holds, read and checked against itself, before it meets a backbone.
struct Contents {
  int64_t version = 0;
  std::string fingerprint;  // v1: ClipModel::fingerprint (as loaded); v2: ClipModel::weights_fingerprint
  std::string backbone;     // ClipConfig::describe() of the backbone it was fitted with
  json backbone_config;     // v2: activation, heads, normalisation; null for v1
  NormalityOptions options;  // resolved layers, image size, semantic layer and prompts
  int64_t shots = 0, channels = 0;
  std::vector<LayerNeurons> neurons;
  std::vector<at::Tensor> galleries;
  at::Tensor text;
  std::optional<double> image_threshold, pixel_threshold;
};

/// A c10::ValueError "normality model file '<path>': <what>".
[[noreturn]] void bad(const std::string& path, const std::string& what);
/// "[2, 64] Float".
std::string describe_tensor(const at::Tensor& t);
/// `version` as read from a file of the format `container` (1: zip, 2: safetensors).
void check_version(const std::string& path, int64_t version, int64_t container);
/// Everything the file must satisfy on its own (types are already checked): ranges, one
/// neuron layer and gallery per tapped block, each tensor's dtype and shape, index ranges.
void check_contents(const std::string& path, const Contents& c);
/// A version-1 file (a torch.save zip), read by the code-free pickle reader and checked
/// (check_contents, its checksum). Defined in normality_io_v1.cpp.
Contents read_v1(const std::string& path);

// A method name written in its canonical spelling (to_string(parse(s)) == s).
template <typename Parse, typename ToString>
auto parse_exact(const std::string& path, const std::string& field, const std::string& s, Parse parse,
                 ToString to_str) {
  try {
    auto v = parse(s);
    if (to_str(v) == s) return v;
  } catch (const c10::Error&) {
  }
  bad(path, fmt::format("field '{}' is '{}', not a value this LAKE writes", field, s));
}

// The method options both versions store the same way, read by either version's field reader
// (`Fields` has integer / number / string / strings(node, prefix, key), each checking the type and
// naming the field): one list, so a new option is read in one place. Layers, seed and batch_size
// differ between the versions and are read by each.
template <typename Fields, typename Node>
void read_method_options(const Fields& f, const Node& od, const std::string& path, NormalityOptions& o) {
  const std::string p = "options.";
  o.k = f.integer(od, p, "k");
  o.score = parse_exact(path, "options.score", f.string(od, p, "score"), parse_sensitivity_score,
                        [](SensitivityScore s) { return to_string(s); });
  o.kind = parse_exact(path, "options.kind", f.string(od, p, "kind"), parse_probe_kind,
                       [](ProbeKind k) { return to_string(k); });
  o.image_size = f.integer(od, p, "image_size");
  o.text_weight = f.number(od, p, "text_weight");
  o.class_name = f.string(od, p, "class_name");
  o.normal_prompts = f.strings(od, p, "normal_prompts");
  o.anomaly_prompts = f.strings(od, p, "anomaly_prompts");
  o.semantic_layer = f.integer(od, p, "semantic_layer");
  o.pooling = parse_exact(path, "options.pooling", f.string(od, p, "pooling"), parse_pooling,
                          [](Pooling x) { return to_string(x); });
  o.blur_sigma = f.number(od, p, "blur_sigma");
  o.gallery_tile = f.integer(od, p, "gallery_tile");
}

}  // namespace lake::normality_io_detail
