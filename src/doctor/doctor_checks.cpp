// lake::doctor's kernel checks: every lake::ops kernel on small and edge-case inputs (empty,
// one element, ties, NaN, float16 / bfloat16, strides, tiles, exclusions) against naive
// ATen references computed on the CPU in float64. Inputs are drawn from fixed seeds on the
// CPU, then moved to the checked device; outputs come back to the CPU to be compared.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "detail/doctor_checks.h"
#include "detail/format.h"
#include "lake/ops/ops.h"

namespace lake::detail {

// ---- comparisons ------------------------------------------------------------------------

bool DoctorComparison::placed(const std::string& what, const at::Tensor& got, const at::Tensor& ref,
                              bool kernel_output) {
  std::string problem;
  if (!got.defined())
    problem = fmt::format("{}: no output", what);
  else if (kernel_output && got.device() != device_)
    problem = fmt::format("{}: on {}, expected {}", what, got.device(), device_);
  else if (got.sizes() != ref.sizes())
    problem = fmt::format("{}: shape {}, expected {}", what, got.sizes(), ref.sizes());
  if (problem.empty()) return true;
  expect(false, problem);
  return false;
}

void DoctorComparison::close(const std::string& what, const at::Tensor& got, const at::Tensor& ref,
                             bool kernel_output) {
  if (!placed(what, got, ref, kernel_output) || got.numel() == 0) return;
  const at::Tensor g = got.to(at::kCPU, at::kDouble), r = ref.to(at::kCPU, at::kDouble);
  const at::Tensor gn = at::isnan(g), rn = at::isnan(r);
  if (!gn.equal(rn)) {
    const int64_t extra = at::logical_and(gn, rn.logical_not()).sum().item<int64_t>();
    const int64_t missing = at::logical_and(rn, gn.logical_not()).sum().item<int64_t>();
    expect(false,
           fmt::format("{}: NaN at {} positions where the reference has a number, a number at {} where it has NaN",
                       what, extra, missing));
    return;
  }
  // Equal values (infinities included) differ by 0; NaN positions agree, so they count as 0.
  const at::Tensor d = at::where(at::logical_or(g == r, rn), at::zeros_like(g), (g - r).abs());
  const at::Tensor finite = at::where(at::isfinite(r), r.abs(), at::zeros_like(r));
  const double scale = std::max(1.0, finite.max().item<double>());
  const double err = d.max().item<double>() / scale;
  max_error = std::max(max_error, std::isnan(err) ? std::numeric_limits<double>::infinity() : err);
}

void DoctorComparison::exact(const std::string& what, const at::Tensor& got, const at::Tensor& ref,
                             bool kernel_output) {
  if (!placed(what, got, ref, kernel_output) || got.numel() == 0) return;
  const at::Tensor g = got.to(at::kCPU, at::kLong).reshape({-1}), r = ref.to(at::kCPU, at::kLong).reshape({-1});
  const at::Tensor differ = (g != r).nonzero();
  if (differ.numel() == 0) return;
  const int64_t i = differ[0][0].item<int64_t>();
  expect(false, fmt::format("{}: {} of {} values differ (first at {}: {}, expected {})", what, differ.size(0),
                            g.numel(), i, g[i].item<int64_t>(), r[i].item<int64_t>()));
}

void DoctorComparison::expect(bool ok, const std::string& problem) {
  if (ok) return;
  problems.push_back(problem);
  max_error = std::numeric_limits<double>::infinity();
}

at::Tensor doctor_perturb(const at::Tensor& t) {
  if (t.numel() == 0) {
    std::vector<int64_t> shape = t.sizes().vec();
    if (shape.empty()) shape.push_back(0);
    shape[0] += 1;
    return at::zeros(shape, t.options());
  }
  if (t.scalar_type() == at::kBool) return t.logical_not();
  if (at::isFloatingType(t.scalar_type())) return t + 0.5;
  return t + 1;
}

// ---- references -------------------------------------------------------------------------

namespace doctor_ref {

at::Tensor top_k(const at::Tensor& scores, int64_t k) {
  const at::Tensor s = scores.to(at::kCPU, at::kDouble).contiguous();
  const double* v = s.data_ptr<double>();
  std::vector<int64_t> order(static_cast<size_t>(s.numel()));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [v](int64_t a, int64_t b) {
    const bool na = std::isnan(v[a]), nb = std::isnan(v[b]);
    if (na != nb) return nb;  // numbers first
    if (!na && v[a] != v[b]) return v[a] > v[b];
    return a < b;
  });
  order.resize(static_cast<size_t>(k));
  std::sort(order.begin(), order.end());
  return at::tensor(order, at::kLong);
}

at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps) {
  const at::Tensor g = tokens.to(at::kCPU, at::kDouble).index_select(1, indices.to(at::kCPU));
  return g / g.norm(2, 1, true).clamp_min(eps);
}

at::Tensor similarities(const at::Tensor& queries, const at::Tensor& gallery, int64_t lo, int64_t hi) {
  at::Tensor sims = at::bmm(queries.to(at::kCPU, at::kDouble), gallery.to(at::kCPU, at::kDouble).transpose(1, 2));
  hi = std::min(hi, sims.size(2));
  if (hi > lo) sims.slice(2, lo, hi).fill_(-std::numeric_limits<double>::infinity());
  return sims;
}

std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& sims) {
  if (sims.size(2) == 0)
    return {at::ones({sims.size(0), sims.size(1)}, at::kDouble), at::full({sims.size(0), sims.size(1)}, -1, at::kLong)};
  auto [best, arg] = sims.max(2);  // the first maximal index
  const at::Tensor none = at::isinf(best);
  return {((1 - best) / 2).clamp(0, 1).masked_fill(none, 1.0), arg.masked_fill(none, -1)};
}

at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, double sigma) {
  at::Tensor up = at::upsample_bilinear2d(maps.to(at::kCPU, at::kDouble).unsqueeze(1), {H, W}, false);
  int64_t r = sigma > 0 ? static_cast<int64_t>(4 * sigma + 0.5) : 0;
  r = std::min(r, std::min(H, W) - 1);
  if (r > 0) {
    at::Tensor x = at::arange(-r, r + 1, at::kDouble);
    at::Tensor w = at::exp(-x * x / (2 * sigma * sigma));
    w = w / w.sum();
    up = at::conv2d(at::reflection_pad2d(up, {r, r, 0, 0}), w.view({1, 1, 1, -1}));
    up = at::conv2d(at::reflection_pad2d(up, {0, 0, r, r}), w.view({1, 1, -1, 1}));
  }
  return up.squeeze(1);
}

}  // namespace doctor_ref

// ---- the cases --------------------------------------------------------------------------

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }
at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) { return at::randn(shape, gen(seed)); }
at::Tensor unit_rows(std::vector<int64_t> shape, uint64_t seed) {
  at::Tensor x = randn(std::move(shape), seed);
  return x / x.norm(2, -1, true);
}
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

using Run = std::function<void(DoctorComparison&, c10::Device, const DoctorTap&)>;

void moments_case(DoctorComparison& c, c10::Device dev, const DoctorTap& tap, const at::Tensor& x,
                  const at::Tensor& mask = {}) {
  ops::Moments m = ops::channel_moments(x.to(dev), mask.defined() ? mask.to(dev) : mask);
  at::Tensor kept = x.to(at::kDouble);
  if (mask.defined()) kept = kept.index({mask});
  const int64_t n = kept.size(0);
  const at::Tensor mean = n > 0 ? kept.mean(0) : at::zeros({x.size(1)}, at::kDouble);
  const at::Tensor m2 = n > 0 ? (kept - mean).square().sum(0) : at::zeros({x.size(1)}, at::kDouble);
  c.expect(m.count == n, fmt::format("count {}, expected {}", m.count, n));
  c.close("mean", tap(m.mean), mean);
  c.close("m2", tap(m.m2), m2);
}

void gather_case(DoctorComparison& c, c10::Device dev, const DoctorTap& tap, const at::Tensor& x,
                 const at::Tensor& idx) {
  c.close("out", tap(ops::gather_normalize(x.to(dev), idx)), doctor_ref::gather_normalize(x, idx));
}

// Distances against the full similarity matrix; the index must reach the best similarity
// (within the tolerance: rounding may pick another row of nearly equal similarity) or, with
// `exact_index`, be the reference's (ties: the lowest row).
void nearest_case(DoctorComparison& c, c10::Device dev, const DoctorTap& tap, const at::Tensor& q,
                  const at::Tensor& g, ops::NearestOptions o, bool exact_index) {
  const ops::NearestNeighbors r = ops::nearest_neighbors(q.to(dev), g.to(dev), o);
  const at::Tensor sims = doctor_ref::similarities(q, g, o.exclude_lo, o.exclude_hi);
  auto [dist, arg] = doctor_ref::nearest(sims);
  const std::string t = fmt::format("tile {}", o.tile);
  c.close(fmt::format("{} distance", t), tap(r.distance), dist);
  const at::Tensor idx = tap(r.index);
  if (exact_index || sims.size(2) == 0) {
    c.exact(fmt::format("{} index", t), idx, arg);
    return;
  }
  if (idx.sizes() != arg.sizes()) return c.exact(fmt::format("{} index", t), idx, arg);  // reports the shape
  const at::Tensor i = idx.to(at::kCPU);
  const at::Tensor valid = (i >= 0).logical_and(i < sims.size(2));
  c.expect(valid.equal(arg >= 0), fmt::format("{} index: -1 where a row is left, or a value outside [-1, M)", t));
  if (!c.problems.empty()) return;
  const at::Tensor picked = sims.gather(2, i.clamp_min(0).unsqueeze(2)).squeeze(2);
  const at::Tensor best = sims.gather(2, arg.clamp_min(0).unsqueeze(2)).squeeze(2);
  // An excluded row has similarity -inf: an infinite error.
  c.close(fmt::format("{} similarity at the index", t), at::where(valid, picked, best), best,
          /*kernel_output=*/false);
}

void blur_case(DoctorComparison& c, c10::Device dev, const DoctorTap& tap, const at::Tensor& maps, int64_t H,
               int64_t W, double sigma) {
  c.close("out", tap(ops::upsample_blur(maps.to(dev), H, W, sigma)), doctor_ref::upsample_blur(maps, H, W, sigma));
}

at::Tensor with_nan(at::Tensor x, int64_t row, int64_t col) {
  x.select(0, row).select(0, col).fill_(kNaN);
  return x;
}

std::vector<DoctorCase> moments_cases() {
  auto mc = [](at::Tensor x, at::Tensor mask = {}) -> Run {
    return [x, mask](DoctorComparison& c, c10::Device d, const DoctorTap& t) { moments_case(c, d, t, x, mask); };
  };
  const at::Tensor strided = (randn({37, 257}, 1) * 3 + 1).t();  // (257, 37), not contiguous
  return {
      {"channel_moments[empty]", "(0, 5) float32", 1e-12, mc(at::zeros({0, 5}))},
      {"channel_moments[1 token]", "(1, 7) float32", 1e-12, mc(randn({1, 7}, 2))},
      {"channel_moments[257 tokens, mask, strided]", "(257, 37) float32 transposed view, 60% of the tokens",
       1e-12, mc(strided, at::rand({257}, gen(3)) > 0.4)},
      {"channel_moments[float16]", "(300, 16) float16", 1e-12, mc((randn({300, 16}, 4) * 2 - 1).to(at::kHalf))},
      {"channel_moments[bfloat16]", "(300, 16) bfloat16", 1e-12, mc((randn({300, 16}, 5) * 2 - 1).to(at::kBFloat16))},
      {"channel_moments[float64, offset 1e4]", "(600, 8) float64: 1e4 + 1e-3 noise", 1e-10,
       mc(1e4 + randn({600, 8}, 6).to(at::kDouble) * 1e-3)},
      {"channel_moments[NaN]", "(50, 6) float32, one NaN in channel 2", 1e-12, mc(with_nan(randn({50, 6}, 7), 9, 2))},
  };
}

std::vector<DoctorCase> top_k_cases() {
  const at::Tensor special = at::tensor({0.5, 2.0, kNaN, 2.0, -kInf, 7.0, 0.5, kNaN, kInf, -1.0}, at::kDouble);
  const at::Tensor many = at::randint(0, 20, {3072}, gen(8)).to(at::kFloat);
  return {
      {"top_k[1 channel]", "(1) float64, k = 1", 0,
       [](DoctorComparison& c, c10::Device d, const DoctorTap& t) {
         const at::Tensor s = at::tensor({3.0}, at::kDouble);
         c.exact("k=1", t(ops::top_k(s.to(d), 1)), doctor_ref::top_k(s, 1));
       }},
      {"top_k[ties, NaN, inf]", "(10) float64 with ties, two NaN, +-inf; every k", 0,
       [special](DoctorComparison& c, c10::Device d, const DoctorTap& t) {
         for (int64_t k = 1; k <= special.numel(); ++k)
           c.exact(fmt::format("k={}", k), t(ops::top_k(special.to(d), k)), doctor_ref::top_k(special, k));
       }},
      {"top_k[float32, many ties]", "(3072) float32 of 20 distinct values, k = 1, 100, 3072", 0,
       [many](DoctorComparison& c, c10::Device d, const DoctorTap& t) {
         for (int64_t k : {1, 100, 3072})
           c.exact(fmt::format("k={}", k), t(ops::top_k(many.to(d), k)), doctor_ref::top_k(many, k));
       }},
  };
}

std::vector<DoctorCase> gather_cases() {
  auto gc = [](at::Tensor x, at::Tensor idx) -> Run {
    return [x, idx](DoctorComparison& c, c10::Device d, const DoctorTap& t) { gather_case(c, d, t, x, idx); };
  };
  const at::Tensor idx40 = at::randperm(96, gen(9)).slice(0, 0, 40);
  const at::Tensor x = randn({333, 96}, 10);
  at::Tensor zero_row = randn({64, 20}, 11).t();  // (20, 64), not contiguous
  zero_row[3].zero_();
  return {
      {"gather_normalize[empty]", "(0, 8) tokens, 3 indices; (4, 8) tokens, no index", 1e-6,
       [](DoctorComparison& c, c10::Device d, const DoctorTap& t) {
         gather_case(c, d, t, at::zeros({0, 8}), at::tensor({1, 2, 3}, at::kLong));
         gather_case(c, d, t, randn({4, 8}, 12), at::empty({0}, at::kLong));
       }},
      {"gather_normalize[1 token]", "(1, 5) float32, indices [4, 0]", 1e-6,
       gc(randn({1, 5}, 13), at::tensor({4, 0}, at::kLong))},
      {"gather_normalize[zero row, repeated indices, strided]", "(20, 64) transposed view, row 3 zero, [5, 0, 5, 63]",
       1e-6, gc(zero_row, at::tensor({5, 0, 5, 63}, at::kLong))},
      {"gather_normalize[NaN]", "(6, 10) float32, a NaN in a gathered channel of row 2", 1e-6,
       gc(with_nan(randn({6, 10}, 14), 2, 4), at::tensor({4, 1, 7}, at::kLong))},
      {"gather_normalize[float16]", "(333, 96) float16 -> 40 channels", 1e-6, gc(x.to(at::kHalf), idx40)},
      {"gather_normalize[bfloat16]", "(333, 96) bfloat16 -> 40 channels", 1e-6, gc(x.to(at::kBFloat16), idx40)},
      {"gather_normalize[float64]", "(333, 96) float64 -> 40 channels", 1e-6, gc(x.to(at::kDouble), idx40)},
      {"gather_normalize_unchecked[float32]", "(333, 96) float32 -> 40 channels, indices on the device; "
       "bit for bit gather_normalize", 1e-6,
       [x, idx40](DoctorComparison& c, c10::Device d, const DoctorTap& t) {
         const at::Tensor out = t(ops::gather_normalize_unchecked(x.to(d), idx40.to(d)));
         c.close("out", out, doctor_ref::gather_normalize(x, idx40));
         c.expect(!c.problems.empty() || out.equal(ops::gather_normalize(x.to(d), idx40)),
                  "differs from gather_normalize (expected bit for bit equal)");
       }},
  };
}

std::vector<DoctorCase> nearest_cases() {
  auto nc = [](at::Tensor q, at::Tensor g, std::vector<ops::NearestOptions> os, bool exact) -> Run {
    return [q, g, os, exact](DoctorComparison& c, c10::Device d, const DoctorTap& t) {
      for (const auto& o : os) nearest_case(c, d, t, q, g, o, exact);
    };
  };
  auto tiles = [](std::vector<int64_t> ts, int64_t lo = 0, int64_t hi = 0) {
    std::vector<ops::NearestOptions> out;
    for (int64_t tile : ts) out.push_back({tile, lo, hi});
    return out;
  };
  at::Tensor g40 = unit_rows({1, 40, 16}, 15);
  const at::Tensor tied = at::cat({g40, g40, g40}, 1);  // rows r, r + 40, r + 80 are equal
  const at::Tensor q30 = unit_rows({2, 30, 8}, 16), g300 = unit_rows({2, 300, 8}, 17);
  std::vector<ops::NearestOptions> excl;
  for (auto [lo, hi] : {std::pair<int64_t, int64_t>{100, 200}, {37, 38}, {0, 300}, {250, 1000000}})
    excl.push_back({64, lo, hi});
  return {
      {"nearest_neighbors[empty gallery]", "(2, 5, 4) queries, (2, 0, 4) gallery", 1e-6,
       nc(unit_rows({2, 5, 4}, 18), at::zeros({2, 0, 4}), tiles({512}), true)},
      {"nearest_neighbors[1 x 1]", "one query, one gallery row, K = 8", 1e-6,
       nc(unit_rows({1, 1, 8}, 19), unit_rows({1, 1, 8}, 20), tiles({1, 512}), true)},
      {"nearest_neighbors[3 layers, tiles]", "(3, 150, 24) vs (3, 700, 24) float32, tiles 1, 7, 512, 1000", 1e-6,
       nc(unit_rows({3, 150, 24}, 21), unit_rows({3, 700, 24}, 22), tiles({1, 7, 512, 1000}), false)},
      {"nearest_neighbors[ties]", "queries equal to gallery rows present 3 times: the lowest row", 1e-6,
       nc(tied.slice(1, 50, 70) + 0.0, tied, tiles({1, 3, 40, 512}), true)},
      {"nearest_neighbors[exclusion]", "(2, 30, 8) vs (2, 300, 8), rows [100, 200), [37, 38), all, [250, 1e6)",
       1e-6, nc(q30, g300, excl, false)},
      {"nearest_neighbors[float16]", "(2, 64, 100) vs (2, 1000, 100) float16, products in float32", 1e-5,
       nc(unit_rows({2, 64, 100}, 23).to(at::kHalf), unit_rows({2, 1000, 100}, 24).to(at::kHalf), tiles({512}), false)},
      {"nearest_neighbors[bfloat16]", "(2, 64, 100) vs (2, 1000, 100) bfloat16, products in float32", 1e-5,
       nc(unit_rows({2, 64, 100}, 25).to(at::kBFloat16), unit_rows({2, 1000, 100}, 26).to(at::kBFloat16),
          tiles({512}), false)},
  };
}

std::vector<DoctorCase> blur_cases() {
  auto bc = [](at::Tensor maps, int64_t H, int64_t W, double sigma) -> Run {
    return [=](DoctorComparison& c, c10::Device d, const DoctorTap& t) { blur_case(c, d, t, maps, H, W, sigma); };
  };
  auto rand = [](std::vector<int64_t> shape, uint64_t seed) { return at::rand(shape, gen(seed)); };
  return {
      {"upsample_blur[1 x 1 map]", "(2, 1, 1) -> 9 x 7, sigma 2", 2e-6, bc(rand({2, 1, 1}, 27), 9, 7, 2.0)},
      {"upsample_blur[sigma 0]", "(2, 9, 11) -> 50 x 70, bilinear only", 2e-6, bc(rand({2, 9, 11}, 28), 50, 70, 0.0)},
      {"upsample_blur[14 x 14 -> 112 x 112]", "(3, 14, 14), sigma 4", 2e-6, bc(rand({3, 14, 14}, 29), 112, 112, 4.0)},
      {"upsample_blur[downsample]", "(2, 20, 30) -> 10 x 12, sigma 0.7", 2e-6, bc(rand({2, 20, 30}, 30), 10, 12, 0.7)},
      {"upsample_blur[radius clamped]", "(2, 4, 4) -> 5 x 7, sigma 40 (radius 160 -> 4)", 2e-6,
       bc(rand({2, 4, 4}, 31), 5, 7, 40.0)},
      {"upsample_blur[empty batch]", "(0, 4, 4) -> 8 x 8", 2e-6, bc(at::zeros({0, 4, 4}), 8, 8, 1.0)},
      {"upsample_blur[1 x 1 output]", "(3, 3, 9) -> 1 x 1, sigma 3", 2e-6, bc(rand({3, 3, 9}, 32), 1, 1, 3.0)},
  };
}

}  // namespace

std::vector<DoctorCase> doctor_kernel_cases() {
  std::vector<DoctorCase> all;
  for (auto part : {moments_cases(), top_k_cases(), gather_cases(), nearest_cases(), blur_cases()})
    for (auto& c : part) all.push_back(std::move(c));
  return all;
}

}  // namespace lake::detail
