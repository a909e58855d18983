// detail::Hasher: the 64-bit hash behind model fingerprints and file checksums.

#include <ATen/ATen.h>

#include <cstring>
#include <iomanip>
#include <sstream>

#include "detail/hash.h"

namespace lake::detail {

void Hasher::bytes(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    word(w);
  }
  for (; i < n; ++i) h_ = (h_ ^ p[i]) * 1099511628211ull;
}

void Hasher::word(uint64_t w) {
  h_ ^= w + 0x9e3779b97f4a7c15ull + (h_ << 6) + (h_ >> 2);
  h_ *= 0xff51afd7ed558ccdull;
  h_ ^= h_ >> 33;
}

void Hasher::tensor(const at::Tensor& t) {
  if (!t.defined()) {
    word(0xdeadbeefull);
    return;
  }
  word(static_cast<uint64_t>(t.scalar_type()));
  for (int64_t s : t.sizes()) word(static_cast<uint64_t>(s));
  auto c = t.to(at::kCPU).contiguous();
  bytes(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
}

std::string Hasher::hex() const {
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << h_;
  return os.str();
}

}  // namespace lake::detail
