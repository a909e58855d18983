#pragma once
// The numeric building blocks of the anomaly head (internal; CPU/ATen versions, the
// device kernels of the performance work plug in here).

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "lake/normality_model.h"

namespace lake::detail {

/// Rows divided by their L2 norm (clamped at 1e-12): (..., K) -> (..., K).
at::Tensor l2_normalize(const at::Tensor& x);

/// For each query row q (Q, K), min over gallery rows g (M, K) of (1 - q.g) / 2, both
/// L2-normalised; the gallery is visited in tiles of `tile` rows, so memory is O(Q x tile)
/// and the (Q x M) matrix is never formed. Rows [exclude_lo, exclude_hi) of the gallery are
/// skipped (leave-one-out). Returns (Q) float32. A query with no gallery row left gets 1.
at::Tensor nearest_distance(const at::Tensor& queries, const at::Tensor& gallery, int64_t tile, int64_t exclude_lo = 0,
                            int64_t exclude_hi = 0);

/// Separable Gaussian blur of (B, 1, H, W) maps: radius int(4 sigma + 0.5) clamped to
/// min(H, W) - 1, reflect padding; sigma = 0 returns the input.
at::Tensor gaussian_blur(const at::Tensor& maps, double sigma);

/// The image score of an (H, W) map: its max, or the mean of its top ceil(1 %) values.
at::Tensor pool_image_score(const at::Tensor& map, Pooling pooling);

/// numpy's default (linear) quantile of all values of `x`, q in [0, 1].
double quantile(const at::Tensor& x, double q);

}  // namespace lake::detail
