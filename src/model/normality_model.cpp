// NormalityModel: construction (options resolved and checked), fit (select neurons, build
// galleries, embed prompts). Scoring, calibration and explanations are in
// normality_score.cpp. METHOD.md is the specification; tests/python/lake_reference.py is an
// independent implementation the tests compare against.

#include "lake/normality_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "detail/format.h"
#include "detail/image_batch.h"
#include "detail/strings.h"
#include "detail/normality_model_impl.h"
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

using detail::normality::for_each_chunk;
using detail::normality::prepare_files;
using detail::normality::sparse_tokens;
using detail::normality::stack_pixels;
using detail::normality::to_backbone;

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

at::Tensor embed_prompts(const ClipModel& model, const Tokenizer& tok, const std::vector<std::string>& prompts) {
  TORCH_CHECK_VALUE(!prompts.empty(), "NormalityModel: the prompt list is empty");
  auto e = model.encode_text(tok.tokenize(prompts)).to(at::kFloat);
  e = detail::l2_normalize(e);
  auto m = e.mean(0);
  return m / m.norm().clamp_min(1e-12);
}

}  // namespace
}  // namespace lake

namespace lake::detail::normality {

at::Tensor to_backbone(const at::Tensor& images, int64_t size) {
  auto x = images.to(at::kFloat);
  if (x.size(2) == size && x.size(3) == size) return x;
  return at::_upsample_bicubic2d_aa(x, {size, size}, /*align_corners=*/false);
}

at::Tensor sparse_tokens(const std::vector<at::Tensor>& device_indices, const ProbeResult& r, size_t l, int64_t j) {
  return ops::gather_normalize_unchecked(r.activations[l][j], device_indices[l]);
}

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

}  // namespace lake::detail::normality

namespace lake {

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

void NormalityModel::fit_files(const std::vector<std::string>& paths) {
  if (paths.empty()) {  // zero-shot
    fit(at::empty({0, 3, state_->image_size, state_->image_size}));
    return;
  }
  fit(stack_pixels(prepare_files(*state_, paths, "NormalityModel.fit_files")));
}

}  // namespace lake
