// gather_normalize on CUDA: one warp per token row, kRowsPerBlock rows per block.
//
// Pass 1: lane j gathers tokens[t, idx[j]] for j = lane, lane + 32, ... (converted to float32,
// as the CPU), accumulates the squares in float32, and a cub::WarpReduce sums the lanes; lane 0
// broadcasts norm = max(sqrt(sum), eps) with a shuffle. Pass 2: the same gathers again (the
// row is in L1/L2 by then) divided by the norm, written coalesced along K. The indices were
// validated against [0, C) by ops.cpp.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <cub/warp/warp_reduce.cuh>
#include <fmt/format.h>

#include "ops/cuda/cuda_utils.cuh"
#include "ops/kernels.h"

namespace lake::ops::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block
constexpr int kThreads = kRowsPerBlock * kWarp;

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    gather_normalize_rows(const scalar_t* __restrict__ x, const int64_t* __restrict__ idx, int64_t T, int64_t C,
                          int64_t K, float eps, float* __restrict__ out) {
  using WarpReduce = cub::WarpReduce<float>;
  __shared__ typename WarpReduce::TempStorage temp[kRowsPerBlock];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t t = blockIdx.x * int64_t{kRowsPerBlock} + warp;
  if (t >= T) return;  // the whole warp leaves together: no block-wide synchronisation below
  const scalar_t* row = x + t * C;
  float ss = 0.f;
  for (int64_t j = lane; j < K; j += kWarp) {
    const float v = static_cast<float>(row[idx[j]]);
    ss += v * v;
  }
  ss = WarpReduce(temp[warp]).Sum(ss);  // valid in lane 0
  // max(norm, eps) as the CPU's std::max: a NaN norm (a NaN in the row) stays NaN, so the
  // whole row is NaN on both devices (fmaxf would drop the NaN and return eps).
  const float r = sqrtf(__shfl_sync(0xffffffffu, ss, 0));
  const float norm = r < eps ? eps : r;
  float* dst = out + t * K;
  for (int64_t j = lane; j < K; j += kWarp) dst[j] = static_cast<float>(row[idx[j]]) / norm;
}

}  // namespace

at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps) {
  c10::cuda::CUDAGuard guard(tokens.device());
  const int64_t T = tokens.size(0), C = tokens.size(1), K = indices.size(0);
  auto out = at::empty({T, K}, tokens.options().dtype(at::kFloat));
  if (T == 0 || K == 0) return out;
  const auto blocks = ceil_div<int64_t>(T, kRowsPerBlock);
  TORCH_CHECK(blocks <= int64_t{INT32_MAX}, fmt::format("gather_normalize (CUDA): too many rows: {}", T));
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tokens.scalar_type(), "gather_normalize_cuda", [&] {
    gather_normalize_rows<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        tokens.data_ptr<scalar_t>(), indices.data_ptr<int64_t>(), T, C, K, static_cast<float>(eps),
        out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace lake::ops::cuda
