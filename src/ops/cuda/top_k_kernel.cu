// top_k on CUDA: a stable descending radix sort of all C scores, then an ascending sort of the
// first k indices.
//
// make_keys maps every score to ordered_key (lake/core/top_k.h): a uint64 whose unsigned order is
// the numeric order, with NaN -> 0 (below -inf) and -0.0 == +0.0; the values are 0..C-1.
// cub::DeviceRadixSort::SortPairsDescending is stable, so equal keys keep ascending indices:
// the sorted values are exactly the CPU order (higher score, NaN last, lower index first).
// The first k are then sorted ascending with cub::DeviceRadixSort::SortKeys on the bits that
// can be set in an index < C. Temporary storage comes from the caching allocator.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <cub/device/device_radix_sort.cuh>

#include <climits>
#include <fmt/format.h>

#include "ops/cuda/cuda_utils.cuh"
#include "ops/kernels.h"

namespace lake::ops::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void make_keys(const double* __restrict__ scores, int64_t C, uint64_t* __restrict__ keys,
                          int64_t* __restrict__ values) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= C) return;
  keys[i] = ordered_key(scores[i]);
  values[i] = i;
}

// Number of low bits that can be set in an index in [0, C).
int index_bits(int64_t C) {
  int bits = 1;
  while (bits < 63 && (int64_t{1} << bits) < C) ++bits;
  return bits;
}

}  // namespace

at::Tensor top_k(const at::Tensor& scores, int64_t k) {
  c10::cuda::CUDAGuard guard(scores.device());
  const int64_t C = scores.size(0);
  const auto i64 = scores.options().dtype(at::kLong);
  auto out = at::empty({k}, i64);
  if (C == 0 || k <= 0) return out;  // ops.cpp guarantees 1 <= k <= C
  TORCH_CHECK(C <= INT_MAX, fmt::format("top_k (CUDA): at most {} scores are supported, got {}", INT_MAX, C));
  const int n = static_cast<int>(C), kk = static_cast<int>(k);
  auto stream = c10::cuda::getCurrentCUDAStream();

  auto keys_in = at::empty({C}, i64);  // uint64 keys held in int64 storage
  auto keys_out = at::empty({C}, i64);
  auto values_in = at::empty({C}, i64);
  auto values_out = at::empty({C}, i64);
  auto* kin = reinterpret_cast<uint64_t*>(keys_in.data_ptr<int64_t>());
  auto* kout = reinterpret_cast<uint64_t*>(keys_out.data_ptr<int64_t>());
  int64_t* vin = values_in.data_ptr<int64_t>();
  int64_t* vout = values_out.data_ptr<int64_t>();

  make_keys<<<static_cast<unsigned>(ceil_div<int64_t>(C, kThreads)), kThreads, 0, stream>>>(
      scores.data_ptr<double>(), C, kin, vin);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // 1. All (key, index) pairs by descending key; stable, so ties keep ascending indices.
  size_t bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, kin, kout, vin, vout, n, 0, 64, stream));
  auto temp = cub_temp(bytes, scores.device());
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(temp.data_ptr(), bytes, kin, kout, vin, vout, n, 0, 64,
                                                           stream));

  // 2. The first k indices, ascending.
  const int end_bit = index_bits(C);
  size_t bytes2 = 0;
  C10_CUDA_CHECK(
      cub::DeviceRadixSort::SortKeys(nullptr, bytes2, vout, out.data_ptr<int64_t>(), kk, 0, end_bit, stream));
  if (bytes2 > bytes) temp = cub_temp(bytes2, scores.device());  // the caching allocator keeps the old block safe
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(temp.data_ptr(), bytes2, vout, out.data_ptr<int64_t>(), kk, 0,
                                                end_bit, stream));
  return out;
}

}  // namespace lake::ops::cuda
