// top_k on the CPU: lake::core::top_k_indices, the device-independent order of
// lake/core/top_k.h (higher score, NaN last, lower index first), chosen indices ascending.

#include <ATen/ATen.h>

#include "lake/core/top_k.h"
#include "ops/kernels.h"

namespace lake::ops::cpu {

at::Tensor top_k(const at::Tensor& scores, int64_t k) {
  auto out = at::empty({k}, at::kLong);
  core::top_k_indices(scores.data_ptr<double>(), scores.size(0), k, out.data_ptr<int64_t>());
  return out;
}

}  // namespace lake::ops::cpu
