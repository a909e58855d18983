// OpenCLIP hub folders, as open_clip's push_to_hf_hub / save_for_hf write them:
// open_clip_config.json ({"model_cfg": {...}, "preprocess_cfg": {...}}) beside
// open_clip_model.safetensors and/or open_clip_pytorch_model.bin, an OpenCLIP state dict in
// the OpenAI naming. Every option of the config is checked against what LAKE's CLIP ViT
// computes (anything else is rejected by name), and the config is cross-checked with the
// weights' shapes. Defaults are open_clip's (model.py CLIPVisionCfg / CLIPTextCfg,
// transform.py PreprocessCfg).

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <set>

#include "detail/clip_archive.h"
#include "detail/format.h"
#include "detail/json_file.h"

namespace lake::detail {
// A named namespace around the helpers: the unity build compiles every src/ file as one
// translation unit, where hf_checkpoint.cpp's anonymous-namespace names (Checker, ...) live too.
namespace open_clip_hub {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kConfigName = "open_clip_config.json";
constexpr const char* kWeightNames[] = {"open_clip_model.safetensors", "open_clip_pytorch_model.bin"};
constexpr double kLayerNormEps = 1e-5;  // clip_model.cpp's layer norms
constexpr double kMlpRatio = 4.0;       // clip_model.cpp's blocks: c_fc is (4 D, D)
constexpr float kOpenAIMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};  // open_clip constants.py
constexpr float kOpenAIStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};

// The keys open_clip 3.3 knows (model.py): anything else may change the forward.
const std::set<std::string> kModelKeys = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale",
                                          "init_logit_bias", "nonscalar_logit_scale", "cast_dtype", "output_dict",
                                          "custom_text", "multimodal_cfg"};
const std::set<std::string> kVisionKeys = {
    "layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "ls_init_value", "patch_dropout",
    "attentional_pool", "attn_pooler_queries", "attn_pooler_heads", "no_ln_pre", "pos_embed_type",
    "final_ln_after_pool", "pool_type", "output_tokens", "act_kwargs", "norm_kwargs", "block_type", "qk_norm",
    "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc", "timm_model_name",
    "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"};
const std::set<std::string> kTextKeys = {
    "context_length", "vocab_size", "hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs", "width", "heads",
    "layers", "mlp_ratio", "ls_init_value", "embed_cls", "pad_id", "eos_id", "no_causal_mask",
    "final_ln_after_pool", "pool_type", "proj_bias", "proj_type", "output_tokens", "act_kwargs", "norm_kwargs",
    "block_type", "qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc",
    "hf_model_name", "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"};
// Options of the custom attention block (transformer.py CustomResidualAttentionBlock).
const char* const kCustomBlockKeys[] = {"qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner",
                                        "scale_attn", "scale_fc"};

const char* const kWhat = "OpenCLIP hub folder";

// One object of the config ("model_cfg", "model_cfg.vision_cfg", ...) with open_clip's
// defaults for absent (or null) keys; every error names the file and the key.
struct Section {
  std::string cfg;    // the config file
  std::string where;  // "model_cfg.vision_cfg"
  json j;

  std::string label(const std::string& key) const { return where.empty() ? key : where + "." + key; }
  const json* get(const std::string& key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void fail(const std::string& key, const std::string& expected) const {
    TORCH_CHECK_VALUE(false, fmt::format("{}: '{}' has {} = {}, expected {}", kWhat, cfg, label(key),
                                         get(key)->dump(), expected));
  }
  int64_t num(const std::string& key, int64_t dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_number_integer()) fail(key, "an integer");
    return v->get<int64_t>();
  }
  double real(const std::string& key, double dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_number()) fail(key, "a number");
    return v->get<double>();
  }
  bool flag(const std::string& key) const {  // Python truthiness of a bool option (default False)
    const json* v = get(key);
    if (!v) return false;
    if (!v->is_boolean()) fail(key, "true or false");
    return v->get<bool>();
  }
  std::string str(const std::string& key, const std::string& dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_string()) fail(key, "a string");
    return v->get<std::string>();
  }
  // A side length: an integer, or [h, w] with h == w (LAKE's ViTs are square).
  int64_t side(const std::string& key, int64_t dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (v->is_number_integer()) return v->get<int64_t>();
    if (v->is_array() && v->size() == 2 && (*v)[0].is_number_integer() && (*v)[1].is_number_integer()) {
      TORCH_CHECK_VALUE((*v)[0] == (*v)[1],
                        fmt::format("{}: '{}' has {} = {}; LAKE reads square ViTs only (equal height and width)", kWhat,
                                    cfg, label(key), v->dump()));
      return (*v)[0].get<int64_t>();
    }
    fail(key, "an integer or [height, width]");
  }

  [[noreturn]] void unsupported(const std::string& key, const std::string& what) const {
    TORCH_CHECK_VALUE(false, fmt::format("{}: '{}' has {} = {} ({}), which LAKE does not support: LAKE reads the "
                                         "standard CLIP ViT (OpenAI layout)",
                                         kWhat, cfg, label(key), get(key)->dump(), what));
  }
  void reject_true(const std::string& key, const std::string& what) const {
    if (flag(key)) unsupported(key, what);
  }
  void reject_set(const std::string& key, const std::string& what) const {  // any non-null value
    if (get(key)) unsupported(key, what);
  }
  void require_str(const std::string& key, const std::string& dflt, const std::string& what) const {
    if (str(key, dflt) != dflt) unsupported(key, what);
  }
  void reject_unknown_keys(const std::set<std::string>& known) const {
    for (auto it = j.begin(); it != j.end(); ++it)
      TORCH_CHECK_VALUE(known.count(it.key()),
                        fmt::format("{}: '{}' has {} = {}, an option LAKE does not know (it reads the options of "
                                    "open_clip 3.3's standard CLIP), so it cannot be sure to compute the same model",
                                    kWhat, cfg, label(it.key()), it->dump()));
  }
  // act_kwargs / norm_kwargs: only what leaves nn.GELU / QuickGELU and LayerNorm(eps=1e-5) as they are.
  void check_layer_kwargs() const {
    if (const json* a = get("act_kwargs"); a && !(a->is_object() && a->empty()))
      unsupported("act_kwargs", "arguments to the MLP activation");
    if (const json* n = get("norm_kwargs"); n && !(n->is_object() && n->empty())) {
      bool only_eps = n->is_object() && n->size() == 1 && n->contains("eps") && (*n)["eps"].is_number() &&
                      std::abs((*n)["eps"].get<double>() - kLayerNormEps) <= 1e-12;
      if (!only_eps) unsupported("norm_kwargs", "LayerNorm arguments other than eps = 1e-05");
    }
  }
  void check_block_options() const {
    const std::string bt = str("block_type", "default");
    if (bt != "default") unsupported("block_type", "a custom attention block");
    for (const char* k : kCustomBlockKeys) reject_true(k, "a custom attention block");
    reject_set("ls_init_value", "layer scale");
    check_layer_kwargs();
  }
};

Section section(const Section& parent, const std::string& key) {
  const json* v = parent.get(key);
  if (v && !v->is_object()) parent.fail(key, "an object");
  return Section{parent.cfg, parent.label(key), v ? *v : json::object()};
}

struct Checker {
  std::string cfg, weights;
  void expect(int64_t from_config, int64_t from_tensor, const std::string& key, const std::string& tensor_what) const {
    TORCH_CHECK_VALUE(from_config == from_tensor,
                      fmt::format("{}: '{}' says {} = {} but the weights '{}' have {} = {}", kWhat, cfg, key,
                                  from_config, weights, tensor_what, from_tensor));
  }
  const at::Tensor& tensor(const RawArchive& raw, const std::string& name, int64_t dim) const {
    auto it = raw.tensors.find(name);
    TORCH_CHECK_VALUE(it != raw.tensors.end(),
                      fmt::format("{}: the weights '{}' have no '{}' ({} tensors), which '{}' describes", kWhat,
                                  weights, name, raw.tensors.size(), cfg));
    TORCH_CHECK_VALUE(it->second.dim() == dim,
                      fmt::format("{}: the weights '{}' have '{}' of shape {}, expected {} dimensions", kWhat, weights,
                                  name, it->second.sizes(), dim));
    return it->second;
  }
};

void check_mlp_ratio(const Section& s, const RawArchive& raw, const std::string& prefix, int64_t width,
                     const Checker& c) {
  const double ratio = s.real("mlp_ratio", kMlpRatio);
  // {:g}: the double as the stream printed it (6 significant digits).
  TORCH_CHECK_VALUE(ratio == kMlpRatio,
                    fmt::format("{}: '{}' has {} = {:g}; LAKE's CLIP blocks have an MLP of 4 x width (mlp_ratio 4)",
                                kWhat, c.cfg, s.label("mlp_ratio"), ratio));
  auto fc = raw.tensors.find(prefix + "0.mlp.c_fc.weight");
  if (fc != raw.tensors.end() && fc->second.dim() == 2)
    c.expect(static_cast<int64_t>(ratio * width), fc->second.size(0), s.label("mlp_ratio") + " x width",
             fmt::format("'{}' rows", fc->first));
}

// The image tower: options LAKE computes, then config vs shapes. Returns the head count.
int64_t check_vision(const Section& v, const RawArchive& raw, int64_t embed_dim, const Checker& c) {
  if (const json* t = v.get("timm_model_name"); t && !(t->is_string() && t->get<std::string>().empty()))
    v.unsupported("timm_model_name", "a timm image tower");
  if (const json* l = v.get("layers"); l && l->is_array()) v.unsupported("layers", "a ResNet image tower");
  if (const json* a = v.get("attentional_pool"); a && !(a->is_boolean() && !a->get<bool>()) &&
                                                 !(a->is_string() && a->get<std::string>().empty()))
    v.unsupported("attentional_pool", "attentional pooling (attn_pooler)");
  v.reject_true("no_ln_pre", "no LayerNorm before the transformer");
  v.reject_true("final_ln_after_pool", "the final LayerNorm after pooling");
  v.require_str("pool_type", "tok", "pooling other than the class token");
  v.reject_true("output_tokens", "a tower returning its tokens");
  const std::string pos = v.str("pos_embed_type", "learnable");
  if (pos != "learnable" && pos != "sin_cos_2d") v.unsupported("pos_embed_type", "an unknown position embedding");
  v.check_block_options();
  v.reject_unknown_keys(kVisionKeys);

  if (!raw.tensors.count("visual.conv1.weight")) {
    std::string names;
    int i = 0;
    for (auto it = raw.tensors.begin(); it != raw.tensors.end() && i < 5; ++it, ++i)
      names += fmt::format("{}'{}'", i ? ", " : "", it->first);
    TORCH_CHECK_VALUE(false, fmt::format("{}: the weights '{}' have no 'visual.conv1.weight': not an OpenCLIP ViT "
                                         "state dict ({} tensors: {}{})",
                                         kWhat, c.weights, raw.tensors.size(), names,
                                         raw.tensors.size() > 5 ? ", ..." : ""));
  }
  const std::string p = "visual.transformer.resblocks.";
  const at::Tensor& conv1 = c.tensor(raw, "visual.conv1.weight", 4);
  const int64_t width = conv1.size(0), patch = conv1.size(2);
  c.expect(v.num("width", 768), width, v.label("width"), "'visual.conv1.weight' width");
  c.expect(v.num("layers", 12), count_blocks(raw.tensors, p), v.label("layers"), "image-tower blocks");
  c.expect(v.side("patch_size", 16), patch, v.label("patch_size"), "'visual.conv1.weight' kernel size");
  const at::Tensor& pe = c.tensor(raw, "visual.positional_embedding", 2);
  const int64_t grid = position_grid(pe.size(0));
  c.expect(v.side("image_size", 224), grid * patch, v.label("image_size"),
           fmt::format("image size (visual.positional_embedding rows {} = 1 + {}^2, patch {})", pe.size(0), grid,
                       patch));
  check_mlp_ratio(v, raw, p, width, c);
  c.expect(embed_dim, c.tensor(raw, "visual.proj", 2).size(1), "model_cfg.embed_dim", "'visual.proj' columns");
  const int64_t head_width = v.num("head_width", 64);
  TORCH_CHECK_VALUE(head_width > 0 && width % head_width == 0,
                    fmt::format("{}: '{}' has {} = {}, which does not divide the image-tower width {}", kWhat, c.cfg,
                                v.label("head_width"), head_width, width));
  return width / head_width;
}

// A standard text tower (TextTransformer): options, then config vs shapes. Returns the heads.
int64_t check_text(const Section& t, const RawArchive& raw, int64_t embed_dim, const Checker& c) {
  t.reject_true("embed_cls", "a class token appended to the text");
  t.reject_true("no_causal_mask", "a bidirectional text tower");
  t.reject_true("final_ln_after_pool", "the final LayerNorm after pooling");
  t.require_str("pool_type", "argmax", "text pooling other than at the end-of-text token (argmax)");
  t.require_str("proj_type", "linear", "a text projection other than a linear map");
  t.reject_true("proj_bias", "a text projection with bias");
  t.reject_true("output_tokens", "a tower returning its tokens");
  t.check_block_options();
  t.reject_unknown_keys(kTextKeys);
  if (const json* tok = t.get("hf_tokenizer_name")) {
    TORCH_WARN_ONCE(fmt::format("{} '{}': the text tower was trained with the tokenizer {}; pylake.tokenize / "
                                "lake::Tokenizer produce CLIP BPE tokens, give encode_text that tokenizer's ids "
                                "instead",
                                kWhat, c.cfg, tok->dump()));
  }

  const std::string p = "transformer.resblocks.";
  const at::Tensor& tok = c.tensor(raw, "token_embedding.weight", 2);
  const int64_t width = tok.size(1);
  c.expect(t.num("width", 512), width, t.label("width"), "'token_embedding.weight' width");
  c.expect(t.num("vocab_size", 49408), tok.size(0), t.label("vocab_size"), "'token_embedding.weight' rows");
  c.expect(t.num("context_length", 77), c.tensor(raw, "positional_embedding", 2).size(0), t.label("context_length"),
           "'positional_embedding' rows");
  c.expect(t.num("layers", 12), count_blocks(raw.tensors, p), t.label("layers"), "text blocks");
  check_mlp_ratio(t, raw, p, width, c);
  c.expect(embed_dim, c.tensor(raw, "text_projection", 2).size(1), "model_cfg.embed_dim",
           "'text_projection' columns");
  const int64_t heads = t.num("heads", 8);
  TORCH_CHECK_VALUE(heads > 0 && width % heads == 0,
                    fmt::format("{}: '{}' has {} = {}, which does not divide the text width {}", kWhat, c.cfg,
                                t.label("heads"), heads, width));
  return heads;
}

// preprocess_cfg.mean / std: three numbers (or one for all channels); OpenAI's when absent.
std::string channel_values(const Section& pp, const std::string& key, const float (&dflt)[3]) {
  std::vector<double> v;
  if (const json* j = pp.get(key)) {
    if (j->is_number()) v.assign(3, j->get<double>());
    else if (j->is_array() && (j->size() == 3 || j->size() == 1))
      for (const auto& e : *j) {
        if (!e.is_number()) pp.fail(key, "three numbers");
        v.push_back(e.get<double>());
      }
    else pp.fail(key, "three numbers (one per RGB channel)");
    if (v.size() == 1) v.assign(3, v[0]);
  } else {
    v.assign(dflt, dflt + 3);
  }
  float f[3];
  for (size_t i = 0; i < 3; ++i) {
    if (key == "std" && !(v[i] > 0)) pp.fail(key, "positive numbers");
    f[i] = static_cast<float>(v[i]);  // the float32 that build_clip keeps
    if (!std::isfinite(f[i])) pp.fail(key, "numbers within float32's range");
  }
  return config_floats(f);
}

fs::path folder_of(const fs::path& p) { return p.has_parent_path() ? p.parent_path() : fs::path("."); }

}  // namespace

bool has_config(const std::string& folder) { return fs::is_regular_file(fs::path(folder) / kConfigName); }

RawArchive read_weights(const std::string& weights, std::map<std::string, at::Tensor> tensors);

RawArchive read_path(const std::string& path) {
  const fs::path p(path);
  if (!fs::is_directory(p)) {
    TORCH_CHECK_VALUE(fs::is_regular_file(p), fmt::format("{}: '{}' does not exist or is not a file", kWhat, path));
    return read_weights(path, read_tensor_file(path));
  }
  TORCH_CHECK_VALUE(has_config(path), fmt::format("{} '{}' has no {}", kWhat, path, kConfigName));
  for (const char* name : kWeightNames)
    if (fs::is_regular_file(p / name)) return read_weights((p / name).string(), read_tensor_file((p / name).string()));
  TORCH_CHECK_VALUE(false, fmt::format("{} '{}' has {} but no weights: expected {} or {} in it", kWhat, path,
                                       kConfigName, kWeightNames[0], kWeightNames[1]));
}

RawArchive read_weights(const std::string& weights, std::map<std::string, at::Tensor> tensors) {
  const fs::path cfg_file = folder_of(fs::path(weights)) / kConfigName;
  TORCH_CHECK_VALUE(fs::is_regular_file(cfg_file), fmt::format("{}: there is no {} beside '{}' ('{}')", kWhat,
                                                               kConfigName, weights, cfg_file.string()));
  const std::string cfg = cfg_file.string();
  const json root = read_json_object(cfg_file);
  const Section top{cfg, "", root};
  auto mc = root.find("model_cfg");
  TORCH_CHECK_VALUE(mc != root.end() && mc->is_object(),
                    fmt::format("{}: '{}' has no \"model_cfg\" object; it is not an OpenCLIP hub config "
                                "(open_clip.push_to_hf_hub writes {{\"model_cfg\": {{...}}, \"preprocess_cfg\": "
                                "{{...}}}})",
                                kWhat, cfg));
  const Section model{cfg, "model_cfg", *mc};
  if (model.get("multimodal_cfg")) model.unsupported("multimodal_cfg", "a CoCa model with a text decoder");
  model.reject_unknown_keys(kModelKeys);
  TORCH_CHECK_VALUE(model.get("embed_dim"), fmt::format("{}: '{}' has no model_cfg.embed_dim", kWhat, cfg));
  const int64_t embed_dim = model.num("embed_dim", 0);
  const Section vision = section(model, "vision_cfg");
  const Section text = section(model, "text_cfg");
  const std::string hf_text = text.get("hf_model_name") ? text.get("hf_model_name")->dump() : "";
  const bool custom_text = model.flag("custom_text") || !hf_text.empty();

  TORCH_CHECK_VALUE(!has_transformers_names(tensors),
                    fmt::format("{}: the weights '{}' are in transformers' naming (vision_model.*, text_model.*), "
                                "not an OpenCLIP state dict; load the folder's config.json checkpoint instead",
                                kWhat, weights));
  RawArchive out;
  out.kind = ArchiveKind::OpenClipHub;
  // CustomTextCLIP keeps its text tower under "text."; a Hugging Face text tower is not read.
  for (auto& [name, t] : tensors) {
    if (custom_text && name.rfind("text.", 0) == 0) {
      if (hf_text.empty()) out.tensors[name.substr(5)] = std::move(t);
    } else {
      out.tensors[name] = std::move(t);
    }
  }
  const Checker c{cfg, weights};
  const int64_t vision_heads = check_vision(vision, out, embed_dim, c);
  out.lake_config["vision_heads"] = fmt::to_string(vision_heads);
  if (hf_text.empty()) {
    out.lake_config["text_heads"] = fmt::to_string(check_text(text, out, embed_dim, c));
  } else {
    TORCH_WARN_ONCE(fmt::format("{} '{}': the text tower is the Hugging Face model {}, which LAKE does not compute; "
                                "only the image tower is loaded",
                                kWhat, cfg, hf_text));
  }
  const json* qg = model.get("quick_gelu");
  if (qg && !qg->is_boolean()) model.fail("quick_gelu", "true or false");
  out.activation_hint = qg && qg->get<bool>() ? Activation::QuickGELU : Activation::GELU;  // open_clip: nn.GELU unless quick_gelu
  const Section pp = section(top, "preprocess_cfg");
  out.lake_config["mean"] = channel_values(pp, "mean", kOpenAIMean);
  out.lake_config["std"] = channel_values(pp, "std", kOpenAIStd);
  return out;
}

}  // namespace open_clip_hub

bool has_open_clip_config(const std::string& folder) { return open_clip_hub::has_config(folder); }

RawArchive read_open_clip_hub(const std::string& path) { return open_clip_hub::read_path(path); }

RawArchive read_open_clip_hub(const std::string& weights, std::map<std::string, at::Tensor> tensors) {
  return open_clip_hub::read_weights(weights, std::move(tensors));
}

}  // namespace lake::detail
