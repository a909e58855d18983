#pragma once
// The header-only core's configuration (include/lake/core/, docs/core.md).
//
// lake/core/*.h are ATen-free: templates and inline functions over raw memory that liblake's
// ATen front ends (src/eval/metrics.cpp) call and that a C++ user can include without LibTorch:
//   g++ -std=c++17 -I <lake>/include my.cpp
// The metric headers need only the standard library.
//
// LAKE_HOST_DEVICE marks the functions that CUDA code may call on the device too (as
// pytorch3d's pulsar does): `__host__ __device__` when nvcc (or hipcc) compiles, empty
// otherwise. Only small scalar functions carry it; anything that allocates (std::vector) or
// sorts is host only.

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LAKE_HOST_DEVICE __host__ __device__
#else
#define LAKE_HOST_DEVICE
#endif

namespace lake::core {

/// The mask / label convention of the core: nonzero is set (anomalous, foreground); bool,
/// integer and floating inputs all work.
template <typename T>
LAKE_HOST_DEVICE constexpr bool is_set(T v) {
  return v != T(0);
}

}  // namespace lake::core
