#pragma once
// Eigen::NumTraits for LibTorch's half types (internal): lets the core's Eigen maps
// (lake/core/moments.h, rows.h) read float16 / bfloat16 tokens in place. Eigen does not
// vectorise them; each element is widened with c10's own conversion, as ATen does.

#include <Eigen/Core>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace Eigen {
template <>
struct NumTraits<c10::Half> : GenericNumTraits<c10::Half> {};
template <>
struct NumTraits<c10::BFloat16> : GenericNumTraits<c10::BFloat16> {};
}  // namespace Eigen
