#pragma once
// Row kernels of the scoring head over raw memory (Eigen::Map), host only:
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

namespace lake::core {

/// Columns [c0, c1) of one row of similarities: when their largest non-NaN value beats
/// `best` strictly, it becomes `best` and `arg` the first column holding it (plus `offset`,
/// the tile's first gallery row).
inline void improve_nearest(const float* row, int64_t c0, int64_t c1, int64_t offset, float& best, int64_t& arg) {
  if (c0 >= c1) return;
  const float m = Eigen::Map<const Eigen::ArrayXf>(row + c0, c1 - c0).maxCoeff<Eigen::PropagateNumbers>();
  if (m > best) {  // false for NaN (an all-NaN range)
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
