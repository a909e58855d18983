#pragma once
// Kernel 1 of the anomaly head: per-channel activation statistics (count, mean, M2) of a
// batch of tokens, in float64, ready for Chan et al.'s parallel merge (ChannelStats).

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lake::ops {

/// The moments of one batch. `mean` and `m2` live on the tokens' device.
struct Moments {
  int64_t count = 0;  ///< tokens that were counted (mask true), the same for every channel
  at::Tensor mean;    ///< (C) float64; zeros when count == 0
  at::Tensor m2;      ///< (C) float64: sum over counted tokens of (x - mean)^2
};

/// tokens: (T, C) float32 / float64 / float16 / bfloat16, CPU or CUDA (any strides).
/// mask: undefined (every token counts) or (T) bool on the tokens' device.
/// Accumulates in float64: two passes over fixed blocks of tokens, blocks merged with
/// Chan's formula, so the result does not depend on the thread count.
Moments channel_moments(const at::Tensor& tokens, const at::Tensor& mask = {});

}  // namespace lake::ops
