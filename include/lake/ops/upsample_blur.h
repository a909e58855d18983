#pragma once
// Kernel 5 of the anomaly head: patch-grid scores -> pixel anomaly maps (bilinear
// upsampling, then a separable Gaussian blur), a batch of maps in one call.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lake::ops {

/// maps: (B, h, w) float32, CPU or CUDA. Returns (B, H, W) float32:
/// bilinear upsampling with half-pixel centres (align_corners = false, as
/// torch.nn.functional.interpolate), then a Gaussian of standard deviation `sigma` along
/// rows and then columns, radius int(4 sigma + 0.5) clamped to min(H, W) - 1, reflect
/// padding without repeating the edge sample (torch's reflection_pad, scipy's "mirror").
/// sigma = 0 (or a radius of 0) only upsamples.
at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, double sigma);

/// The Gaussian taps used above: (2 r + 1) float64 weights summing to 1.
at::Tensor gaussian_taps(double sigma, int64_t max_radius);

}  // namespace lake::ops
