#pragma once
// The 64-bit running hash behind LAKE's model fingerprints and .lake file checksums
// (header-only core, docs/core.md). Not cryptographic: it detects corruption and tells
// backbones apart, it does not resist an adversary.
//
// The rule, fixed by the files already written (changing it invalidates every checksum):
//   seed  h = 1469598103934665603 (FNV-1a's 64-bit offset basis)
//   word(w): h ^= w + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2); h *= 0xff51afd7ed558ccd; h ^= h >> 33
//   bytes(p, n): each whole 8-byte block read as a native (little-endian on every platform
//     LAKE builds for) uint64_t and passed to word(); the remaining n % 8 bytes one at a time
//     with FNV-1a's step h = (h ^ byte) * 1099511628211
//   str(s): word(s.size()), then bytes(s)
//   hex(): h as 16 lower-case hex digits, zero-padded.
// liblake's detail::Hasher (src/detail/hash.h) adds tensor(): dtype, shape, then the values.
//
// Standard library and fmt (for hex()) only.

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace lake::core {

class Hasher {
 public:
  static constexpr uint64_t kSeed = 1469598103934665603ull;

  /// n bytes from data: 8-byte words through word(), the tail byte by byte (FNV-1a).
  void bytes(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      word(w);
    }
    for (; i < n; ++i) h_ = (h_ ^ p[i]) * 1099511628211ull;
  }

  /// One 64-bit value (a length, a dtype code, a dimension).
  void word(uint64_t w) {
    h_ ^= w + 0x9e3779b97f4a7c15ull + (h_ << 6) + (h_ >> 2);
    h_ *= 0xff51afd7ed558ccdull;
    h_ ^= h_ >> 33;
  }

  /// A string with its length first, so that ("ab", "c") and ("a", "bc") differ.
  void str(std::string_view s) {
    word(static_cast<uint64_t>(s.size()));
    bytes(s.data(), s.size());
  }

  uint64_t value() const { return h_; }

  /// The digest as 16 lower-case hex digits ("00000aa22bf47f71").
  std::string hex() const { return fmt::format("{:016x}", h_); }

 private:
  uint64_t h_ = kSeed;
};

}  // namespace lake::core
