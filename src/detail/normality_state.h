#pragma once
// NormalityModel's state (internal), shared by the fitting/scoring and the I/O code.

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "lake/normality_model.h"

namespace lake {

struct NormalityModel::State {
  ClipModel model;
  NormalityOptions options;
  // Resolved options.
  std::vector<int64_t> layers;
  int64_t image_size = 0;
  int64_t semantic_layer = 0;
  std::vector<std::string> normal_prompts, anomaly_prompts;
  NeuronProbe probe;
  // Fitted state.
  bool fitted = false;
  int64_t shots = 0;
  NeuronSet neurons;
  // Per neuron layer: its (K) int64 indices on the model's device, validated against
  // [0, channels) once (set_neurons), for ops::gather_normalize_unchecked on the scoring path.
  std::vector<at::Tensor> device_indices;
  std::vector<at::Tensor> galleries;  // per layer (shots * N, K) float32: views of `gallery`
  at::Tensor gallery;                 // (L, shots * N, K) float32, contiguous: searched in one call
  at::Tensor text;                    // (2, E) float32, or undefined
  std::optional<double> image_threshold, pixel_threshold;

  // Validates `n` against the probe (kind, channels, (K) int64 indices in [0, channels),
  // (K) statistics) and returns its indices on the model's device, one per layer (for
  // `device_indices`). `source` names the caller in errors (defined in normality_model.cpp).
  std::vector<at::Tensor> validated_indices(const NeuronSet& n, const std::string& source) const;
  // Stacks per-layer (M, K) galleries into `gallery` and keeps per-layer views of it
  // (defined in normality_model.cpp).
  void set_galleries(std::vector<at::Tensor> per_layer);

  State(ClipModel m, NormalityOptions o, std::vector<int64_t> l, ProbeOptions po)
      : model(std::move(m)), options(std::move(o)), layers(std::move(l)), probe(model, std::move(po)) {}
};

}  // namespace lake
