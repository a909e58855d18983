#pragma once
// ClipModel's internals: the weights, arranged per block (internal).

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "lake/clip_model.h"

namespace lake {

namespace detail {
/// One residual attention block in the OpenAI layout.
struct BlockWeights {
  at::Tensor ln1_w, ln1_b;   // ln_1: (W)
  at::Tensor qkv_w, qkv_b;   // attn.in_proj: (3W, W), (3W)
  at::Tensor out_w, out_b;   // attn.out_proj: (W, W), (W)
  at::Tensor ln2_w, ln2_b;   // ln_2: (W)
  at::Tensor fc_w, fc_b;     // mlp.c_fc: (4W, W), (4W)
  at::Tensor proj_w, proj_b; // mlp.c_proj: (W, 4W), (W)
};
}  // namespace detail

struct ClipModel::Impl {
  ClipConfig config;
  std::string path;
  c10::Device device = c10::kCPU;
  c10::ScalarType dtype = c10::kFloat;
  std::map<std::string, at::Tensor> params;  // every parameter used, by OpenAI name

  // Image tower.
  at::Tensor conv1_w;     // (D, 3, P, P)
  at::Tensor class_emb;   // (D)
  at::Tensor pos_emb;     // (1 + g*g, D)
  at::Tensor ln_pre_w, ln_pre_b, ln_post_w, ln_post_b;
  at::Tensor visual_proj; // (D, E)
  std::vector<detail::BlockWeights> visual_blocks;

  // Text tower (empty when absent or not loaded).
  at::Tensor token_emb;   // (V, Wt)
  at::Tensor text_pos;    // (C, Wt)
  at::Tensor ln_final_w, ln_final_b;
  at::Tensor text_proj;   // (Wt, E)
  std::vector<detail::BlockWeights> text_blocks;

  std::shared_ptr<const Tokenizer> tokenizer;
  std::string vocabulary;  // the gzip'd BPE bytes the tokenizer was made from (re-exported by save_clip)

  mutable std::mutex cache_mutex;
  mutable std::map<std::pair<int64_t, int64_t>, at::Tensor> pos_cache;
  mutable std::string fingerprint;
  // detail::stored_weights_fingerprint of the archive's tensors, taken before conversion.
  std::string weights_fingerprint;
};

namespace detail {
/// A hash of the floating-point image-tower tensors ("visual.*") exactly as stored: names,
/// stored dtypes, shapes and bytes (defined in clip_model.cpp). build_clip takes it before
/// converting, so every load of one archive (any dtype, device, load_text) gives one value.
std::string stored_weights_fingerprint(const std::map<std::string, at::Tensor>& tensors);
}  // namespace detail

}  // namespace lake
