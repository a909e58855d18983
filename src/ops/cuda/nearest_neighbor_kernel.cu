// nearest_neighbors on CUDA: a tiled GEMM-like kernel with the arg-max fused in, memory O(L x Q).
//
// nearest_tiles: a block of 256 threads (16 x 16) owns kTileQ = 64 queries of one layer
// (grid.x = query tiles, grid.z = layers) and walks the gallery tiles of kTileM = 64 rows
// tile = blockIdx.y, blockIdx.y + gridDim.y, ... (grid.y = "splits", chosen so that the grid
// fills the GPU; the CPU's `tile` option is not used here). Per tile, K is staged through
// shared memory in chunks of kChunk channels, converted to float32 and stored transposed
// (conflict-free stores and loads thanks to the +1 padding); each thread accumulates a 4 x 4
// register micro-tile of dot products (queries ty + 16 i, gallery rows tx + 16 j) in float32
// with fmaf. After the tile, every thread folds its 4 x 4 similarities into a running best
// (sim, row) per query, skipping rows past M and rows in [exclude_lo, exclude_hi) (tiles that
// lie entirely inside that range are skipped without loading them); a row only wins by a
// larger similarity or, on an exact tie, by a lower index, and NaN never wins, as on the CPU.
// The end of a block: the 16 threads sharing a query combine their candidates with
// shuffles of a packed uint64 key
//   key = ordered_bits(sim) << 32 | (0xFFFFFFFF - row)    (larger key = higher sim, then lower row)
// and lane tx == 0 merges it into the (L, Q) key buffer (zeroed: 0 = no row) with atomicMax.
// decode_keys turns every key into distance = clamp((1 - sim) / 2, 0, 1) and the row, or
// (1, -1) when no row was left.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <climits>
#include <fmt/format.h>

#include "ops/cuda/cuda_utils.cuh"
#include "ops/kernels.h"

namespace lake::ops::cuda {

namespace {

constexpr int kTileQ = 64;    // queries per block
constexpr int kTileM = 64;    // gallery rows per tile
constexpr int kChunk = 32;    // channels staged in shared memory at a time
constexpr int kDim = 16;      // the block is kDim x kDim threads
constexpr int kMicro = 4;     // each thread: kMicro queries x kMicro gallery rows
constexpr int kThreads = kDim * kDim;
static_assert(kDim * kMicro == kTileQ && kDim * kMicro == kTileM, "tile shape");
static_assert(kDim == 16, "the key reduction shuffles within 16-lane halves of a warp");

using Key = unsigned long long;

__device__ inline Key pack_key(float sim, int row) {
  if (sim == 0.f) sim = 0.f;  // -0.0 ties with +0.0
  return (static_cast<Key>(ordered_bits(sim)) << 32) | static_cast<Key>(0xFFFFFFFFu - static_cast<uint32_t>(row));
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    nearest_tiles(const scalar_t* __restrict__ queries, const scalar_t* __restrict__ gallery, int64_t Q, int64_t M,
                  int64_t K, int64_t exclude_lo, int64_t exclude_hi, Key* __restrict__ keys) {
  __shared__ float qs[kChunk][kTileQ + 1];
  __shared__ float gs[kChunk][kTileM + 1];
  const int tx = threadIdx.x % kDim, ty = threadIdx.x / kDim;
  const int64_t l = blockIdx.z;
  const int64_t q0 = int64_t{blockIdx.x} * kTileQ;
  const scalar_t* ql = queries + l * Q * K;
  const scalar_t* gl = gallery + l * M * K;
  const int64_t tiles = ceil_div<int64_t>(M, kTileM);

  float best[kMicro];
  int best_row[kMicro];  // -1: none yet (an equal similarity never beats "none" at -inf)
#pragma unroll
  for (int i = 0; i < kMicro; ++i) best[i] = -INFINITY, best_row[i] = -1;

  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    const int64_t m0 = tile * kTileM, m1 = std::min(M, m0 + kTileM);
    if (m0 >= exclude_lo && m1 <= exclude_hi) continue;  // uniform over the block
    float acc[kMicro][kMicro] = {};
    for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
      // Stage rows [q0, q0 + 64) and [m0, m0 + 64), channels [k0, k0 + 32), transposed; zeros outside.
      for (int e = threadIdx.x; e < kTileQ * kChunk; e += kThreads) {
        const int r = e / kChunk, c = e % kChunk;
        const int64_t kc = k0 + c, qi = q0 + r, gi = m0 + r;
        qs[c][r] = (qi < Q && kc < K) ? static_cast<float>(ql[qi * K + kc]) : 0.f;
        gs[c][r] = (gi < M && kc < K) ? static_cast<float>(gl[gi * K + kc]) : 0.f;
      }
      __syncthreads();
#pragma unroll 8
      for (int c = 0; c < kChunk; ++c) {
        float a[kMicro], b[kMicro];
#pragma unroll
        for (int i = 0; i < kMicro; ++i) a[i] = qs[c][ty + kDim * i], b[i] = gs[c][tx + kDim * i];
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
#pragma unroll
          for (int j = 0; j < kMicro; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();  // before the next chunk overwrites qs / gs
    }
#pragma unroll
    for (int j = 0; j < kMicro; ++j) {
      const int64_t row = m0 + tx + kDim * j;
      if (row >= M || (row >= exclude_lo && row < exclude_hi)) continue;
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        const float sim = acc[i][j];
        if (sim > best[i] || (sim == best[i] && row < best_row[i]))
          best[i] = sim, best_row[i] = static_cast<int>(row);
      }
    }
  }

  // threadIdx.x = ty * 16 + tx: the 16 threads of one ty are one half of a warp.
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    Key key = best_row[i] >= 0 ? pack_key(best[i], best_row[i]) : Key{0};
#pragma unroll
    for (int offset = kDim / 2; offset > 0; offset /= 2) {
      const Key other = __shfl_xor_sync(0xffffffffu, key, offset);
      key = other > key ? other : key;
    }
    const int64_t qi = q0 + ty + kDim * i;
    if (tx == 0 && key != 0 && qi < Q) atomicMax(keys + l * Q + qi, key);
  }
}

__global__ void decode_keys(const Key* __restrict__ keys, int64_t n, float* __restrict__ distance,
                            int64_t* __restrict__ index) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  const Key key = keys[i];
  if (key == 0) {
    distance[i] = 1.f;
    index[i] = -1;
    return;
  }
  const float sim = from_ordered_bits(static_cast<uint32_t>(key >> 32));
  distance[i] = fminf(fmaxf((1.f - sim) * 0.5f, 0.f), 1.f);
  index[i] = static_cast<int64_t>(0xFFFFFFFFu - static_cast<uint32_t>(key & 0xFFFFFFFFull));
}

}  // namespace

NearestNeighbors nearest_neighbors(const at::Tensor& queries, const at::Tensor& gallery, const NearestOptions& o) {
  c10::cuda::CUDAGuard guard(queries.device());
  const int64_t L = queries.size(0), Q = queries.size(1), K = queries.size(2), M = gallery.size(1);
  NearestNeighbors out;
  out.distance = at::empty({L, Q}, queries.options().dtype(at::kFloat));
  out.index = at::empty({L, Q}, queries.options().dtype(at::kLong));
  if (L == 0 || Q == 0) return out;
  TORCH_CHECK(M < INT_MAX, fmt::format("nearest_neighbors (CUDA): at most {} gallery rows, got {}", INT_MAX - 1, M));
  TORCH_CHECK(L <= 65535, fmt::format("nearest_neighbors (CUDA): at most 65535 layers, got {}", L));
  const int64_t qtiles = ceil_div<int64_t>(Q, kTileQ), mtiles = ceil_div<int64_t>(M, kTileM);
  TORCH_CHECK(qtiles <= INT_MAX, fmt::format("nearest_neighbors (CUDA): too many queries: {}", Q));
  auto stream = c10::cuda::getCurrentCUDAStream();

  auto keys = at::empty({L, Q}, queries.options().dtype(at::kLong));  // uint64 keys in int64 storage
  Key* pkeys = reinterpret_cast<Key*>(keys.data_ptr<int64_t>());
  C10_CUDA_CHECK(cudaMemsetAsync(pkeys, 0, static_cast<size_t>(L * Q) * sizeof(Key), stream));

  if (M > 0) {
    // Enough blocks for a few waves: split the gallery tiles when there are few query tiles.
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, queries.device().index()));
    const int64_t splits = std::clamp<int64_t>(ceil_div<int64_t>(4 * int64_t{sms}, qtiles * L), 1, std::min<int64_t>(mtiles, 65535));
    const dim3 grid(static_cast<unsigned>(qtiles), static_cast<unsigned>(splits), static_cast<unsigned>(L));
    const auto launch = [&](auto zero) {
      using scalar_t = decltype(zero);
      nearest_tiles<scalar_t><<<grid, kThreads, 0, stream>>>(queries.data_ptr<scalar_t>(),
                                                             gallery.data_ptr<scalar_t>(), Q, M, K, o.exclude_lo,
                                                             o.exclude_hi, pkeys);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    // float32 / float16 / bfloat16 only (checked by ops.cpp): no float64 instantiation.
    AT_DISPATCH_SWITCH(queries.scalar_type(), "nearest_neighbors_cuda",
                       AT_DISPATCH_CASE(at::kFloat, [&] { launch(scalar_t{}); })
                           AT_DISPATCH_CASE(at::kHalf, [&] { launch(scalar_t{}); })
                               AT_DISPATCH_CASE(at::kBFloat16, [&] { launch(scalar_t{}); }));
  }
  const int64_t n = L * Q;
  decode_keys<<<static_cast<unsigned>(ceil_div<int64_t>(n, 256)), 256, 0, stream>>>(
      pkeys, n, out.distance.data_ptr<float>(), out.index.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace lake::ops::cuda
