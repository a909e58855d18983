// Reading a `.lake` file of format version 1: a pickled dict in a torch.save zip (LibTorch's
// pickler), through LAKE's code-free pickle reader, which checks every tensor's sizes, strides
// and offset against its storage; then the same checks as version 2 and the version-1 checksum.

#include <ATen/ATen.h>

#include <cstring>

#include "detail/format.h"
#include "detail/hash.h"
#include "detail/normality_read.h"
#include "detail/torch_pickle.h"

namespace lake::normality_io_detail {

using detail::PyValue;
using detail::PyValuePtr;

// The version-1 checksum: over the parsed state, as version 1 wrote it.
std::string content_hash_v1(const Contents& c) {
  detail::Hasher h;
  const NormalityOptions& o = c.options;
  for (int64_t l : o.layers) h.word(static_cast<uint64_t>(l));
  for (int64_t v : {o.k, static_cast<int64_t>(o.seed), o.image_size, o.semantic_layer, o.gallery_tile, c.shots,
                    c.channels})
    h.word(static_cast<uint64_t>(v));
  for (const std::string& str : {to_string(o.score), to_string(o.kind), to_string(o.pooling), o.class_name}) h.str(str);
  for (double d : {o.text_weight, o.blur_sigma, c.image_threshold.value_or(-1.0), c.pixel_threshold.value_or(-1.0)}) {
    uint64_t w;
    std::memcpy(&w, &d, 8);
    h.word(w);
  }
  for (const auto& p : o.normal_prompts) h.str(p);
  for (const auto& p : o.anomaly_prompts) h.str(p);
  for (const auto& n : c.neurons) {
    h.word(static_cast<uint64_t>(n.layer));
    for (const auto& t : {n.indices, n.scores, n.mean, n.std}) h.tensor(t);
  }
  for (const auto& g : c.galleries) h.tensor(g);
  h.tensor(c.text);
  return h.hex();
}

// Typed access to the unpickled dict; errors name the key and what it should be.
struct PickleFields {
  const std::string& path;

  static const char* kind_name(PyValue::Kind k) {
    switch (k) {
      case PyValue::Kind::None: return "None";
      case PyValue::Kind::Bool: return "a bool";
      case PyValue::Kind::Int: return "an int";
      case PyValue::Kind::Float: return "a float";
      case PyValue::Kind::Str: return "a string";
      case PyValue::Kind::Tensor: return "a tensor";
      case PyValue::Kind::List: case PyValue::Kind::Tuple: return "a list";
      case PyValue::Kind::Dict: return "a dict";
      default: return "an object";
    }
  }
  [[noreturn]] void wrong(const std::string& key, const PyValue& v, const char* expected) const {
    bad(path, fmt::format("entry '{}' is {}, expected {}", key, kind_name(v.kind), expected));
  }
  const PyValue* find(const PyValue& d, const std::string& key) const {
    for (const auto& [k, v] : d.dict)
      if (k->kind == PyValue::Kind::Str && k->s == key) return v.get();
    return nullptr;
  }
  const PyValue& at(const PyValue& d, const std::string& prefix, const std::string& key) const {
    const PyValue* v = find(d, key);
    if (v == nullptr) bad(path, fmt::format("has no '{}{}' entry (corrupted?)", prefix, key));
    return *v;
  }
  const PyValue& dict(const PyValue& d, const std::string& prefix, const std::string& key) const {
    const PyValue& v = at(d, prefix, key);
    if (v.kind != PyValue::Kind::Dict) wrong(prefix + key, v, "a dict");
    return v;
  }
  const std::vector<PyValuePtr>& list(const PyValue& d, const std::string& prefix, const std::string& key) const {
    const PyValue& v = at(d, prefix, key);
    if (v.kind != PyValue::Kind::List && v.kind != PyValue::Kind::Tuple) wrong(prefix + key, v, "a list");
    return v.items;
  }
  int64_t integer(const PyValue& d, const std::string& prefix, const std::string& key) const {
    const PyValue& v = at(d, prefix, key);
    if (v.kind != PyValue::Kind::Int) wrong(prefix + key, v, "an int");
    return v.i;
  }
  double number(const PyValue& v, const std::string& key) const {
    if (v.kind == PyValue::Kind::Float) return v.f;
    if (v.kind == PyValue::Kind::Int) return static_cast<double>(v.i);
    wrong(key, v, "a number");
  }
  double number(const PyValue& d, const std::string& prefix, const std::string& key) const {
    return number(at(d, prefix, key), prefix + key);
  }
  std::optional<double> optional_number(const PyValue& d, const std::string& key) const {
    const PyValue& v = at(d, "", key);
    if (v.kind == PyValue::Kind::None) return std::nullopt;
    return number(v, key);
  }
  std::string string(const PyValue& d, const std::string& prefix, const std::string& key) const {
    const PyValue& v = at(d, prefix, key);
    if (v.kind != PyValue::Kind::Str) wrong(prefix + key, v, "a string");
    return v.s;
  }
  std::vector<std::string> strings(const PyValue& d, const std::string& prefix, const std::string& key) const {
    std::vector<std::string> out;
    for (const auto& x : list(d, prefix, key)) {
      if (x->kind != PyValue::Kind::Str) wrong(prefix + key, *x, "a list of strings");
      out.push_back(x->s);
    }
    return out;
  }
  at::Tensor tensor(const PyValue& v, const std::string& key) const {
    if (v.kind != PyValue::Kind::Tensor) wrong(key, v, "a tensor");
    return v.tensor.contiguous();
  }
};

Contents read_v1(const std::string& path) {
  PyValuePtr root;
  try {
    root = detail::read_torch_save(path);
  } catch (const c10::Error& e) {
    bad(path, fmt::format("is truncated or corrupted: {}", e.what_without_backtrace()));
  }
  TORCH_CHECK_VALUE(root->kind == PyValue::Kind::Dict, fmt::format("'{}' is not a LAKE normality model file", path));
  const PickleFields f{path};
  const PyValue& top = *root;
  const PyValue* fmt = f.find(top, "format");
  TORCH_CHECK_VALUE(fmt != nullptr && fmt->kind == PyValue::Kind::Str && fmt->s == "lake-normality",
                    fmt::format("'{}' is not a LAKE normality model file (no format=lake-normality)", path));
  Contents c;
  c.version = f.integer(top, "", "format_version");
  check_version(path, c.version, 1);
  c.fingerprint = f.string(top, "", "backbone_fingerprint");
  c.backbone = f.string(top, "", "backbone");

  const PyValue& od = f.dict(top, "", "options");
  const std::string p = "options.";
  NormalityOptions& o = c.options;
  for (const auto& l : f.list(od, p, "layers")) {
    if (l->kind != PyValue::Kind::Int) f.wrong("options.layers", *l, "a list of ints");
    o.layers.push_back(l->i);
  }
  read_method_options(f, od, path, o);
  o.seed = static_cast<uint64_t>(f.integer(od, p, "seed"));
  // Added after format 1 was first written: optional, files without it use the default.
  if (f.find(od, "batch_size") != nullptr) o.batch_size = f.integer(od, p, "batch_size");

  c.shots = f.integer(top, "", "shots");
  c.channels = f.integer(top, "", "channels");
  const auto& neurons = f.list(top, "", "neurons");
  for (size_t l = 0; l < neurons.size(); ++l) {
    const std::string q = fmt::format("neurons[{}].", l);
    if (neurons[l]->kind != PyValue::Kind::Dict) f.wrong(fmt::format("neurons[{}]", l), *neurons[l], "a dict");
    const PyValue& d = *neurons[l];
    LayerNeurons n;
    n.layer = f.integer(d, q, "layer");
    n.indices = f.tensor(f.at(d, q, "indices"), q + "indices");
    n.scores = f.tensor(f.at(d, q, "scores"), q + "scores");
    n.mean = f.tensor(f.at(d, q, "mean"), q + "mean");
    n.std = f.tensor(f.at(d, q, "std"), q + "std");
    c.neurons.push_back(std::move(n));
  }
  const auto& galleries = f.list(top, "", "galleries");
  for (size_t l = 0; l < galleries.size(); ++l)
    c.galleries.push_back(f.tensor(*galleries[l], fmt::format("galleries[{}]", l)));
  const PyValue& text = f.at(top, "", "text_embeddings");
  if (text.kind != PyValue::Kind::None) c.text = f.tensor(text, "text_embeddings");
  c.image_threshold = f.optional_number(top, "image_threshold");
  c.pixel_threshold = f.optional_number(top, "pixel_threshold");
  const std::string checksum = f.string(top, "", "checksum");

  check_contents(path, c);
  if (checksum != content_hash_v1(c)) bad(path, "is corrupted: its checksum does not match its contents");
  return c;
}

}  // namespace lake::normality_io_detail
