// upsample_blur on CUDA: two element-wise kernels, one thread per output pixel (grid-stride,
// int64 indices), both coalesced along x.
//
// Kernel A (upsample_rows): for pixel (b, y, x), the 2 r + 1 horizontally neighbouring samples
// x + k - r (reflected without repeating the edge: -1 -> 1, W -> W - 2) of the bilinear
// upsampling are computed on the fly from the (small, cached) input map with torch's
// align_corners = false rule, and combined with the taps into a (B, H, W) temporary; with
// r = 0 it writes the upsampled value directly into the output. Kernel B (blur_columns): the
// vertical pass over the temporary with reflected row indices.
// Every multiply and add is rounded separately, in the CPU path's order (__fmul_rn /
// __fadd_rn: nvcc would otherwise contract them into FMAs), so both devices give the same
// float32 results. The taps (float32) reach the device through a pinned, non-blocking copy.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <climits>
#include <fmt/format.h>

#include "lake/core/resample.h"
#include "ops/cuda/cuda_utils.cuh"
#include "ops/kernels.h"

namespace lake::ops::cuda {

namespace {

constexpr int kThreads = 256;

// lake/core/resample.h: the lerp taps, the rounding of every multiply-add and the reflection,
// shared with the CPU kernel.
using core::lerp_mix;
using core::lerp_tap;
using core::LerpTap;
using core::reflect;

__global__ void __launch_bounds__(kThreads)
    upsample_rows(const float* __restrict__ in, int64_t B, int64_t h, int64_t w, int64_t H, int64_t W,
                  float scale_y, float scale_x, const float* __restrict__ taps, int64_t r, float* __restrict__ out) {
  const int64_t total = B * H * W;
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < total; p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t x = p % W, y = (p / W) % H, b = p / (W * H);
    const LerpTap ly = lerp_tap(y, h, scale_y);
    const float* r0 = in + (b * h + ly.i0) * w;
    const float* r1 = in + (b * h + ly.i1) * w;
    float acc = 0.f;
    for (int64_t k = 0; k <= 2 * r; ++k) {
      const LerpTap lx = lerp_tap(reflect(x + k - r, W), w, scale_x);
      const float up = lerp_mix(ly.w0, lerp_mix(lx.w0, r0[lx.i0], lx.w1, r0[lx.i1]), ly.w1,
                                lerp_mix(lx.w0, r1[lx.i0], lx.w1, r1[lx.i1]));
      acc = r == 0 ? up : core::add_rn(acc, core::mul_rn(taps[k], up));
    }
    out[p] = acc;
  }
}

__global__ void __launch_bounds__(kThreads)
    blur_columns(const float* __restrict__ in, int64_t B, int64_t H, int64_t W, const float* __restrict__ taps,
                 int64_t r, float* __restrict__ out) {
  const int64_t total = B * H * W;
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < total; p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t x = p % W, y = (p / W) % H, b = p / (W * H);
    const float* col = in + b * H * W + x;
    float acc = 0.f;
    for (int64_t k = 0; k <= 2 * r; ++k)
      acc = core::add_rn(acc, core::mul_rn(taps[k], col[reflect(y + k - r, H) * W]));
    out[p] = acc;
  }
}

}  // namespace

at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, const at::Tensor& taps_in) {
  c10::cuda::CUDAGuard guard(maps.device());
  const int64_t B = maps.size(0), h = maps.size(1), w = maps.size(2);
  auto out = at::empty({B, H, W}, maps.options());
  const int64_t total = B * H * W;
  if (total == 0 || h == 0 || w == 0) return out;
  const int64_t r = (taps_in.size(0) - 1) / 2;
  TORCH_CHECK(taps_in.size(0) == 2 * r + 1 && r <= std::min(H, W) - 1,
              fmt::format("upsample_blur (CUDA): expected 2 r + 1 taps with r < min(H, W), got {}", taps_in.size(0)));

  // float32 taps, as the CPU path; pinned so that the copy does not block the host.
  const auto taps64 = taps_in.to(at::kDouble).contiguous();
  auto taps_host = at::empty({2 * r + 1}, at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
  for (int64_t k = 0; k <= 2 * r; ++k) taps_host.data_ptr<float>()[k] = static_cast<float>(taps64.data_ptr<double>()[k]);
  const auto taps = taps_host.to(maps.device(), at::kFloat, /*non_blocking=*/true);

  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div<int64_t>(total, kThreads), INT_MAX));
  const float scale_y = core::resample_scale(h, H);
  const float scale_x = core::resample_scale(w, W);
  auto rows = r == 0 ? out : at::empty({B, H, W}, maps.options());
  upsample_rows<<<blocks, kThreads, 0, stream>>>(maps.data_ptr<float>(), B, h, w, H, W, scale_y, scale_x,
                                                 taps.data_ptr<float>(), r, rows.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (r == 0) return out;
  blur_columns<<<blocks, kThreads, 0, stream>>>(rows.data_ptr<float>(), B, H, W, taps.data_ptr<float>(), r,
                                                out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace lake::ops::cuda
