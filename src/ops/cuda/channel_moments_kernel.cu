// channel_moments on CUDA.
//
// Kernel 1 (block_moments), grid (ceil(C / kChannelThreads), min(G, 65535)) with G the number
// of kMomentsBlock-token blocks (grid-stride over blocks in y): a thread owns one (channel,
// token block) and reduces it exactly like the CPU path, in two passes in float64 (sum ->
// block mean, then the squared deviations from it) over the block's counted tokens, reading
// tokens[t, c] coalesced along c. It writes the partial (n, mean, m2) into (G) / (G, C)
// buffers. Kernel 2 (merge_blocks), one CUDA block per channel: each thread folds a strided
// subset of the G partials with Chan's merge, then a cub::BlockReduce with the same operator
// (empty blocks are its identity). Same blocking, summation order inside a block and formulas
// as the CPU, so the two only differ by rounding: the order of the merge and nvcc's fused
// multiply-adds. count = the number of true mask entries, read back to the host (one
// synchronisation).

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <climits>
#include <fmt/format.h>

#include "ops/cuda/cuda_utils.cuh"
#include "ops/kernels.h"

namespace lake::ops::cuda {

namespace {

constexpr int kChannelThreads = 128;
constexpr int kMergeThreads = 256;
constexpr int64_t kMaxGridY = 65535;

template <typename scalar_t>
__global__ void __launch_bounds__(kChannelThreads)
    block_moments(const scalar_t* __restrict__ x, const bool* __restrict__ mask, int64_t T, int64_t C, int64_t G,
                  double* __restrict__ counts, double* __restrict__ means, double* __restrict__ m2s) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  for (int64_t g = blockIdx.y; g < G; g += gridDim.y) {
    const int64_t t0 = g * kMomentsBlock, t1 = std::min(T, t0 + kMomentsBlock);
    int64_t n = 0;
    double sum = 0.0;
    for (int64_t t = t0; t < t1; ++t) {
      if (mask != nullptr && !mask[t]) continue;
      ++n;
      if (c < C) sum += static_cast<double>(x[t * C + c]);
    }
    if (c == 0) counts[g] = static_cast<double>(n);  // thread 0 of the blocks with blockIdx.x == 0
    if (c >= C) continue;
    double mean = 0.0, m2 = 0.0;
    if (n > 0) {
      mean = sum * (1.0 / static_cast<double>(n));  // as the CPU: sum * (1 / n)
      for (int64_t t = t0; t < t1; ++t) {
        if (mask != nullptr && !mask[t]) continue;
        const double d = static_cast<double>(x[t * C + c]) - mean;
        m2 += d * d;
      }
    }
    means[g * C + c] = mean;
    m2s[g * C + c] = m2;
  }
}

__global__ void __launch_bounds__(kMergeThreads)
    merge_blocks(const double* __restrict__ counts, const double* __restrict__ means, const double* __restrict__ m2s,
                 int64_t C, int64_t G, double* __restrict__ mean_out, double* __restrict__ m2_out) {
  using BlockReduce = cub::BlockReduce<MomentsPartial, kMergeThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  const int64_t c = blockIdx.x;
  const ChanMerge merge;
  MomentsPartial acc{0.0, 0.0, 0.0};
  for (int64_t g = threadIdx.x; g < G; g += kMergeThreads)
    acc = merge(acc, MomentsPartial{counts[g], means[g * C + c], m2s[g * C + c]});
  const MomentsPartial total = BlockReduce(temp).Reduce(acc, merge);
  if (threadIdx.x == 0) {
    mean_out[c] = total.mean;
    m2_out[c] = total.m2;
  }
}

}  // namespace

Moments channel_moments(const at::Tensor& tokens, const at::Tensor& mask) {
  c10::cuda::CUDAGuard guard(tokens.device());
  const int64_t T = tokens.size(0), C = tokens.size(1);
  const auto f64 = tokens.options().dtype(at::kDouble);
  Moments out;
  out.mean = at::empty({C}, f64);
  out.m2 = at::empty({C}, f64);
  if (T == 0 || C == 0) {  // ops.cpp returns before calling us; kept for a self-contained contract
    out.mean.zero_();
    out.m2.zero_();
    return out;
  }
  TORCH_CHECK(C <= INT_MAX, fmt::format("channel_moments (CUDA): at most {} channels, got {}", INT_MAX, C));
  const int64_t G = ceil_div<int64_t>(T, kMomentsBlock);
  auto counts = at::empty({G}, f64);
  auto means = at::empty({G, C}, f64);
  auto m2s = at::empty({G, C}, f64);
  const bool* pmask = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  auto stream = c10::cuda::getCurrentCUDAStream();

  const dim3 grid1(static_cast<unsigned>(ceil_div<int64_t>(C, kChannelThreads)),
                   static_cast<unsigned>(std::min(G, kMaxGridY)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tokens.scalar_type(), "channel_moments_cuda", [&] {
    block_moments<scalar_t><<<grid1, kChannelThreads, 0, stream>>>(tokens.data_ptr<scalar_t>(), pmask, T, C, G,
                                                                    counts.data_ptr<double>(), means.data_ptr<double>(),
                                                                    m2s.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  merge_blocks<<<static_cast<unsigned>(C), kMergeThreads, 0, stream>>>(
      counts.data_ptr<double>(), means.data_ptr<double>(), m2s.data_ptr<double>(), C, G, out.mean.data_ptr<double>(),
      out.m2.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  out.count = mask.defined() ? mask.sum().item<int64_t>() : T;
  return out;
}

}  // namespace lake::ops::cuda
