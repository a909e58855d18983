// lake::ops against naive ATen references, on the CPU and (when this build has CUDA
// kernels and the machine a GPU) on CUDA. The Python suite (tests/python/test_ops.py)
// covers more shapes and dtypes; these check the C++ entry points directly.
#include <lake/ops/ops.h>

#include <ATen/Context.h>

#include <cmath>
#include <limits>
#include <vector>

#include "fixtures.h"

using Catch::Contains;
using lake::test::max_abs_diff;

namespace {

std::vector<c10::Device> devices() {
  std::vector<c10::Device> d{c10::kCPU};
  if (lake::ops::cuda_kernels_available() && at::hasCUDA()) d.emplace_back(c10::kCUDA, 0);
  return d;
}

at::Tensor unit_rows(std::vector<int64_t> shape) {
  auto x = at::randn(shape);
  return x / x.norm(2, -1, true);
}

}  // namespace

TEST_CASE("channel_moments equals the float64 two-pass reference", "[ops]") {
  at::manual_seed(11);
  for (auto dev : devices()) {
    for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16, at::kDouble}) {
      at::Tensor x = (at::randn({600, 33}) * 2 + 100).to(dtype);
      at::Tensor mask = at::rand({600}) > 0.25;
      lake::ops::Moments m = lake::ops::channel_moments(x.to(dev), mask.to(dev));
      at::Tensor kept = x.to(at::kDouble).index({mask});
      at::Tensor mean = kept.mean(0);
      CHECK(m.count == kept.size(0));
      CHECK(m.mean.device() == dev);
      CHECK(max_abs_diff(m.mean.cpu(), mean) <= 1e-10);
      CHECK(max_abs_diff(m.m2.cpu(), (kept - mean).square().sum(0)) <= 1e-8);
    }
  }
}

TEST_CASE("top_k picks by score, NaN last, ties by lower index, on every device", "[ops]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  at::Tensor s = at::tensor({1.0, nan, 5.0, -inf, 5.0, 3.0, nan, 3.0}, at::kDouble);
  for (auto dev : devices()) {
    CHECK(lake::ops::top_k(s.to(dev), 1).cpu().equal(at::tensor({2}, at::kLong)));
    CHECK(lake::ops::top_k(s.to(dev), 3).cpu().equal(at::tensor({2, 4, 5}, at::kLong)));
    CHECK(lake::ops::top_k(s.to(dev), 6).cpu().equal(at::tensor({0, 2, 3, 4, 5, 7}, at::kLong)));
    CHECK(lake::ops::top_k(s.to(dev), 7).cpu().equal(at::tensor({0, 1, 2, 3, 4, 5, 7}, at::kLong)));
  }
  REQUIRE_THROWS_WITH(lake::ops::top_k(s, 9), Contains("k = 9 neurons requested, but the layer has 8 channels"));
}

TEST_CASE("gather_normalize equals index_select + L2 normalisation", "[ops]") {
  at::manual_seed(12);
  at::Tensor x = at::randn({257, 64});
  at::Tensor idx = at::tensor({63, 0, 7, 7, 30}, at::kLong);
  at::Tensor g = x.index_select(1, idx);
  at::Tensor ref = g / g.norm(2, -1, true).clamp_min(1e-12);
  for (auto dev : devices()) {
    at::Tensor out = lake::ops::gather_normalize(x.to(dev), idx);
    CHECK(out.scalar_type() == at::kFloat);
    CHECK(max_abs_diff(out.cpu(), ref) <= 1e-6);
  }
  REQUIRE_THROWS_WITH(lake::ops::gather_normalize(x, at::tensor({64}, at::kLong)),
                      Contains("channel indices must lie in [0, 64)"));
}

TEST_CASE("gather_normalize_unchecked equals gather_normalize bit for bit and still checks shapes and devices",
          "[ops]") {
  at::manual_seed(15);
  at::Tensor x = at::randn({300, 48});
  at::Tensor idx = at::tensor({47, 3, 3, 0, 21}, at::kLong);
  for (auto dev : devices()) {
    CHECK(lake::ops::gather_normalize_unchecked(x.to(dev), idx.to(dev)).equal(lake::ops::gather_normalize(x.to(dev), idx)));
    if (dev.is_cuda())
      REQUIRE_THROWS_WITH(lake::ops::gather_normalize_unchecked(x.to(dev), idx),
                          Contains("the indices are on cpu, the tokens on cuda:0"));
  }
  REQUIRE_THROWS_WITH(lake::ops::gather_normalize_unchecked(x, idx.to(at::kInt)),
                      Contains("expected (K) int64 channel indices"));
  REQUIRE_THROWS_WITH(lake::ops::gather_normalize_unchecked(x[0], idx), Contains("expected (T, C)"));
}

TEST_CASE("nearest_neighbors equals the full similarity matrix's max, with exclusion", "[ops]") {
  at::manual_seed(13);
  at::Tensor q = unit_rows({3, 70, 20}), g = unit_rows({3, 900, 20});
  at::Tensor sims = at::bmm(q.to(at::kDouble), g.to(at::kDouble).transpose(1, 2));
  auto [best, arg] = sims.max(2);
  for (auto dev : devices()) {
    for (int64_t tile : {1, 100, 512, 5000}) {
      lake::ops::NearestOptions o;
      o.tile = tile;
      lake::ops::NearestNeighbors r = lake::ops::nearest_neighbors(q.to(dev), g.to(dev), o);
      CHECK(max_abs_diff(r.distance.cpu().to(at::kDouble), (1 - best) / 2) <= 1e-6);
      CHECK(r.index.cpu().equal(arg));
    }
    lake::ops::NearestOptions o;
    o.exclude_lo = 100, o.exclude_hi = 400;
    lake::ops::NearestNeighbors r = lake::ops::nearest_neighbors(q.to(dev), g.to(dev), o);
    at::Tensor masked = sims.clone();
    masked.slice(2, 100, 400).fill_(-2.0);
    auto [mbest, marg] = masked.max(2);
    CHECK(max_abs_diff(r.distance.cpu().to(at::kDouble), (1 - mbest) / 2) <= 1e-6);
    CHECK(r.index.cpu().equal(marg));
    o.exclude_lo = 0, o.exclude_hi = 900;
    r = lake::ops::nearest_neighbors(q.to(dev), g.to(dev), o);
    CHECK(r.distance.cpu().equal(at::ones({3, 70})));
    CHECK(r.index.cpu().equal(at::full({3, 70}, -1, at::kLong)));
  }
}

TEST_CASE("upsample_blur equals bilinear upsampling then a reflect-padded separable Gaussian", "[ops]") {
  at::manual_seed(14);
  at::Tensor maps = at::rand({2, 14, 14});
  const double sigma = 4.0;
  const int64_t H = 100, W = 120, r = 16;
  at::Tensor up = at::upsample_bilinear2d(maps.unsqueeze(1).to(at::kDouble), {H, W}, false);
  at::Tensor x = at::arange(-r, r + 1, at::kDouble);
  at::Tensor w = at::exp(-x * x / (2 * sigma * sigma));
  w = w / w.sum();
  at::Tensor ref = at::conv2d(at::reflection_pad2d(up, {r, r, 0, 0}), w.view({1, 1, 1, -1}));
  ref = at::conv2d(at::reflection_pad2d(ref, {0, 0, r, r}), w.view({1, 1, -1, 1})).squeeze(1);
  for (auto dev : devices()) {
    at::Tensor out = lake::ops::upsample_blur(maps.to(dev), H, W, sigma);
    CHECK(out.sizes() == at::IntArrayRef({2, H, W}));
    CHECK(max_abs_diff(out.cpu().to(at::kDouble), ref) <= 2e-6);
  }
}
