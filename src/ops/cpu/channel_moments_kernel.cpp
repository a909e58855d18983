// channel_moments on the CPU: fixed blocks of kMomentsBlock tokens, each reduced in two
// passes (sum, then squared deviations from the block mean) with float64 accumulators and
// contiguous inner loops over channels; blocks run in parallel and are merged in block
// order (Chan et al.), so the result is the same for any thread count.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "ops/kernels.h"

namespace lake::ops::cpu {

namespace {

template <typename scalar_t>
void block_moments(const scalar_t* x, const bool* mask, int64_t t0, int64_t t1, int64_t C, double* n_out,
                   double* mean, double* m2) {
  int64_t n = 0;
  for (int64_t c = 0; c < C; ++c) mean[c] = 0.0, m2[c] = 0.0;
  for (int64_t t = t0; t < t1; ++t) {
    if (mask && !mask[t]) continue;
    const scalar_t* row = x + t * C;
    for (int64_t c = 0; c < C; ++c) mean[c] += static_cast<double>(row[c]);
    ++n;
  }
  *n_out = static_cast<double>(n);
  if (n == 0) return;
  const double inv = 1.0 / static_cast<double>(n);
  for (int64_t c = 0; c < C; ++c) mean[c] *= inv;
  for (int64_t t = t0; t < t1; ++t) {
    if (mask && !mask[t]) continue;
    const scalar_t* row = x + t * C;
    for (int64_t c = 0; c < C; ++c) {
      const double d = static_cast<double>(row[c]) - mean[c];
      m2[c] += d * d;
    }
  }
}

}  // namespace

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
      for (int64_t g = g0; g < g1; ++g)
        block_moments(x, pmask, g * kMomentsBlock, std::min(T, (g + 1) * kMomentsBlock), C, pn + g, pmean + g * C,
                      pm2 + g * C);
    });
  });
  // Merge the blocks in order (float64, contiguous over channels).
  Moments out;
  out.mean = at::zeros({C}, counts.options());
  out.m2 = at::zeros({C}, counts.options());
  double* mean = out.mean.data_ptr<double>();
  double* m2 = out.m2.data_ptr<double>();
  double n = 0;
  for (int64_t g = 0; g < G; ++g) {
    const double nb = pn[g];
    if (nb == 0) continue;
    const double na = n, nt = na + nb, wb = nb / nt, wab = na * nb / nt;
    const double* bm = pmean + g * C;
    const double* bm2 = pm2 + g * C;
    for (int64_t c = 0; c < C; ++c) {
      const double delta = bm[c] - mean[c];
      mean[c] += delta * wb;
      m2[c] += bm2[c] + delta * delta * wab;
    }
    n = nt;
  }
  out.count = static_cast<int64_t>(n);
  return out;
}

}  // namespace lake::ops::cpu
