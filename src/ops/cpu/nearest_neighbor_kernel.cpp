// nearest_neighbors on the CPU. Per layer, the gallery is walked in tiles of `tile` rows:
// one GEMM of all queries against the tile (LibTorch's multi-threaded BLAS) into a reused
// (Q x tile) buffer, then a parallel scan (lake::core::improve_nearest, Eigen) keeping each query's running max
// (similarity) and first arg-max. Memory: O(Q x tile), independent of the gallery size;
// the (Q x M) matrix is never formed. Tiles are visited
// in ascending row order and a later row only wins by a strictly larger similarity, so ties
// go to the lowest row, as on CUDA.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>

#include "lake/core/rows.h"
#include "ops/kernels.h"

namespace lake::ops::cpu {

namespace {

// Columns [c0, c1) of a (rows x ld) buffer: improve best/arg of each row (lake/core/rows.h:
// NaN ignored, a later column wins only by a strictly larger value).
void scan_columns(const float* buf, int64_t rows, int64_t ld, int64_t c0, int64_t c1, int64_t row_offset,
                  float* best, int64_t* arg) {
  if (c0 >= c1) return;
  at::parallel_for(0, rows, 32, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) core::improve_nearest(buf + i * ld, c0, c1, row_offset, best[i], arg[i]);
  });
}

}  // namespace

NearestNeighbors nearest_neighbors(const at::Tensor& queries_in, const at::Tensor& gallery_in, const NearestOptions& o) {
  // Half / bfloat16 rows are widened once (CPU GEMMs in those types are slow or absent).
  const auto q = queries_in.scalar_type() == at::kFloat ? queries_in : queries_in.to(at::kFloat);
  const auto g = gallery_in.scalar_type() == at::kFloat ? gallery_in : gallery_in.to(at::kFloat);
  const int64_t L = q.size(0), Q = q.size(1), M = g.size(1);
  const int64_t tile = std::min(o.tile, M);
  auto best = at::full({L, Q}, -std::numeric_limits<float>::infinity(), q.options());
  auto arg = at::full({L, Q}, -1, q.options().dtype(at::kLong));
  auto buf = at::empty({Q * tile}, q.options());
  for (int64_t l = 0; l < L; ++l) {
    float* bb = best.data_ptr<float>() + l * Q;
    int64_t* ab = arg.data_ptr<int64_t>() + l * Q;
    for (int64_t s = 0; s < M; s += tile) {
      const int64_t e = std::min(M, s + tile);
      if (s >= o.exclude_lo && e <= o.exclude_hi) continue;  // the whole tile is excluded
      // One (Q x tile) GEMM (multi-threaded BLAS), then a parallel scan of its rows.
      const int64_t ld = e - s;
      at::Tensor sims = buf.narrow(0, 0, Q * ld).view({Q, ld});
      at::mm_out(sims, q[l], g[l].narrow(0, s, ld).t());
      const float* pb = sims.data_ptr<float>();
      // Columns outside the excluded range [lo, hi), in ascending order.
      const int64_t lo = std::clamp(o.exclude_lo, s, e) - s, hi = std::clamp(o.exclude_hi, s, e) - s;
      if (lo < hi) {
        scan_columns(pb, Q, ld, 0, lo, s, bb, ab);
        scan_columns(pb, Q, ld, hi, e - s, s, bb, ab);
      } else {
        scan_columns(pb, Q, ld, 0, e - s, s, bb, ab);
      }
    }
  }
  NearestNeighbors r;
  r.distance = ((1.0 - best) * 0.5).clamp(0.0, 1.0);  // -inf (nothing left) -> 1
  r.index = arg;
  return r;
}

}  // namespace lake::ops::cpu
