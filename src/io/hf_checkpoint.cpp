// transformers CLIP checkpoints (config.json + model.safetensors, sharded or not, or
// pytorch_model.bin): the config is validated, the names mapped to the OpenAI layout
// (q, k, v concatenated into in_proj, projections transposed) and cross-checked.

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "detail/clip_archive.h"
#include "detail/format.h"
#include "detail/json_file.h"

namespace lake::detail {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kSupportedLayerNormEps = 1e-5;  // clip_model.cpp's layer norms

// One tower's settings from config.json, with transformers' CLIP defaults for absent keys.
struct Tower {
  std::string where;  // "vision_config" / "text_config" / "" (flat CLIPVisionConfig)
  json j;
  int64_t num(const char* key, int64_t dflt, const fs::path& cfg) const {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    TORCH_CHECK_VALUE(it->is_number_integer(),
                      fmt::format("'{}': {} is {}, expected an integer", cfg.string(), label(key), it->dump()));
    return it->get<int64_t>();
  }
  double real(const char* key, double dflt) const {
    auto it = j.find(key);
    return it == j.end() || !it->is_number() ? dflt : it->get<double>();
  }
  std::string str(const char* key, const std::string& dflt) const {
    auto it = j.find(key);
    return it == j.end() || !it->is_string() ? dflt : it->get<std::string>();
  }
  std::string label(const char* key) const { return where.empty() ? std::string(key) : where + "." + key; }
};

struct Checker {
  std::string cfg, weights;
  void expect(int64_t from_config, int64_t from_tensor, const std::string& key, const std::string& tensor_what) const {
    TORCH_CHECK_VALUE(from_config == from_tensor,
                      fmt::format("transformers checkpoint: '{}' says {} = {} but the weights '{}' have {} = {}",
                                  cfg, key, from_config, weights, tensor_what, from_tensor));
  }
};

std::string shard_file(const fs::path& index, const json& v) {
  TORCH_CHECK_VALUE(v.is_string(),
                    fmt::format("'{}': a weight_map value is {}, expected a file name", index.string(), v.dump()));
  const std::string name = v.get<std::string>();
  TORCH_CHECK_VALUE(!name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos &&
                        name != "." && name != "..",
                    fmt::format("'{}': shard '{}' is not a plain file name in the same folder", index.string(), name));
  return name;
}

// The weights of a sharded checkpoint: every shard read once, every name where the index says.
std::map<std::string, at::Tensor> read_sharded(const fs::path& index) {
  const json j = read_json_object(index);
  auto wm = j.find("weight_map");
  TORCH_CHECK_VALUE(wm != j.end() && wm->is_object() && !wm->empty(),
                    fmt::format("'{}' has no \"weight_map\" object naming the shard of each tensor", index.string()));
  std::map<std::string, std::set<std::string>> by_shard;
  for (auto it = wm->begin(); it != wm->end(); ++it) by_shard[shard_file(index, *it)].insert(it.key());
  std::map<std::string, at::Tensor> out;
  for (const auto& [shard, names] : by_shard) {
    const fs::path file = index.parent_path() / shard;
    TORCH_CHECK_VALUE(fs::is_regular_file(file),
                      fmt::format("shard '{}' listed in '{}' is missing", file.string(), index.string()));
    auto tensors = read_tensor_file(file.string());
    for (const auto& n : names) {
      auto it = tensors.find(n);
      TORCH_CHECK_VALUE(it != tensors.end(),
                        fmt::format("'{}' puts tensor '{}' in shard '{}', which does not hold it",
                                    index.string(), n, file.string()));
      out[n] = it->second;
    }
  }
  return out;
}

// The internal (OpenAI) name of a transformers CLIP tensor; "" for buffers to drop.
std::string map_name(const std::string& n, const std::string& file) {
  static const std::regex block(R"(^(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)$)");
  static const std::map<std::string, std::string> leaf = {
      {"layer_norm1.weight", "ln_1.weight"},     {"layer_norm1.bias", "ln_1.bias"},
      {"layer_norm2.weight", "ln_2.weight"},     {"layer_norm2.bias", "ln_2.bias"},
      {"self_attn.out_proj.weight", "attn.out_proj.weight"}, {"self_attn.out_proj.bias", "attn.out_proj.bias"},
      {"mlp.fc1.weight", "mlp.c_fc.weight"},     {"mlp.fc1.bias", "mlp.c_fc.bias"},
      {"mlp.fc2.weight", "mlp.c_proj.weight"},   {"mlp.fc2.bias", "mlp.c_proj.bias"}};
  static const std::map<std::string, std::string> flat = {
      {"vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"},
      {"vision_model.embeddings.class_embedding", "visual.class_embedding"},
      {"vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"},
      {"vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"},
      {"vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"},
      {"vision_model.post_layernorm.weight", "visual.ln_post.weight"},
      {"vision_model.post_layernorm.bias", "visual.ln_post.bias"},
      {"text_model.embeddings.token_embedding.weight", "token_embedding.weight"},
      {"text_model.embeddings.position_embedding.weight", "positional_embedding"},
      {"text_model.final_layer_norm.weight", "ln_final.weight"},
      {"text_model.final_layer_norm.bias", "ln_final.bias"},
      {"logit_scale", "logit_scale"}};
  if (n == "vision_model.embeddings.position_ids" || n == "text_model.embeddings.position_ids") return "";
  auto f = flat.find(n);
  if (f != flat.end()) return f->second;
  std::smatch m;
  if (std::regex_match(n, m, block)) {
    const std::string prefix = (m[1] == "vision" ? "visual.transformer.resblocks." : "transformer.resblocks.") +
                               m[2].str() + ".";
    auto l = leaf.find(m[3].str());
    if (l != leaf.end()) return prefix + l->second;
    if (std::regex_match(m[3].str(), std::regex(R"(self_attn\.[qkv]_proj\.(weight|bias))"))) return "";  // below
  }
  TORCH_CHECK_VALUE(false,
                    fmt::format("transformers checkpoint '{}' has tensor '{}', which is not part of a CLIP ViT (LAKE "
                                "reads transformers' CLIPModel and CLIPVisionModelWithProjection)", file, n));
}

void map_tensors(const std::map<std::string, at::Tensor>& hf, const std::string& file, RawArchive& out) {
  static const std::regex qkv(R"(^(vision|text)_model\.encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$)");
  for (const auto& [n, t] : hf) {
    if (n == "visual_projection.weight" || n == "text_projection.weight") {
      TORCH_CHECK_VALUE(t.dim() == 2,
                        fmt::format("transformers checkpoint '{}': '{}' has shape {}, expected (projection_dim, "
                                    "hidden_size)", file, n, t.sizes()));
      out.tensors[n == "visual_projection.weight" ? "visual.proj" : "text_projection"] = t.t().contiguous();
      continue;
    }
    const std::string m = map_name(n, file);
    if (!m.empty()) out.tensors[m] = t;
    std::smatch g;
    if (!std::regex_match(n, g, qkv)) continue;
    const std::string base = n.substr(0, n.size() - g[3].length() - std::string("q_proj.").size());
    std::vector<at::Tensor> parts;
    for (const char* p : {"q_proj.", "k_proj.", "v_proj."}) {
      auto it = hf.find(base + p + g[3].str());
      TORCH_CHECK_VALUE(it != hf.end(),
                        fmt::format("transformers checkpoint '{}' is missing tensor '{}'", file, base + p + g[3].str()));
      TORCH_CHECK_VALUE(it->second.sizes() == t.sizes(),
                        fmt::format("transformers checkpoint '{}': '{}' has shape {} but '{}' has {}",
                                    file, it->first, it->second.sizes(), n, t.sizes()));
      parts.push_back(it->second);
    }
    const std::string prefix = (g[1] == "vision" ? "visual.transformer.resblocks." : "transformer.resblocks.") +
                               g[2].str() + ".attn.";
    out.tensors[prefix + (g[3] == "weight" ? "in_proj_weight" : "in_proj_bias")] = at::cat(parts, 0);
  }
  for (const auto& [n, t] : hf) {  // k/v without q would be dropped silently otherwise
    if (std::regex_match(n, std::regex(R"(.*\.self_attn\.[kv]_proj\.(weight|bias)$)"))) {
      std::string q = std::regex_replace(n, std::regex(R"(\.self_attn\.[kv]_proj\.)"), ".self_attn.q_proj.");
      TORCH_CHECK_VALUE(hf.count(q), fmt::format("transformers checkpoint '{}' is missing tensor '{}'", file, q));
    }
  }
}

Activation tower_activation(const Tower& tw, const std::string& cfg) {
  const std::string act = tw.str("hidden_act", "quick_gelu");
  TORCH_CHECK_VALUE(act == "quick_gelu" || act == "gelu",
                    fmt::format("transformers checkpoint: '{}' has {} = '{}'; LAKE supports 'quick_gelu' and 'gelu'",
                                cfg, tw.label("hidden_act"), act));
  const double eps = tw.real("layer_norm_eps", kSupportedLayerNormEps);
  TORCH_CHECK_VALUE(std::abs(eps - kSupportedLayerNormEps) <= 1e-12,
                    fmt::format("transformers checkpoint: '{}' has {} = {:g}; LAKE's CLIP layer norms use 1e-05",
                                cfg, tw.label("layer_norm_eps"), eps));
  return parse_activation(act);
}

void check_tower(const Tower& tw, const RawArchive& raw, bool vision, const Checker& c) {
  const std::string p = vision ? "visual.transformer.resblocks." : "transformer.resblocks.";
  const auto& t = raw.tensors;
  const at::Tensor& emb = t.at(vision ? "visual.conv1.weight" : "token_embedding.weight");
  const int64_t width = emb.size(vision ? 0 : 1);
  c.expect(tw.num("hidden_size", vision ? 768 : 512, c.cfg), width, tw.label("hidden_size"),
           vision ? "patch_embedding width" : "token_embedding width");
  c.expect(tw.num("num_hidden_layers", 12, c.cfg), count_blocks(t, p), tw.label("num_hidden_layers"), "layers");
  c.expect(tw.num("intermediate_size", 4 * width, c.cfg), 4 * width, tw.label("intermediate_size"),
           "4 x hidden_size (the only MLP width LAKE's CLIP blocks support)");
  const int64_t heads = tw.num("num_attention_heads", vision ? 12 : 8, c.cfg);
  TORCH_CHECK_VALUE(heads > 0 && width % heads == 0,
                    fmt::format("transformers checkpoint: '{}' has {} = {}, which does not divide hidden_size {}",
                                c.cfg, tw.label("num_attention_heads"), heads, width));
  if (vision) {
    const int64_t patch = emb.size(2);
    c.expect(tw.num("patch_size", 32, c.cfg), patch, tw.label("patch_size"), "patch_embedding kernel size");
    auto pos = t.find("visual.positional_embedding");
    if (pos != t.end() && pos->second.dim() == 2) {
      const int64_t grid = position_grid(pos->second.size(0));
      c.expect(tw.num("image_size", 224, c.cfg), grid * patch, tw.label("image_size"),
               fmt::format("image size (position_embedding rows 1 + {}^2, patch {})", grid, patch));
    }
  } else {
    c.expect(tw.num("vocab_size", 49408, c.cfg), emb.size(0), tw.label("vocab_size"), "token_embedding rows");
    auto pos = t.find("positional_embedding");
    if (pos != t.end())
      c.expect(tw.num("max_position_embeddings", 77, c.cfg), pos->second.size(0),
               tw.label("max_position_embeddings"), "position_embedding rows");
  }
}

}  // namespace

bool has_transformers_names(const std::map<std::string, at::Tensor>& tensors) {
  for (const auto& kv : tensors)
    if (kv.first.rfind("vision_model.", 0) == 0 || kv.first.rfind("text_model.", 0) == 0) return true;
  return false;
}

RawArchive read_transformers(const std::string& path) {
  const fs::path p(path);
  const bool is_dir = fs::is_directory(p);
  const fs::path folder = is_dir ? p : (p.has_parent_path() ? p.parent_path() : fs::path("."));
  const fs::path cfg_file = folder / "config.json";
  if (is_dir) {
    TORCH_CHECK_VALUE(fs::is_regular_file(cfg_file),
                      fmt::format("CLIP archive '{}' is a folder without config.json: expected a transformers CLIP "
                                  "checkpoint (config.json + model.safetensors) or pass a weights file", path));
  } else {
    TORCH_CHECK_VALUE(fs::is_regular_file(cfg_file),
                      fmt::format("CLIP archive '{}' holds transformers-named weights (vision_model.*, text_model.*) "
                                  "but there is no config.json beside it ('{}')", path, cfg_file.string()));
  }
  const std::string cfg = cfg_file.string();
  const json j = read_json_object(cfg_file);
  const std::string model_type = j.contains("model_type") && j["model_type"].is_string()
                                     ? j["model_type"].get<std::string>() : "(none)";
  std::optional<Tower> vision, text;
  if (model_type == "clip") {
    auto section = [&](const char* key) {
      auto it = j.find(key);
      return Tower{key, it != j.end() && it->is_object() ? *it : json::object()};
    };
    vision = section("vision_config");
    text = section("text_config");
  } else if (model_type == "clip_vision_model") {
    vision = Tower{"", j};
  } else {
    TORCH_CHECK_VALUE(false,
                      fmt::format("CLIP archive '{}': '{}' has model_type '{}'; LAKE reads transformers CLIP "
                                  "checkpoints (model_type 'clip' or 'clip_vision_model'){}",
                                  path, cfg, model_type, model_type == "clip_text_model" ? " with an image tower" : ""));
  }

  // The weights: the given file, or the folder's single / sharded file.
  fs::path weights, index;
  if (is_dir) {
    for (const char* n : {"model.safetensors", "pytorch_model.bin"})
      if (weights.empty() && fs::is_regular_file(folder / n)) weights = folder / n;
    for (const char* n : {"model.safetensors.index.json", "pytorch_model.bin.index.json"})
      if (weights.empty() && index.empty() && fs::is_regular_file(folder / n)) index = folder / n;
    TORCH_CHECK_VALUE(!weights.empty() || !index.empty(),
                      fmt::format("CLIP archive '{}' has config.json but no weights (model.safetensors, "
                                  "model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json)",
                                  path));
  } else if (p.filename().string().size() > 11 &&
             p.filename().string().substr(p.filename().string().size() - 11) == ".index.json") {
    index = p;
  } else {
    weights = p;
    // A shard given alone: read the whole checkpoint its index describes.
    for (const char* n : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
      if (!fs::is_regular_file(folder / n)) continue;
      const json ij = read_json_object(folder / n);
      auto wm = ij.find("weight_map");
      if (wm == ij.end() || !wm->is_object()) continue;
      for (auto it = wm->begin(); it != wm->end(); ++it)
        if (it->is_string() && it->get<std::string>() == p.filename().string()) index = folder / n;
    }
    if (!index.empty()) weights.clear();
  }
  const std::string wname = index.empty() ? weights.string() : index.string();
  const auto hf = index.empty() ? read_tensor_file(weights.string()) : read_sharded(index);

  RawArchive out;
  out.kind = ArchiveKind::Transformers;
  map_tensors(hf, wname, out);
  TORCH_CHECK_VALUE(out.tensors.count("visual.conv1.weight"),
                    fmt::format("CLIP archive '{}': the weights '{}' have no image tower "
                                "('vision_model.embeddings.patch_embedding.weight')", path, wname));
  TORCH_CHECK_VALUE(out.tensors.count("visual.proj"),
                    fmt::format("CLIP archive '{}': the weights '{}' have no 'visual_projection.weight' (a "
                                "CLIPVisionModel without projection?); LAKE needs CLIPModel or "
                                "CLIPVisionModelWithProjection", path, wname));
  const Checker c{cfg, wname};
  const int64_t proj = j.contains("projection_dim") && j["projection_dim"].is_number_integer()
                           ? j["projection_dim"].get<int64_t>() : 512;
  c.expect(proj, out.tensors.at("visual.proj").size(1), "projection_dim", "visual_projection rows");
  check_tower(*vision, out, true, c);
  Activation act = tower_activation(*vision, cfg);
  out.lake_config["vision_heads"] = fmt::to_string(vision->num("num_attention_heads", 12, cfg));
  if (text && out.tensors.count("token_embedding.weight")) {
    check_tower(*text, out, false, c);
    TORCH_CHECK_VALUE(tower_activation(*text, cfg) == act,
                      fmt::format("transformers checkpoint: '{}' uses different activations in its towers; LAKE "
                                  "needs one for both", cfg));
    out.lake_config["text_heads"] = fmt::to_string(text->num("num_attention_heads", 8, cfg));
  }
  out.activation_hint = act;
  return out;
}

}  // namespace lake::detail
