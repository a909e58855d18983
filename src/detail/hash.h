#pragma once
// liblake's hasher: lake::core::Hasher (include/lake/core/hash.h, the rule and the digest text)
// plus tensors (internal; fingerprints and checksums, not cryptographic).

#include <ATen/core/Tensor.h>

#include "lake/core/hash.h"

namespace lake::detail {

/// core::Hasher that also takes tensors.
class Hasher : public core::Hasher {
 public:
  /// dtype code, each dimension, then the values' bytes (a CPU, contiguous copy if needed);
  /// an undefined tensor hashes as the single word 0xdeadbeef.
  void tensor(const at::Tensor& t);
};

}  // namespace lake::detail
