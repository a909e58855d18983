// Interprets an archive's tensors as a CLIP ViT: infers the architecture from the
// parameter shapes (as CLIP's build_model does), validates every shape, converts.

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <sstream>  // std::istringstream: the mean/std triples

#include "lake/dtype.h"
#include "lake/models.h"
#include "detail/strings.h"
#include "detail/clip_archive.h"
#include "detail/clip_impl.h"
#include "detail/format.h"

namespace lake {

std::string to_string(Activation a) { return a == Activation::GELU ? "gelu" : "quick_gelu"; }

Activation parse_activation(const std::string& name) {
  const std::string s = detail::lower(name);
  if (s == "quick_gelu" || s == "quickgelu") return Activation::QuickGELU;
  if (s == "gelu") return Activation::GELU;
  TORCH_CHECK_VALUE(false, fmt::format("unknown activation '{}': expected 'quick_gelu' or 'gelu'", name));
}

std::string to_string(ArchiveKind k) {
  switch (k) {
    case ArchiveKind::OpenAIJit: return "openai_jit";
    case ArchiveKind::StateDict: return "state_dict";
    case ArchiveKind::LakeExport: return "lake_export";
    case ArchiveKind::Safetensors: return "safetensors";
    case ArchiveKind::Transformers: return "transformers";
    case ArchiveKind::OpenClipHub: return "open_clip";
  }
  return "unknown";
}

std::string ClipConfig::describe() const {
  std::string out = fmt::format("ViT(image {}, patch {}, width {}, layers {}, heads {}, embed {}", image_size,
                                patch_size, vision_width, vision_layers, vision_heads, embed_dim);
  if (has_text()) out += fmt::format(", text width {} layers {}", text_width, text_layers);
  return out + fmt::format(", {}, {})", to_string(activation), to_string(archive_kind));
}

namespace {

using detail::BlockWeights;
using detail::RawArchive;

struct Reader {
  const RawArchive& raw;
  const std::string& path;

  bool has(const std::string& name) const { return raw.tensors.count(name) > 0; }

  const at::Tensor& get(const std::string& name) const {
    auto it = raw.tensors.find(name);
    TORCH_CHECK_VALUE(it != raw.tensors.end(), fmt::format("CLIP archive '{}' is missing parameter '{}'", path, name));
    return it->second;
  }

  // The tensor `name` with exactly `shape`.
  const at::Tensor& get(const std::string& name, std::vector<int64_t> shape) const {
    const at::Tensor& t = get(name);
    TORCH_CHECK_VALUE(t.sizes().vec() == shape,
                      fmt::format("CLIP archive '{}': parameter '{}' has shape {}, expected {}",
                                  path, name, t.sizes(), at::IntArrayRef(shape)));
    TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()),
                      fmt::format("CLIP archive '{}': parameter '{}' has dtype {}, expected a floating-point tensor",
                                  path, name, t.scalar_type()));
    return t;
  }

  int64_t count_blocks(const std::string& prefix) const { return detail::count_blocks(raw.tensors, prefix); }

  std::string some_keys() const {
    std::string out;
    int i = 0;
    for (const auto& kv : raw.tensors) {
      if (i++ == 6) {
        out += ", ...";
        break;
      }
      out += fmt::format("{}'{}'", i > 1 ? ", " : "", kv.first);
    }
    return out;
  }

  bool any_key_starts_with(const std::string& prefix) const {
    auto it = raw.tensors.lower_bound(prefix);
    return it != raw.tensors.end() && it->first.rfind(prefix, 0) == 0;
  }
};

// Rejects what is not a CLIP ViT in the OpenAI layout, naming what was found.
void check_is_vit(const Reader& r) {
  TORCH_CHECK_VALUE(!(r.any_key_starts_with("visual.layer1.") || r.any_key_starts_with("visual.attnpool.")),
                    fmt::format("CLIP archive '{}' is a ResNet CLIP (found 'visual.layer1.*' / 'visual.attnpool.*'); "
                                "LAKE needs a ViT image tower (e.g. ViT-B/16, ViT-L/14)", r.path));
  TORCH_CHECK_VALUE(!r.any_key_starts_with("visual.trunk."),
                    fmt::format("CLIP archive '{}' has a timm image tower ('visual.trunk.*'); LAKE reads the OpenAI "
                                "CLIP ViT layout", r.path));
  TORCH_CHECK_VALUE(!r.any_key_starts_with("visual.attn_pool."),
                    fmt::format("CLIP archive '{}' uses attentional pooling ('visual.attn_pool.*'), which LAKE does "
                                "not support", r.path));
  TORCH_CHECK_VALUE(r.has("visual.conv1.weight"),
                    fmt::format("CLIP archive '{}' is not a CLIP ViT: no 'visual.conv1.weight' (found {} tensors: {})",
                                r.path, r.raw.tensors.size(), r.some_keys()));
}

// Every tensor under a block prefix must be one we read: anything else (layer scale,
// extra norms) is a variant whose forward we would silently get wrong.
void check_block_keys(const Reader& r, const std::string& prefix, int64_t n) {
  static const char* known[] = {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias",
                                "attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight", "ln_2.bias",
                                "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
                                "attn_mask"};
  for (auto it = r.raw.tensors.lower_bound(prefix); it != r.raw.tensors.end(); ++it) {
    if (it->first.rfind(prefix, 0) != 0) break;
    std::string rest = it->first.substr(prefix.size());
    auto dot = rest.find('.');
    std::string index = rest.substr(0, dot), leaf = dot == std::string::npos ? "" : rest.substr(dot + 1);
    bool ok = std::find(std::begin(known), std::end(known), leaf) != std::end(known);
    TORCH_CHECK_VALUE(ok,
                      fmt::format("CLIP archive '{}' has an unsupported block parameter '{}' (LAKE reads the "
                                  "standard OpenAI CLIP residual attention block)", r.path, it->first));
    TORCH_CHECK_VALUE(!index.empty() && std::all_of(index.begin(), index.end(), ::isdigit) && std::stoll(index) < n,
                      fmt::format("CLIP archive '{}': parameter '{}' does not belong to blocks 0..{} (is "
                                  "'attn.in_proj_weight' missing from a block?)", r.path, it->first, n - 1));
  }
}

std::vector<BlockWeights> read_blocks(const Reader& r, const std::string& prefix, int64_t n, int64_t w) {
  check_block_keys(r, prefix, n);
  std::vector<BlockWeights> blocks;
  for (int64_t i = 0; i < n; ++i) {
    const std::string p = fmt::format("{}{}.", prefix, i);
    BlockWeights b;
    b.ln1_w = r.get(p + "ln_1.weight", {w});
    b.ln1_b = r.get(p + "ln_1.bias", {w});
    b.qkv_w = r.get(p + "attn.in_proj_weight", {3 * w, w});
    b.qkv_b = r.get(p + "attn.in_proj_bias", {3 * w});
    b.out_w = r.get(p + "attn.out_proj.weight", {w, w});
    b.out_b = r.get(p + "attn.out_proj.bias", {w});
    b.ln2_w = r.get(p + "ln_2.weight", {w});
    b.ln2_b = r.get(p + "ln_2.bias", {w});
    b.fc_w = r.get(p + "mlp.c_fc.weight", {4 * w, w});
    b.fc_b = r.get(p + "mlp.c_fc.bias", {4 * w});
    b.proj_w = r.get(p + "mlp.c_proj.weight", {w, 4 * w});
    b.proj_b = r.get(p + "mlp.c_proj.bias", {w});
    blocks.push_back(std::move(b));
  }
  return blocks;
}

int64_t config_int(const RawArchive& raw, const std::string& key, const std::string& path) {
  auto it = raw.lake_config.find(key);
  if (it == raw.lake_config.end()) return 0;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    TORCH_CHECK_VALUE(false,
                      fmt::format("CLIP archive '{}': {} has {}={}, expected an integer",
                                  path, raw.lake_config_where, key, it->second));
  }
}

// A hyper-parameter recorded by a LAKE export must be the one the shapes give.
void check_recorded(const RawArchive& raw, const char* key, int64_t inferred, const std::string& path) {
  if (!raw.lake_config.count(key)) return;
  const int64_t recorded = config_int(raw, key, path);
  TORCH_CHECK_VALUE(recorded == inferred,
                    fmt::format("CLIP archive '{}': {} says {}={} but the weights' shapes give {}={}",
                                path, raw.lake_config_where, key, recorded, key, inferred));
}

int64_t choose_heads(int64_t override_heads, int64_t recorded, int64_t width, const char* tower,
                     const std::string& path) {
  int64_t heads = override_heads > 0 ? override_heads : recorded > 0 ? recorded : width / 64;
  TORCH_CHECK_VALUE(heads > 0 && width % heads == 0,
                    fmt::format("CLIP archive '{}': {} width {} is not divisible into {} attention heads",
                                path, tower, width, heads));
  return heads;
}

// OpenCLIP configurations known to use GELU, recognisable from their shapes alone.
bool known_gelu_shape(const ClipConfig& c) {
  return c.vision_width == 896 && c.patch_size == 16 && c.image_size == 240;  // ViT-B-16-plus-240
}

Activation choose_activation(const RawArchive& raw, ClipConfig& c, const LoadOptions& o,
                             const std::string& path) {
  if (o.activation) return *o.activation;
  if (raw.activation_hint) return *raw.activation_hint;
  if (known_gelu_shape(c)) return Activation::GELU;
  // OpenAI's TorchScript archives, transformers and OpenCLIP hub folders without a word on it
  // are QuickGELU by their kind; a bare state dict only by assumption.
  if (raw.kind == ArchiveKind::StateDict || raw.kind == ArchiveKind::Safetensors) {
    c.activation_assumed = true;
    TORCH_WARN_ONCE(fmt::format("CLIP archive '{}' does not record its MLP activation; assuming quick_gelu (OpenAI "
                                "CLIP). Pass activation='gelu' for OpenCLIP models trained with GELU.", path));
  }
  return Activation::QuickGELU;
}

void check_load_options(const LoadOptions& options) {
  check_dtype(options.dtype, kLoadClipDtypes, "load_clip: dtype");
}

at::Tensor convert(const at::Tensor& t, const LoadOptions& o) {
  return t.detach().to(o.device, o.dtype).contiguous();
}

}  // namespace

ClipModel load_clip(const std::string& path, const LoadOptions& options) {
  check_load_options(options);
  if (!is_model_name(path)) return detail::build_clip(detail::read_archive(path), path, options);
  const ModelLocation loc = locate_model(path);
  TORCH_CHECK_VALUE(!loc.path.empty(), loc.missing_message());
  LoadOptions o = options;
  // Every OpenAI CLIP uses QuickGELU; OpenCLIP's copies of them carry no config that says so.
  if (loc.source == ModelSource::OpenAI && !o.activation) o.activation = Activation::QuickGELU;
  return detail::build_clip(detail::read_archive(loc.path), loc.path, o);
}

namespace detail {

std::map<std::string, at::Tensor> strip_wrapper_prefixes(std::map<std::string, at::Tensor> tensors) {
  for (const char* prefix : kWrapperPrefixes) {
    const size_t n = std::strlen(prefix);
    const bool all = !tensors.empty() && std::all_of(tensors.begin(), tensors.end(), [&](const auto& kv) {
      return kv.first.compare(0, n, prefix) == 0;
    });
    if (!all) continue;
    std::map<std::string, at::Tensor> stripped;
    for (auto& [name, t] : tensors) stripped.emplace(name.substr(n), std::move(t));
    tensors = std::move(stripped);
  }
  return tensors;
}

int64_t count_blocks(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix) {
  int64_t n = 0;
  while (tensors.count(fmt::format("{}{}.attn.in_proj_weight", prefix, n))) ++n;
  return n;
}

std::string config_floats(const float* v) {
  std::string out;
  for (int i = 0; i < 3; ++i) {
    char buf[32];
    const auto res = std::to_chars(buf, buf + sizeof buf, v[i]);
    out += fmt::format("{}{}", i ? "," : "", std::string_view(buf, static_cast<size_t>(res.ptr - buf)));
  }
  return out;
}

int64_t position_grid(int64_t rows) {
  return rows < 1 ? 0 : static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(rows - 1))));
}

namespace {

// One pass of build_clip: with `final_pass` false it only infers the architecture and checks
// every shape on the tensors as stored (nothing converted, nothing kept); build_clip runs
// that first, so that a file whose shapes are not a CLIP's fails before any conversion
// allocates, then the final pass, which converts and builds.
ClipModel build_clip_pass(RawArchive& raw, const std::string& path, const LoadOptions& options, bool final_pass) {
  std::string weights_fingerprint;
  if (final_pass) weights_fingerprint = stored_weights_fingerprint(raw.tensors);  // before any conversion
  // Convert the floating-point tensors once, in place (the image tower always, the
  // text tower when asked for); integer entries (OpenAI's input_resolution, ...) stay.
  for (auto it = raw.tensors.begin(); it != raw.tensors.end();) {
    const bool visual = it->first.rfind("visual.", 0) == 0;
    if (!visual && !options.load_text) {
      it = raw.tensors.erase(it);
      continue;
    }
    if (final_pass && at::isFloatingType(it->second.scalar_type())) it->second = convert(it->second, options);
    ++it;
  }
  Reader r{raw, path};
  check_is_vit(r);

  auto impl = std::make_shared<ClipModel::Impl>();
  ClipConfig& c = impl->config;
  c.archive_kind = raw.kind;
  const at::Tensor& conv1 = r.get("visual.conv1.weight");
  TORCH_CHECK_VALUE(conv1.dim() == 4 && conv1.size(1) == 3 && conv1.size(2) == conv1.size(3),
                    fmt::format("CLIP archive '{}': 'visual.conv1.weight' has shape {}, expected (width, 3, patch, "
                                "patch)", path, conv1.sizes()));
  const int64_t w = conv1.size(0);
  c.vision_width = w;
  c.patch_size = conv1.size(2);
  c.vision_layers = r.count_blocks("visual.transformer.resblocks.");
  TORCH_CHECK_VALUE(c.vision_layers > 0,
                    fmt::format("CLIP archive '{}' has no image-tower blocks "
                                "('visual.transformer.resblocks.0.attn.in_proj_weight')", path));
  const at::Tensor& pos = r.get("visual.positional_embedding");
  TORCH_CHECK_VALUE(pos.dim() == 2 && pos.size(1) == w,
                    fmt::format("CLIP archive '{}': 'visual.positional_embedding' has shape {}, expected (1 + "
                                "grid^2, {})", path, pos.sizes(), w));
  const int64_t grid = detail::position_grid(pos.size(0));
  TORCH_CHECK_VALUE(grid > 0 && grid * grid + 1 == pos.size(0),
                    fmt::format("CLIP archive '{}': 'visual.positional_embedding' has {} rows, expected 1 + a square "
                                "grid", path, pos.size(0)));
  c.image_size = grid * c.patch_size;
  const at::Tensor& vproj = r.get("visual.proj");
  TORCH_CHECK_VALUE(vproj.dim() == 2 && vproj.size(0) == w,
                    fmt::format("CLIP archive '{}': 'visual.proj' has shape {}, expected ({}, embed_dim)",
                                path, vproj.sizes(), w));
  c.embed_dim = vproj.size(1);
  c.vision_heads = choose_heads(options.vision_heads, config_int(raw, "vision_heads", path), w, "image tower", path);

  impl->conv1_w = r.get("visual.conv1.weight", {w, 3, c.patch_size, c.patch_size});
  impl->class_emb = r.get("visual.class_embedding", {w});
  impl->pos_emb = r.get("visual.positional_embedding", {grid * grid + 1, w});
  impl->ln_pre_w = r.get("visual.ln_pre.weight", {w});
  impl->ln_pre_b = r.get("visual.ln_pre.bias", {w});
  impl->ln_post_w = r.get("visual.ln_post.weight", {w});
  impl->ln_post_b = r.get("visual.ln_post.bias", {w});
  impl->visual_proj = r.get("visual.proj", {w, c.embed_dim});
  impl->visual_blocks = read_blocks(r, "visual.transformer.resblocks.", c.vision_layers, w);

  if (options.load_text && r.has("token_embedding.weight")) {
    const at::Tensor& tok = r.get("token_embedding.weight");
    TORCH_CHECK_VALUE(tok.dim() == 2,
                      fmt::format("CLIP archive '{}': 'token_embedding.weight' has shape {}, expected (vocab_size, "
                                  "width)", path, tok.sizes()));
    const int64_t tw = tok.size(1);
    c.vocab_size = tok.size(0);
    c.text_width = tw;
    c.context_length = r.get("positional_embedding").size(0);
    c.text_layers = r.count_blocks("transformer.resblocks.");
    TORCH_CHECK_VALUE(c.text_layers > 0,
                      fmt::format("CLIP archive '{}' has a token embedding but no text blocks "
                                  "('transformer.resblocks.0.attn.in_proj_weight')", path));
    c.text_heads = choose_heads(options.text_heads, config_int(raw, "text_heads", path), tw, "text tower", path);
    impl->token_emb = r.get("token_embedding.weight", {c.vocab_size, tw});
    impl->text_pos = r.get("positional_embedding", {c.context_length, tw});
    impl->ln_final_w = r.get("ln_final.weight", {tw});
    impl->ln_final_b = r.get("ln_final.bias", {tw});
    impl->text_proj = r.get("text_projection", {tw, c.embed_dim});
    impl->text_blocks = read_blocks(r, "transformer.resblocks.", c.text_layers, tw);
  }
  for (auto [key, value] : {std::pair<const char*, int64_t>{"image_size", c.image_size}, {"patch_size", c.patch_size},
                             {"vision_width", c.vision_width}, {"vision_layers", c.vision_layers},
                             {"embed_dim", c.embed_dim}})
    check_recorded(raw, key, value, path);
  if (options.load_text) {  // (a vision-only model records zeros)
    for (auto [key, value] : {std::pair<const char*, int64_t>{"context_length", c.context_length},
                               {"vocab_size", c.vocab_size}, {"text_width", c.text_width},
                               {"text_layers", c.text_layers}})
      check_recorded(raw, key, value, path);
  }
  c.activation = choose_activation(raw, c, options, path);

  // Normalisation constants recorded by an export ("mean=a,b,c").
  for (auto [key, dst] : {std::pair<const char*, float*>{"mean", c.image_mean}, {"std", c.image_std}}) {
    auto it = raw.lake_config.find(key);
    if (it == raw.lake_config.end()) continue;
    std::istringstream is(it->second);
    std::string part;
    int i = 0;
    bool ok = true;
    float values[3] = {0.f, 0.f, 0.f};
    while (ok && std::getline(is, part, ',')) {
      size_t used = 0;
      try {
        const float v = std::stof(part, &used);
        if (i < 3) values[i] = v;
      } catch (const std::exception&) {  // not a number, out of range
        ok = false;
      }
      ok = ok && part.find_first_not_of(' ', used) == std::string::npos && ++i <= 3;
    }
    TORCH_CHECK_VALUE(ok && i == 3,
                      fmt::format("CLIP archive '{}': {} has {}={}, expected three comma-separated numbers",
                                  path, raw.lake_config_where, key, it->second));
    std::copy(values, values + 3, dst);
  }

  // A flat view of the parameters (shared storage with the per-block fields).
  for (const auto& kv : raw.tensors) {
    if (!at::isFloatingType(kv.second.scalar_type())) continue;
    if (kv.first.find("attn_mask") != std::string::npos) continue;
    impl->params[kv.first] = kv.second;
  }
  impl->path = path;
  impl->weights_fingerprint = std::move(weights_fingerprint);
  impl->device = options.device;
  impl->dtype = options.dtype;
  if (!final_pass) return ClipModel(std::move(impl));
  if (!raw.vocabulary.empty()) {
    try {
      impl->tokenizer = std::make_shared<const Tokenizer>(Tokenizer::from_bytes(raw.vocabulary, path + ":" + raw.vocabulary_where));
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false,
                        fmt::format("CLIP archive '{}': its embedded vocabulary ({}) does not load: {}",
                                    path, raw.vocabulary_where, e.what_without_backtrace()));
    }
  }
  impl->vocabulary = std::move(raw.vocabulary);
  return ClipModel(std::move(impl));
}

}  // namespace

ClipModel build_clip(RawArchive raw, const std::string& path, const LoadOptions& options) {
  check_load_options(options);
  build_clip_pass(raw, path, options, /*final_pass=*/false);  // shapes first, on the stored tensors
  return build_clip_pass(raw, path, options, /*final_pass=*/true);
}

}  // namespace detail

}  // namespace lake
