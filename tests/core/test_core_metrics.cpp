// The header-only core as a C++ user without LibTorch sees it: lake/core/*.h and the
// standard library only. The lake_core_tests target (tests/CMakeLists.txt) has nothing but
// include/ on its include path and links neither lake::lake nor torch, so an ATen include
// in the core fails this build.
//
// Golden numbers come from outside LAKE: scikit-learn (roc_auc_score,
// average_precision_score, the maximum F1 of precision_recall_curve) and the slow,
// scipy.ndimage-based reference AUPRO of tests/python/test_metrics.py (slow_aupro), in a
// one-off Python run on exactly these arrays; or they are worked by hand in the comments.
#include <lake/core/components.h>
#include <lake/core/config.h>
#include <lake/core/metrics.h>
#include <lake/core/pixel_histogram.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace core = lake::core;

namespace {

// 20 image scores with ties (0.55 x3, 0.31 x3, 0.47 x2, 0.73 x2), 9 anomalous.
const std::vector<double> kScores = {0.12, 0.55, 0.55, 0.31, 0.89, 0.47, 0.55, 0.08, 0.73, 0.31,
                                     0.66, 0.21, 0.94, 0.47, 0.38, 0.73, 0.05, 0.59, 0.31, 0.82};
const std::vector<int> kLabels = {0, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1};

// Three (6, 6) ground-truth masks: image 0 holds two regions (a 2x2 square, a 4-pixel
// T), image 1 one diagonal (8-connected) region of 5 pixels, image 2 is normal.
// clang-format off
const std::vector<uint8_t> kMasks = {
    1, 1, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0,
    1, 1, 0, 0, 0, 0,   0, 1, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 0,   0, 0, 1, 0, 0, 0,   0, 0, 0, 0, 0, 0,
    0, 0, 0, 1, 1, 0,   0, 0, 0, 1, 1, 0,   0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 0,   0, 0, 0, 0, 0, 1,   0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0};
// clang-format on
constexpr int64_t kB = 3, kH = 6, kW = 6;

// The masks above are drawn side by side (row y of images 0, 1, 2); return them as (B, H, W).
std::vector<uint8_t> masks_bhw() {
  std::vector<uint8_t> out(kB * kH * kW);
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t y = 0; y < kH; ++y)
      for (int64_t x = 0; x < kW; ++x) out[(b * kH + y) * kW + x] = kMasks[y * kB * kW + b * kW + x];
  return out;
}

// Anomaly maps, exact binary fractions (multiples of 1/32, many ties): a background pattern
// in [0, 1/2] plus 3/8 on image 0's defects and 1/8 on image 1's (found less well).
std::vector<double> maps_bhw(const std::vector<uint8_t>& masks) {
  const double boost[kB] = {0.375, 0.125, 0.0};
  std::vector<double> out(masks.size());
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t y = 0; y < kH; ++y)
      for (int64_t x = 0; x < kW; ++x) {
        const int64_t i = (b * kH + y) * kW + x;
        out[i] = static_cast<double>((7 * x + 13 * y + 5 * b) % 17) / 32.0 + (masks[i] ? boost[b] : 0.0);
      }
  return out;
}

// Golden values (scikit-learn 1.x, scipy.ndimage; see the file comment):
//   sklearn.metrics.roc_auc_score(kLabels, kScores), average_precision_score(...),
//   max of 2 P R / (P + R) over precision_recall_curve(...);
//   slow_aupro(maps, masks) at fpr_limit 0.3 and 1.0.
constexpr double kGoldenAuroc = 0.8282828282828283;  // = 82 / 99
constexpr double kGoldenAp = 0.7937169312169314;
constexpr double kGoldenF1 = 0.761904761904762;  // = 16 / 21
constexpr double kGoldenAupro = 0.6726608187134504;
constexpr double kGoldenAupro1 = 0.8879824561403509;

}  // namespace

TEST_CASE("image metrics of 3 positives and 3 negatives, worked by hand", "[core]") {
  // Descending: 0.9 P, 0.8 N, 0.7 P, 0.4 P, 0.3 N, 0.2 N.
  const float s[6] = {0.9f, 0.7f, 0.4f, 0.8f, 0.3f, 0.2f};
  const bool l[6] = {true, true, true, false, false, false};
  // Pairs won by the positive: 0.9 beats 3, 0.7 and 0.4 beat 2 each -> 7 of 9.
  CHECK(core::auroc(s, l, 6) == Approx(7.0 / 9.0).margin(1e-15));
  // Recall steps of 1/3 at precisions 1, 2/3, 3/4 -> (1 + 2/3 + 3/4) / 3 = 29/36.
  CHECK(core::average_precision(s, l, 6) == Approx(29.0 / 36.0).margin(1e-15));
  // 2 TP / (TP + FP + 3) at 0.4: 6 / 7.
  CHECK(core::f1_max(s, l, 6) == Approx(6.0 / 7.0).margin(1e-15));
  const core::CurveMetrics m = core::image_metrics(s, l, 6);
  CHECK(m.auroc == core::auroc(s, l, 6));
  CHECK(m.ap == core::average_precision(s, l, 6));
  CHECK(m.f1_max == core::f1_max(s, l, 6));
  CHECK(std::isnan(m.aupro));  // image scores have no regions
  // Ties move together: a positive and a negative of equal score count half.
  const double t[2] = {0.5, 0.5};
  const int tl[2] = {1, 0};
  CHECK(core::auroc(t, tl, 2) == 0.5);
  CHECK(core::average_precision(t, tl, 2) == 0.5);
}

TEST_CASE("image metrics with ties match scikit-learn", "[core]") {
  const size_t n = kScores.size();
  CHECK(core::auroc(kScores.data(), kLabels.data(), n) == Approx(kGoldenAuroc).margin(1e-12));
  CHECK(core::average_precision(kScores.data(), kLabels.data(), n) == Approx(kGoldenAp).margin(1e-12));
  CHECK(core::f1_max(kScores.data(), kLabels.data(), n) == Approx(kGoldenF1).margin(1e-12));
  // float scores and char labels give the same curve (every score here rounds to a distinct float).
  std::vector<float> f(kScores.begin(), kScores.end());
  std::vector<char> b(kLabels.begin(), kLabels.end());
  CHECK(core::auroc(f.data(), b.data(), n) == Approx(kGoldenAuroc).margin(1e-12));
}

TEST_CASE("degenerate image inputs give NaN", "[core]") {
  const double s[3] = {0.1, 0.4, 0.2};
  const int none[3] = {0, 0, 0}, all[3] = {1, 1, 1};
  CHECK(std::isnan(core::auroc(s, none, 3)));
  CHECK(std::isnan(core::auroc(s, all, 3)));
  CHECK(std::isnan(core::average_precision(s, none, 3)));
  CHECK(core::average_precision(s, all, 3) == 1.0);
  CHECK(std::isnan(core::f1_max(s, none, 3)));
  CHECK(std::isnan(core::auroc(s, none, 0)));  // empty
}

TEST_CASE("connected components: 8-connectivity, raster numbering, region weights", "[core]") {
  // clang-format off
  const uint8_t m[25] = {1, 0, 0, 1, 1,
                         0, 1, 0, 0, 0,
                         0, 0, 0, 1, 0,
                         1, 0, 1, 0, 0,
                         1, 0, 0, 0, 1};
  const int64_t want[25] = {1, 0, 0, 2, 2,
                            0, 1, 0, 0, 0,
                            0, 0, 0, 3, 0,
                            4, 0, 3, 0, 0,
                            4, 0, 0, 0, 5};
  // A U: the arms get provisional labels 1 and 2 and merge at the bottom row (union-find).
  const float u[20] = {1, 0, 0, 0, 1,
                       1, 0, 0, 0, 1,
                       1, 0, 0, 0, 1,
                       1, 1, 1, 1, 1};
  // clang-format on
  int64_t out[25];
  REQUIRE(core::label_components(m, 5, 5, out) == 5);
  CHECK(std::equal(out, out + 25, want));
  int64_t uo[20];
  CHECK(core::label_components(u, 4, 5, uo) == 1);
  CHECK(*std::max_element(uo, uo + 20) == 1);
  const bool empty[4] = {false, false, false, false};
  CHECK(core::label_components(empty, 2, 2, uo) == 0);

  std::vector<int64_t> labels;
  std::vector<double> weights;
  REQUIRE(core::region_weights(m, 5, 5, labels, weights) == 5);
  CHECK(weights[0] == 0.5);   // component 1 has 2 pixels
  CHECK(weights[13] == 0.5);  // component 3: (2, 3) and (3, 2)
  CHECK(weights[24] == 1.0);  // component 5: 1 pixel
  CHECK(weights[2] == 0.0);   // background
}

TEST_CASE("AUPRO worked by hand", "[core]") {
  // 1 x 20 image: region = pixels 0..3, 16 normals. Region 0.9 0.9 0.6 0.6; normals
  // 4 x 0.8, 2 x 0.6, 10 x 0.1. Curve: (0,0) -> (0, 1/2) [0.9] -> (4/16, 1/2) [0.8]
  // -> (6/16, 1) [0.6] -> (1, 1). At FPR 0.3: PRO = 1/2 + 1/2 * 0.05 / 0.125 = 0.7;
  // area = 0.25 * 0.5 + 0.05 * (0.5 + 0.7) / 2 = 0.155; AUPRO = 0.155 / 0.3.
  const float s[20] = {0.9f, 0.9f, 0.6f, 0.6f, 0.8f, 0.8f, 0.8f, 0.8f, 0.6f, 0.6f,
                       0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f};
  bool k[20] = {};
  std::fill(k, k + 4, true);
  CHECK(core::aupro(s, k, 1, 1, 20) == Approx(0.155 / 0.3).margin(1e-12));
  // fpr_limit = 1 integrates the whole curve: 0.25 * 0.5 + 0.125 * 0.75 + 0.625 * 1.
  CHECK(core::aupro(s, k, 1, 1, 20, 1.0) == Approx(0.125 + 0.09375 + 0.625).margin(1e-12));
  // No region, or no normal pixel: NaN.
  const bool none[20] = {};
  CHECK(std::isnan(core::aupro(s, none, 1, 1, 20)));
  bool all[20];
  std::fill(all, all + 20, true);
  CHECK(std::isnan(core::aupro(s, all, 1, 1, 20)));
}

TEST_CASE("AUPRO over several images matches the reference implementation", "[core]") {
  const std::vector<uint8_t> masks = masks_bhw();
  const std::vector<double> maps = maps_bhw(masks);
  CHECK(core::aupro(maps.data(), masks.data(), kB, kH, kW) == Approx(kGoldenAupro).margin(1e-12));
  CHECK(core::aupro(maps.data(), masks.data(), kB, kH, kW, 1.0) == Approx(kGoldenAupro1).margin(1e-12));
  const core::CurveMetrics px = core::pixel_metrics(maps.data(), masks.data(), kB, kH, kW);
  CHECK(px.aupro == core::aupro(maps.data(), masks.data(), kB, kH, kW));
  // The pixel-level AUROC is the image AUROC of the pixels.
  CHECK(px.auroc == core::auroc(maps.data(), masks.data(), maps.size()));
}

TEST_CASE("binned curves: a grid that separates every score is exact, extension nests", "[core]") {
  const std::vector<uint8_t> masks = masks_bhw();
  const std::vector<double> maps = maps_bhw(masks);
  const int64_t hw = kH * kW;
  const core::CurveMetrics exact = core::pixel_metrics(maps.data(), masks.data(), kB, kH, kW);
  std::vector<int64_t> labels;
  std::vector<double> weights;

  // Fixed range: the scores are multiples of 1/32 in [0, 1), so 32 bins give every distinct
  // score its own bin and the binned curve has exactly the exact curve's thresholds.
  core::PixelHistogram fixed;
  fixed.start(core::BinGrid::fixed(0.0, 1.0, 32));
  CHECK(fixed.grid.width() == 1.0 / 32);
  core::PartialHistogram part(fixed.grid.bins);
  for (int64_t b = 0; b < kB; ++b)
    part.add_image(maps.data() + b * hw, masks.data() + b * hw, kH, kW, fixed.grid.index(), labels, weights);
  fixed.merge(part);
  CHECK(fixed.regions == 3);
  const core::CurveMetrics f = fixed.metrics();
  CHECK(f.auroc == Approx(exact.auroc).margin(1e-12));
  CHECK(f.ap == Approx(exact.ap).margin(1e-12));
  CHECK(f.f1_max == Approx(exact.f1_max).margin(1e-12));
  CHECK(f.aupro == Approx(kGoldenAupro).margin(1e-12));

  // Adaptive range, streamed image by image: the grid starts on image 2's range (the normal
  // image, the narrowest) and grows by powers of two, each old bin nesting in one new bin;
  // 1024 bins still separate scores 1/32 apart.
  core::PixelHistogram adaptive;
  double lo = 0, hi = 0;
  for (int64_t b : {2, 1, 0}) {
    const double* s = maps.data() + b * hw;
    const double mn = *std::min_element(s, s + hw), mx = *std::max_element(s, s + hw);
    lo = b == 2 ? mn : std::min(lo, mn);
    hi = b == 2 ? mx : std::max(hi, mx);
    if (b == 2) {
      adaptive.start(core::BinGrid::adaptive(lo, hi, 1024));
    } else {
      REQUIRE(core::adaptive_range_fits(true, adaptive.grid, lo, hi));
      REQUIRE(adaptive.extend(lo, hi));
    }
    CHECK(adaptive.grid.lo() <= lo);
    CHECK(adaptive.grid.hi() > hi);
    core::PartialHistogram p(adaptive.grid.bins);
    p.add_image(s, masks.data() + b * hw, kH, kW, adaptive.grid.index(), labels, weights);
    adaptive.merge(p);
  }
  CHECK(adaptive.grid.span > 1);  // extended at least once
  const core::CurveMetrics a = adaptive.metrics();
  CHECK(a.auroc == Approx(exact.auroc).margin(1e-12));
  CHECK(a.ap == Approx(exact.ap).margin(1e-12));
  CHECK(a.f1_max == Approx(exact.f1_max).margin(1e-12));
  CHECK(a.aupro == Approx(kGoldenAupro).margin(1e-12));
}

TEST_CASE("the bin index clamps and catches NaN", "[core]") {
  const core::BinIndex bin = core::BinGrid::fixed(0.0, 1.0, 4).index();
  CHECK(bin(-3.0) == 0);
  CHECK(bin(0.0) == 0);
  CHECK(bin(0.26) == 1);
  CHECK(bin(0.99) == 3);
  CHECK(bin(7.0) == 3);
  CHECK(bin(std::nan("")) == 0);
  CHECK(core::is_set(0.5f));
  CHECK(!core::is_set(0));
  CHECK_FALSE(core::adaptive_range_fits(false, core::BinGrid{}, -1e308, 1e308));
}
