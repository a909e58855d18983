#pragma once
// Shared helpers of the CUDA kernels in src/ops/cuda/ (internal; include only from .cu files).
//
//   ceil_div(a, b)              integer ceiling, host and device
//   kWarp                       threads per warp
//   cub_temp(bytes, device)     CUB temporary storage from the caching allocator (a kByte tensor:
//                               keep it alive until the CUB call has been enqueued)
//   MomentsPartial, ChanMerge   lake/core/moments.h: (n, mean, m2) and Chan et al.'s merge
//                               (n == 0 is the identity, so it fits cub::BlockReduce)
//   ordered_key(double)         lake/core/top_k.h: uint64 whose unsigned order is the numeric
//                               order; NaN -> 0 (the lowest key), -0.0 and +0.0 -> the same key
//   ordered_bits(float)         uint32 whose unsigned order is the numeric order (no NaN in),
//   from_ordered_bits(u)        and its inverse
//
// Launches are checked with C10_CUDA_KERNEL_LAUNCH_CHECK() right after the <<<...>>> and CUDA
// API calls (CUB included) with C10_CUDA_CHECK(...), both from <c10/cuda/CUDAException.h>.
//
// Example:
//   #include "ops/cuda/cuda_utils.cuh"
//   namespace lake::ops::cuda {
//   __global__ void scale(float* x, int64_t n, float s) {
//     const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
//     if (i < n) x[i] *= s;
//   }
//   void scale_(at::Tensor& x, float s) {  // x: float32 contiguous on a CUDA device
//     c10::cuda::CUDAGuard guard(x.device());
//     const int64_t n = x.numel();
//     if (n == 0) return;
//     scale<<<ceil_div<int64_t>(n, 256), 256, 0, at::cuda::getCurrentCUDAStream()>>>(x.data_ptr<float>(), n, s);
//     C10_CUDA_KERNEL_LAUNCH_CHECK();
//   }
//   }  // namespace lake::ops::cuda

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>

#include "lake/core/moments.h"
#include "lake/core/top_k.h"

#include <cstddef>
#include <cstdint>

namespace lake::ops::cuda {

constexpr int kWarp = 32;

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

/// Uninitialised device bytes for CUB's temporary storage (at least 1 byte, so the pointer is
/// never null on the second CUB call).
inline at::Tensor cub_temp(size_t bytes, const at::Device& device) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, at::TensorOptions().dtype(at::kByte).device(device));
}

// The moments merge and the top-k sort key are the core's (lake/core/moments.h, top_k.h), shared
// with the CPU kernels.
using core::ChanMerge;
using core::MomentsPartial;
using core::ordered_key;

/// Order-preserving bits of a float that is not NaN (-0.0 and +0.0 differ: canonicalise first).
__device__ inline uint32_t ordered_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline float from_ordered_bits(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

}  // namespace lake::ops::cuda
