#pragma once
// Per-channel moments: count, mean and sum of squared deviations (m2) of token rows, and
// Chan et al.'s merge of two such sets. One formula for every device and caller:
//   chan_merge            one channel, host and device (the CUDA block reduction's operator)
//   chan_merge_columns    C channels at once over raw float64 arrays (Eigen), the same formula
//   block_moments         two-pass moments of a block of rows (row-major, optional row mask)
// All accumulation is float64. block_moments visits rows in order and sums each channel
// sequentially, so a given block gives the same bits on every machine; liblake's CPU kernel
// (src/ops/cpu/channel_moments_kernel.cpp) cuts the tokens into fixed blocks of
// lake::ops::kMomentsBlock rows and merges them in block order, independent of threads.
//
// Example (no LibTorch):
//   std::vector<float> x = {...};  // T x C, row-major
//   std::vector<double> mean(C), m2(C);
//   const double n = lake::core::block_moments(x.data(), nullptr, T, C, mean.data(), m2.data());
//   // variance of channel c: m2[c] / n

#include "lake/core/config.h"

#if !defined(__CUDACC__)
#include <Eigen/Core>
#endif

#include <cstdint>

namespace lake::core {

/// Count, mean and m2 (sum of squared deviations from the mean) of one channel.
struct MomentsPartial {
  double n;
  double mean;
  double m2;
};

/// Chan et al.'s merge of two sets. n == 0 is the identity on either side.
LAKE_HOST_DEVICE inline MomentsPartial chan_merge(const MomentsPartial& a, const MomentsPartial& b) {
  if (b.n == 0) return a;
  if (a.n == 0) return b;
  const double n = a.n + b.n;
  const double delta = b.mean - a.mean;
  return {n, a.mean + delta * (b.n / n), a.m2 + (b.m2 + delta * delta * (a.n * b.n / n))};
}

/// chan_merge as a function object (cub::BlockReduce, std::accumulate).
struct ChanMerge {
  LAKE_HOST_DEVICE MomentsPartial operator()(const MomentsPartial& a, const MomentsPartial& b) const {
    return chan_merge(a, b);
  }
};

#if !defined(__CUDACC__)  // the CPU side (Eigen); nvcc sees only the host + device functions above

/// (n, mean, m2) of C channels += (nb, b_mean, b_m2): chan_merge on every channel, with
/// the same operations in the same order (so the same bits), vectorised by Eigen.
inline void chan_merge_columns(double& n, double* mean, double* m2, double nb, const double* b_mean,
                               const double* b_m2, int64_t C) {
  if (nb == 0) return;
  Eigen::Map<Eigen::ArrayXd> a_mean(mean, C), a_m2(m2, C);
  const Eigen::Map<const Eigen::ArrayXd> bm(b_mean, C), bm2(b_m2, C);
  if (n == 0) {
    a_mean = bm;
    a_m2 = bm2;
    n = nb;
    return;
  }
  const double nt = n + nb, wb = nb / nt, wab = n * nb / nt;
  a_m2 += bm2 + (bm - a_mean).square() * wab;  // before the mean moves
  a_mean += (bm - a_mean) * wb;
  n = nt;
}

/// Two-pass moments of rows [0, rows) of a row-major (rows x C) block `x` of any scalar type
/// Eigen can cast to double; `mask` (rows) selects rows (nullptr: all). Writes mean[C] and
/// m2[C] (zeros when no row is selected) and returns the number of rows used.
template <typename T>
double block_moments(const T* x, const bool* mask, int64_t rows, int64_t C, double* mean, double* m2) {
  using Row = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  Eigen::Map<Eigen::ArrayXd> s(mean, C), q(m2, C);
  s.setZero();
  q.setZero();
  int64_t n = 0;
  for (int64_t t = 0; t < rows; ++t) {
    if (mask && !mask[t]) continue;
    s += Row(x + t * C, C).template cast<double>();
    ++n;
  }
  if (n == 0) return 0.0;
  s *= 1.0 / static_cast<double>(n);
  for (int64_t t = 0; t < rows; ++t) {
    if (mask && !mask[t]) continue;
    q += (Row(x + t * C, C).template cast<double>() - s).square();
  }
  return static_cast<double>(n);
}

#endif  // !__CUDACC__

}  // namespace lake::core
