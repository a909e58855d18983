#pragma once
// Kernel 2 of the anomaly head: Top-K channels by score with a device-independent order.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lake::ops {

/// scores: (C) float32 / float64, CPU or CUDA. Returns the (k) int64 indices of the k
/// highest scores, in ascending index order, on the scores' device. Order of choice:
/// higher score first, NaN after every number, ties by the lower index, so every device
/// picks the same channels. Errors: k outside 1..C.
at::Tensor top_k(const at::Tensor& scores, int64_t k);

}  // namespace lake::ops
