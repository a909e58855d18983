#pragma once
// The kernels of the dispatcher ops lake::<op> (internal; defined in src/ops/ops.cpp,
// registered in src/ops/registration.cpp), in the C++ types of their schemas. Each checks its
// arguments (the only place they are checked), makes them contiguous, and calls cpu:: or
// cuda:: (src/ops/kernels.h) by the device of its first tensor: that branch is the one device
// decision per op. Registered for the CPU and CUDA dispatch keys, and as the
// CompositeExplicitAutograd fallback, so that an undefined tensor or another device gets the
// op's own error rather than the dispatcher's.

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <cstdint>
#include <optional>
#include <tuple>

namespace lake::ops::kernel {

/// lake::channel_moments(Tensor tokens, Tensor? mask=None) -> (SymInt count, Tensor mean, Tensor m2)
std::tuple<c10::SymInt, at::Tensor, at::Tensor> channel_moments(const at::Tensor& tokens,
                                                            const std::optional<at::Tensor>& mask);
/// lake::top_k(Tensor scores, int k) -> Tensor
at::Tensor top_k(const at::Tensor& scores, int64_t k);
/// lake::gather_normalize(Tensor tokens, Tensor indices, float eps=1e-12) -> Tensor
at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps);
/// lake::nearest_neighbors(Tensor queries, Tensor gallery, int tile=512, int exclude_lo=0,
///                         int exclude_hi=0) -> (Tensor distance, Tensor index)
std::tuple<at::Tensor, at::Tensor> nearest_neighbors(const at::Tensor& queries, const at::Tensor& gallery,
                                                     int64_t tile, int64_t exclude_lo, int64_t exclude_hi);
/// lake::upsample_blur(Tensor maps, int height, int width, float sigma) -> Tensor
at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, double sigma);

}  // namespace lake::ops::kernel
