// NormalityModel: scoring (visual nearest-neighbour deviation + semantic verification ->
// fused, upsampled, blurred map), calibration and explanations. Construction and fit are in
// normality_model.cpp. METHOD.md is the specification; tests/python/lake_reference.py is an
// independent implementation the tests compare against.

#include "lake/normality_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "detail/format.h"
#include "detail/image_batch.h"
#include "detail/normality_model_impl.h"
#include "detail/normality_state.h"
#include "detail/normality_ops.h"
#include "lake/image_io.h"
#include "lake/ops/ops.h"

namespace lake {
namespace {

using detail::pool_image_score;
using detail::normality::for_each_chunk;
using detail::normality::prepare_files;
using detail::normality::sparse_tokens;
using detail::normality::stack_pixels;
using detail::normality::to_backbone;

// Image j of a probe result: the patch-level visual (h, w) and semantic (h, w) scores at
// the backbone grid. `exclude_image`: leave-one-out, the gallery rows of that fit image
// are skipped.
std::pair<at::Tensor, at::Tensor> patch_scores(const NormalityModel::State& s, const ProbeResult& r, int64_t j,
                                               int64_t exclude_image) {
  const int64_t n = r.grid_h * r.grid_w;
  at::Tensor visual, semantic;
  if (s.shots > 0) {
    std::vector<at::Tensor> queries;
    for (size_t l = 0; l < s.neurons.layers.size(); ++l) queries.push_back(sparse_tokens(s.device_indices, r, l, j));
    ops::NearestOptions no;
    no.tile = s.options.gallery_tile;
    if (exclude_image >= 0) no.exclude_lo = exclude_image * n, no.exclude_hi = no.exclude_lo + n;
    // Every layer in one search: (L, N, K) queries against the (L, M, K) galleries.
    const at::Tensor d = ops::nearest_neighbors(at::stack(queries), s.gallery, no).distance;
    visual = d[0];
    for (int64_t l = 1; l < d.size(0); ++l) visual = visual + d[l];
    visual = (visual / static_cast<double>(d.size(0))).view({r.grid_h, r.grid_w});
  }
  if (s.text.defined()) {
    auto z = detail::l2_normalize(r.projected[j].to(at::kFloat));
    auto logits = at::matmul(z, s.text.t()) * 100.0;
    semantic = at::softmax(logits, -1).select(1, 1).contiguous().view({r.grid_h, r.grid_w});
  }
  return {visual, semantic};
}

// Patch scores (B, h, w) -> (B, H, W) maps: bilinear upsampling, Gaussian blur, one call.
at::Tensor to_maps(const std::vector<at::Tensor>& patches, int64_t H, int64_t W, double sigma) {
  return ops::upsample_blur(at::stack(patches).to(at::kFloat), H, W, sigma);
}

// Per image of the backbone input x (B, 3, S, S): the fused patch map (h, w) and, on
// request, the branches'.
struct PatchMaps {
  std::vector<at::Tensor> fused, visual, semantic;
};

PatchMaps patch_maps(const NormalityModel::State& s, const at::Tensor& x, bool with_branches, int64_t exclude_first,
                     int64_t batch_size = 0) {
  TORCH_CHECK(s.fitted, "NormalityModel.score: the model is not fitted: call fit(normal_images) first");
  TORCH_CHECK_VALUE(x.size(0) > 0,
                    fmt::format("NormalityModel.score: expected a non-empty batch of images, got shape {}", x.sizes()));
  const double lambda = s.shots > 0 ? s.options.text_weight : 1.0;
  PatchMaps out;
  for_each_chunk(s, x, [&](const ProbeResult& r, int64_t first) {
    const int64_t chunk = r.activations[0].size(0);  // the probe always taps at least one layer
    for (int64_t j = 0; j < chunk; ++j) {
      const int64_t i = first + j;
      auto [visual, semantic] = patch_scores(s, r, j, exclude_first >= 0 ? exclude_first + i : -1);
      if (!visual.defined()) out.fused.push_back(semantic);
      else if (!semantic.defined() || lambda == 0.0) out.fused.push_back(visual);
      else out.fused.push_back((1.0 - lambda) * visual + lambda * semantic);
      if (with_branches && visual.defined()) out.visual.push_back(visual);
      if (with_branches && semantic.defined()) out.semantic.push_back(semantic);
    }
  }, batch_size);
  return out;
}

// Images [first, first + count) of `p` as a Prediction with maps at H x W.
Prediction assemble(const NormalityModel::State& s, const PatchMaps& p, int64_t first, int64_t count, int64_t H,
                    int64_t W) {
  auto part = [&](const std::vector<at::Tensor>& v) {
    return std::vector<at::Tensor>(v.begin() + first, v.begin() + first + count);
  };
  Prediction out;
  out.anomaly_map = to_maps(part(p.fused), H, W, s.options.blur_sigma);
  std::vector<at::Tensor> scores;
  for (int64_t i = 0; i < count; ++i) scores.push_back(pool_image_score(out.anomaly_map[i], s.options.pooling));
  out.pred_score = at::stack(scores);
  if (!p.visual.empty()) out.visual_map = to_maps(part(p.visual), H, W, s.options.blur_sigma);
  if (!p.semantic.empty()) out.semantic_map = to_maps(part(p.semantic), H, W, s.options.blur_sigma);
  if (s.image_threshold) out.pred_label = out.pred_score > *s.image_threshold;
  if (s.pixel_threshold) out.pred_mask = out.anomaly_map > *s.pixel_threshold;
  return out;
}

// x: the backbone's (B, 3, S, S) input; maps at H x W.
Prediction score_impl(const NormalityModel::State& s, const at::Tensor& x, int64_t H, int64_t W, bool with_branches,
                      int64_t exclude_first) {
  const PatchMaps p = patch_maps(s, x, with_branches, exclude_first);
  return assemble(s, p, 0, x.size(0), H, W);
}

void set_thresholds_from(NormalityModel::State& s, const at::Tensor& scores, const at::Tensor& map_values, double q) {
  s.image_threshold = detail::quantile(scores, q);
  s.pixel_threshold = detail::quantile(map_values, q);
}

void check_calibration(const NormalityModel::State& s, int64_t n, double q, bool leave_one_out) {
  TORCH_CHECK(s.fitted, "NormalityModel.calibrate: the model is not fitted: call fit(normal_images) first");
  TORCH_CHECK_VALUE(q > 0.0 && q <= 1.0,
                    fmt::format("NormalityModel.calibrate: quantile must lie in (0, 1], got {:g}", q));
  if (leave_one_out) {
    TORCH_CHECK_VALUE(s.shots > 1 && n == s.shots,
                      fmt::format("NormalityModel.calibrate: leave_one_out scores the fit images against the others: "
                                  "expected the {} fit images (and at least 2), got {}",
                                  s.shots, n));
  }
}

}  // namespace

Prediction NormalityModel::score(const at::Tensor& images, bool with_branches) const {
  TORCH_CHECK(state_->fitted, "NormalityModel.score: the model is not fitted: call fit(normal_images) first");
  detail::check_image_batch(images, {"NormalityModel.score"});
  const at::Tensor x = to_backbone(images, state_->image_size);
  return score_impl(*state_, x, images.size(2), images.size(3), with_branches, -1);
}

PreparedImage NormalityModel::prepare(const std::string& path) const {
  return prepare_files(*state_, {path}, "NormalityModel.prepare")[0];
}

Prediction NormalityModel::score_files(const std::vector<std::string>& paths, bool with_branches) const {
  const std::vector<PreparedImage> images = prepare_files(*state_, paths, "NormalityModel.score_files");
  for (size_t i = 1; i < images.size(); ++i) {
    TORCH_CHECK_VALUE(
        images[i].height == images[0].height && images[i].width == images[0].width,
        fmt::format(
            "NormalityModel.score_files: the maps come back at each file's resolution and share one (B, H, W) tensor, "
            "but '{}' is {}x{} and '{}' is {}x{} (width x height): score files of different sizes in separate calls",
            paths[0], images[0].width, images[0].height, paths[i], images[i].width, images[i].height));
  }
  return score_impl(*state_, stack_pixels(images), images[0].height, images[0].width, with_branches, -1);
}

std::vector<Prediction> NormalityModel::score_prepared(const std::vector<PreparedImage>& images, bool with_branches,
                                                       int64_t batch_size) const {
  TORCH_CHECK_VALUE(!images.empty(), "NormalityModel.score_prepared: expected at least one prepared image, got none");
  TORCH_CHECK_VALUE(batch_size >= 0,
                    fmt::format("NormalityModel.score_prepared: batch_size must be >= 0 (0: the model's {}), got {}",
                                state_->options.batch_size, batch_size));
  const int64_t S = state_->image_size;
  for (size_t i = 0; i < images.size(); ++i) {
    const at::Tensor& x = images[i].pixels;
    TORCH_CHECK_VALUE(
        x.defined() && x.dim() == 3 && x.size(0) == 3 && x.size(1) == S && x.size(2) == S &&
            x.scalar_type() == at::kFloat && images[i].height > 0 && images[i].width > 0,
        fmt::format("NormalityModel.score_prepared: image {} expected (3, {}, {}) float32 pixels from this model's "
                    "prepare() and a positive height and width, got {} {}, {} x {}",
                    i, S, S, x.defined() ? x.sizes() : at::IntArrayRef{},
                    x.defined() ? x.scalar_type() : at::ScalarType::Undefined, images[i].height, images[i].width));
  }
  const PatchMaps p = patch_maps(*state_, stack_pixels(images), with_branches, -1, batch_size);
  std::vector<Prediction> out;
  out.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i)
    out.push_back(assemble(*state_, p, static_cast<int64_t>(i), 1, images[i].height, images[i].width));
  return out;
}

void NormalityModel::calibrate(const at::Tensor& normal_images, double q, bool leave_one_out) {
  State& s = *state_;
  detail::check_image_batch(normal_images, {"NormalityModel.calibrate", "normal_images"});
  check_calibration(s, normal_images.size(0), q, leave_one_out);
  const at::Tensor x = to_backbone(normal_images, s.image_size);
  Prediction p = score_impl(s, x, normal_images.size(2), normal_images.size(3), false, leave_one_out ? 0 : -1);
  set_thresholds_from(s, p.pred_score, p.anomaly_map, q);
}

void NormalityModel::calibrate_files(const std::vector<std::string>& paths, double q, bool leave_one_out) {
  State& s = *state_;
  const std::vector<PreparedImage> images = prepare_files(s, paths, "NormalityModel.calibrate_files");
  check_calibration(s, static_cast<int64_t>(images.size()), q, leave_one_out);
  // Each image's map at its own resolution (files may differ in size).
  const PatchMaps p = patch_maps(s, stack_pixels(images), false, leave_one_out ? 0 : -1);
  std::vector<at::Tensor> scores, values;
  for (size_t i = 0; i < images.size(); ++i) {
    Prediction one = assemble(s, p, static_cast<int64_t>(i), 1, images[i].height, images[i].width);
    scores.push_back(one.pred_score);
    values.push_back(one.anomaly_map.reshape(-1));
  }
  set_thresholds_from(s, at::cat(scores), at::cat(values), q);
}

namespace {

// x: one image's (1, 3, S, S) backbone input; maps at H x W.
std::vector<NeuronDeviation> explain_impl(const NormalityModel::State& s, const at::Tensor& x, int64_t H, int64_t W,
                                          int64_t top) {
  TORCH_CHECK(s.fitted, "NormalityModel.explain: the model is not fitted: call fit(normal_images) first");
  TORCH_CHECK(s.shots > 0, "NormalityModel.explain: a zero-shot model has no selected neurons to explain");
  TORCH_CHECK_VALUE(top >= 1, fmt::format("NormalityModel.explain: top must be >= 1, got {}", top));
  ProbeResult r = s.probe(x);
  struct Item {
    size_t layer_pos;
    int64_t j;
    double dev;
  };
  std::vector<Item> items;
  std::vector<at::Tensor> z(s.neurons.layers.size());
  for (size_t l = 0; l < s.neurons.layers.size(); ++l) {
    const LayerNeurons& n = s.neurons.layers[l];
    auto f = r.activations[l][0].index_select(1, s.device_indices[l]).to(at::kCPU, at::kDouble);
    z[l] = (f - n.mean).abs() / n.std.clamp_min(1e-12);  // (N, K)
    auto dev = std::get<0>(z[l].max(0));
    for (int64_t j = 0; j < dev.size(0); ++j) items.push_back({l, j, dev[j].item<double>()});
  }
  std::stable_sort(items.begin(), items.end(), [&](const Item& a, const Item& b) {
    if (a.dev != b.dev) return a.dev > b.dev;
    if (a.layer_pos != b.layer_pos) return s.neurons.layers[a.layer_pos].layer < s.neurons.layers[b.layer_pos].layer;
    return a.j < b.j;
  });
  std::vector<NeuronDeviation> out;
  for (size_t i = 0; i < items.size() && static_cast<int64_t>(i) < top; ++i) {
    const Item& it = items[i];
    const LayerNeurons& n = s.neurons.layers[it.layer_pos];
    NeuronDeviation d;
    d.layer = n.layer;
    d.channel = n.indices[it.j].item<int64_t>();
    d.deviation = it.dev;
    auto grid = z[it.layer_pos].select(1, it.j).to(at::kFloat).view({1, 1, r.grid_h, r.grid_w});
    d.map = ops::upsample_blur(grid.view({1, r.grid_h, r.grid_w}), H, W, 0.0)[0];
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

std::vector<NeuronDeviation> NormalityModel::explain(const at::Tensor& image, int64_t top) const {
  at::Tensor img = image.defined() && image.dim() == 3 ? image.unsqueeze(0) : image;
  TORCH_CHECK_VALUE(img.defined() && img.dim() == 4 && img.size(0) == 1,
                    fmt::format("NormalityModel.explain: expected one (3, H, W) or (1, 3, H, W) image, got {}",
                                image.defined() ? image.sizes() : at::IntArrayRef{}));
  detail::check_image_batch(img, {"NormalityModel.explain", "image"});
  return explain_impl(*state_, to_backbone(img, state_->image_size), img.size(2), img.size(3), top);
}

std::vector<NeuronDeviation> NormalityModel::explain_file(const std::string& path, int64_t top) const {
  const PreparedImage im = prepare_files(*state_, {path}, "NormalityModel.explain_file")[0];
  return explain_impl(*state_, im.pixels.unsqueeze(0), im.height, im.width, top);
}

}  // namespace lake
