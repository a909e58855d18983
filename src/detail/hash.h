#pragma once
// A 64-bit running hash for fingerprints and checksums (internal; not cryptographic).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace lake {

namespace detail {
/// A 64-bit running hash (FNV-1a over bytes, a multiply-xorshift mix over 8-byte words).
class Hasher {
 public:
  void bytes(const void* data, size_t n);
  void str(const std::string& s) { uint64_t n = s.size(); word(n); bytes(s.data(), s.size()); }
  void word(uint64_t w);
  /// Shape, dtype and the values of a tensor (CPU, contiguous copy if needed).
  void tensor(const at::Tensor& t);
  uint64_t value() const { return h_; }
  std::string hex() const;

 private:
  uint64_t h_ = 1469598103934665603ull;
};
}  // namespace detail

}  // namespace lake
