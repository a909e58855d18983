// detail::Hasher::tensor: a tensor into the 64-bit hash of lake/core/hash.h (fingerprints and
// file checksums).

#include <ATen/ATen.h>

#include "detail/hash.h"

namespace lake::detail {

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

}  // namespace lake::detail
