// top_k on the CPU: a partial sort of the channel indices under the device-independent
// order (higher score, NaN last, lower index first), then the chosen indices ascending.

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "ops/kernels.h"

namespace lake::ops::cpu {

at::Tensor top_k(const at::Tensor& scores, int64_t k) {
  const int64_t c = scores.size(0);
  const double* p = scores.data_ptr<double>();
  std::vector<int64_t> idx(static_cast<size_t>(c));
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [p](int64_t a, int64_t b) {
    const bool na = std::isnan(p[a]), nb = std::isnan(p[b]);
    if (na != nb) return nb;
    if (!na && p[a] != p[b]) return p[a] > p[b];
    return a < b;
  };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return at::tensor(idx, at::kLong);
}

}  // namespace lake::ops::cpu
