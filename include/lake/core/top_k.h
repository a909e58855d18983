#pragma once
// The order of top-k channel selection, one definition for both devices:
//   higher score first; NaN after every number; -0.0 ties with +0.0; ties go to the lower
//   index. The chosen k indices are returned ascending.
// ordered_key maps a score to a uint64 whose unsigned order is that numeric order (NaN -> 0,
// below -inf), so
//   `a before b`  <=>  key(a) > key(b), or key(a) == key(b) and index(a) < index(b).
// The CUDA kernel (src/ops/cuda/top_k_kernel.cu) radix-sorts (key, index) pairs descending
// with a stable sort, which is that order; the CPU (top_k_indices below) partial-sorts (key, index)
// pairs, which is `ranks_before` and that order by construction.
//
// Example (no LibTorch):
//   std::vector<double> scores = {0.5, NAN, 2.0, 0.5};
//   std::vector<int64_t> top(2);
//   lake::core::top_k_indices(scores.data(), 4, 2, top.data());  // {0, 2}

#include "lake/core/config.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace lake::core {

/// Sort key of a double: unsigned order == numeric order, NaN (any sign) -> 0 below -inf,
/// -0.0 == +0.0. No number maps to 0 (-inf -> 0x000FFFFFFFFFFFFF).
LAKE_HOST_DEVICE inline uint64_t ordered_key(double d) {
  if (d != d) return 0;
  if (d == 0.0) d = 0.0;  // -0.0 ties with +0.0
#if defined(__CUDA_ARCH__)
  const auto u = static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t u;
  std::memcpy(&u, &d, sizeof(u));
#endif
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

/// True when channel a (score sa) ranks before channel b (score sb).
LAKE_HOST_DEVICE inline bool ranks_before(double sa, int64_t a, double sb, int64_t b) {
  const uint64_t ka = ordered_key(sa), kb = ordered_key(sb);
  return ka != kb ? ka > kb : a < b;
}

/// The k best of C scores in that order, written ascending to out[k]. 1 <= k <= C.
/// The keys are computed once; the partial sort compares (key, index) pairs, i.e. ranks_before.
inline void top_k_indices(const double* scores, int64_t C, int64_t k, int64_t* out) {
  std::vector<std::pair<uint64_t, int64_t>> items(static_cast<size_t>(C));
  for (int64_t i = 0; i < C; ++i) items[static_cast<size_t>(i)] = {ordered_key(scores[i]), i};
  std::partial_sort(items.begin(), items.begin() + k, items.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  for (int64_t i = 0; i < k; ++i) out[i] = items[static_cast<size_t>(i)].second;
  std::sort(out, out + k);
}

}  // namespace lake::core
