// The core's kernel rules on plain arrays, as a C++ user without LibTorch has them (include/,
// Eigen, fmt): moments and their merge, the top-k order, resampling, the nearest-neighbour
// scan and gather + normalise. References are naive loops written here, and golden numbers
// from torch (bilinear upsampling) where the rule is torch's.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "lake/core/moments.h"
#include "lake/core/resample.h"
#include "lake/core/rows.h"
#include "lake/core/top_k.h"

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;

namespace {

std::vector<float> random_rows(int64_t rows, int64_t cols, uint32_t seed, float offset = 0.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = offset + d(gen);
  return x;
}

}  // namespace

TEST_CASE("block_moments equals the naive two-pass float64 moments, with and without a mask", "[core][moments]") {
  const int64_t T = 37, C = 11;
  const auto x = random_rows(T, C, 1, 3.f);
  std::vector<bool> keep(T);
  for (int64_t t = 0; t < T; ++t) keep[t] = t % 3 != 1;
  std::unique_ptr<bool[]> mask(new bool[T]);
  for (int64_t t = 0; t < T; ++t) mask[t] = keep[t];
  for (const bool masked : {false, true}) {
    std::vector<double> mean(C), m2(C);
    const double n = lake::core::block_moments(x.data(), masked ? mask.get() : nullptr, T, C, mean.data(), m2.data());
    int64_t rn = 0;
    for (int64_t t = 0; t < T; ++t) rn += !masked || keep[t];
    REQUIRE(n == static_cast<double>(rn));
    for (int64_t c = 0; c < C; ++c) {
      double s = 0, q = 0;
      for (int64_t t = 0; t < T; ++t)
        if (!masked || keep[t]) s += x[t * C + c];
      s /= rn;
      for (int64_t t = 0; t < T; ++t)
        if (!masked || keep[t]) q += (x[t * C + c] - s) * (x[t * C + c] - s);
      CHECK_THAT(mean[c], WithinRel(s, 1e-14));
      CHECK_THAT(m2[c], WithinRel(q, 1e-12));
    }
  }
  std::vector<double> mean(C, 7.0), m2(C, 7.0);
  std::unique_ptr<bool[]> none(new bool[T]());
  CHECK(lake::core::block_moments(x.data(), none.get(), T, C, mean.data(), m2.data()) == 0.0);
  CHECK((mean == std::vector<double>(C, 0.0) && m2 == std::vector<double>(C, 0.0)));
}

TEST_CASE("Chan's merge of blocks equals the moments of their union; n == 0 is the identity", "[core][moments]") {
  const int64_t T = 300, C = 5, cut = 113;
  const auto x = random_rows(T, C, 2, 1e3f);  // a large offset: the merge must not lose the variance
  std::vector<double> mean(C), m2(C), am(C), a2(C), bm(C), b2(C);
  const double n = lake::core::block_moments(x.data(), nullptr, T, C, mean.data(), m2.data());
  const double na = lake::core::block_moments(x.data(), nullptr, cut, C, am.data(), a2.data());
  const double nb = lake::core::block_moments(x.data() + cut * C, nullptr, T - cut, C, bm.data(), b2.data());
  std::vector<double> cm(C, 0.0), c2(C, 0.0);
  double cn = 0;
  lake::core::chan_merge_columns(cn, cm.data(), c2.data(), na, am.data(), a2.data(), C);
  CHECK((cn == na && cm == am && c2 == a2));  // merging into nothing copies
  lake::core::chan_merge_columns(cn, cm.data(), c2.data(), 0.0, bm.data(), b2.data(), C);
  CHECK((cn == na && cm == am));  // merging nothing changes nothing
  lake::core::chan_merge_columns(cn, cm.data(), c2.data(), nb, bm.data(), b2.data(), C);
  REQUIRE(cn == n);
  for (int64_t c = 0; c < C; ++c) {
    CHECK_THAT(cm[c], WithinRel(mean[c], 1e-13));
    CHECK_THAT(c2[c], WithinRel(m2[c], 1e-9));
    // The scalar merge (the CUDA reduction's operator) gives the very same bits per channel.
    const auto s = lake::core::chan_merge({na, am[c], a2[c]}, {nb, bm[c], b2[c]});
    CHECK((s.n == cn && s.mean == cm[c] && s.m2 == c2[c]));
  }
}

TEST_CASE("ordered_key sorts like the numbers, NaN lowest, -0 == +0", "[core][top_k]") {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> ascending = {-inf, -1e300, -1.0, -5e-324, 0.0, 5e-324, 1.0, 1e300, inf};
  CHECK(lake::core::ordered_key(nan) == 0);
  CHECK(lake::core::ordered_key(-nan) == 0);
  CHECK(lake::core::ordered_key(-0.0) == lake::core::ordered_key(0.0));
  for (size_t i = 0; i + 1 < ascending.size(); ++i)
    CHECK(lake::core::ordered_key(ascending[i]) < lake::core::ordered_key(ascending[i + 1]));
  CHECK(lake::core::ordered_key(-inf) > 0);
}

TEST_CASE("top_k_indices: higher first, NaN last, ties to the lower index, result ascending", "[core][top_k]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> s = {0.5, nan, 2.0, 0.5, -0.0, 0.0, nan, 0.5};
  std::vector<int64_t> top(4);
  lake::core::top_k_indices(s.data(), 8, 4, top.data());
  CHECK(top == std::vector<int64_t>{0, 2, 3, 7});
  std::vector<int64_t> top5(5);
  lake::core::top_k_indices(s.data(), 8, 5, top5.data());
  CHECK(top5 == std::vector<int64_t>{0, 2, 3, 4, 7});  // -0.0 (index 4) ties +0.0 (index 5): lower index
  std::vector<int64_t> all(8);
  lake::core::top_k_indices(s.data(), 8, 8, all.data());
  CHECK(all == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7});
  // Against a naive selection on random scores with many ties.
  std::mt19937 gen(3);
  std::uniform_int_distribution<int> d(0, 5);
  std::vector<double> r(200);
  for (auto& v : r) v = d(gen) == 5 ? nan : d(gen);
  std::vector<int64_t> got(37), want;
  lake::core::top_k_indices(r.data(), 200, 37, got.data());
  std::vector<bool> taken(200, false);
  for (int pick = 0; pick < 37; ++pick) {
    int64_t best = -1;
    for (int64_t i = 0; i < 200; ++i)
      if (!taken[i] && (best < 0 || lake::core::ranks_before(r[i], i, r[best], best))) best = i;
    taken[best] = true;
  }
  for (int64_t i = 0; i < 200; ++i)
    if (taken[i]) want.push_back(i);
  CHECK(got == want);
}

TEST_CASE("lerp_tap is torch's bilinear rule (align_corners=False)", "[core][resample]") {
  // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.]]]]), size=(1, 4), mode="bilinear")
  // -> [0, 0.25, 0.75, 1]; and [0, 1, 2] to 7: [0, 0.1428571, 0.5714286, 1, 1.4285715, 1.8571429, 2]
  const float in2[2] = {0.f, 1.f};
  const float want4[4] = {0.f, 0.25f, 0.75f, 1.f};
  const auto t4 = lake::core::lerp_table(2, 4);
  for (int d = 0; d < 4; ++d) CHECK(lake::core::lerp_mix(t4[d].w0, in2[t4[d].i0], t4[d].w1, in2[t4[d].i1]) == want4[d]);
  const float in3[3] = {0.f, 1.f, 2.f};
  const double want7[7] = {0.0, 0.14285715, 0.5714286, 1.0, 1.42857146, 1.85714293, 2.0};
  const auto t7 = lake::core::lerp_table(3, 7);
  for (int d = 0; d < 7; ++d)
    CHECK_THAT(lake::core::lerp_mix(t7[d].w0, in3[t7[d].i0], t7[d].w1, in3[t7[d].i1]), WithinAbs(want7[d], 1e-6));
  CHECK(lake::core::reflect(-1, 5) == 1);
  CHECK(lake::core::reflect(5, 5) == 3);
  CHECK(lake::core::reflect(2, 5) == 2);
}

TEST_CASE("gaussian_taps: normalised exp(-x^2 / 2 sigma^2), radius round(4 sigma) capped", "[core][resample]") {
  const auto w = lake::core::gaussian_taps(1.0, 100);
  REQUIRE(w.size() == 9);
  double sum = 0, z = 0;
  for (int x = -4; x <= 4; ++x) z += std::exp(-x * x / 2.0);
  for (int x = -4; x <= 4; ++x) {
    CHECK_THAT(w[x + 4], WithinRel(std::exp(-x * x / 2.0) / z, 1e-15));
    sum += w[x + 4];
  }
  CHECK_THAT(sum, WithinAbs(1.0, 1e-15));
  CHECK(lake::core::gaussian_taps(4.0, 5).size() == 11);
  CHECK(lake::core::gaussian_taps(0.0, 5) == std::vector<double>{1.0});
}

TEST_CASE("the CPU blur passes equal a naive separable convolution of the upsampled map", "[core][resample]") {
  const int64_t h = 3, w = 4, H = 9, W = 10, r = 2;
  const auto map = random_rows(h, w, 4);
  const auto t64 = lake::core::gaussian_taps(0.7, r);
  REQUIRE(t64.size() == 2 * r + 1);
  const std::vector<float> taps(t64.begin(), t64.end());
  const auto ys = lake::core::lerp_table(h, H), xs = lake::core::lerp_table(w, W);
  std::vector<float> line(W + 2 * r), rows(H * W), out(H * W);
  for (int64_t y = 0; y < H; ++y)
    lake::core::upsample_blur_row(map.data(), w, ys, xs, y, taps.data(), r, line.data(), &rows[y * W]);
  for (int64_t y = 0; y < H; ++y) lake::core::blur_column_row(rows.data(), H, W, y, taps.data(), r, &out[y * W]);
  // Naive: upsample in float64, then the 2-D convolution with reflected indices.
  auto up = [&](int64_t y, int64_t x) {
    const auto ly = ys[y], lx = xs[x];
    auto at = [&](int64_t i, int64_t j) { return static_cast<double>(map[i * w + j]); };
    return ly.w0 * (lx.w0 * at(ly.i0, lx.i0) + lx.w1 * at(ly.i0, lx.i1)) +
           ly.w1 * (lx.w0 * at(ly.i1, lx.i0) + lx.w1 * at(ly.i1, lx.i1));
  };
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      double acc = 0;
      for (int64_t a = -r; a <= r; ++a)
        for (int64_t b = -r; b <= r; ++b)
          acc += t64[a + r] * t64[b + r] * up(lake::core::reflect(y + a, H), lake::core::reflect(x + b, W));
      CHECK_THAT(out[y * W + x], WithinAbs(acc, 2e-6));
    }
}

TEST_CASE("improve_nearest: strictly larger wins, first index of the max, NaN ignored", "[core][rows]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float best = -std::numeric_limits<float>::infinity();
  int64_t arg = -1;
  const float a[6] = {0.5f, nan, 0.9f, 0.9f, 0.1f, 0.95f};
  lake::core::improve_nearest(a, 0, 5, 100, best, arg);  // columns 0..4
  CHECK((best == 0.9f && arg == 102));
  lake::core::improve_nearest(a, 2, 4, 200, best, arg);  // an equal max later: no change
  CHECK((best == 0.9f && arg == 102));
  lake::core::improve_nearest(a, 5, 6, 300, best, arg);
  CHECK((best == 0.95f && arg == 305));
  const float all_nan[3] = {nan, nan, nan};
  float b2 = -std::numeric_limits<float>::infinity();
  int64_t a2 = -1;
  lake::core::improve_nearest(all_nan, 0, 3, 0, b2, a2);
  CHECK((a2 == -1 && std::isinf(b2)));
  // Long rows (past any vector width): the same as a naive scan.
  const auto r = random_rows(1, 1031, 5);
  float b3 = -2.f, naive = -2.f;
  int64_t a3 = -1, naive_arg = -1;
  lake::core::improve_nearest(r.data(), 3, 1031, 0, b3, a3);
  for (int64_t j = 3; j < 1031; ++j)
    if (r[j] > naive) naive = r[j], naive_arg = j;
  CHECK((b3 == naive && a3 == naive_arg));
}

TEST_CASE("gather_normalize_row: the gathered channels over max(L2 norm, eps)", "[core][rows]") {
  const auto x = random_rows(1, 50, 6);
  const std::vector<int64_t> idx = {49, 0, 7, 7, 23};
  std::vector<float> out(idx.size());
  lake::core::gather_normalize_row(x.data(), 50, idx.data(), 5, 1e-12f, out.data());
  double ss = 0;
  for (auto i : idx) ss += static_cast<double>(x[i]) * x[i];
  for (size_t j = 0; j < idx.size(); ++j) CHECK_THAT(out[j], WithinAbs(x[idx[j]] / std::sqrt(ss), 1e-6));
  const std::vector<double> zeros(8, 0.0);
  const int64_t few[3] = {1, 3, 7};
  std::vector<float> z(3, 1.f);
  lake::core::gather_normalize_row(zeros.data(), 8, few, 3, 1e-12f, z.data());
  CHECK(z == std::vector<float>(3, 0.f));  // a zero row stays zero
  std::vector<double> with_nan(8, 1.0);
  with_nan[7] = std::nan("");
  lake::core::gather_normalize_row(with_nan.data(), 8, few, 3, 1e-12f, z.data());
  CHECK((std::isnan(z[0]) && std::isnan(z[1]) && std::isnan(z[2])));
}

TEST_CASE("max_ignoring_nan: NaN anywhere (first lanes, middle, tail) is ignored", "[core][rows]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const auto base = random_rows(1, 37, 7);
  for (int64_t n : {1, 7, 8, 9, 16, 37}) {
    for (int64_t at = 0; at < n; ++at) {
      std::vector<float> r(base.begin(), base.begin() + n);
      r[at] = nan;
      if (at + 3 < n) r[at + 3] = nan;
      float want = -std::numeric_limits<float>::infinity();
      for (float v : r)
        if (!std::isnan(v) && v > want) want = v;
      CHECK(lake::core::max_ignoring_nan(r.data(), n) == want);
    }
  }
  const std::vector<float> all_nan(16, nan);
  const float m = lake::core::max_ignoring_nan(all_nan.data(), 16);
  CHECK((std::isnan(m) || m == -std::numeric_limits<float>::infinity()));  // never beats a best
}
