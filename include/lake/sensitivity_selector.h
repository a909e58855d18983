#pragma once
// SensitivitySelector: picks LAKE's "sensitive neurons", the Top-K channels of the patch
// tokens that vary most over the normal images, per tapped layer.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lake/neuron_probe.h"

namespace lake {

/// How a channel's sensitivity is scored (METHOD.md step 2).
enum class SensitivityScore {
  Variance,                ///< variance over all normal patches (the paper's choice)
  NormalizedVariance,      ///< variance of the L2-normalised tokens' channels
  CoefficientOfVariation,  ///< std / |mean|
  Random,                  ///< a seeded random choice of K channels (the paper's control)
};
std::string to_string(SensitivityScore s);
/// "variance", "normalized_variance", "cv" / "coefficient_of_variation", "random".
SensitivityScore parse_sensitivity_score(const std::string& name);

struct SelectorOptions {
  int64_t k = 100;                                  ///< neurons kept per layer (paper: 100)
  SensitivityScore score = SensitivityScore::Variance;
  uint64_t seed = 0;                                ///< for SensitivityScore::Random
};

/// Per-channel running statistics in float64 (Chan et al.'s parallel Welford update):
/// exact for any number of tokens, streamed batch by batch, mergeable.
struct ChannelStats {
  int64_t count = 0;
  at::Tensor mean;  ///< (C) float64, on the CPU (merged there whatever the tokens' device)
  at::Tensor m2;    ///< (C) float64: sum of squared deviations from the mean

  /// Adds (..., C) tokens (any floating dtype, CPU or CUDA; accumulated in float64 by
  /// lake::ops::channel_moments). `mask`: undefined, or one bool per token (same leading
  /// shape as the tokens, on their device): only tokens marked true count.
  void update(const at::Tensor& tokens, const at::Tensor& mask = {});
  /// Adds another accumulator's tokens.
  void merge(const ChannelStats& other);
  /// Population variance M2 / count, (C) float64.
  at::Tensor variance() const;
  int64_t channels() const { return mean.defined() ? mean.size(0) : 0; }
};

/// The selected neurons of one layer.
struct LayerNeurons {
  int64_t layer = 0;   ///< 1-based block index
  at::Tensor indices;  ///< (K) int64, ascending channel indices
  at::Tensor scores;   ///< (K) float64 sensitivity scores of those channels
  at::Tensor mean;     ///< (K) float64 mean over the normal patches
  at::Tensor std;      ///< (K) float64 population standard deviation over the normal patches
};

/// The sparse normality model's neurons: per tapped layer, K channels of C.
struct NeuronSet {
  ProbeKind kind = ProbeKind::Residual;
  int64_t channels = 0;              ///< C: channels per token at each layer (D or 4 D)
  std::vector<LayerNeurons> layers;  ///< in tap order
  int64_t total() const;             ///< sum of K over layers
};

/// Streams activations in, then selects. Usage:
///   SensitivitySelector sel({100});
///   for (batch...) sel.update(layer, acts);   // (B, N, C) per layer
///   NeuronSet set = sel.select();
class SensitivitySelector {
 public:
  explicit SensitivitySelector(SelectorOptions options = {}, ProbeKind kind = ProbeKind::Residual);

  /// Adds a batch of one layer's patch tokens, (B, N, C) or (T, C).
  void update(int64_t layer, const at::Tensor& activations);
  /// Top-K per layer by the score (ties: lower index), in the order layers were first seen.
  /// Errors: nothing streamed yet, K larger than the channel count.
  NeuronSet select() const;
  /// One-shot: update with every probe result's layers, then select.
  NeuronSet fit(const std::vector<ProbeResult>& batches);

  const SelectorOptions& options() const { return options_; }
  /// The accumulated statistics of a layer (raw tokens).
  const ChannelStats& stats(int64_t layer) const;
  void reset();

 private:
  SelectorOptions options_;
  ProbeKind kind_;
  std::vector<int64_t> order_;
  std::map<int64_t, ChannelStats> raw_;
  std::map<int64_t, ChannelStats> normalized_;  // only for NormalizedVariance
};

/// Top-k of `scores` (C) with ties broken by the lower index, NaN last; returns ascending
/// (k) int64 indices on the scores' device (lake::ops::top_k).
at::Tensor top_k_channels(const at::Tensor& scores, int64_t k);

}  // namespace lake
