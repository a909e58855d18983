// Small numeric helpers of the anomaly head on ATen (see detail/normality_ops.h).

#include "detail/normality_ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lake::detail {

at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, -1, true).clamp_min(1e-12); }

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
