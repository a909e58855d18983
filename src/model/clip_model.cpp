// The CLIP forward pass: image tower with taps, text tower. Equal to OpenAI's /
// OpenCLIP's forward on the same weights (tests/python/test_fidelity.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "detail/clip_impl.h"
#include "detail/format.h"
#include "detail/hash.h"
#include "detail/image_batch.h"

namespace lake {
namespace {

using detail::BlockWeights;

constexpr double kLayerNormEps = 1e-5;

at::Tensor activation(const at::Tensor& x, Activation a) {
  if (a == Activation::GELU) return at::gelu(x);
  return at::sigmoid(x * 1.702).mul_(x);  // QuickGELU, one temporary fewer than x * sigmoid(1.702 x)
}

// Multi-head self-attention of the OpenAI block, batch-first: (B, S, W) -> (B, S, W).
at::Tensor attention(const at::Tensor& x, const BlockWeights& b, int64_t heads, bool causal) {
  const int64_t B = x.size(0), S = x.size(1), W = x.size(2);
  auto qkv = at::linear(x, b.qkv_w, b.qkv_b).view({B, S, 3, heads, W / heads}).permute({2, 0, 3, 1, 4});
  auto o = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                            /*is_causal=*/causal);
  return at::linear(o.transpose(1, 2).reshape({B, S, W}), b.out_w, b.out_b);
}

// One residual attention block; `mlp_hidden` (if not null) receives the MLP hidden units.
at::Tensor block(at::Tensor x, const BlockWeights& b, int64_t heads, bool causal, Activation act,
                 at::Tensor* mlp_hidden) {
  const int64_t W = x.size(-1);
  x = x + attention(at::layer_norm(x, {W}, b.ln1_w, b.ln1_b, kLayerNormEps), b, heads, causal);
  auto h = activation(at::linear(at::layer_norm(x, {W}, b.ln2_w, b.ln2_b, kLayerNormEps), b.fc_w, b.fc_b), act);
  if (mlp_hidden) *mlp_hidden = h;
  return x + at::linear(h, b.proj_w, b.proj_b);
}

// The image-batch rule (detail/image_batch.h), then the backbone's: H and W multiples of the patch size.
at::Tensor check_images(const at::Tensor& images, const ClipModel::Impl& m, std::string_view entry) {
  detail::check_image_batch(images, {entry});
  const int64_t p = m.config.patch_size;
  TORCH_CHECK_VALUE(
      images.size(2) >= p && images.size(3) >= p && images.size(2) % p == 0 && images.size(3) % p == 0,
      fmt::format("expected image height and width to be positive multiples of the patch size {}, got {} x {}", p,
                  images.size(2), images.size(3)));
  return images.to(m.device, m.dtype);
}

}  // namespace

ClipModel::ClipModel(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {
  TORCH_INTERNAL_ASSERT(impl_ != nullptr);
}
const ClipConfig& ClipModel::config() const { return impl_->config; }
c10::Device ClipModel::device() const { return impl_->device; }
c10::ScalarType ClipModel::dtype() const { return impl_->dtype; }
const std::string& ClipModel::path() const { return impl_->path; }
std::shared_ptr<const Tokenizer> ClipModel::tokenizer() const { return impl_->tokenizer; }

at::Tensor ClipModel::positional_embedding(int64_t grid_h, int64_t grid_w) const {
  const Impl& m = *impl_;
  const int64_t g = m.config.grid_size(), D = m.config.vision_width;
  TORCH_CHECK_VALUE(grid_h > 0 && grid_w > 0,
                    fmt::format("positional_embedding: expected a positive grid, got {} x {}", grid_h, grid_w));
  if (grid_h == g && grid_w == g) return m.pos_emb;
  std::lock_guard<std::mutex> lock(m.cache_mutex);
  auto key = std::make_pair(grid_h, grid_w);
  auto it = m.pos_cache.find(key);
  if (it != m.pos_cache.end()) return it->second;
  // Interpolate in float32 whatever the compute dtype (bicubic on CPU wants it).
  auto grid = m.pos_emb.slice(0, 1).to(at::kFloat).reshape({1, g, g, D}).permute({0, 3, 1, 2});
  const bool shrink = grid_h < g || grid_w < g;
  auto resized = shrink ? at::_upsample_bicubic2d_aa(grid, {grid_h, grid_w}, /*align_corners=*/false)
                        : at::upsample_bicubic2d(grid, {grid_h, grid_w}, /*align_corners=*/false);
  resized = resized.permute({0, 2, 3, 1}).reshape({grid_h * grid_w, D}).to(m.dtype);
  auto full = at::cat({m.pos_emb.slice(0, 0, 1), resized}, 0).contiguous();
  m.pos_cache.emplace(key, full);
  return full;
}

VisionForward ClipModel::forward_vision(const at::Tensor& images_in, const VisionTaps& taps) const {
  const Impl& m = *impl_;
  const ClipConfig& c = m.config;
  auto in_range = [&](int64_t l) { return l >= 1 && l <= c.vision_layers; };
  for (int64_t l : taps.residual_layers)
    TORCH_CHECK_VALUE(in_range(l), fmt::format("residual tap layer {} is out of range 1..{}", l, c.vision_layers));
  for (int64_t l : taps.mlp_layers)
    TORCH_CHECK_VALUE(in_range(l), fmt::format("MLP tap layer {} is out of range 1..{}", l, c.vision_layers));
  TORCH_CHECK_VALUE(taps.project_layer == 0 || in_range(taps.project_layer),
                    fmt::format("projection layer {} is out of range 1..{}", taps.project_layer, c.vision_layers));

  int64_t stop = taps.embedding ? c.vision_layers : taps.project_layer;
  for (int64_t l : taps.residual_layers) stop = std::max(stop, l);
  for (int64_t l : taps.mlp_layers) stop = std::max(stop, l);

  at::Tensor images = check_images(images_in, m, "ClipModel.forward_vision");
  const int64_t B = images.size(0), D = c.vision_width;
  VisionForward out;
  out.grid_h = images.size(2) / c.patch_size;
  out.grid_w = images.size(3) / c.patch_size;
  out.residual.resize(taps.residual_layers.size());
  out.mlp.resize(taps.mlp_layers.size());

  at::NoGradGuard no_grad;
  auto x = at::conv2d(images, m.conv1_w, /*bias=*/{}, /*stride=*/{c.patch_size, c.patch_size});
  x = x.flatten(2).transpose(1, 2);  // (B, N, D)
  x = at::cat({m.class_emb.view({1, 1, D}).expand({B, 1, D}), x}, 1);
  x = x + positional_embedding(out.grid_h, out.grid_w);
  x = at::layer_norm(x, {D}, m.ln_pre_w, m.ln_pre_b, kLayerNormEps);

  for (int64_t l = 1; l <= stop; ++l) {
    auto mlp_it = std::find(taps.mlp_layers.begin(), taps.mlp_layers.end(), l);
    at::Tensor hidden;
    x = block(x, m.visual_blocks[l - 1], c.vision_heads, /*causal=*/false, c.activation,
              mlp_it != taps.mlp_layers.end() ? &hidden : nullptr);
    for (size_t i = 0; i < taps.mlp_layers.size(); ++i)
      if (taps.mlp_layers[i] == l) out.mlp[i] = hidden;
    for (size_t i = 0; i < taps.residual_layers.size(); ++i)
      if (taps.residual_layers[i] == l) out.residual[i] = x;
    if (taps.project_layer == l)
      out.projected = at::matmul(at::layer_norm(x.slice(1, 1), {D}, m.ln_post_w, m.ln_post_b, kLayerNormEps),
                                 m.visual_proj);
  }
  out.blocks_run = stop;
  if (taps.embedding)
    out.embedding = at::matmul(at::layer_norm(x.select(1, 0), {D}, m.ln_post_w, m.ln_post_b, kLayerNormEps),
                               m.visual_proj);
  return out;
}

at::Tensor ClipModel::encode_image(const at::Tensor& images) const {
  VisionTaps taps;
  taps.embedding = true;
  detail::check_image_batch(images, {"encode_image"});
  return forward_vision(images, taps).embedding;
}

at::Tensor ClipModel::encode_text(const at::Tensor& tokens_in) const {
  const Impl& m = *impl_;
  const ClipConfig& c = m.config;
  TORCH_CHECK(c.has_text(),
              fmt::format("encode_text: the CLIP archive '{}' has no text tower (or it was not loaded)", m.path));
  TORCH_CHECK_VALUE(tokens_in.defined() && tokens_in.dim() == 2,
                    fmt::format("encode_text: expected (T, L) token ids, got shape {}",
                                tokens_in.defined() ? tokens_in.sizes() : at::IntArrayRef{}));
  TORCH_CHECK_VALUE(
      tokens_in.size(0) > 0,
      fmt::format("encode_text: expected a non-empty batch of token rows, got shape {}", tokens_in.sizes()));
  TORCH_CHECK_VALUE(tokens_in.scalar_type() == at::kLong || tokens_in.scalar_type() == at::kInt,
                    fmt::format("encode_text: expected int64 token ids, got dtype {}", tokens_in.scalar_type()));
  const int64_t T = tokens_in.size(0), L = tokens_in.size(1);
  TORCH_CHECK_VALUE(L >= 1 && L <= c.context_length,
                    fmt::format("encode_text: expected at most {} tokens per row, got {}", c.context_length, L));
  auto tokens = tokens_in.to(m.device, at::kLong);
  const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
  TORCH_CHECK_VALUE(
      lo >= 0 && hi < c.vocab_size,
      fmt::format("encode_text: token ids must lie in [0, {}), got values in [{}, {}]", c.vocab_size, lo, hi));
  at::NoGradGuard no_grad;
  auto x = at::embedding(m.token_emb, tokens) + m.text_pos.slice(0, 0, L);
  for (const auto& b : m.text_blocks) x = block(x, b, c.text_heads, /*causal=*/true, c.activation, nullptr);
  x = at::layer_norm(x, {c.text_width}, m.ln_final_w, m.ln_final_b, kLayerNormEps);
  // The embedding is read at the end-of-text token, the row's largest id (as in CLIP).
  auto rows = at::arange(T, tokens.options()) * L + tokens.argmax(-1);
  return at::matmul(x.reshape({T * L, c.text_width}).index_select(0, rows), m.text_proj);
}

std::vector<std::string> ClipModel::parameter_names() const {
  std::vector<std::string> names;
  for (const auto& kv : impl_->params) names.push_back(kv.first);
  return names;
}

at::Tensor ClipModel::parameter(const std::string& name) const {
  auto it = impl_->params.find(name);
  TORCH_CHECK_VALUE(it != impl_->params.end(), fmt::format("the CLIP model has no parameter '{}'", name));
  return it->second;
}

std::string ClipModel::fingerprint() const {
  const Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.cache_mutex);
  if (!m.fingerprint.empty()) return m.fingerprint;
  // Names, shapes and values as float32: the same weights give the same fingerprint in
  // any compute dtype that holds them exactly (an fp16 archive loaded as fp32, say).
  detail::Hasher h;
  for (const auto& kv : m.params) {
    h.str(kv.first);
    h.tensor(kv.second.to(at::kFloat));
  }
  m.fingerprint = h.hex();
  return m.fingerprint;
}

const std::string& ClipModel::weights_fingerprint() const { return impl_->weights_fingerprint; }

namespace detail {

std::string stored_weights_fingerprint(const std::map<std::string, at::Tensor>& tensors) {
  std::vector<std::pair<const std::string*, const at::Tensor*>> visual;
  for (const auto& kv : tensors)
    if (kv.first.rfind("visual.", 0) == 0 && at::isFloatingType(kv.second.scalar_type()))
      visual.emplace_back(&kv.first, &kv.second);
  // One hash per tensor (in parallel: this reads every stored byte of the image tower), then
  // one over the names and those hashes, in name order.
  std::vector<uint64_t> per_tensor(visual.size());
  at::parallel_for(0, static_cast<int64_t>(visual.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      Hasher h;
      h.tensor(*visual[i].second);
      per_tensor[i] = h.value();
    }
  });
  Hasher h;
  h.str("lake-stored-weights-v1");
  for (size_t i = 0; i < visual.size(); ++i) {
    h.str(*visual[i].first);
    h.word(per_tensor[i]);
  }
  return h.hex();
}

}  // namespace detail

}  // namespace lake
