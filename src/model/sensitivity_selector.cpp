// SensitivitySelector: streamed float64 channel statistics and Top-K selection.

#include "lake/sensitivity_selector.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <numeric>
#include <random>

#include "detail/format.h"
#include "detail/normality_ops.h"
#include "detail/strings.h"
#include "lake/core/moments.h"
#include "lake/ops/ops.h"

namespace lake {

std::string to_string(SensitivityScore s) {
  switch (s) {
    case SensitivityScore::Variance: return "variance";
    case SensitivityScore::NormalizedVariance: return "normalized_variance";
    case SensitivityScore::CoefficientOfVariation: return "cv";
    case SensitivityScore::Random: return "random";
  }
  return "unknown";
}

SensitivityScore parse_sensitivity_score(const std::string& name) {
  const std::string s = detail::lower(name);
  if (s == "variance") return SensitivityScore::Variance;
  if (s == "normalized_variance" || s == "normalised_variance") return SensitivityScore::NormalizedVariance;
  if (s == "cv" || s == "coefficient_of_variation") return SensitivityScore::CoefficientOfVariation;
  if (s == "random") return SensitivityScore::Random;
  TORCH_CHECK_VALUE(false, fmt::format("unknown sensitivity score '{}': expected 'variance', "
                                       "'normalized_variance', 'cv' or 'random'",
                                       name));
}

void ChannelStats::update(const at::Tensor& tokens, const at::Tensor& mask) {
  TORCH_CHECK_VALUE(tokens.defined() && tokens.dim() >= 1 && at::isFloatingType(tokens.scalar_type()),
                    fmt::format("ChannelStats: expected floating (..., C) tokens, got {} {}",
                                tokens.defined() ? tokens.sizes() : at::IntArrayRef{},
                                tokens.defined() ? tokens.scalar_type() : at::ScalarType::Undefined));
  auto x = tokens.reshape({-1, tokens.size(-1)});
  TORCH_CHECK_VALUE(!mask.defined() || mask.numel() == x.size(0),
                    fmt::format("ChannelStats: expected a token mask of {} entries (one per token), got {}",
                                x.size(0), mask.sizes()));
  ops::Moments m = ops::channel_moments(x, mask.defined() ? mask.reshape({-1}) : mask);
  if (m.count == 0) return;
  ChannelStats batch;
  batch.count = m.count;
  batch.mean = m.mean;
  batch.m2 = m.m2;
  merge(batch);
}

void ChannelStats::merge(const ChannelStats& o) {
  if (o.count == 0) return;
  if (count == 0) {
    count = o.count;
    mean = o.mean.to(at::kCPU).clone();
    m2 = o.m2.to(at::kCPU).clone();
    return;
  }
  TORCH_CHECK_VALUE(o.channels() == channels(),
                    fmt::format("ChannelStats: cannot merge {} channels into {}", o.channels(), channels()));
  // Chan et al.'s merge, the formula of every moments merge (lake/core/moments.h). New
  // tensors: copies of this ChannelStats (and Python) may hold the old ones.
  const auto b_mean = o.mean.to(at::kCPU, at::kDouble).contiguous(), b_m2 = o.m2.to(at::kCPU, at::kDouble).contiguous();
  mean = mean.to(at::kDouble).contiguous().clone();
  m2 = m2.to(at::kDouble).contiguous().clone();
  double n = static_cast<double>(count);
  core::chan_merge_columns(n, mean.data_ptr<double>(), m2.data_ptr<double>(), static_cast<double>(o.count),
                           b_mean.data_ptr<double>(), b_m2.data_ptr<double>(), channels());
  count += o.count;
}

at::Tensor ChannelStats::variance() const {
  TORCH_CHECK(count > 0, "ChannelStats: no tokens accumulated");
  return m2 / static_cast<double>(count);
}

int64_t NeuronSet::total() const {
  int64_t t = 0;
  for (const auto& l : layers) t += l.indices.numel();
  return t;
}

at::Tensor top_k_channels(const at::Tensor& scores, int64_t k) { return ops::top_k(scores, k); }

SensitivitySelector::SensitivitySelector(SelectorOptions options, ProbeKind kind)
    : options_(options), kind_(kind) {
  TORCH_CHECK_VALUE(options_.k >= 1, fmt::format("SensitivitySelector: k must be >= 1, got {}", options_.k));
}

void SensitivitySelector::update(int64_t layer, const at::Tensor& activations) {
  TORCH_CHECK_VALUE(activations.defined() && (activations.dim() == 3 || activations.dim() == 2),
                    fmt::format("SensitivitySelector.update: expected (B, N, C) or (T, C) activations for layer "
                                "{}, got {}",
                                layer, activations.defined() ? activations.sizes() : at::IntArrayRef{}));
  if (!raw_.count(layer)) order_.push_back(layer);
  raw_[layer].update(activations);
  if (options_.score == SensitivityScore::NormalizedVariance) {
    auto x = activations.to(at::kDouble);
    normalized_[layer].update(detail::l2_normalize(x));
  }
}

const ChannelStats& SensitivitySelector::stats(int64_t layer) const {
  auto it = raw_.find(layer);
  TORCH_CHECK_VALUE(it != raw_.end(),
                    fmt::format("SensitivitySelector: no activations were given for layer {}", layer));
  return it->second;
}

void SensitivitySelector::reset() {
  order_.clear();
  raw_.clear();
  normalized_.clear();
}

namespace {

// K distinct channels drawn by `seed` (and the layer) alone: a partial Fisher-Yates
// shuffle on std::mt19937_64, which is specified by the C++ standard, so the choice is
// the same on every platform and LibTorch version.
at::Tensor random_channels(int64_t channels, int64_t k, uint64_t seed, int64_t layer) {
  TORCH_CHECK_VALUE(k >= 1 && k <= channels,
                    fmt::format("k = {} neurons requested, but the layer has {} channels: expected 1 <= k <= {}",
                                k, channels, channels));
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(layer));
  std::vector<int64_t> idx(static_cast<size_t>(channels));
  std::iota(idx.begin(), idx.end(), 0);
  for (int64_t i = 0; i < k; ++i) {
    const uint64_t span = static_cast<uint64_t>(channels - i);
    const int64_t j = i + static_cast<int64_t>(rng() % span);
    std::swap(idx[i], idx[j]);
  }
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return at::tensor(idx, at::kLong);
}

}  // namespace

NeuronSet SensitivitySelector::select() const {
  TORCH_CHECK(!order_.empty(), "SensitivitySelector.select: no activations were streamed in (call update first)");
  NeuronSet set;
  set.kind = kind_;
  for (int64_t layer : order_) {
    const ChannelStats& st = raw_.at(layer);
    const int64_t c = st.channels();
    set.channels = c;
    TORCH_CHECK_VALUE(options_.k <= c,
                      fmt::format("k = {} neurons requested, but layer {} has {} channels: expected 1 <= k <= {}",
                                  options_.k, layer, c, c));
    at::Tensor var = st.variance();
    at::Tensor score;
    switch (options_.score) {
      case SensitivityScore::Variance: score = var; break;
      case SensitivityScore::NormalizedVariance: score = normalized_.at(layer).variance(); break;
      case SensitivityScore::CoefficientOfVariation: score = var.sqrt() / st.mean.abs().clamp_min(1e-12); break;
      case SensitivityScore::Random: score = var; break;  // reported, not used for the choice
    }
    LayerNeurons ln;
    ln.layer = layer;
    ln.indices = options_.score == SensitivityScore::Random ? random_channels(c, options_.k, options_.seed, layer)
                                                            : top_k_channels(score, options_.k);
    ln.scores = score.index_select(0, ln.indices);
    ln.mean = st.mean.index_select(0, ln.indices);
    ln.std = var.index_select(0, ln.indices).sqrt();
    set.layers.push_back(std::move(ln));
  }
  return set;
}

NeuronSet SensitivitySelector::fit(const std::vector<ProbeResult>& batches) {
  reset();
  for (const auto& b : batches)
    for (size_t i = 0; i < b.layers.size(); ++i) update(b.layers[i], b.activations[i]);
  return select();
}

}  // namespace lake
