// NormalityModel::save / load: the `.lake` file (format described in detail/normality_file.h).
// save writes version 2 (safetensors + a JSON header) atomically; load reads version 2
// through the validating safetensors reader and version 1 (torch.save zip) through LAKE's
// code-free pickle reader (normality_io_v1.cpp). Either way every field is checked against the file itself
// (types, ranges, the dtype and shape each tensor must have, the checksum) before any of it
// is used, then against the backbone.

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

#include "detail/format.h"
#include "detail/hash.h"
#include "detail/normality_file.h"
#include "detail/normality_read.h"
#include "detail/normality_state.h"
#include "detail/safetensors.h"
#include "lake/version.h"

namespace lake {

namespace detail {

std::string normality_v2_checksum(const nlohmann::json& header, const std::map<std::string, at::Tensor>& tensors) {
  nlohmann::json rest = header;
  rest.erase("checksum");
  Hasher h;
  h.str("lake-normality-v2");
  h.str(rest.dump());
  for (const auto& [name, t] : tensors) {
    h.str(name);
    h.tensor(t);
  }
  return h.hex();
}

}  // namespace detail

namespace normality_io_detail {

using detail::NormalityFileLimits;

void bad(const std::string& path, const std::string& what) {
  throw c10::ValueError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                        fmt::format("normality model file '{}': {}", path, what));
}

std::string describe_tensor(const at::Tensor& t) {
  return fmt::format("{} {}", at::IntArrayRef(t.sizes()), t.scalar_type());
}

void check_version(const std::string& path, int64_t version, int64_t container) {
  if (version == container) return;
  if (version >= 1 && version <= kNormalityFormatVersion)
    bad(path, fmt::format("says format version {} but is a {} (version 1 files are zip archives, version 2 files "
                          "safetensors files): corrupted?",
                          version, container == 1 ? "zip archive" : "safetensors file"));
  bad(path, fmt::format("has format version {}; this LAKE ({}) reads versions 1..{}{}", version, LAKE_VERSION_STRING,
                        kNormalityFormatVersion, version > kNormalityFormatVersion ? ": upgrade LAKE" : ""));
}

// ---- Checks every version shares: the file against itself --------------------------------

void check_contents(const std::string& path, const Contents& c) {
  const NormalityOptions& o = c.options;
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) bad(path, what);
  };
  // (Version 1 wrote channels = 0 for a zero-shot model.)
  need(c.channels >= (c.shots > 0 ? 1 : 0), fmt::format("'channels' is {}, expected >= 1", c.channels));
  need(o.k >= 1 && (c.shots == 0 || o.k <= c.channels),
       fmt::format("'options.k' is {}, expected 1..channels = {}", o.k, c.channels));
  need(!o.layers.empty(), "'options.layers' is empty, expected the tapped blocks");
  for (size_t i = 0; i < o.layers.size(); ++i)
    need(o.layers[i] >= 1 && (i == 0 || o.layers[i] > o.layers[i - 1]),
         fmt::format("'options.layers' is [{}], expected ascending blocks >= 1", fmt::join(o.layers, ", ")));
  need(o.image_size >= 1, fmt::format("'options.image_size' is {}, expected >= 1", o.image_size));
  need(o.semantic_layer >= 1, fmt::format("'options.semantic_layer' is {}, expected >= 1", o.semantic_layer));
  need(o.text_weight >= 0.0 && o.text_weight <= 1.0,
       fmt::format("'options.text_weight' is {:g}, expected a number in [0, 1]", o.text_weight));
  need(std::isfinite(o.blur_sigma) && o.blur_sigma >= 0.0,
       fmt::format("'options.blur_sigma' is {:g}, expected a finite number >= 0", o.blur_sigma));
  need(o.gallery_tile >= 1, fmt::format("'options.gallery_tile' is {}, expected >= 1", o.gallery_tile));
  need(o.batch_size >= 1, fmt::format("'options.batch_size' is {}, expected >= 1", o.batch_size));
  need(o.class_name.size() <= NormalityFileLimits::kMaxStringBytes, "'options.class_name' is too long");
  for (const auto* list : {&o.normal_prompts, &o.anomaly_prompts}) {
    const char* name = list == &o.normal_prompts ? "normal_prompts" : "anomaly_prompts";
    need(!list->empty() && static_cast<int64_t>(list->size()) <= NormalityFileLimits::kMaxPrompts,
         fmt::format("'options.{}' holds {} prompts, expected 1..{}", name, list->size(),
                     NormalityFileLimits::kMaxPrompts));
    for (const auto& p : *list)
      need(p.size() <= NormalityFileLimits::kMaxStringBytes,
           fmt::format("'options.{}' holds a prompt of {} bytes, expected at most {}", name, p.size(),
                       NormalityFileLimits::kMaxStringBytes));
  }
  need(c.shots >= 0 && c.shots <= NormalityFileLimits::kMaxShots,
       fmt::format("'shots' is {}, expected 0..{}", c.shots, NormalityFileLimits::kMaxShots));
  for (const auto& [name, t] : {std::pair<const char*, std::optional<double>>{"image_threshold", c.image_threshold},
                                {"pixel_threshold", c.pixel_threshold}})
    if (t && !std::isfinite(*t)) bad(path, fmt::format("'{}' is {:g}, expected a finite number or none", name, *t));

  // The fitted state: one neuron layer and one gallery per tapped block (none zero-shot).
  const size_t layers = c.shots > 0 ? o.layers.size() : 0;
  need(c.neurons.size() == layers && c.galleries.size() == layers,
       fmt::format("holds {} neuron layers and {} galleries, expected {}{}", c.neurons.size(), c.galleries.size(),
                   layers, c.shots > 0 ? " (one per tapped block)" : " (a zero-shot model)"));
  for (size_t l = 0; l < c.neurons.size(); ++l) {
    const LayerNeurons& n = c.neurons[l];
    const std::string where = fmt::format("neuron layer {} (block {})", l, n.layer);
    need(n.layer == o.layers[l],
         fmt::format("{} is for block {}, expected block {} (options.layers[{}])", where, n.layer, o.layers[l], l));
    const at::Tensor& idx = n.indices;
    need(idx.defined() && idx.dim() == 1 && idx.size(0) == o.k && idx.scalar_type() == at::kLong,
         fmt::format("{}: expected (K) int64 neuron indices with K = options.k = {}, got {}", where, o.k,
                     idx.defined() ? describe_tensor(idx) : "none"));
    const int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
    need(lo >= 0 && hi < c.channels,
         fmt::format("{} has neuron indices in [{}, {}], expected [0, {}) (corrupted?)", where, lo, hi, c.channels));
    for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"scores", &n.scores}, {"mean", &n.mean},
                                  {"std", &n.std}})
      need(t->defined() && t->dim() == 1 && t->size(0) == o.k && t->scalar_type() == at::kDouble,
           fmt::format("{}: expected ({}) float64 neuron {}, got {} (corrupted?)", where, o.k, name,
                       t->defined() ? describe_tensor(*t) : "none"));
    const at::Tensor& g = c.galleries[l];
    const int64_t rows = c.galleries[0].defined() && c.galleries[0].dim() == 2 ? c.galleries[0].size(0) : -1;
    need(g.defined() && g.dim() == 2 && g.size(0) == rows && rows >= c.shots && rows % c.shots == 0 &&
             g.size(1) == o.k && g.scalar_type() == at::kFloat,
         fmt::format("gallery {} (block {}) is {}, expected (M, {}) float32 with K = {} neurons and the same M = shots "
                     "x patches (a multiple of {}) in every layer (corrupted?)",
                     l, n.layer, g.defined() ? describe_tensor(g) : "none", o.k, o.k, c.shots));
  }
  if (c.shots == 0) need(c.text.defined(), "is a zero-shot model without text embeddings (corrupted?)");
  if (c.text.defined())
    need(c.text.dim() == 2 && c.text.size(0) == 2 && c.text.size(1) >= 1 && c.text.scalar_type() == at::kFloat,
         fmt::format("'text_embeddings' is {}, expected (2, E) float32", describe_tensor(c.text)));
}

// ---- Version 2: safetensors + JSON ---------------------------------------------------------

// Typed access to the JSON header; errors name the field and what it should be.
struct JsonFields {
  const std::string& path;

  const json& at(const json& obj, const std::string& prefix, const std::string& key) const {
    auto it = obj.find(key);
    if (it == obj.end()) bad(path, fmt::format("the header has no '{}{}' field", prefix, key));
    return *it;
  }
  [[noreturn]] void wrong(const std::string& field, const json& v, const char* expected) const {
    std::string shown = v.dump();
    if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
    bad(path, fmt::format("field '{}' is {}, expected {}", field, shown, expected));
  }
  int64_t integer(const json& obj, const std::string& prefix, const std::string& key) const {
    const json& v = at(obj, prefix, key);
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX))
      wrong(prefix + key, v, "an integer");
    return v.get<int64_t>();
  }
  double number(const json& obj, const std::string& prefix, const std::string& key) const {
    const json& v = at(obj, prefix, key);
    if (!v.is_number()) wrong(prefix + key, v, "a number");
    return v.get<double>();
  }
  std::optional<double> optional_number(const json& obj, const std::string& key) const {
    const json& v = at(obj, "", key);
    if (v.is_null()) return std::nullopt;
    if (!v.is_number()) wrong(key, v, "a number or null");
    return v.get<double>();
  }
  std::string string(const json& obj, const std::string& prefix, const std::string& key) const {
    const json& v = at(obj, prefix, key);
    if (!v.is_string()) wrong(prefix + key, v, "a string");
    return v.get<std::string>();
  }
  const json& array(const json& obj, const std::string& prefix, const std::string& key) const {
    const json& v = at(obj, prefix, key);
    if (!v.is_array()) wrong(prefix + key, v, "an array");
    return v;
  }
  const json& object(const json& obj, const std::string& prefix, const std::string& key) const {
    const json& v = at(obj, prefix, key);
    if (!v.is_object()) wrong(prefix + key, v, "an object");
    return v;
  }
  std::vector<std::string> strings(const json& obj, const std::string& prefix, const std::string& key) const {
    std::vector<std::string> out;
    for (const json& x : array(obj, prefix, key)) {
      if (!x.is_string()) wrong(prefix + key, x, "an array of strings");
      out.push_back(x.get<std::string>());
    }
    return out;
  }
  std::vector<int64_t> integers(const json& obj, const std::string& prefix, const std::string& key) const {
    std::vector<int64_t> out;
    for (const json& x : array(obj, prefix, key)) {
      if (!x.is_number_integer() || (x.is_number_unsigned() && x.get<uint64_t>() > INT64_MAX))
        wrong(prefix + key, x, "an array of integers");
      out.push_back(x.get<int64_t>());
    }
    return out;
  }
};

NormalityOptions options_from_json(const JsonFields& f, const json& top) {
  const json& od = f.object(top, "", "options");
  const std::string p = "options.";
  NormalityOptions o;
  o.layers = f.integers(od, p, "layers");
  read_method_options(f, od, f.path, o);
  const json& seed = f.at(od, p, "seed");
  if (!seed.is_number_unsigned()) f.wrong("options.seed", seed, "a non-negative integer");
  o.seed = seed.get<uint64_t>();
  o.batch_size = f.integer(od, p, "batch_size");
  return o;
}

Contents read_v2(const std::string& path) {
  detail::SafetensorsFile file;
  try {
    file = detail::read_safetensors(path);
  } catch (const c10::Error& e) {
    bad(path, fmt::format("is truncated or corrupted: {}", e.what_without_backtrace()));
  }
  auto meta = file.metadata.find(detail::kNormalityMetadataKey);
  TORCH_CHECK_VALUE(
      meta != file.metadata.end(),
      fmt::format("'{}' is not a LAKE normality model file (a safetensors file without the '{}' metadata entry)", path,
                  detail::kNormalityMetadataKey));
  json top;
  try {
    top = json::parse(meta->second);
  } catch (const json::exception& e) {
    bad(path,
        fmt::format("its '{}' metadata is not valid JSON (corrupted?): {}", detail::kNormalityMetadataKey, e.what()));
  }
  if (!top.is_object()) bad(path, fmt::format("its '{}' metadata is not a JSON object", detail::kNormalityMetadataKey));
  const JsonFields f{path};
  TORCH_CHECK_VALUE(top.contains("format") && top["format"] == "lake-normality",
                    fmt::format("'{}' is not a LAKE normality model file (no format=lake-normality)", path));
  Contents c;
  c.version = f.integer(top, "", "format_version");
  check_version(path, c.version, 2);
  f.string(top, "", "lake_version");
  const json& bb = f.object(top, "", "backbone");
  c.fingerprint = f.string(bb, "backbone.", "weights_fingerprint");
  c.backbone = f.string(bb, "backbone.", "describe");
  c.backbone_config = bb;
  f.string(bb, "backbone.", "activation");
  f.integer(bb, "backbone.", "vision_heads");
  const int64_t embed_dim = f.integer(bb, "backbone.", "embed_dim");
  for (const char* key : {"image_mean", "image_std"}) {
    const json& v = f.array(bb, "backbone.", key);
    if (v.size() != 3 || !(v[0].is_number() && v[1].is_number() && v[2].is_number()))
      f.wrong(std::string("backbone.") + key, v, "three numbers");
  }
  c.options = options_from_json(f, top);
  c.shots = f.integer(top, "", "shots");
  c.channels = f.integer(top, "", "channels");
  c.image_threshold = f.optional_number(top, "image_threshold");
  c.pixel_threshold = f.optional_number(top, "pixel_threshold");
  const int64_t rows = f.integer(top, "", "gallery_rows");
  const json& has_text = f.at(top, "", "text_embeddings");
  if (!has_text.is_boolean()) f.wrong("text_embeddings", has_text, "true or false");
  const std::string checksum = f.string(top, "", "checksum");

  // Every tensor the header implies, with the dtype and shape it implies; no others.
  std::map<std::string, at::Tensor>& tensors = file.tensors;
  std::map<std::string, bool> used;
  auto take = [&](const std::string& name, c10::ScalarType dtype, std::vector<int64_t> shape,
                  const std::string& why) {
    auto it = tensors.find(name);
    if (it == tensors.end()) bad(path, fmt::format("has no tensor '{}' ({})", name, why));
    const at::Tensor& t = it->second;
    if (t.scalar_type() != dtype || t.sizes() != at::IntArrayRef(shape))
      bad(path, fmt::format("tensor '{}' is {}, expected {} {} ({})", name, describe_tensor(t), at::IntArrayRef(shape),
                            dtype, why));
    used[name] = true;
    return t.clone();  // off the file's mapping
  };
  const json& neurons = f.array(top, "", "neurons");
  for (size_t l = 0; l < neurons.size(); ++l) {
    const std::string p = fmt::format("neurons[{}].", l);
    if (!neurons[l].is_object()) f.wrong(fmt::format("neurons[{}]", l), neurons[l], "an object {layer, k}");
    LayerNeurons n;
    n.layer = f.integer(neurons[l], p, "layer");
    const int64_t k = f.integer(neurons[l], p, "k");
    if (k < 1 || k > c.channels)
      bad(path, fmt::format("field '{}k' is {}, expected 1..channels = {}", p, k, c.channels));
    const std::string stem = fmt::format("neurons.{}.", l);
    const std::string why = fmt::format("{}k = {}", p, k);
    n.indices = take(stem + "indices", at::kLong, {k}, why);
    n.scores = take(stem + "scores", at::kDouble, {k}, why);
    n.mean = take(stem + "mean", at::kDouble, {k}, why);
    n.std = take(stem + "std", at::kDouble, {k}, why);
    c.galleries.push_back(
        take(fmt::format("galleries.{}", l), at::kFloat, {rows, k}, fmt::format("gallery_rows x {}", why)));
    c.neurons.push_back(std::move(n));
  }
  if (has_text.get<bool>())
    c.text = take("text_embeddings", at::kFloat, {2, embed_dim}, fmt::format("2 x backbone.embed_dim = {}", embed_dim));
  for (const auto& kv : tensors)
    if (!used.count(kv.first)) bad(path, fmt::format("holds a tensor '{}' that its header does not list", kv.first));

  check_contents(path, c);
  if (checksum != detail::normality_v2_checksum(top, tensors))
    bad(path, "is corrupted: its checksum does not match its contents");
  return c;
}

// ---- The file against the backbone ------------------------------------------------------------

void check_backbone(const std::string& path, const Contents& c, const ClipModel& model) {
  const ClipConfig& cfg = model.config();
  if (c.version == 1) {
    if (c.fingerprint != model.fingerprint())
      bad(path,
          fmt::format(
              "was fitted with a different backbone (fingerprint {}, {}); the given model '{}' has fingerprint {}",
              c.fingerprint, c.backbone, model.path(), model.fingerprint()));
    return;
  }
  if (c.fingerprint != model.weights_fingerprint())
    bad(path, fmt::format("was fitted with a different backbone (weights fingerprint {}, {}); the given model '{}' has "
                          "weights fingerprint {} ({}). The fingerprint hashes the image tower as stored in the "
                          "archive: load the archive the model was fitted with (any dtype, device, load_text)",
                          c.fingerprint, c.backbone, model.path(), model.weights_fingerprint(), cfg.describe()));
  const json& b = c.backbone_config;
  auto differs = [&](const char* what, const std::string& file_value, const std::string& model_value) {
    if (file_value != model_value)
      bad(path,
          fmt::format(
              "was fitted with the backbone's {} = {}; the given model '{}' has {} = {} (same weights, other settings)",
              what, file_value, model.path(), what, model_value));
  };
  differs("activation", b.at("activation").get<std::string>(), to_string(cfg.activation));
  differs("vision_heads", fmt::format("{}", b.at("vision_heads").get<int64_t>()), fmt::format("{}", cfg.vision_heads));
  for (auto [key, values] : {std::pair<const char*, const float*>{"image_mean", cfg.image_mean},
                             {"image_std", cfg.image_std}}) {
    const json mine = {values[0], values[1], values[2]};
    json theirs = json::array();
    for (const json& x : b.at(key)) theirs.push_back(static_cast<float>(x.get<double>()));
    differs(key, theirs.dump(), mine.dump());
  }
}

// `s`: a fresh model's state, made from c.options for the backbone that passed check_backbone.
void fill_state(const std::string& path, Contents c, NormalityModel::State& s) {
  const ClipConfig& cfg = s.model.config();
  const NormalityOptions& o = c.options;
  if (s.layers != o.layers || s.image_size != o.image_size || s.semantic_layer != o.semantic_layer)
    bad(path, fmt::format("records layers [{}], image size {}, semantic layer {}, but they resolve to [{}], {}, {} on "
                          "this backbone (corrupted?)",
                          fmt::join(o.layers, ", "), o.image_size, o.semantic_layer, fmt::join(s.layers, ", "),
                          s.image_size, s.semantic_layer));
  if (c.shots > 0 && c.channels != s.probe.channels())
    bad(path,
        fmt::format("its neurons are for {} channels, but the model taps {} activations of {} channels (corrupted?)",
                    c.channels, to_string(o.kind), s.probe.channels()));
  const int64_t grid = o.image_size / cfg.patch_size;
  for (size_t l = 0; l < c.galleries.size(); ++l)
    if (c.galleries[l].size(0) != c.shots * grid * grid)
      bad(path, fmt::format("gallery {} has {} rows, expected shots x patches = {} x {} (corrupted?)", l,
                            c.galleries[l].size(0), c.shots, grid * grid));
  if (c.text.defined() && c.text.size(1) != cfg.embed_dim)
    bad(path, fmt::format("'text_embeddings' is {}, expected (2, {}) for this backbone's embedding size",
                          describe_tensor(c.text), cfg.embed_dim));
  const c10::Device dev = s.model.device();
  s.shots = c.shots;
  s.neurons.kind = o.kind;
  s.neurons.channels = c.channels;
  s.neurons.layers = std::move(c.neurons);
  // The indices are checked here, once: the scoring path then gathers without a range check.
  s.device_indices = s.validated_indices(s.neurons, "normality model file '" + path + "'");
  std::vector<at::Tensor> galleries;
  for (const auto& g : c.galleries) galleries.push_back(g.to(dev));
  s.set_galleries(std::move(galleries));
  if (c.text.defined()) s.text = c.text.to(dev);
  s.image_threshold = c.image_threshold;
  s.pixel_threshold = c.pixel_threshold;
  s.fitted = true;
}

}  // namespace normality_io_detail

void NormalityModel::save(const std::string& path) const {
  using nlohmann::json;
  const State& s = *state_;
  TORCH_CHECK(s.fitted, "NormalityModel.save: the model is not fitted: call fit(normal_images) first");
  const NormalityOptions& o = s.options;
  const ClipConfig& c = s.model.config();
  json options = {{"layers", s.layers},
                  {"k", o.k},
                  {"score", to_string(o.score)},
                  {"seed", o.seed},
                  {"kind", to_string(o.kind)},
                  {"image_size", s.image_size},
                  {"text_weight", o.text_weight},
                  {"class_name", o.class_name},
                  {"normal_prompts", s.normal_prompts},
                  {"anomaly_prompts", s.anomaly_prompts},
                  {"semantic_layer", s.semantic_layer},
                  {"pooling", to_string(o.pooling)},
                  {"blur_sigma", o.blur_sigma},
                  {"gallery_tile", o.gallery_tile},
                  {"batch_size", o.batch_size}};
  json backbone = {{"weights_fingerprint", s.model.weights_fingerprint()},
                   {"describe", c.describe()},
                   {"activation", to_string(c.activation)},
                   {"vision_heads", c.vision_heads},
                   {"patch_size", c.patch_size},
                   {"vision_width", c.vision_width},
                   {"embed_dim", c.embed_dim},
                   {"image_mean", {c.image_mean[0], c.image_mean[1], c.image_mean[2]}},
                   {"image_std", {c.image_std[0], c.image_std[1], c.image_std[2]}}};
  json neurons = json::array();
  std::map<std::string, at::Tensor> tensors;
  for (size_t l = 0; l < s.neurons.layers.size(); ++l) {
    const LayerNeurons& n = s.neurons.layers[l];
    neurons.push_back({{"layer", n.layer}, {"k", n.indices.numel()}});
    const std::string stem = fmt::format("neurons.{}.", l);
    tensors[stem + "indices"] = n.indices;
    tensors[stem + "scores"] = n.scores;
    tensors[stem + "mean"] = n.mean;
    tensors[stem + "std"] = n.std;
    tensors[fmt::format("galleries.{}", l)] = s.galleries[l];
  }
  if (s.text.defined()) tensors["text_embeddings"] = s.text;
  auto optional = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
  json top = {{"format", "lake-normality"},
              {"format_version", kNormalityFormatVersion},
              {"lake_version", LAKE_VERSION_STRING},
              {"backbone", backbone},
              {"options", options},
              {"shots", s.shots},
              {"channels", s.probe.channels()},
              {"neurons", neurons},
              {"gallery_rows", s.galleries.empty() ? int64_t(0) : s.galleries[0].size(0)},
              {"text_embeddings", s.text.defined()},
              {"image_threshold", optional(s.image_threshold)},
              {"pixel_threshold", optional(s.pixel_threshold)}};
  std::string header;
  try {
    top["checksum"] = detail::normality_v2_checksum(top, tensors);
    header = top.dump();
  } catch (const json::exception& e) {
    TORCH_CHECK_VALUE(false,
                      fmt::format("NormalityModel.save: a prompt or the class name is not valid UTF-8: {}", e.what()));
  }
  detail::write_safetensors(path, tensors, {{detail::kNormalityMetadataKey, header}}, std::nullopt,
                            "NormalityModel.save");
}

NormalityModel NormalityModel::load(const std::string& path, ClipModel model) {
  using namespace normality_io_detail;
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK_VALUE(in.good(), fmt::format("normality model file '{}' does not exist or is not readable", path));
  char head[9] = {};
  in.read(head, sizeof head);
  const std::streamsize got = in.gcount();
  in.close();
  const bool zip = got >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0;
  const bool safetensors = got == 9 && head[8] == '{';
  TORCH_CHECK_VALUE(zip || safetensors,
                    fmt::format("'{}' is not a LAKE normality model file (expected the safetensors file of format "
                                "version 2, or the zip archive of version 1, written by NormalityModel.save)",
                                path));
  Contents c = zip ? read_v1(path) : read_v2(path);
  check_backbone(path, c, model);
  std::optional<NormalityModel> m;
  try {
    m.emplace(std::move(model), c.options);
  } catch (const c10::Error& e) {
    bad(path, fmt::format("its options do not fit the given model: {}", e.what_without_backtrace()));
  }
  fill_state(path, std::move(c), *m->state_);
  return std::move(*m);
}

}  // namespace lake
