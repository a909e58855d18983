// The kernels of the dispatcher ops lake::<op> (registered in src/ops/registration.cpp):
// input checks, layout, and the one device branch per op (CPU or CUDA). The checks live
// here only: every caller (lake::ops::*, torch.ops.lake.*, pylake._C.ops.*) goes through them.

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <cmath>
#include <vector>

#include "detail/format.h"
#include "lake/core/resample.h"
#include "ops/dispatch_kernels.h"
#include "ops/kernels.h"

namespace lake::ops {

bool cuda_kernels_available() {
#ifdef LAKE_HAS_CUDA
  return true;
#else
  return false;
#endif
}

namespace {

bool is_float_type(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}

// The single device decision: CPU or CUDA, anything else is an error.
bool on_cuda(const at::Tensor& t, const char* op) {
  if (t.device().is_cpu()) return false;
  TORCH_CHECK(t.device().is_cuda(),
              fmt::format("{}: tensors on {} are not supported (expected CPU or CUDA)", op, t.device()));
  TORCH_CHECK(cuda_kernels_available(),
              fmt::format("{}: got a tensor on {} but this build of LAKE has no CUDA kernels (configure with "
                          "-DLAKE_WITH_CUDA=ON)",
                          op, t.device()));
  return true;
}

}  // namespace

#ifdef LAKE_HAS_CUDA
#define LAKE_DISPATCH(cuda_flag, call) ((cuda_flag) ? cuda::call : cpu::call)
#else
#define LAKE_DISPATCH(cuda_flag, call) ((void)(cuda_flag), cpu::call)
#endif

namespace kernel {

std::tuple<c10::SymInt, at::Tensor, at::Tensor> channel_moments(const at::Tensor& tokens,
                                                            const std::optional<at::Tensor>& mask_opt) {
  const at::Tensor mask = mask_opt.value_or(at::Tensor());
  TORCH_CHECK_VALUE(tokens.defined() && tokens.dim() == 2 && is_float_type(tokens),
                    fmt::format("channel_moments: expected (T, C) float32/float64/float16/bfloat16 tokens, got {} {}",
                                tokens.defined() ? tokens.sizes() : at::IntArrayRef{},
                                tokens.defined() ? tokens.scalar_type() : at::ScalarType::Undefined));
  at::Tensor m;
  if (mask.defined()) {
    TORCH_CHECK_VALUE(mask.dim() == 1 && mask.size(0) == tokens.size(0) && mask.scalar_type() == at::kBool,
                      fmt::format("channel_moments: expected a ({}) bool token mask, got {} {}", tokens.size(0),
                                  mask.sizes(), mask.scalar_type()));
    TORCH_CHECK_VALUE(mask.device() == tokens.device(),
                      fmt::format("channel_moments: the mask is on {}, the tokens on {}", mask.device(),
                                  tokens.device()));
    m = mask.contiguous();
  }
  const bool cuda = on_cuda(tokens, "channel_moments");
  if (tokens.size(0) == 0 || tokens.size(1) == 0) {
    auto z = at::zeros({tokens.size(1)}, tokens.options().dtype(at::kDouble));
    return {c10::SymInt(0), z, z.clone()};
  }
  Moments r = LAKE_DISPATCH(cuda, channel_moments(tokens.contiguous(), m));
  return {c10::SymInt(r.count), std::move(r.mean), std::move(r.m2)};
}

at::Tensor top_k(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK_VALUE(scores.defined() && scores.dim() == 1 && is_float_type(scores),
                    fmt::format("top_k: expected (C) floating scores, got {}",
                                scores.defined() ? scores.sizes() : at::IntArrayRef{}));
  const int64_t c = scores.size(0);
  TORCH_CHECK_VALUE(k >= 1 && k <= c,
                    fmt::format("k = {} neurons requested, but the layer has {} channels: expected 1 <= k <= {}",
                                k, c, c));
  const bool cuda = on_cuda(scores, "top_k");
  return LAKE_DISPATCH(cuda, top_k(scores.to(at::kDouble).contiguous(), k));
}

}  // namespace kernel

namespace {

void check_gather_args(const at::Tensor& tokens, const at::Tensor& indices, double eps) {
  TORCH_CHECK_VALUE(tokens.defined() && tokens.dim() == 2 && is_float_type(tokens),
                    fmt::format("gather_normalize: expected (T, C) float32/float64/float16/bfloat16 tokens, got {}",
                                tokens.defined() ? tokens.sizes() : at::IntArrayRef{}));
  TORCH_CHECK_VALUE(indices.defined() && indices.dim() == 1 && indices.scalar_type() == at::kLong,
                    fmt::format("gather_normalize: expected (K) int64 channel indices, got {} {}",
                                indices.defined() ? indices.sizes() : at::IntArrayRef{},
                                indices.defined() ? indices.scalar_type() : at::ScalarType::Undefined));
  // {:g}: the double as the stream printed it (6 significant digits).
  TORCH_CHECK_VALUE(eps > 0, fmt::format("gather_normalize: eps must be > 0, got {:g}", eps));
}

// indices: in range, on the tokens' device; cuda: on_cuda(tokens).
at::Tensor gather_normalize_impl(const at::Tensor& tokens, const at::Tensor& indices, double eps, bool cuda) {
  if (tokens.size(0) == 0 || indices.numel() == 0)
    return at::zeros({tokens.size(0), indices.numel()}, tokens.options().dtype(at::kFloat));
  return LAKE_DISPATCH(cuda, gather_normalize(tokens.contiguous(), indices.contiguous(), eps));
}

}  // namespace

namespace kernel {

at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps) {
  check_gather_args(tokens, indices, eps);
  const int64_t C = tokens.size(1);
  if (indices.numel() > 0) {
    auto idx_cpu = indices.to(at::kCPU);
    const int64_t lo = idx_cpu.min().item<int64_t>(), hi = idx_cpu.max().item<int64_t>();
    TORCH_CHECK_INDEX(lo >= 0 && hi < C,
                      fmt::format("gather_normalize: channel indices must lie in [0, {}), got values in [{}, {}]", C,
                                  lo, hi));
  }
  const bool cuda = on_cuda(tokens, "gather_normalize");
  return gather_normalize_impl(tokens, indices.to(tokens.device()), eps, cuda);
}

}  // namespace kernel

// Not a dispatcher op (an index out of range would read out of bounds, so it is not exposed
// to torch.ops / Python), but recorded under the op's name so that profiles of the scoring
// path name it like the checked variant.
at::Tensor gather_normalize_unchecked(const at::Tensor& tokens, const at::Tensor& indices, double eps) {
  RECORD_FUNCTION("lake::gather_normalize", std::vector<c10::IValue>({tokens, indices}));
  check_gather_args(tokens, indices, eps);
  TORCH_CHECK_VALUE(indices.device() == tokens.device(),
                    fmt::format("gather_normalize_unchecked: the indices are on {}, the tokens on {} (expected the "
                                "same device)",
                                indices.device(), tokens.device()));
  return gather_normalize_impl(tokens, indices, eps, on_cuda(tokens, "gather_normalize"));
}

namespace kernel {

std::tuple<at::Tensor, at::Tensor> nearest_neighbors(const at::Tensor& queries_in, const at::Tensor& gallery_in,
                                                     int64_t tile, int64_t exclude_lo, int64_t exclude_hi) {
  NearestOptions o;
  o.tile = tile;
  o.exclude_lo = exclude_lo;
  o.exclude_hi = exclude_hi;
  TORCH_CHECK_VALUE(queries_in.defined() && gallery_in.defined() && queries_in.dim() == gallery_in.dim() &&
                        (queries_in.dim() == 2 || queries_in.dim() == 3),
                    fmt::format("nearest_neighbors: expected (L, Q, K) queries and (L, M, K) gallery (or (Q, K) and "
                                "(M, K)), got {} and {}",
                                queries_in.defined() ? queries_in.sizes() : at::IntArrayRef{},
                                gallery_in.defined() ? gallery_in.sizes() : at::IntArrayRef{}));
  auto q = queries_in.dim() == 2 ? queries_in.unsqueeze(0) : queries_in;
  auto g = gallery_in.dim() == 2 ? gallery_in.unsqueeze(0) : gallery_in;
  TORCH_CHECK_VALUE(q.size(0) == g.size(0) && q.size(2) == g.size(2),
                    fmt::format("nearest_neighbors: queries {} and gallery {} must agree in layers L and channels K",
                                queries_in.sizes(), gallery_in.sizes()));
  const auto st = q.scalar_type();
  TORCH_CHECK_VALUE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16,
                    fmt::format("nearest_neighbors: expected float32, float16 or bfloat16 rows, got {}", st));
  TORCH_CHECK_VALUE(g.scalar_type() == st,
                    fmt::format("nearest_neighbors: queries are {} but the gallery is {}", st, g.scalar_type()));
  TORCH_CHECK_VALUE(q.device() == g.device(),
                    fmt::format("nearest_neighbors: queries are on {}, the gallery on {}", q.device(), g.device()));
  TORCH_CHECK_VALUE(o.tile >= 1, fmt::format("nearest_neighbors: tile must be >= 1, got {}", o.tile));
  TORCH_CHECK_VALUE(o.exclude_lo >= 0 && o.exclude_hi >= 0,
                    fmt::format("nearest_neighbors: the excluded rows [{}, {}) must not be negative", o.exclude_lo,
                                o.exclude_hi));
  TORCH_CHECK_VALUE(q.size(2) >= 1,
                    fmt::format("nearest_neighbors: expected at least one channel (K >= 1), got {}", q.sizes()));
  const bool cuda = on_cuda(q, "nearest_neighbors");
  const int64_t L = q.size(0), Q = q.size(1);
  if (L == 0 || Q == 0 || g.size(1) == 0) {  // nothing to search: every query is as far as can be
    return {at::ones({L, Q}, q.options().dtype(at::kFloat)), at::full({L, Q}, -1, q.options().dtype(at::kLong))};
  }
  NearestNeighbors r = LAKE_DISPATCH(cuda, nearest_neighbors(q.contiguous(), g.contiguous(), o));
  return {std::move(r.distance), std::move(r.index)};
}

}  // namespace kernel

at::Tensor gaussian_taps(double sigma, int64_t max_radius) {
  // {:g}: the double as the stream printed it (6 significant digits).
  TORCH_CHECK_VALUE(sigma >= 0 && std::isfinite(sigma),
                    fmt::format("gaussian_taps: sigma must be finite and >= 0, got {:g}", sigma));
  return at::tensor(core::gaussian_taps(sigma, max_radius), at::kDouble);
}

namespace kernel {

at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, double sigma) {
  TORCH_CHECK_VALUE(maps.defined() && maps.dim() == 3 && maps.size(1) > 0 && maps.size(2) > 0,
                    fmt::format("upsample_blur: expected (B, h, w) maps with h, w >= 1, got {}",
                                maps.defined() ? maps.sizes() : at::IntArrayRef{}));
  TORCH_CHECK_VALUE(maps.scalar_type() == at::kFloat,
                    fmt::format("upsample_blur: expected float32 maps, got {}", maps.scalar_type()));
  TORCH_CHECK_VALUE(H >= 1 && W >= 1,
                    fmt::format("upsample_blur: expected an output size of at least 1 x 1, got {} x {}", H, W));
  const bool cuda = on_cuda(maps, "upsample_blur");
  auto taps = gaussian_taps(sigma, std::min(H, W) - 1);
  if (maps.size(0) == 0) return at::empty({0, H, W}, maps.options());
  return LAKE_DISPATCH(cuda, upsample_blur(maps.contiguous(), H, W, taps));
}

}  // namespace kernel

#undef LAKE_DISPATCH

}  // namespace lake::ops
