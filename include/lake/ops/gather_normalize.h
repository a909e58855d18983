#pragma once
// Kernel 3 of the anomaly head: gather the selected channels of every token and
// L2-normalise the result, in one pass over the tokens.

#include <ATen/core/Tensor.h>

namespace lake::ops {

/// tokens: (T, C) float32 / float64 / float16 / bfloat16, CPU or CUDA (any strides).
/// indices: (K) int64 channel indices in [0, C), on any device.
/// Returns (T, K) float32, contiguous, on the tokens' device: out[t] = g / max(|g|, eps)
/// with g = tokens[t, indices], the norm accumulated in float32.
/// Errors: indices outside [0, C) (IndexError). The range check reads the indices on the
/// CPU: for CUDA tensors, one device synchronisation per call.
at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps = 1e-12);

/// gather_normalize for indices the caller has already validated against [0, C) and placed
/// on the tokens' device (a fitted NormalityModel's neurons: checked once at fit and load):
/// the same result bit for bit, without the per-call range check, so without a device
/// synchronisation. Shapes, dtypes and devices are still checked; an index outside [0, C)
/// reads out of bounds. Not exposed to Python for that reason.
at::Tensor gather_normalize_unchecked(const at::Tensor& tokens, const at::Tensor& indices, double eps = 1e-12);

}  // namespace lake::ops
