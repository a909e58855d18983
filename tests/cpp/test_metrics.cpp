// Evaluation metrics: hand-worked values, degenerate inputs, errors, binned vs exact.
#include "fixtures.h"

#include <lake/metrics.h>

#include <cmath>
#include <optional>
#include <tuple>

using Catch::Contains;
namespace lm = lake::metrics;

namespace {

at::Tensor floats(std::vector<float> v) { return at::tensor(v, at::kFloat); }
at::Tensor bools(std::vector<int64_t> v) { return at::tensor(v, at::kLong).to(at::kBool); }

// Smooth, realistic anomaly maps in [0, 1] with elliptic defects that the maps partly find.
std::pair<at::Tensor, at::Tensor> blob_maps(int64_t n, int64_t size, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor noise = at::rand({n, 1, size / 8, size / 8}, gen);
  at::Tensor maps = at::upsample_bilinear2d(noise, {size, size}, false).squeeze(1) * 0.5;
  at::Tensor yy = at::arange(size, at::kFloat).view({1, size, 1}), xx = at::arange(size, at::kFloat).view({1, 1, size});
  at::Tensor cy = at::rand({n, 1, 1}, gen) * size, cx = at::rand({n, 1, 1}, gen) * size;
  at::Tensor r = at::rand({n, 1, 1}, gen) * (size / 6.0) + 2;
  at::Tensor d2 = ((yy - cy).square() + (xx - cx).square()) / r.square();
  at::Tensor masks = d2 <= 1;
  masks.index_put_({at::arange(0, n, 3)}, false);  // every third image is normal
  maps = (maps + 0.5 * at::exp(-d2 * 0.7) * masks.any(-1).any(-1).view({n, 1, 1})).clamp(0, 1);
  return {maps, masks};
}

// x: (N, H, W) -> Gaussian blurred (separable, reflected borders).
at::Tensor blur(const at::Tensor& x, double sigma) {
  const int64_t r = static_cast<int64_t>(std::ceil(3 * sigma));
  at::Tensor t = at::arange(-r, r + 1, x.options());
  at::Tensor k = at::exp(-t.square() / (2 * sigma * sigma));
  k = k / k.sum();
  at::Tensor y = at::reflection_pad2d(x.unsqueeze(1), {r, r, r, r});
  y = at::conv2d(y, k.view({1, 1, 1, -1}));
  return at::conv2d(y, k.view({1, 1, -1, 1})).squeeze(1);
}

// Maps like a patch-based detector's, float64 in [0, 1]: random (size / 14)^2 patch scores,
// raised by a per-image amount where a patch overlaps a defect, upsampled bilinearly and
// blurred (sigma 4). Defects: an irregular blob (an ellipse with a wobbly border) in two of
// every three images.
std::pair<at::Tensor, at::Tensor> realistic_maps(int64_t n, int64_t size, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto opt = at::TensorOptions(at::kDouble);
  const int64_t g = size / 14;
  at::Tensor yy = at::arange(size, opt).view({1, size, 1}), xx = at::arange(size, opt).view({1, 1, size});
  at::Tensor cy = (at::rand({n, 1, 1}, gen, opt) * 0.7 + 0.15) * size;
  at::Tensor cx = (at::rand({n, 1, 1}, gen, opt) * 0.7 + 0.15) * size;
  at::Tensor a = (at::rand({n, 1, 1}, gen, opt) * 0.12 + 0.03) * size;
  at::Tensor b = (at::rand({n, 1, 1}, gen, opt) * 0.12 + 0.03) * size;
  at::Tensor th = at::rand({n, 1, 1}, gen, opt) * M_PI;
  at::Tensor u = ((yy - cy) * at::cos(th) + (xx - cx) * at::sin(th)) / a;
  at::Tensor v = ((xx - cx) * at::cos(th) - (yy - cy) * at::sin(th)) / b;
  at::Tensor wobble = blur(at::randn({n, size, size}, gen, opt), size / 20.0) * (size / 8.0);
  at::Tensor masks = (u.square() + v.square() + wobble) <= 1;
  masks.index_put_({at::arange(0, n, 3)}, false);  // every third image is normal
  at::Tensor cover = at::adaptive_avg_pool2d(masks.to(at::kDouble).unsqueeze(1), {g, g});
  at::Tensor found = at::rand({n, 1, 1, 1}, gen, opt) + 0.6;
  at::Tensor low = at::randn({n, 1, g, g}, gen, opt) * 0.35 + found * cover;
  at::Tensor maps = blur(at::upsample_bilinear2d(low, {size, size}, false).squeeze(1), 4.0);
  maps = (maps - maps.min()) / (maps.max() - maps.min());
  return {maps, masks};
}

// The exact metrics of (B, H, W) maps.
lm::PixelResult exact_metrics(const at::Tensor& maps, const at::Tensor& masks) {
  return {lm::auroc(maps.flatten(), masks.flatten()), lm::average_precision(maps.flatten(), masks.flatten()),
          lm::f1_max(maps.flatten(), masks.flatten()), lm::aupro(maps, masks)};
}

// The exact metrics of `maps`, checked against the exact mode of PixelMetrics.
lm::PixelResult exact_reference(const at::Tensor& maps, const at::Tensor& masks);

// Streams `maps` in batches of 3 through `pm`; returns the (lo, width) grids after each
// binned batch.
std::vector<std::pair<double, double>> stream(lm::PixelMetrics& pm, const at::Tensor& maps, const at::Tensor& masks) {
  std::vector<std::pair<double, double>> grids;
  for (int64_t i = 0; i < maps.size(0); i += 3) {
    pm.update(maps.slice(0, i, i + 3), masks.slice(0, i, i + 3));
    if (!pm.is_exact()) grids.emplace_back(*pm.lo(), *pm.bin_width());
  }
  return grids;
}

// Checks binned vs exact (`e`, the exact metrics of the data; see the header's bounds): the
// binned result is exactly the metrics of the scores quantised to the final grid; AUROC and
// AUPRO within 1e-5 of exact; F1-max never above it.
void check_adaptive(const at::Tensor& maps, const at::Tensor& masks, int64_t exact_limit, bool growing,
                    const lm::PixelResult& e) {
  INFO("exact_limit " << exact_limit << ", dtype " << maps.scalar_type());
  lm::PixelMetrics pm(std::nullopt, std::nullopt, int64_t{1} << 15, 0.3, exact_limit);
  CHECK(!pm.lo().has_value());
  CHECK(!pm.fixed_range());
  const auto grids = stream(pm, maps, masks);
  REQUIRE(!pm.is_exact());
  const lm::PixelResult q = pm.compute();
  const double lo = *pm.lo(), hi = *pm.hi(), w = *pm.bin_width();
  CHECK(lo <= maps.min().item<double>());
  CHECK(maps.max().item<double>() < hi);
  const double ratio = w / grids.front().second;
  CHECK(ratio == std::exp2(std::round(std::log2(ratio))));  // widened by a power of two
  if (growing) {
    CHECK(ratio >= 8);
    CHECK(lo < grids.front().first);
  } else {
    CHECK(ratio <= 2);
  }
  at::Tensor bins = at::floor((maps.to(at::kDouble) - lo) / w).clamp(0, pm.bins() - 1);
  const lm::PixelResult want = exact_metrics(bins, masks);
  CHECK(q.auroc == Approx(want.auroc).margin(1e-9));
  CHECK(q.ap == Approx(want.ap).margin(1e-9));
  CHECK(q.f1_max == Approx(want.f1_max).margin(1e-9));
  CHECK(q.aupro == Approx(want.aupro).margin(1e-9));

  INFO("errors: auroc " << q.auroc - e.auroc << ", ap " << q.ap - e.ap << ", f1_max " << q.f1_max - e.f1_max
                        << ", aupro " << q.aupro - e.aupro);
  CHECK(std::abs(q.auroc - e.auroc) < 1e-5);
  CHECK(std::abs(q.aupro - e.aupro) < 1e-5);
  CHECK(q.f1_max <= e.f1_max + 1e-12);
  CHECK(e.f1_max - q.f1_max < 3e-4);
  CHECK(std::abs(q.ap - e.ap) < 3e-4);
}

}  // namespace

TEST_CASE("image metrics on a hand-worked example", "[metrics]") {
  at::Tensor s = floats({0.1f, 0.4f, 0.35f, 0.8f}), l = bools({0, 0, 1, 1});
  // Pairs (pos, neg): 0.35 > 0.1, 0.35 < 0.4, 0.8 > both: 3 of 4.
  CHECK(lm::auroc(s, l) == Approx(0.75));
  // Thresholds 0.8: R = 1/2, P = 1; 0.4: R = 1/2; 0.35: R = 1, P = 2/3 -> 1/2 + 1/2 * 2/3.
  CHECK(lm::average_precision(s, l) == Approx(0.5 + 0.5 * 2.0 / 3.0));
  // F1 = 2 TP / (TP + FP + 2): 0.8: 2/3, 0.4: 2/4, 0.35: 4/5, 0.1: 4/6.
  CHECK(lm::f1_max(s, l) == Approx(0.8));
  // Ties move together: all equal scores -> AUROC 1/2, AP = prevalence.
  at::Tensor t = floats({0.5f, 0.5f, 0.5f, 0.5f});
  CHECK(lm::auroc(t, l) == Approx(0.5));
  CHECK(lm::average_precision(t, l) == Approx(0.5));
  // Integer labels work like bools.
  CHECK(lm::auroc(s, at::tensor({0, 0, 1, 1}, at::kInt)) == Approx(0.75));

  lm::ImageMetrics im;
  im.update(s.slice(0, 0, 1), l.slice(0, 0, 1));
  im.update(s.slice(0, 1, 4), l.slice(0, 1, 4));
  lm::ImageResult r = im.compute();
  CHECK(r.auroc == Approx(0.75));
  CHECK(r.ap == Approx(0.5 + 1.0 / 3.0));
  CHECK(r.f1_max == Approx(0.8));
}

TEST_CASE("degenerate inputs give NaN, bad inputs name themselves", "[metrics]") {
  at::Tensor s = floats({0.1f, 0.4f});
  CHECK(std::isnan(lm::auroc(s, bools({0, 0}))));
  CHECK(std::isnan(lm::auroc(s, bools({1, 1}))));
  CHECK(std::isnan(lm::average_precision(s, bools({0, 0}))));
  CHECK(lm::average_precision(s, bools({1, 1})) == Approx(1.0));
  CHECK(std::isnan(lm::f1_max(s, bools({0, 0}))));
  CHECK(std::isnan(lm::aupro(at::rand({1, 4, 4}), at::zeros({1, 4, 4}, at::kBool))));
  REQUIRE_THROWS_AS(lm::auroc(s, bools({0, 1, 1})), c10::ValueError);
  REQUIRE_THROWS_WITH(lm::auroc(s, bools({0, 1, 1})), Contains("labels matching the 2 scores"));
  REQUIRE_THROWS_WITH(lm::auroc(floats({0.1f, NAN}), bools({0, 1})), Contains("finite"));
  REQUIRE_THROWS_WITH(lm::aupro(at::rand({2, 4, 4}), at::zeros({2, 4, 5}, at::kBool)), Contains("masks matching"));
  REQUIRE_THROWS_WITH(lm::PixelMetrics(1, 0), Contains("lo < hi"));
  REQUIRE_THROWS_WITH(lm::PixelMetrics(0.0, std::nullopt), Contains("both lo and hi"));
  lm::PixelMetrics pm;
  REQUIRE_THROWS_WITH(pm.update(at::full({1, 2, 2}, INFINITY), at::zeros({1, 2, 2})), Contains("finite"));
  REQUIRE_THROWS_WITH(pm.compute(), Contains("no pixels"));
}

TEST_CASE("connected components use 8-connectivity and raster numbering", "[metrics]") {
  // clang-format off
  at::Tensor m = at::tensor({1, 0, 0, 1, 1,
                             0, 1, 0, 0, 0,
                             0, 0, 0, 1, 0,
                             1, 0, 1, 0, 0,
                             1, 0, 0, 0, 1}, at::kLong).view({5, 5});
  at::Tensor want = at::tensor({1, 0, 0, 2, 2,
                                0, 1, 0, 0, 0,
                                0, 0, 0, 3, 0,
                                4, 0, 3, 0, 0,
                                4, 0, 0, 0, 5}, at::kLong).view({5, 5});
  // clang-format on
  CHECK(lm::connected_components(m).equal(want));
  // A U shape: two arms joined at the bottom merge into one label (union-find).
  at::Tensor u = at::zeros({4, 5}, at::kBool);
  u.select(1, 0).fill_(true);
  u.select(1, 4).fill_(true);
  u.select(0, 3).fill_(true);
  CHECK(lm::connected_components(u).max().item<int64_t>() == 1);
  CHECK(lm::connected_components(at::zeros({3, 3}, at::kBool)).max().item<int64_t>() == 0);
}

TEST_CASE("AUPRO on hand-worked masks, exact and binned", "[metrics]") {
  // One 2x2 region scored 1, the rest 0: PRO 1 at FPR 0 -> AUPRO 1.
  at::Tensor mask = at::zeros({1, 10, 10}, at::kBool);
  mask.slice(1, 2, 4).slice(2, 2, 4).fill_(true);
  CHECK(lm::aupro(mask.to(at::kFloat), mask) == Approx(1.0));
  // Two regions, one found (score 1), the other below the background (0 < 0.5):
  // (0,0) -> (0, 1/2) -> (1, 1/2) -> (1, 1): AUPRO 1/2.
  at::Tensor two = mask.clone();
  two.slice(1, 6, 9).slice(2, 6, 9).fill_(true);
  at::Tensor map = at::full({1, 10, 10}, 0.5f);
  map.masked_fill_(mask, 1.0f);
  map.slice(1, 6, 9).slice(2, 6, 9).fill_(0.0f);
  CHECK(lm::aupro(map, two) == Approx(0.5));
  // FPR crosses 0.3 between two thresholds. 1 x 20 image: region = pixels 0..3, 16 normals.
  // Region 0.9 0.9 0.6 0.6; normals 4 x 0.8, 2 x 0.6, 10 x 0.1. Curve: (0,0) -> (0, 1/2) [0.9]
  // -> (4/16, 1/2) [0.8] -> (6/16, 1) [0.6] -> (1, 1). At FPR 0.3: PRO = 1/2 + 1/2 * 0.05 / 0.125
  // = 0.7; area = 0.25 * 0.5 + 0.05 * (0.5 + 0.7) / 2 = 0.155; AUPRO = 0.155 / 0.3.
  at::Tensor line = floats({0.9f, 0.9f, 0.6f, 0.6f, 0.8f, 0.8f, 0.8f, 0.8f, 0.6f, 0.6f,
                            0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f})
                        .view({1, 1, 20});
  at::Tensor line_mask = (at::arange(20) < 4).view({1, 1, 20});
  CHECK(lm::aupro(line, line_mask) == Approx(0.155 / 0.3));
  // Bins of 0.05 separate these scores, so the binned accumulator is exact here.
  lm::PixelMetrics pm(0, 1, 20, 0.3, /*exact_limit=*/0);
  pm.update(line, line_mask);
  CHECK(!pm.is_exact());
  CHECK(pm.compute().aupro == Approx(0.155 / 0.3));
  // fpr_limit = 1 integrates the whole curve: 0.25 * 0.5 + 0.125 * 0.75 + 0.625 * 1.
  CHECK(lm::aupro(line, line_mask, 1.0) == Approx(0.125 + 0.09375 + 0.625));
}

TEST_CASE("binned PixelMetrics agrees with exact and its state stays bounded", "[metrics]") {
  auto [maps, masks] = blob_maps(12, 128, 7);
  lm::PixelMetrics exact(std::nullopt, std::nullopt, 16, 0.3, /*exact_limit=*/int64_t{1} << 30);
  lm::PixelMetrics binned(std::nullopt, std::nullopt, int64_t{1} << 15, 0.3, /*exact_limit=*/0);
  for (int64_t i = 0; i < 12; i += 4) {
    exact.update(maps.slice(0, i, i + 4), masks.slice(0, i, i + 4));
    binned.update(maps.slice(0, i, i + 4), masks.slice(0, i, i + 4));
  }
  REQUIRE(exact.is_exact());
  lm::PixelResult e = exact.compute(), q = binned.compute();
  CHECK(e.auroc == Approx(lm::auroc(maps.flatten(), masks.flatten())));
  CHECK(e.aupro == Approx(lm::aupro(maps, masks)));
  CHECK(std::abs(e.auroc - q.auroc) < 1e-5);
  CHECK(std::abs(e.ap - q.ap) < 1e-3);
  CHECK(std::abs(e.f1_max - q.f1_max) < 1e-3);
  CHECK(std::abs(e.aupro - q.aupro) < 1e-5);
  CHECK(e.aupro > 0.1);
  CHECK(e.aupro < 0.99);

  // Switching from exact to binned mid-stream gives the binned result; then no growth, also
  // while the range keeps extending.
  lm::PixelMetrics sw;  // the defaults: adaptive range
  CHECK(sw.bins() == int64_t{1} << 15);
  sw = lm::PixelMetrics(std::nullopt, std::nullopt, int64_t{1} << 15, 0.3, /*exact_limit=*/5 * 128 * 128);
  sw.update(maps.slice(0, 0, 4), masks.slice(0, 0, 4));
  CHECK(sw.is_exact());
  sw.update(maps.slice(0, 4, 8), masks.slice(0, 4, 8));
  CHECK(!sw.is_exact());
  const int64_t bytes = sw.state_bytes();
  sw.update(maps.slice(0, 8, 12), masks.slice(0, 8, 12));
  for (int i = 0; i < 5; ++i) sw.update(maps * (i + 2) - i, masks);
  CHECK(sw.state_bytes() == bytes);
  CHECK(bytes < 24 * sw.bins() + 1000);
}

namespace {

lm::PixelResult exact_reference(const at::Tensor& maps, const at::Tensor& masks) {
  const lm::PixelResult e = exact_metrics(maps, masks);
  lm::PixelMetrics exact(std::nullopt, std::nullopt, 16, 0.3, int64_t{1} << 30);
  stream(exact, maps, masks);
  CHECK(exact.is_exact());
  const lm::PixelResult x = exact.compute();
  CHECK(x.auroc == Approx(e.auroc).margin(1e-12));
  CHECK(x.ap == Approx(e.ap).margin(1e-12));
  CHECK(x.f1_max == Approx(e.f1_max).margin(1e-12));
  CHECK(x.aupro == Approx(e.aupro).margin(1e-12));
  return e;
}

}  // namespace

TEST_CASE("adaptive PixelMetrics is within 1e-5 of exact on realistic maps", "[metrics]") {
  auto [unit, masks] = realistic_maps(24, 168, 11);
  SECTION("a narrow range, [0.17, 0.22], float32") {
    at::Tensor maps = (unit * 0.05 + 0.17).to(at::kFloat);
    const lm::PixelResult e = exact_reference(maps, masks);
    check_adaptive(maps, masks, 0, false, e);
    check_adaptive(maps, masks, 7 * 168 * 168, false, e);  // two batches exact, then binned
  }
  SECTION("ranges that keep growing: several extensions, both ways") {
    const double ranges[8][2] = {{0.19, 0.20}, {0.185, 0.205}, {0.17, 0.22}, {0.10, 0.30},
                                 {0.16, 0.23}, {0.05, 0.21},   {0.17, 0.22}, {0.12, 0.24}};
    at::Tensor maps = unit.clone();
    for (int64_t j = 0; j < 8; ++j) {
      at::Tensor part = unit.slice(0, 3 * j, 3 * j + 3);
      part = (part - part.min()) / (part.max() - part.min());
      maps.slice(0, 3 * j, 3 * j + 3).copy_(part * (ranges[j][1] - ranges[j][0]) + ranges[j][0]);
    }
    maps = maps.to(at::kFloat);
    const lm::PixelResult e = exact_reference(maps, masks);
    check_adaptive(maps, masks, 0, true, e);
    check_adaptive(maps, masks, 7 * 168 * 168, true, e);
  }
  SECTION("far from 0: [1e3, 1e3 + 1e-2], float64") {
    at::Tensor maps = unit * 1e-2 + 1e3;
    const lm::PixelResult e = exact_reference(maps, masks);
    check_adaptive(maps, masks, 0, false, e);
    check_adaptive(maps, masks, 7 * 168 * 168, false, e);
  }
}

TEST_CASE("a fixed range clamps into the end bins as before", "[metrics]") {
  auto [unit, masks] = realistic_maps(9, 84, 5);
  at::Tensor maps = unit.to(at::kFloat);
  for (auto [lo, hi, bins] : {std::tuple<double, double, int64_t>{0.0, 1.0, 10000}, {0.3, 0.7, 400}, {-1.0, 3.0, 64}}) {
    INFO("[" << lo << ", " << hi << "] in " << bins << " bins");
    lm::PixelMetrics pm(lo, hi, bins, 0.3, /*exact_limit=*/0);
    CHECK(pm.fixed_range());
    stream(pm, maps, masks);
    CHECK(*pm.lo() == lo);
    CHECK(*pm.hi() == hi);  // never extended
    CHECK(*pm.bin_width() == Approx((hi - lo) / bins));
    const lm::PixelResult q = pm.compute();
    at::Tensor b = at::floor((maps.to(at::kDouble) - lo) * (bins / (hi - lo))).clamp(0, bins - 1);
    const lm::PixelResult want = exact_metrics(b, masks);
    CHECK(q.auroc == Approx(want.auroc).margin(1e-9));
    CHECK(q.ap == Approx(want.ap).margin(1e-9));
    CHECK(q.f1_max == Approx(want.f1_max).margin(1e-9));
    CHECK(q.aupro == Approx(want.aupro).margin(1e-9));
  }
}
