#pragma once
// Kernel 4 of the anomaly head: the fused nearest-neighbour search. For every query row,
// the smallest cosine distance to a gallery and the gallery row that gives it, over many
// layers at once, without ever forming the (queries x gallery) matrix.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lake::ops {

struct NearestNeighbors {
  at::Tensor distance;  ///< (L, Q) float32: (1 - max_g q.g) / 2 clamped to [0, 1]; 1 when no row is left
  at::Tensor index;     ///< (L, Q) int64: the gallery row reaching it (lowest on ties); -1 when none
};

struct NearestOptions {
  /// Gallery rows per tile: memory is O(Q x tile) on the CPU, O(L x Q) on CUDA.
  int64_t tile = 512;
  /// Gallery rows [exclude_lo, exclude_hi) are skipped in every layer (leave-one-out).
  int64_t exclude_lo = 0;
  int64_t exclude_hi = 0;
};

/// queries: (L, Q, K); gallery: (L, M, K); both L2-normalised rows (not checked), the same
/// floating dtype (float32, float16 or bfloat16; products accumulate in float32) and device.
/// (Q, K) and (M, K) are accepted for L = 1 and give (1, Q) results.
NearestNeighbors nearest_neighbors(const at::Tensor& queries, const at::Tensor& gallery,
                                   const NearestOptions& options = {});

}  // namespace lake::ops
