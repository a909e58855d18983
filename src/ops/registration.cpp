// The anomaly head's kernels as dispatcher ops: the schemas (TORCH_LIBRARY(lake, m)), the
// kernels for each dispatch key, and the C++ entry points lake::ops::*, which call the ops
// through the dispatcher so that torch.profiler names them (lake::<op>) whoever calls them.
//
// The entry points live in this file on purpose: liblake is a static library, and a program
// that calls any lake::ops function links this object, and with it the static registration
// below (an object file nothing refers to would be dropped by the linker).
//
// Fake (meta) kernels, for FakeTensor / torch.compile, are Python: python/pylake/_ops.py
// (set_python_module below names it, so torch's errors say what to import).

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "lake/ops/ops.h"
#include "ops/dispatch_kernels.h"

// ---- schemas ------------------------------------------------------------------------------
TORCH_LIBRARY(lake, m) {
  m.set_python_module("pylake._ops");
  m.def("channel_moments(Tensor tokens, Tensor? mask=None) -> (SymInt count, Tensor mean, Tensor m2)");
  m.def("top_k(Tensor scores, int k) -> Tensor");
  m.def("gather_normalize(Tensor tokens, Tensor indices, float eps=1e-12) -> Tensor");
  m.def("nearest_neighbors(Tensor queries, Tensor gallery, int tile=512, int exclude_lo=0, int exclude_hi=0)"
        " -> (Tensor distance, Tensor index)");
  m.def("upsample_blur(Tensor maps, int height, int width, float sigma) -> Tensor");
}

namespace lake::ops::registration {

// The same kernels for every key: each makes the one CPU / CUDA decision by its first
// tensor (gather_normalize's indices may live on another device than the tokens), and a
// build without CUDA kernels answers CUDA tensors with "no CUDA kernels" (not the
// dispatcher's "could not run ... with arguments from the 'CUDA' backend").
void register_kernels(torch::Library& m) {
  m.impl("channel_moments", TORCH_FN(kernel::channel_moments));
  m.impl("top_k", TORCH_FN(kernel::top_k));
  m.impl("gather_normalize", TORCH_FN(kernel::gather_normalize));
  m.impl("nearest_neighbors", TORCH_FN(kernel::nearest_neighbors));
  m.impl("upsample_blur", TORCH_FN(kernel::upsample_blur));
}

}  // namespace lake::ops::registration

TORCH_LIBRARY_IMPL(lake, CPU, m) { lake::ops::registration::register_kernels(m); }
TORCH_LIBRARY_IMPL(lake, CUDA, m) { lake::ops::registration::register_kernels(m); }
// Undefined tensors (C++ callers) and devices other than CPU / CUDA: the op's own checks
// raise its usual error (ValueError on an undefined tensor, "not supported" on another device).
// Meta keeps the Python fake kernels (a direct Meta registration wins over this alias).
TORCH_LIBRARY_IMPL(lake, CompositeExplicitAutograd, m) { lake::ops::registration::register_kernels(m); }

// ---- C++ entry points: through the dispatcher ---------------------------------------------
namespace lake::ops {

namespace registration {

template <class Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace registration

Moments channel_moments(const at::Tensor& tokens, const at::Tensor& mask) {
  static const auto op = registration::find<std::tuple<c10::SymInt, at::Tensor, at::Tensor>(
      const at::Tensor&, const std::optional<at::Tensor>&)>("lake::channel_moments");
  auto [count, mean, m2] = op.call(tokens, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt);
  return {count.expect_int(), std::move(mean), std::move(m2)};
}

at::Tensor top_k(const at::Tensor& scores, int64_t k) {
  static const auto op = registration::find<at::Tensor(const at::Tensor&, int64_t)>("lake::top_k");
  return op.call(scores, k);
}

at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps) {
  static const auto op =
      registration::find<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("lake::gather_normalize");
  return op.call(tokens, indices, eps);
}

NearestNeighbors nearest_neighbors(const at::Tensor& queries, const at::Tensor& gallery, const NearestOptions& o) {
  static const auto op = registration::find<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t)>("lake::nearest_neighbors");
  auto [distance, index] = op.call(queries, gallery, o.tile, o.exclude_lo, o.exclude_hi);
  return {std::move(distance), std::move(index)};
}

at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, double sigma) {
  static const auto op =
      registration::find<at::Tensor(const at::Tensor&, int64_t, int64_t, double)>("lake::upsample_blur");
  return op.call(maps, H, W, sigma);
}

}  // namespace lake::ops
