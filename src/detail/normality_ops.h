#pragma once
// Small numeric helpers of the anomaly head (internal). The kernels proper (gather and
// normalise, nearest-neighbour search, upsample and blur, ...) are lake::ops.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "lake/normality_model.h"

namespace lake::detail {

/// Rows divided by their L2 norm (clamped at 1e-12): (..., K) -> (..., K).
at::Tensor l2_normalize(const at::Tensor& x);

/// The image score of an (H, W) map: its max, or the mean of its top ceil(1 %) values.
at::Tensor pool_image_score(const at::Tensor& map, Pooling pooling);

/// numpy's default (linear) quantile of all values of `x`, q in [0, 1].
double quantile(const at::Tensor& x, double q);

}  // namespace lake::detail
