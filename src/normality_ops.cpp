// The anomaly head's numeric building blocks on ATen (see detail/normality_ops.h).

#include "detail/normality_ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lake::detail {

at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, -1, true).clamp_min(1e-12); }

at::Tensor nearest_distance(const at::Tensor& queries, const at::Tensor& gallery, int64_t tile, int64_t exclude_lo,
                            int64_t exclude_hi) {
  TORCH_CHECK_VALUE(queries.dim() == 2 && gallery.dim() == 2 && queries.size(1) == gallery.size(1),
                    "nearest_distance: expected (Q, K) queries and (M, K) gallery, got ", queries.sizes(), " and ",
                    gallery.sizes());
  TORCH_CHECK_VALUE(tile >= 1, "nearest_distance: tile must be >= 1, got ", tile);
  const int64_t M = gallery.size(0);
  auto q = queries.to(gallery.device(), at::kFloat);
  at::Tensor best = at::full({queries.size(0)}, -1.0, q.options());  // cosine similarity, -1 = farthest
  for (int64_t start = 0; start < M; start += tile) {
    const int64_t end = std::min(M, start + tile);
    if (start >= exclude_lo && end <= exclude_hi) continue;  // the whole tile is excluded
    auto sims = at::matmul(q, gallery.slice(0, start, end).t());  // (Q, T)
    const int64_t lo = std::max(start, exclude_lo), hi = std::min(end, exclude_hi);
    if (lo < hi) sims.slice(1, lo - start, hi - start).fill_(-1.0);
    best = at::maximum(best, std::get<0>(sims.max(1)));
  }
  return ((1.0 - best) * 0.5).clamp(0.0, 1.0);
}

at::Tensor gaussian_blur(const at::Tensor& maps, double sigma) {
  if (sigma <= 0) return maps;
  const int64_t H = maps.size(2), W = maps.size(3);
  int64_t r = static_cast<int64_t>(4.0 * sigma + 0.5);
  r = std::min(r, std::min(H, W) - 1);
  if (r <= 0) return maps;
  std::vector<double> k(static_cast<size_t>(2 * r + 1));
  double sum = 0;
  for (int64_t x = -r; x <= r; ++x) sum += k[x + r] = std::exp(-static_cast<double>(x * x) / (2 * sigma * sigma));
  for (auto& v : k) v /= sum;
  auto kernel = at::tensor(k, at::kDouble).to(maps.device(), maps.scalar_type());
  auto rows = at::conv2d(at::reflection_pad2d(maps, {r, r, 0, 0}), kernel.view({1, 1, 1, 2 * r + 1}));
  return at::conv2d(at::reflection_pad2d(rows, {0, 0, r, r}), kernel.view({1, 1, 2 * r + 1, 1}));
}

at::Tensor pool_image_score(const at::Tensor& map, Pooling pooling) {
  if (pooling == Pooling::Max) return map.max();
  const int64_t n = map.numel();
  const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(0.01 * static_cast<double>(n))));
  return std::get<0>(map.reshape({-1}).topk(k)).mean();
}

double quantile(const at::Tensor& x, double q) {
  auto v = std::get<0>(x.reshape({-1}).to(at::kCPU, at::kDouble).sort());
  const int64_t n = v.numel();
  TORCH_CHECK_VALUE(n > 0, "quantile of an empty tensor");
  const double pos = q * static_cast<double>(n - 1);
  const auto lo = static_cast<int64_t>(std::floor(pos)), hi = std::min(n - 1, lo + 1);
  const double a = v[lo].item<double>(), b = v[hi].item<double>();
  return a + (b - a) * (pos - static_cast<double>(lo));
}

}  // namespace lake::detail
