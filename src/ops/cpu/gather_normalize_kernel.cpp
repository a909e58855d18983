// gather_normalize on the CPU: rows in parallel, each through lake::core::gather_normalize_row
// (gather K channels as float32, divide by the L2 norm; Eigen).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "lake/core/rows.h"
#include "ops/cpu/eigen_scalars.h"
#include "ops/kernels.h"

namespace lake::ops::cpu {

at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps) {
  const int64_t T = tokens.size(0), C = tokens.size(1), K = indices.size(0);
  auto out = at::empty({T, K}, tokens.options().dtype(at::kFloat));
  const int64_t* idx = indices.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  const float feps = static_cast<float>(eps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tokens.scalar_type(), "gather_normalize_cpu", [&] {
    const scalar_t* x = tokens.data_ptr<scalar_t>();
    at::parallel_for(0, T, 64, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) core::gather_normalize_row(x + t * C, C, idx, K, feps, o + t * K);
    });
  });
  return out;
}

}  // namespace lake::ops::cpu
