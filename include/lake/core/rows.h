#pragma once
// Row kernels of the scoring head over raw memory (Eigen::Map), host only:
//   max_ignoring_nan    the largest non-NaN value of a row
//   improve_nearest     the nearest-neighbour search's scan of one row of similarities
//   gather_normalize_row   K channels of a token, divided by their L2 norm
//
// The nearest-neighbour rules (both devices): a query's best gallery row is the one of
// largest similarity; NaN similarities are ignored; among equal similarities the lowest row
// wins (rows are scanned in ascending order and a later row wins only by a strictly larger
// value). liblake's CPU kernel (src/ops/cpu/nearest_neighbor_kernel.cpp) forms the
// similarities tile by tile with one GEMM and calls improve_nearest on every row of a tile.
//
// The L2 rule: x / max(||x||_2, eps); a zero row stays zero, a NaN in the row makes it NaN.
//
// Example (no LibTorch):
//   float best = -INFINITY; int64_t arg = -1;
//   const float sims[4] = {0.5f, NAN, 0.9f, 0.9f};
//   lake::core::improve_nearest(sims, 0, 4, 100, best, arg);  // best 0.9, arg 102

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace lake::core {

/// The largest non-NaN value of r[0, n) (-inf when there is none). Eight lanes of Eigen's
/// cwise max, started at -inf: on SSE / AVX Eigen's max is std::max(acc, v), so a NaN in
/// the data never enters a lane; where a platform's max propagates NaN instead (NEON), a
/// NaN lane shows it and the row is redone with Eigen's PropagateNumbers reduction, which
/// is exact everywhere but, on x86, some nine times slower (docs/benchmarks.md).
inline float max_ignoring_nan(const float* r, int64_t n) {
  using Lanes = Eigen::Array<float, 8, 1>;
  constexpr float kLow = -std::numeric_limits<float>::infinity();
  Lanes acc = Lanes::Constant(kLow);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) acc = acc.max(Eigen::Map<const Lanes>(r + j));
  float m = kLow;
  for (int lane = 0; lane < 8; ++lane) {
    if (std::isnan(acc[lane])) return Eigen::Map<const Eigen::ArrayXf>(r, n).maxCoeff<Eigen::PropagateNumbers>();
    m = acc[lane] > m ? acc[lane] : m;
  }
  for (; j < n; ++j) m = r[j] > m ? r[j] : m;
  return m;
}

/// Columns [c0, c1) of one row of similarities: when their largest non-NaN value beats
/// `best` strictly, it becomes `best` and `arg` the first column holding it (plus `offset`,
/// the tile's first gallery row).
inline void improve_nearest(const float* row, int64_t c0, int64_t c1, int64_t offset, float& best, int64_t& arg) {
  if (c0 >= c1) return;
  const float m = max_ignoring_nan(row + c0, c1 - c0);
  if (m > best) {  // false for NaN (an all-NaN range under PropagateNumbers)
    int64_t j = c0;
    while (row[j] != m) ++j;
    best = m;
    arg = offset + j;
  }
}

/// dst[K] = row[idx[j]] as float32, divided by max(their L2 norm, eps). `T`: any scalar type
/// Eigen can cast to float (liblake instantiates float, double, c10::Half, c10::BFloat16).
template <typename T>
void gather_normalize_row(const T* row, int64_t C, const int64_t* idx, int64_t K, float eps, float* dst) {
  const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> x(row, C);
  const Eigen::Map<const Eigen::Array<int64_t, Eigen::Dynamic, 1>> channels(idx, K);
  Eigen::Map<Eigen::ArrayXf> out(dst, K);
  out = x(channels).template cast<float>();
  out /= std::max(std::sqrt(out.square().sum()), eps);
}

}  // namespace lake::core
