#pragma once
// The device implementations behind lake::ops (internal). src/ops/ops.cpp checks the
// inputs, brings them into the layout stated here, and calls cpu:: or cuda:: by device:
// that branch is the only place a device is chosen.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "lake/ops/ops.h"

namespace lake::ops {

/// Tokens per block of the two-pass moments; blocks are merged with Chan's formula. Both
/// devices use the same blocking, so their sums only differ by rounding order inside blocks.
constexpr int64_t kMomentsBlock = 256;

namespace cpu {
// tokens (T, C) contiguous, any floating dtype; mask undefined or (T) bool contiguous.
Moments channel_moments(const at::Tensor& tokens, const at::Tensor& mask);
// scores (C) float64 contiguous; 1 <= k <= C. Returns (k) int64 ascending.
at::Tensor top_k(const at::Tensor& scores, int64_t k);
// tokens (T, C) contiguous, any floating dtype; indices (K) int64 contiguous, in range.
at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps);
// queries (L, Q, K), gallery (L, M, K): contiguous, same dtype; M >= 0, Q >= 0.
NearestNeighbors nearest_neighbors(const at::Tensor& queries, const at::Tensor& gallery, const NearestOptions& o);
// maps (B, h, w) float32 contiguous; taps (2 r + 1) float64 CPU (r = 0: no blur).
at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, const at::Tensor& taps);
}  // namespace cpu

#ifdef LAKE_HAS_CUDA
namespace cuda {
// Same contracts as cpu::, with every tensor on one CUDA device (taps: CPU float64).
Moments channel_moments(const at::Tensor& tokens, const at::Tensor& mask);
at::Tensor top_k(const at::Tensor& scores, int64_t k);
at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps);
NearestNeighbors nearest_neighbors(const at::Tensor& queries, const at::Tensor& gallery, const NearestOptions& o);
at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, const at::Tensor& taps);
}  // namespace cuda
#endif

}  // namespace lake::ops
