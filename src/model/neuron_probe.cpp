// NeuronProbe: validated taps over ClipModel::forward_vision.

#include "lake/neuron_probe.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "detail/format.h"
#include "detail/image_batch.h"
#include "detail/strings.h"

namespace lake {

std::string to_string(ProbeKind k) { return k == ProbeKind::Mlp ? "mlp" : "residual"; }

ProbeKind parse_probe_kind(const std::string& name) {
  const std::string s = detail::lower(name);
  if (s == "residual") return ProbeKind::Residual;
  if (s == "mlp") return ProbeKind::Mlp;
  TORCH_CHECK_VALUE(false, fmt::format("unknown probe kind '{}': expected 'residual' or 'mlp'", name));
}

int64_t resolve_layer(int64_t layer, int64_t depth) {
  TORCH_CHECK_VALUE(layer != 0 && layer >= -depth && layer <= depth,
                    fmt::format("layer {} is out of range for a model with {} blocks: use 1..{} or -{}..-1 (layers are "
                                "1-based; -1 is the last block)",
                                layer, depth, depth, depth));
  return layer > 0 ? layer : depth + 1 + layer;
}

NeuronProbe::NeuronProbe(ClipModel model, ProbeOptions options)
    : model_(std::move(model)), options_(std::move(options)) {
  const int64_t depth = model_.config().vision_layers;
  TORCH_CHECK_VALUE(!options_.layers.empty() || options_.project_layer != 0,
                    fmt::format("NeuronProbe: expected at least one layer to probe (1..{})", depth));
  for (int64_t l : options_.layers) {
    const int64_t r = resolve_layer(l, depth);
    TORCH_CHECK_VALUE(std::find(layers_.begin(), layers_.end(), r) == layers_.end(),
                      fmt::format("NeuronProbe: layer {} (block {}) is requested twice", l, r));
    layers_.push_back(r);
  }
  if (options_.project_layer != 0) project_layer_ = resolve_layer(options_.project_layer, depth);
}

int64_t NeuronProbe::channels() const {
  const int64_t d = model_.config().vision_width;
  return options_.kind == ProbeKind::Mlp ? 4 * d : d;
}

ProbeResult NeuronProbe::operator()(const at::Tensor& images) const {
  detail::check_image_batch(images, {"NeuronProbe"});
  VisionTaps taps;
  (options_.kind == ProbeKind::Mlp ? taps.mlp_layers : taps.residual_layers) = layers_;
  taps.project_layer = project_layer_;
  VisionForward f = model_.forward_vision(images, taps);
  const auto& tokens = options_.kind == ProbeKind::Mlp ? f.mlp : f.residual;

  ProbeResult out;
  out.layers = layers_;
  out.grid_h = f.grid_h;
  out.grid_w = f.grid_w;
  out.projected = f.projected;
  for (const auto& t : tokens) {
    out.activations.push_back(t.slice(1, 1).contiguous());  // (B, N, C)
    out.cls.push_back(t.select(1, 0).contiguous());         // (B, C)
  }
  return out;
}

const at::Tensor& ProbeResult::at_layer(int64_t layer) const {
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] == layer) return activations[i];
  }
  TORCH_CHECK_VALUE(false, fmt::format("layer {} was not probed; probed layers: {}", layer, at::IntArrayRef(layers)));
}

}  // namespace lake
