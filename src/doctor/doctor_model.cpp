// lake::doctor's end-to-end checks: a tiny random-weight CLIP ViT, built in memory through
// the state-dict path (detail::build_clip), and a NormalityModel fitted and scored on it.
// On the CPU, the model is compared with a reference pipeline made of the naive references
// (variance by two passes in float64 and a sort for the neurons, index_select + norm for
// the galleries and queries, the full similarity matrix for the nearest neighbours,
// interpolate + conv2d for the maps) over the same backbone taps; on a CUDA device, with the
// CPU model.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <map>
#include <memory>

#include "detail/clip_archive.h"
#include "detail/doctor_checks.h"
#include "detail/format.h"
#include "lake/neuron_probe.h"
#include "lake/normality_model.h"

namespace lake::detail {
namespace {

// The tiny ViT: 32 px images, patch 8 (a 4 x 4 grid), width 64 (one head), 2 blocks.
constexpr int64_t kWidth = 64, kPatch = 8, kGrid = 4, kBlocks = 2, kEmbed = 32, kSize = kGrid * kPatch;
constexpr int64_t kShots = 3, kQueries = 2;
constexpr double kBlurSigma = 1.0;

std::map<std::string, at::Tensor> tiny_vit_weights(uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto n = [&](std::vector<int64_t> shape, double std, double mean = 0.0) { return at::randn(shape, g) * std + mean; };
  const int64_t w = kWidth;
  const double s = 1.0 / std::sqrt(static_cast<double>(w));
  std::map<std::string, at::Tensor> t;
  t["visual.conv1.weight"] = n({w, 3, kPatch, kPatch}, 1.0 / std::sqrt(3.0 * kPatch * kPatch));
  t["visual.class_embedding"] = n({w}, s);
  t["visual.positional_embedding"] = n({kGrid * kGrid + 1, w}, 0.1);
  for (const char* ln : {"visual.ln_pre", "visual.ln_post"}) {
    t[std::string(ln) + ".weight"] = n({w}, 0.1, 1.0);
    t[std::string(ln) + ".bias"] = n({w}, 0.1);
  }
  t["visual.proj"] = n({w, kEmbed}, s);
  for (int64_t b = 0; b < kBlocks; ++b) {
    const std::string p = fmt::format("visual.transformer.resblocks.{}.", b);
    for (const char* ln : {"ln_1", "ln_2"}) {
      t[p + ln + ".weight"] = n({w}, 0.1, 1.0);
      t[p + ln + ".bias"] = n({w}, 0.1);
    }
    t[p + "attn.in_proj_weight"] = n({3 * w, w}, s);
    t[p + "attn.in_proj_bias"] = n({3 * w}, 0.02);
    t[p + "attn.out_proj.weight"] = n({w, w}, s);
    t[p + "attn.out_proj.bias"] = n({w}, 0.02);
    t[p + "mlp.c_fc.weight"] = n({4 * w, w}, s);
    t[p + "mlp.c_fc.bias"] = n({4 * w}, 0.02);
    t[p + "mlp.c_proj.weight"] = n({w, 4 * w}, 0.5 * s);
    t[p + "mlp.c_proj.bias"] = n({w}, 0.02);
  }
  return t;
}

struct Fitted {
  std::shared_ptr<NormalityModel> model;
  Prediction pred;
};

// Built on first use, shared by the two cases of one doctor run.
struct TinyRun {
  std::map<std::string, at::Tensor> weights = tiny_vit_weights(0);
  at::Tensor fit_images = at::randn({kShots, 3, kSize, kSize}, at::make_generator<at::CPUGeneratorImpl>(1));
  at::Tensor score_images = at::randn({kQueries, 3, kSize, kSize}, at::make_generator<at::CPUGeneratorImpl>(2));
  NormalityOptions options;
  std::string about;  // the inputs, for the report
  // The reference pipeline (CPU, float64).
  std::vector<at::Tensor> ref_indices, ref_galleries;
  at::Tensor ref_map, ref_score;
  std::map<std::string, Fitted> fitted;  // by device

  ClipModel clip(c10::Device device) const {
    RawArchive raw;
    raw.kind = ArchiveKind::StateDict;
    raw.tensors = weights;
    raw.activation_hint = Activation::QuickGELU;
    LoadOptions lo;
    lo.device = device;
    return build_clip(std::move(raw), "<lake doctor: random tiny ViT>", lo);
  }

  // K, the reference neurons and the reference maps.
  void prepare() {
    if (!ref_indices.empty()) return;
    ProbeOptions po;
    po.layers = {1, 2};
    NeuronProbe probe(clip(c10::kCPU), po);
    const ProbeResult fr = probe(fit_images);
    // K where the variance ranking has its widest relative margin (the smallest over layers),
    // so that rounding differences between devices cannot change which neurons are chosen.
    std::vector<at::Tensor> var, sorted;
    for (const at::Tensor& a : fr.activations) {
      const at::Tensor x = a.reshape({-1, a.size(-1)}).to(at::kDouble);
      var.push_back((x - x.mean(0)).square().mean(0));
      sorted.push_back(std::get<0>(var.back().sort(0, /*descending=*/true)));
    }
    double best = -1;
    for (int64_t k = 4; k <= 16; ++k) {
      double m = 1;
      for (const at::Tensor& s : sorted)
        m = std::min(m, ((s[k - 1] - s[k]) / s[k - 1]).item<double>());
      if (m > best) best = m, options.k = k;
    }
    options.layers = po.layers;
    options.text_weight = 0;  // the tiny ViT has no text tower
    options.blur_sigma = kBlurSigma;
    options.gallery_tile = 5;  // 48 gallery rows: 10 tiles
    options.class_name = "doctor";
    about = fmt::format(
        "random ViT (width {}, {} blocks, {} px, patch {}), {} shots, K = {} (selection margin {:.1f}%), "
        "{} images",
        kWidth, kBlocks, kSize, kPatch, kShots, options.k, 100 * best, kQueries);

    const ProbeResult sr = probe(score_images);
    std::vector<at::Tensor> visual(static_cast<size_t>(kQueries));
    for (size_t l = 0; l < var.size(); ++l) {
      ref_indices.push_back(doctor_ref::top_k(var[l], options.k));
      const at::Tensor& a = fr.activations[l];
      ref_galleries.push_back(doctor_ref::gather_normalize(a.reshape({-1, a.size(-1)}), ref_indices[l]));
      for (int64_t j = 0; j < kQueries; ++j) {
        const at::Tensor q = doctor_ref::gather_normalize(sr.activations[l][j], ref_indices[l]);
        const at::Tensor d = doctor_ref::nearest(doctor_ref::similarities(q.unsqueeze(0),
                                                                          ref_galleries[l].unsqueeze(0))).first[0];
        visual[j] = visual[j].defined() ? visual[j] + d : d;
      }
    }
    for (auto& v : visual) v = (v / static_cast<double>(var.size())).view({kGrid, kGrid});
    ref_map = doctor_ref::upsample_blur(at::stack(visual), kSize, kSize, kBlurSigma);
    ref_score = ref_map.amax({1, 2});
  }

  const Fitted& on(c10::Device device) {
    prepare();
    const std::string key = device.str();
    auto it = fitted.find(key);
    if (it != fitted.end()) return it->second;
    auto m = std::make_shared<NormalityModel>(clip(device), options);
    m->fit(fit_images.to(device));
    Fitted f{m, m->score(score_images.to(device))};
    return fitted.emplace(key, std::move(f)).first->second;
  }
};

// The CUDA rows compare the whole pipeline with the CPU's: the backbone's patch convolution
// may run in TF32 (cuDNN's default in torch on Ampere and newer GPUs). Rounding its inputs to
// TF32 moves a tiny model's maps by about 1e-4 (measured on the CPU); the tolerance is 10x that.
constexpr double kDeviceTolerance = 1e-3;

void check_fit(TinyRun& run, DoctorComparison& c, c10::Device dev, const DoctorTap& tap) {
  const Fitted& f = run.on(dev);
  const bool cpu = dev.is_cpu();
  const Fitted* base = cpu ? nullptr : &run.on(c10::kCPU);
  if (!cpu) c.tolerance = kDeviceTolerance;
  const NeuronSet& n = f.model->neurons();
  c.expect(n.layers.size() == run.ref_indices.size(),
           fmt::format("the model has {} neuron layers, expected {}", n.layers.size(), run.ref_indices.size()));
  if (!c.problems.empty()) return;
  for (size_t l = 0; l < n.layers.size(); ++l) {
    const std::string at = fmt::format("layer {}", n.layers[l].layer);
    const at::Tensor want = cpu ? run.ref_indices[l] : base->model->neurons().layers[l].indices;
    c.exact(fmt::format("{} neurons", at), tap(n.layers[l].indices), want, /*kernel_output=*/false);
    const at::Tensor gallery = cpu ? run.ref_galleries[l] : base->model->galleries()[l];
    c.close(fmt::format("{} gallery", at), tap(f.model->galleries()[l]), gallery);
  }
  c.note = run.about;
}

void check_score(TinyRun& run, DoctorComparison& c, c10::Device dev, const DoctorTap& tap) {
  const Fitted& f = run.on(dev);
  const bool cpu = dev.is_cpu();
  if (!cpu) c.tolerance = kDeviceTolerance;
  const at::Tensor& map = cpu ? run.ref_map : run.on(c10::kCPU).pred.anomaly_map;
  const at::Tensor& score = cpu ? run.ref_score : run.on(c10::kCPU).pred.pred_score;
  c.close("anomaly_map", tap(f.pred.anomaly_map), map);
  c.close("pred_score", tap(f.pred.pred_score), score);
  c.note = fmt::format("{}; against {}", run.about, cpu ? "the reference pipeline" : "the CPU model");
}

}  // namespace

std::vector<DoctorCase> doctor_model_cases() {
  auto run = std::make_shared<TinyRun>();
  const std::string inputs = "fit a tiny random-weight NormalityModel";
  return {
      {"normality_model[fit]", fmt::format("{}: the neurons and galleries", inputs), 1e-6,
       [run](DoctorComparison& c, c10::Device d, const DoctorTap& t) { check_fit(*run, c, d, t); }},
      {"normality_model[score]", fmt::format("{} and score 2 images: the maps and scores", inputs), 1e-5,
       [run](DoctorComparison& c, c10::Device d, const DoctorTap& t) { check_score(*run, c, d, t); }},
  };
}

}  // namespace lake::detail
