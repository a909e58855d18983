#pragma once
// Resampling of anomaly maps, one definition for both devices: bilinear upsampling with
// torch's rule (interpolate(mode="bilinear", align_corners=False)), reflection without
// repeating the edge (-1 -> 1, n -> n - 2), Gaussian taps, and the CPU's separable blur.
//
//   lerp_tap(d, in, scale)    source indices and weights of output index d   host + device
//   lerp_mix(w0, a, w1, b)    w0 a + w1 b, each operation rounded on its own  host + device
//   reflect(i, n)             reflected index                                  host + device
//   gaussian_taps(sigma, r)   2 r + 1 normalised weights, r = round(4 sigma)   host
//   upsample_blur_row / blur_column_row   the two passes of the CPU kernel    host (Eigen)
//
// Every multiply and add is rounded separately (on the device through __fmul_rn / __fadd_rn,
// which nvcc would otherwise contract into FMAs), in one order, so the CPU kernel
// (src/ops/cpu/upsample_blur_kernel.cpp) and the CUDA kernel give the same float32 results.
//
// Example (no LibTorch): a 2 x 2 map to 4 x 4, blurred with sigma 1.
//   const auto taps64 = lake::core::gaussian_taps(1.0, 3);
//   std::vector<float> taps(taps64.begin(), taps64.end()), line(4 + 2 * r), rows(16), out(16);
//   const auto ys = lake::core::lerp_table(2, 4), xs = lake::core::lerp_table(2, 4);
//   for (y...) upsample_blur_row(map, 2, ys, xs, y, taps.data(), r, line.data(), &rows[y * 4]);
//   for (y...) blur_column_row(rows.data(), 4, 4, y, taps.data(), r, &out[y * 4]);

#include "lake/core/config.h"

#if !defined(__CUDACC__)
#include <Eigen/Core>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace lake::core {

LAKE_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

LAKE_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

/// Output index d of a length-`out` axis samples input indices i0, i1 (of `in`) with
/// weights w0, w1; scale = in / out as float.
struct LerpTap {
  int64_t i0, i1;
  float w0, w1;
};

LAKE_HOST_DEVICE inline float resample_scale(int64_t in, int64_t out) {
  return static_cast<float>(in) / static_cast<float>(out);
}

LAKE_HOST_DEVICE inline LerpTap lerp_tap(int64_t d, int64_t in, float scale) {
  float src = add_rn(mul_rn(scale, static_cast<float>(d) + 0.5f), -0.5f);
  src = src > 0.f ? src : 0.f;
  const int64_t i0 = static_cast<int64_t>(src) < in - 1 ? static_cast<int64_t>(src) : in - 1;
  const float l1 = src - static_cast<float>(i0);
  return {i0, i0 + 1 < in - 1 ? i0 + 1 : in - 1, 1.f - l1, l1};
}

LAKE_HOST_DEVICE inline float lerp_mix(float w0, float a, float w1, float b) {
  return add_rn(mul_rn(w0, a), mul_rn(w1, b));
}

LAKE_HOST_DEVICE inline int64_t reflect(int64_t i, int64_t n) {
  return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
}

#if !defined(__CUDACC__)  // the CPU side (Eigen); nvcc sees only the host + device functions above

/// lerp_tap of every output index of an axis.
inline std::vector<LerpTap> lerp_table(int64_t in, int64_t out) {
  std::vector<LerpTap> t(static_cast<size_t>(out));
  const float scale = resample_scale(in, out);
  for (int64_t d = 0; d < out; ++d) t[static_cast<size_t>(d)] = lerp_tap(d, in, scale);
  return t;
}

/// Normalised Gaussian weights exp(-x^2 / (2 sigma^2)), x = -r..r, r = floor(4 sigma + 0.5)
/// capped at max_radius (sigma 0: the single tap 1). Preconditions: sigma finite, >= 0.
inline std::vector<double> gaussian_taps(double sigma, int64_t max_radius) {
  int64_t r = sigma > 0 ? static_cast<int64_t>(4.0 * sigma + 0.5) : 0;
  r = std::max<int64_t>(0, std::min(r, max_radius));
  std::vector<double> w(static_cast<size_t>(2 * r + 1), 1.0);
  double sum = 0;
  for (int64_t x = -r; x <= r; ++x)
    sum += w[x + r] = r == 0 ? 1.0 : std::exp(-static_cast<double>(x * x) / (2 * sigma * sigma));
  for (auto& v : w) v /= sum;
  return w;
}

/// Pass 1 of the CPU blur, output row y: row y of the bilinear upsampling of a (h x w) map
/// (ys: lerp_table(h, H), xs: lerp_table(w, W)) convolved horizontally with taps[2 r + 1]
/// (reflected edges) into dst[W]. `line`: scratch of W + 2 r floats.
inline void upsample_blur_row(const float* map, int64_t w, const std::vector<LerpTap>& ys,
                              const std::vector<LerpTap>& xs, int64_t y, const float* taps, int64_t r, float* line,
                              float* dst) {
  const int64_t W = static_cast<int64_t>(xs.size());
  const LerpTap ly = ys[static_cast<size_t>(y)];
  const float* r0 = map + ly.i0 * w;
  const float* r1 = map + ly.i1 * w;
  float* up = r == 0 ? dst : line + r;
  for (int64_t x = 0; x < W; ++x) {
    const LerpTap& lx = xs[static_cast<size_t>(x)];
    up[x] = lerp_mix(ly.w0, lerp_mix(lx.w0, r0[lx.i0], lx.w1, r0[lx.i1]), ly.w1,
                     lerp_mix(lx.w0, r1[lx.i0], lx.w1, r1[lx.i1]));
  }
  if (r == 0) return;
  for (int64_t k = 1; k <= r; ++k) up[-k] = up[k], up[W - 1 + k] = up[W - 1 - k];
  Eigen::Map<Eigen::ArrayXf> out(dst, W);
  out.setZero();
  for (int64_t k = 0; k <= 2 * r; ++k) out += taps[k] * Eigen::Map<const Eigen::ArrayXf>(line + k, W);
}

/// Pass 2 of the CPU blur, output row y: the vertical convolution of the (H x W) pass-1
/// rows with taps[2 r + 1] (reflected row indices) into dst[W]. r >= 1.
inline void blur_column_row(const float* rows, int64_t H, int64_t W, int64_t y, const float* taps, int64_t r,
                            float* dst) {
  Eigen::Map<Eigen::ArrayXf> out(dst, W);
  out.setZero();
  for (int64_t k = 0; k <= 2 * r; ++k)
    out += taps[k] * Eigen::Map<const Eigen::ArrayXf>(rows + reflect(y + k - r, H) * W, W);
}

#endif  // !__CUDACC__

}  // namespace lake::core
