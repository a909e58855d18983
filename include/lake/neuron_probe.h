#pragma once
// NeuronProbe: reads neurons (channels of the patch tokens) inside a CLIP image tower.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lake/clip_model.h"

namespace lake {

/// Which neurons a probe reads.
enum class ProbeKind {
  Residual,  ///< the residual stream after block l: D channels per token
  Mlp,       ///< the MLP hidden units of block l after the activation: 4 D channels per token
};
std::string to_string(ProbeKind k);
/// "residual" or "mlp"; errors name the input.
ProbeKind parse_probe_kind(const std::string& name);

struct ProbeOptions {
  /// 1-based block indices; negative indices count from the end (-1: the last block).
  std::vector<int64_t> layers;
  ProbeKind kind = ProbeKind::Residual;
  /// Also return this block's patch tokens through ln_post and proj, i.e. in the joint
  /// image-text space (0: no; 1-based or negative like `layers`).
  int64_t project_layer = 0;
};

/// What one probe call returns. Patch tokens exclude CLS and are in row-major grid order.
struct ProbeResult {
  std::vector<int64_t> layers;          ///< resolved 1-based layers, in the order requested
  std::vector<at::Tensor> activations;  ///< per layer: (B, N, C) patch tokens, C = D or 4 D
  std::vector<at::Tensor> cls;          ///< per layer: (B, C) the CLS token's channels
  at::Tensor projected;                 ///< (B, N, embed_dim) when project_layer was set
  int64_t grid_h = 0;                   ///< N = grid_h * grid_w
  int64_t grid_w = 0;

  /// The activations of a probed layer (its resolved 1-based index); errors list the probed ones.
  const at::Tensor& at_layer(int64_t layer) const;
};

class NeuronProbe {
 public:
  /// Validates and resolves the layers against the model (errors name the bad index).
  NeuronProbe(ClipModel model, ProbeOptions options);

  /// (B, 3, H, W) CLIP-normalised images (H, W multiples of the patch size) -> taps.
  /// Runs the tower only as deep as the deepest requested layer.
  ProbeResult operator()(const at::Tensor& images) const;

  /// Resolved 1-based layers, in request order.
  const std::vector<int64_t>& layers() const { return layers_; }
  /// Channels per token of each tap: D (residual) or 4 D (mlp).
  int64_t channels() const;
  const ProbeOptions& options() const { return options_; }
  const ClipModel& model() const { return model_; }

 private:
  ClipModel model_;
  ProbeOptions options_;
  std::vector<int64_t> layers_;
  int64_t project_layer_ = 0;
};

/// Resolves a 1-based or negative block index against a depth; errors name the index.
int64_t resolve_layer(int64_t layer, int64_t depth);

}  // namespace lake
