// NormalityModel::save / load: a versioned torch.save-format file (a dict that
// `pylake.read_model_file`, i.e. `torch.load(weights_only=True)`, also reads), written atomically, checked on load.
//
// Format version 1 (keys of the top-level dict):
//   format = "lake-normality", format_version = 1, lake_version,
//   backbone_fingerprint, backbone = ClipConfig::describe(),
//   options = {layers, k, score, seed, kind, image_size, text_weight, class_name,
//              normal_prompts, anomaly_prompts, semantic_layer, pooling, blur_sigma,
//              gallery_tile},
//   shots, channels, neurons = [{layer, indices, scores, mean, std}], galleries = [(M, K)],
//   text_embeddings = (2, E) or None, image_threshold / pixel_threshold = float or None,
//   checksum = 16 hex digits over all of the above.

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>


#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "detail/atomic_file.h"
#include "detail/hash.h"
#include "detail/normality_state.h"
#include "lake/version.h"

namespace lake {
namespace {

using GenericDict = c10::impl::GenericDict;

std::string content_hash(const NormalityModel::State& s) {
  detail::Hasher h;
  const NormalityOptions& o = s.options;
  for (int64_t l : s.layers) h.word(static_cast<uint64_t>(l));
  for (int64_t v : {o.k, static_cast<int64_t>(o.seed), s.image_size, s.semantic_layer, o.gallery_tile,
                    s.shots, s.neurons.channels})
    h.word(static_cast<uint64_t>(v));
  for (const std::string& str : {to_string(o.score), to_string(o.kind), to_string(o.pooling), o.class_name}) h.str(str);
  for (double d : {o.text_weight, o.blur_sigma, s.image_threshold.value_or(-1.0), s.pixel_threshold.value_or(-1.0)}) {
    uint64_t w;
    std::memcpy(&w, &d, 8);
    h.word(w);
  }
  for (const auto& p : s.normal_prompts) h.str(p);
  for (const auto& p : s.anomaly_prompts) h.str(p);
  for (const auto& n : s.neurons.layers) {
    h.word(static_cast<uint64_t>(n.layer));
    for (const auto& t : {n.indices, n.scores, n.mean, n.std}) h.tensor(t);
  }
  for (const auto& g : s.galleries) h.tensor(g);
  h.tensor(s.text);
  return h.hex();
}

c10::List<std::string> string_list(const std::vector<std::string>& v) {
  c10::List<std::string> out;
  for (const auto& x : v) out.push_back(x);
  return out;
}

c10::IValue optional_double(const std::optional<double>& v) { return v ? c10::IValue(*v) : c10::IValue(); }

const c10::IValue& field(const GenericDict& d, const std::string& key, const std::string& path) {
  auto it = d.find(key);
  TORCH_CHECK_VALUE(it != d.end(), "normality model file '", path, "' has no '", key, "' entry (corrupted?)");
  return it->value();
}

std::vector<std::string> to_strings(const c10::IValue& v) {
  std::vector<std::string> out;
  for (const auto& x : v.toListRef()) out.push_back(x.toStringRef());
  return out;
}

}  // namespace

void NormalityModel::save(const std::string& path) const {
  const State& s = *state_;
  TORCH_CHECK(s.fitted, "NormalityModel.save: the model is not fitted: call fit(normal_images) first");
  const NormalityOptions& o = s.options;
  GenericDict opts(c10::StringType::get(), c10::AnyType::get());
  opts.insert("layers", c10::List<int64_t>(s.layers));
  opts.insert("k", o.k);
  opts.insert("score", to_string(o.score));
  opts.insert("seed", static_cast<int64_t>(o.seed));
  opts.insert("kind", to_string(o.kind));
  opts.insert("image_size", s.image_size);
  opts.insert("text_weight", o.text_weight);
  opts.insert("class_name", o.class_name);
  opts.insert("normal_prompts", string_list(s.normal_prompts));
  opts.insert("anomaly_prompts", string_list(s.anomaly_prompts));
  opts.insert("semantic_layer", s.semantic_layer);
  opts.insert("pooling", to_string(o.pooling));
  opts.insert("blur_sigma", o.blur_sigma);
  opts.insert("gallery_tile", o.gallery_tile);
  opts.insert("batch_size", o.batch_size);

  c10::impl::GenericList neurons(c10::AnyType::get());
  for (const auto& n : s.neurons.layers) {
    GenericDict d(c10::StringType::get(), c10::AnyType::get());
    d.insert("layer", n.layer);
    d.insert("indices", n.indices.cpu());
    d.insert("scores", n.scores.cpu());
    d.insert("mean", n.mean.cpu());
    d.insert("std", n.std.cpu());
    neurons.push_back(d);
  }
  c10::List<at::Tensor> galleries;
  for (const auto& g : s.galleries) galleries.push_back(g.cpu());

  GenericDict top(c10::StringType::get(), c10::AnyType::get());
  top.insert("format", std::string("lake-normality"));
  top.insert("format_version", kNormalityFormatVersion);
  top.insert("lake_version", std::string(LAKE_VERSION_STRING));
  top.insert("backbone_fingerprint", s.model.fingerprint());
  top.insert("backbone", s.model.config().describe());
  top.insert("options", opts);
  top.insert("shots", s.shots);
  top.insert("channels", s.neurons.channels);
  top.insert("neurons", neurons);
  top.insert("galleries", galleries);
  top.insert("text_embeddings", s.text.defined() ? c10::IValue(s.text.cpu()) : c10::IValue());
  top.insert("image_threshold", optional_double(s.image_threshold));
  top.insert("pixel_threshold", optional_double(s.pixel_threshold));
  top.insert("checksum", content_hash(s));
  const std::vector<char> bytes = torch::jit::pickle_save(top);
  detail::write_file_atomically(path, bytes.data(), bytes.size(), "NormalityModel.save");
}

NormalityModel NormalityModel::load(const std::string& path, ClipModel model) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK_VALUE(in.good(), "normality model file '", path, "' does not exist or is not readable");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TORCH_CHECK_VALUE(bytes.size() >= 4 && std::memcmp(bytes.data(), "PK\x03\x04", 4) == 0, "'", path,
                    "' is not a LAKE normality model file (expected a zip archive written by NormalityModel.save)");
  c10::IValue value;
  try {
    value = torch::jit::pickle_load(bytes);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "normality model file '", path, "' is truncated or corrupted: ", e.what_without_backtrace());
  }
  TORCH_CHECK_VALUE(value.isGenericDict(), "'", path, "' is not a LAKE normality model file");
  const GenericDict top = value.toGenericDict();
  auto fmt = top.find("format");
  TORCH_CHECK_VALUE(fmt != top.end() && fmt->value().isString() && fmt->value().toStringRef() == "lake-normality", "'",
                    path, "' is not a LAKE normality model file (no format=lake-normality)");
  const int64_t version = field(top, "format_version", path).toInt();
  TORCH_CHECK_VALUE(version >= 1 && version <= kNormalityFormatVersion, "normality model file '", path,
                    "' has format version ", version, "; this LAKE (", LAKE_VERSION_STRING, ") reads versions 1..",
                    kNormalityFormatVersion, version > kNormalityFormatVersion ? ": upgrade LAKE" : "");
  const std::string fp = field(top, "backbone_fingerprint", path).toStringRef();
  TORCH_CHECK_VALUE(fp == model.fingerprint(), "normality model file '", path,
                    "' was fitted with a different backbone (fingerprint ", fp, ", ",
                    field(top, "backbone", path).toStringRef(), "); the given model '", model.path(),
                    "' has fingerprint ", model.fingerprint());

  const GenericDict od = field(top, "options", path).toGenericDict();
  NormalityOptions o;
  for (const auto& l : field(od, "layers", path).toListRef()) o.layers.push_back(l.toInt());
  o.k = field(od, "k", path).toInt();
  o.score = parse_sensitivity_score(field(od, "score", path).toStringRef());
  o.seed = static_cast<uint64_t>(field(od, "seed", path).toInt());
  o.kind = parse_probe_kind(field(od, "kind", path).toStringRef());
  o.image_size = field(od, "image_size", path).toInt();
  o.text_weight = field(od, "text_weight", path).toDouble();
  o.class_name = field(od, "class_name", path).toStringRef();
  o.normal_prompts = to_strings(field(od, "normal_prompts", path));
  o.anomaly_prompts = to_strings(field(od, "anomaly_prompts", path));
  o.semantic_layer = field(od, "semantic_layer", path).toInt();
  o.pooling = parse_pooling(field(od, "pooling", path).toStringRef());
  o.blur_sigma = field(od, "blur_sigma", path).toDouble();
  o.gallery_tile = field(od, "gallery_tile", path).toInt();
  // Added after format 1 was first written: optional, files without it use the default.
  if (od.contains("batch_size")) o.batch_size = od.at("batch_size").toInt();

  NormalityModel m(std::move(model), o);
  State& s = *m.state_;
  s.shots = field(top, "shots", path).toInt();
  s.neurons.kind = o.kind;
  s.neurons.channels = field(top, "channels", path).toInt();
  const c10::Device dev = s.model.device();
  for (const auto& item : field(top, "neurons", path).toListRef()) {
    const GenericDict d = item.toGenericDict();
    LayerNeurons n;
    n.layer = field(d, "layer", path).toInt();
    n.indices = field(d, "indices", path).toTensor();
    n.scores = field(d, "scores", path).toTensor();
    n.mean = field(d, "mean", path).toTensor();
    n.std = field(d, "std", path).toTensor();
    s.neurons.layers.push_back(std::move(n));
  }
  // The indices are checked here, once: the scoring path then gathers without a range check.
  s.device_indices = s.validated_indices(s.neurons, "normality model file '" + path + "'");
  std::vector<at::Tensor> galleries;
  for (const auto& g : field(top, "galleries", path).toListRef()) galleries.push_back(g.toTensor().to(dev));
  s.set_galleries(std::move(galleries));
  const c10::IValue& text = field(top, "text_embeddings", path);
  if (!text.isNone()) s.text = text.toTensor().to(dev);
  const c10::IValue& it = field(top, "image_threshold", path);
  const c10::IValue& pt = field(top, "pixel_threshold", path);
  if (!it.isNone()) s.image_threshold = it.toDouble();
  if (!pt.isNone()) s.pixel_threshold = pt.toDouble();
  s.fitted = true;
  TORCH_CHECK_VALUE(s.neurons.layers.size() == s.galleries.size() &&
                        (s.shots == 0 || s.neurons.layers.size() == s.layers.size()),
                    "normality model file '", path, "' is inconsistent: ", s.neurons.layers.size(), " neuron layers, ",
                    s.galleries.size(), " galleries, ", s.layers.size(), " tapped layers (corrupted?)");
  for (size_t l = 0; l < s.galleries.size(); ++l)
    TORCH_CHECK_VALUE(s.galleries[l].size(1) == s.neurons.layers[l].indices.numel(), "normality model file '", path,
                      "' is inconsistent: layer ", s.neurons.layers[l].layer, " has ",
                      s.neurons.layers[l].indices.numel(), " neurons but a gallery of ", s.galleries[l].sizes(),
                      " (corrupted?)");
  const std::string sum = field(top, "checksum", path).toStringRef();
  TORCH_CHECK_VALUE(sum == content_hash(s), "normality model file '", path,
                    "' is corrupted: its checksum does not match its contents");
  return m;
}

}  // namespace lake
