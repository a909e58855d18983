// NormalityModel: fit (select neurons, build galleries, embed prompts), score (visual
// nearest-neighbour deviation + semantic verification -> fused, upsampled, blurred map),
// calibrate, explain. METHOD.md is the specification; tests/python/lake_reference.py is an
// independent implementation the tests compare against.

#include "lake/normality_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "detail/format.h"
#include "detail/image_batch.h"
#include "detail/strings.h"
#include "detail/normality_state.h"
#include "detail/normality_ops.h"
#include "lake/image_io.h"
#include "lake/ops/ops.h"

namespace lake {

std::string to_string(Pooling p) { return p == Pooling::Top1Pct ? "top1pct" : "max"; }

Pooling parse_pooling(const std::string& name) {
  const std::string s = detail::lower(name);
  if (s == "max") return Pooling::Max;
  if (s == "top1pct" || s == "top1%") return Pooling::Top1Pct;
  TORCH_CHECK_VALUE(false, fmt::format("unknown pooling '{}': expected 'max' or 'top1pct'", name));
}

std::vector<std::string> default_prompts(const std::string& class_name, bool anomalous) {
  static const char* normal_states[] = {"flawless {}", "perfect {}", "unblemished {}",
                                        "{} without flaw", "{} without defect", "{} without damage"};
  static const char* anomalous_states[] = {"damaged {}", "broken {}", "{} with flaw", "{} with defect",
                                           "{} with damage"};
  static const char* templates[] = {"a photo of a {}.",
                                    "a cropped photo of the {}.",
                                    "a close-up photo of a {}.",
                                    "a bright photo of a {}.",
                                    "a dark photo of the {}.",
                                    "a photo of the {} for visual inspection.",
                                    "a photo of a {} for anomaly detection."};
  auto fill = [](std::string pattern, const std::string& value) {
    const auto at = pattern.find("{}");
    return at == std::string::npos ? pattern : pattern.replace(at, 2, value);
  };
  std::vector<std::string> out;
  const auto& states = anomalous ? std::vector<const char*>(std::begin(anomalous_states), std::end(anomalous_states))
                                 : std::vector<const char*>(std::begin(normal_states), std::end(normal_states));
  for (const char* state : states)
    for (const char* t : templates) out.push_back(fill(t, fill(state, class_name)));
  return out;
}

namespace {

using detail::pool_image_score;

std::vector<int64_t> resolve_layers(const NormalityOptions& o, int64_t depth) {
  std::vector<int64_t> layers;
  if (o.layers.empty()) {
    for (int64_t q = 1; q <= 4; ++q) layers.push_back(std::max<int64_t>(1, depth * q / 4));
  } else {
    for (int64_t l : o.layers) layers.push_back(resolve_layer(l, depth));
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  return layers;
}

int64_t default_image_size(const ClipConfig& c) {
  if (c.patch_size == 14) return 518;
  if (c.vision_width == 896 && c.patch_size == 16 && c.image_size == 240) return 240;
  return c.image_size;
}

std::shared_ptr<NormalityModel::State> make_state(ClipModel model, NormalityOptions o) {
  const ClipConfig& c = model.config();
  TORCH_CHECK_VALUE(o.k >= 1, fmt::format("NormalityModel: k must be >= 1, got {}", o.k));
  TORCH_CHECK_VALUE(o.text_weight >= 0.0 && o.text_weight <= 1.0,
                    fmt::format("NormalityModel: text_weight must lie in [0, 1], got {:g}", o.text_weight));
  TORCH_CHECK_VALUE(o.blur_sigma >= 0.0,
                    fmt::format("NormalityModel: blur_sigma must be >= 0, got {:g}", o.blur_sigma));
  TORCH_CHECK_VALUE(o.gallery_tile >= 1,
                    fmt::format("NormalityModel: gallery_tile must be >= 1, got {}", o.gallery_tile));
  TORCH_CHECK_VALUE(o.batch_size >= 1, fmt::format("NormalityModel: batch_size must be >= 1, got {}", o.batch_size));
  std::vector<int64_t> layers = resolve_layers(o, c.vision_layers);
  const int64_t size = o.image_size > 0 ? o.image_size : default_image_size(c);
  TORCH_CHECK_VALUE(
      size % c.patch_size == 0,
      fmt::format("NormalityModel: image_size {} must be a multiple of the patch size {}", size, c.patch_size));
  const int64_t channels = o.kind == ProbeKind::Mlp ? 4 * c.vision_width : c.vision_width;
  TORCH_CHECK_VALUE(
      o.k <= channels,
      fmt::format("k = {} neurons requested, but each tapped layer has {} channels ({}): expected 1 <= k <= {}", o.k,
                  channels, to_string(o.kind), channels));
  const int64_t semantic = o.semantic_layer != 0 ? resolve_layer(o.semantic_layer, c.vision_layers) : layers.back();
  ProbeOptions po;
  po.layers = layers;
  po.kind = o.kind;
  po.project_layer = semantic;
  auto s = std::make_shared<NormalityModel::State>(std::move(model), o, layers, po);
  s->image_size = size;
  s->semantic_layer = semantic;
  s->normal_prompts = o.normal_prompts.empty() ? default_prompts(o.class_name, false) : o.normal_prompts;
  s->anomaly_prompts = o.anomaly_prompts.empty() ? default_prompts(o.class_name, true) : o.anomaly_prompts;
  return s;
}

// (B, 3, H, W), checked by the caller (detail::check_image_batch) -> the backbone's (B, 3, S, S) input.
at::Tensor to_backbone(const at::Tensor& images, int64_t size) {
  auto x = images.to(at::kFloat);
  if (x.size(2) == size && x.size(3) == size) return x;
  return at::_upsample_bicubic2d_aa(x, {size, size}, /*align_corners=*/false);
}

at::Tensor embed_prompts(const ClipModel& model, const Tokenizer& tok, const std::vector<std::string>& prompts) {
  TORCH_CHECK_VALUE(!prompts.empty(), "NormalityModel: the prompt list is empty");
  auto e = model.encode_text(tok.tokenize(prompts)).to(at::kFloat);
  e = e / e.norm(2, -1, true).clamp_min(1e-12);
  auto m = e.mean(0);
  return m / m.norm().clamp_min(1e-12);
}

// The backbone's taps of `images` (B, 3, S, S), `batch_size` images per forward, handed
// to `fn(taps, first)` chunk by chunk (first: the chunk's first image). With batch_size 1
// the results do not depend on how many images a call holds, bit for bit.
// `batch_size` > 0 overrides the model's option for this call (score_prepared).
template <typename Fn>
void for_each_chunk(const NormalityModel::State& s, const at::Tensor& images, Fn&& fn, int64_t batch_size = 0) {
  const int64_t B = images.size(0), step = batch_size > 0 ? batch_size : s.options.batch_size;
  for (int64_t first = 0; first < B; first += step) fn(s.probe(images.slice(0, first, std::min(B, first + step))), first);
}

// Image j of a probe result, layer l: its selected channels, L2-normalised, (N, K) float32.
// The indices were validated once (State::set_neurons) and live on the model's device: no
// per-call range check, no device synchronisation.
at::Tensor sparse_tokens(const std::vector<at::Tensor>& device_indices, const ProbeResult& r, size_t l, int64_t j) {
  return ops::gather_normalize_unchecked(r.activations[l][j], device_indices[l]);
}

}  // namespace

std::vector<at::Tensor> NormalityModel::State::validated_indices(const NeuronSet& n, const std::string& source) const {
  const int64_t channels = probe.channels();
  TORCH_CHECK_VALUE(n.layers.empty() || (n.kind == options.kind && n.channels == channels),
                    fmt::format("{}: the neurons are for {} taps of {} channels, but the model taps {} activations of "
                                "{} channels (corrupted?)",
                                source, to_string(n.kind), n.channels, to_string(options.kind), channels));
  std::vector<at::Tensor> on_device;
  for (const LayerNeurons& l : n.layers) {
    const at::Tensor& idx = l.indices;
    TORCH_CHECK_VALUE(idx.defined() && idx.dim() == 1 && idx.numel() >= 1 && idx.scalar_type() == at::kLong,
                      fmt::format("{}: layer {} expected (K) int64 neuron indices with K >= 1, got {} {}", source,
                                  l.layer, idx.defined() ? idx.sizes() : at::IntArrayRef{},
                                  idx.defined() ? idx.scalar_type() : at::ScalarType::Undefined));
    const at::Tensor cpu = idx.to(at::kCPU);
    const int64_t lo = cpu.min().item<int64_t>(), hi = cpu.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < channels,
                      fmt::format("{}: layer {} has neuron indices in [{}, {}], expected [0, {}) (corrupted?)", source,
                                  l.layer, lo, hi, channels));
    for (const at::Tensor& t : {l.scores, l.mean, l.std})
      TORCH_CHECK_VALUE(t.defined() && t.dim() == 1 && t.size(0) == idx.size(0),
                        fmt::format("{}: layer {} expected ({}) neuron statistics, got {} (corrupted?)", source,
                                    l.layer, idx.size(0), t.defined() ? t.sizes() : at::IntArrayRef{}));
    on_device.push_back(idx.to(model.device()).contiguous());
  }
  return on_device;
}

void NormalityModel::State::set_galleries(std::vector<at::Tensor> per_layer) {
  galleries.clear();
  gallery = at::Tensor();
  if (per_layer.empty()) return;
  for (const auto& g : per_layer)
    TORCH_CHECK_VALUE(
        g.dim() == 2 && g.sizes() == per_layer[0].sizes(),
        fmt::format("NormalityModel: every layer's gallery must have the same (M, K) shape, got {} and {}", g.sizes(),
                    per_layer[0].sizes()));
  gallery = at::stack(per_layer).to(at::kFloat).contiguous();
  for (int64_t l = 0; l < gallery.size(0); ++l) galleries.push_back(gallery[l]);
}

NormalityModel::NormalityModel(ClipModel model, NormalityOptions options)
    : state_(make_state(std::move(model), std::move(options))) {}

bool NormalityModel::is_fitted() const { return state_->fitted; }
const NormalityOptions& NormalityModel::options() const { return state_->options; }
const ClipModel& NormalityModel::model() const { return state_->model; }
const std::vector<int64_t>& NormalityModel::layers() const { return state_->layers; }
int64_t NormalityModel::image_size() const { return state_->image_size; }
int64_t NormalityModel::semantic_layer() const { return state_->semantic_layer; }
const NeuronSet& NormalityModel::neurons() const { return state_->neurons; }
const std::vector<at::Tensor>& NormalityModel::galleries() const { return state_->galleries; }
const at::Tensor& NormalityModel::text_embeddings() const { return state_->text; }
const std::vector<std::string>& NormalityModel::normal_prompts() const { return state_->normal_prompts; }
const std::vector<std::string>& NormalityModel::anomaly_prompts() const { return state_->anomaly_prompts; }
int64_t NormalityModel::shots() const { return state_->shots; }
std::optional<double> NormalityModel::image_threshold() const { return state_->image_threshold; }
std::optional<double> NormalityModel::pixel_threshold() const { return state_->pixel_threshold; }

void NormalityModel::set_thresholds(std::optional<double> image, std::optional<double> pixel) {
  state_->image_threshold = image;
  state_->pixel_threshold = pixel;
}

void NormalityModel::fit(const at::Tensor& normal_images) {
  State& s = *state_;
  detail::check_image_batch(normal_images, {"NormalityModel.fit", "normal_images", 'k', /*allow_empty=*/true});
  const int64_t shots = normal_images.size(0);
  const ClipConfig& c = s.model.config();
  const bool need_text = shots == 0 || s.options.text_weight > 0;

  // Text embeddings: needed when the semantic branch counts; computed whenever possible.
  std::shared_ptr<const Tokenizer> tok = s.model.tokenizer();
  if (!s.options.vocabulary.empty()) tok = std::make_shared<const Tokenizer>(Tokenizer::from_file(s.options.vocabulary));
  at::Tensor text;
  if (c.has_text() && tok) {
    text = at::stack({embed_prompts(s.model, *tok, s.normal_prompts), embed_prompts(s.model, *tok, s.anomaly_prompts)});
  } else {
    TORCH_CHECK_VALUE(
        !need_text,
        fmt::format("NormalityModel.fit: the semantic branch (text_weight = {:g}{}) needs {}", s.options.text_weight,
                    shots == 0 ? ", zero-shot" : "",
                    c.has_text() ? "a BPE vocabulary: set the `vocabulary` option (CLIP's bpe_simple_vocab_16e6.txt.gz)"
                                 : "the CLIP text tower, which this archive lacks or was not loaded"));
  }

  NeuronSet neurons;
  std::vector<at::Tensor> device_indices, galleries;
  if (shots > 0) {
    // Pass 1: streamed float64 statistics. The taps are kept for pass 2 when they fit in
    // `kKeepBytes`, else the backbone runs again.
    constexpr int64_t kKeepBytes = int64_t(1) << 30;
    SensitivitySelector selector({s.options.k, s.options.score, s.options.seed}, s.options.kind);
    const at::Tensor x = to_backbone(normal_images, s.image_size);
    std::vector<ProbeResult> kept;
    int64_t kept_bytes = 0;
    bool keep = true;
    for_each_chunk(s, x, [&](ProbeResult r, int64_t) {
      for (size_t l = 0; l < r.layers.size(); ++l) {
        selector.update(r.layers[l], r.activations[l]);
        kept_bytes += r.activations[l].numel() * r.activations[l].element_size();
      }
      keep = keep && kept_bytes <= kKeepBytes;
      if (keep) kept.push_back(std::move(r));
      else kept.clear();
    });
    neurons = selector.select();
    device_indices = s.validated_indices(neurons, "NormalityModel.fit");
    // Pass 2: per layer, the selected channels of every normal patch, L2-normalised.
    std::vector<std::vector<at::Tensor>> rows(neurons.layers.size());
    auto add_rows = [&](const ProbeResult& r) {
      for (int64_t j = 0; j < r.activations[0].size(0); ++j)
        for (size_t l = 0; l < neurons.layers.size(); ++l) rows[l].push_back(sparse_tokens(device_indices, r, l, j));
    };
    if (keep) {
      for (const auto& r : kept) add_rows(r);
    } else {
      for_each_chunk(s, x, [&](ProbeResult r, int64_t) { add_rows(r); });
    }
    for (auto& r : rows) galleries.push_back(at::cat(r, 0));
  }
  s.neurons = std::move(neurons);
  s.device_indices = std::move(device_indices);
  s.set_galleries(std::move(galleries));
  s.text = text;
  s.shots = shots;
  s.image_threshold.reset();
  s.pixel_threshold.reset();
  s.fitted = true;
}

namespace {

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

// Image files by the one rule of lake::prepare_image, at this model's S and normalisation.
std::vector<PreparedImage> prepare_files(const NormalityModel::State& s, const std::vector<std::string>& paths,
                                         const char* what) {
  TORCH_CHECK_VALUE(!paths.empty(), fmt::format("{}: expected at least one image file, got none", what));
  const ClipConfig& c = s.model.config();
  std::vector<PreparedImage> out;
  out.reserve(paths.size());
  for (const auto& p : paths) out.push_back(prepare_image(p, s.image_size, c.image_mean, c.image_std));
  return out;
}

at::Tensor stack_pixels(const std::vector<PreparedImage>& images) {
  std::vector<at::Tensor> xs;
  xs.reserve(images.size());
  for (const auto& im : images) xs.push_back(im.pixels);
  return at::stack(xs);
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

void NormalityModel::fit_files(const std::vector<std::string>& paths) {
  if (paths.empty()) {  // zero-shot
    fit(at::empty({0, 3, state_->image_size, state_->image_size}));
    return;
  }
  fit(stack_pixels(prepare_files(*state_, paths, "NormalityModel.fit_files")));
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
