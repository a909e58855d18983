// channel_moments on the CPU: fixed blocks of kMomentsBlock tokens, each reduced in two
// passes by lake::core::block_moments (float64, rows in order, Eigen over the channels);
// blocks run in parallel and are merged in block order by lake::core::chan_merge_columns
// (Chan et al.), so the result is the same for any thread count.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "lake/core/moments.h"
#include "ops/cpu/eigen_scalars.h"
#include "ops/kernels.h"

namespace lake::ops::cpu {

Moments channel_moments(const at::Tensor& tokens, const at::Tensor& mask) {
  const int64_t T = tokens.size(0), C = tokens.size(1);
  const int64_t G = (T + kMomentsBlock - 1) / kMomentsBlock;
  auto counts = at::zeros({G}, tokens.options().dtype(at::kDouble));
  auto means = at::empty({G, C}, counts.options());
  auto m2s = at::empty({G, C}, counts.options());
  double* pn = counts.data_ptr<double>();
  double* pmean = means.data_ptr<double>();
  double* pm2 = m2s.data_ptr<double>();
  const bool* pmask = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tokens.scalar_type(), "channel_moments_cpu", [&] {
    const scalar_t* x = tokens.data_ptr<scalar_t>();
    at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t t0 = g * kMomentsBlock, rows = std::min(T, t0 + kMomentsBlock) - t0;
        pn[g] = core::block_moments(x + t0 * C, pmask ? pmask + t0 : nullptr, rows, C, pmean + g * C, pm2 + g * C);
      }
    });
  });
  Moments out;
  out.mean = at::zeros({C}, counts.options());
  out.m2 = at::zeros({C}, counts.options());
  double n = 0;
  for (int64_t g = 0; g < G; ++g)
    core::chan_merge_columns(n, out.mean.data_ptr<double>(), out.m2.data_ptr<double>(), pn[g], pmean + g * C,
                             pm2 + g * C, C);
  out.count = static_cast<int64_t>(n);
  return out;
}

}  // namespace lake::ops::cpu
