// upsample_blur on the CPU. Pass 1, per output row (parallel over B x H): bilinear
// upsampling of the row (torch's half-pixel rule, precomputed column indices and weights)
// into a buffer with r reflected samples on each side, then the horizontal Gaussian as
// 2 r + 1 contiguous multiply-adds. Pass 2, per output row: the vertical Gaussian as a
// weighted sum of 2 r + 1 whole rows of pass 1 (reflected row indices), contiguous in x.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "ops/kernels.h"

namespace lake::ops::cpu {

namespace {

struct Lerp {
  std::vector<int64_t> i0, i1;
  std::vector<float> w0, w1;
};

// torch.nn.functional.interpolate(mode="bilinear", align_corners=False) source indices.
Lerp lerp_table(int64_t in, int64_t out) {
  Lerp t;
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t d = 0; d < out; ++d) {
    const float src = std::max(scale * (static_cast<float>(d) + 0.5f) - 0.5f, 0.0f);
    const int64_t i0 = std::min(static_cast<int64_t>(src), in - 1);
    const float l1 = src - static_cast<float>(i0);
    t.i0.push_back(i0);
    t.i1.push_back(std::min(i0 + 1, in - 1));
    t.w0.push_back(1.0f - l1);
    t.w1.push_back(l1);
  }
  return t;
}

inline int64_t reflect(int64_t i, int64_t n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }

}  // namespace

at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, const at::Tensor& taps_in) {
  const int64_t B = maps.size(0), h = maps.size(1), w = maps.size(2);
  const int64_t r = (taps_in.size(0) - 1) / 2;
  const double* pt = taps_in.data_ptr<double>();
  const std::vector<float> taps(pt, pt + 2 * r + 1);
  const Lerp ys = lerp_table(h, H), xs = lerp_table(w, W);
  auto rows = at::empty({B, H, W}, maps.options());
  const float* in = maps.data_ptr<float>();
  float* pr = rows.data_ptr<float>();

  at::parallel_for(0, B * H, 16, [&](int64_t a, int64_t b) {
    std::vector<float> line(static_cast<size_t>(W + 2 * r));
    for (int64_t row = a; row < b; ++row) {
      const int64_t bi = row / H, y = row % H;
      const float* r0 = in + (bi * h + ys.i0[y]) * w;
      const float* r1 = in + (bi * h + ys.i1[y]) * w;
      const float wy0 = ys.w0[y], wy1 = ys.w1[y];
      float* up = line.data() + r;
      for (int64_t x = 0; x < W; ++x)
        up[x] = wy0 * (xs.w0[x] * r0[xs.i0[x]] + xs.w1[x] * r0[xs.i1[x]]) +
                wy1 * (xs.w0[x] * r1[xs.i0[x]] + xs.w1[x] * r1[xs.i1[x]]);
      float* dst = pr + row * W;
      if (r == 0) {
        std::copy(up, up + W, dst);
        continue;
      }
      for (int64_t k = 1; k <= r; ++k) up[-k] = up[k], up[W - 1 + k] = up[W - 1 - k];
      std::fill(dst, dst + W, 0.0f);
      for (int64_t k = 0; k <= 2 * r; ++k) {
        const float wk = taps[k];
        const float* src = line.data() + k;
        for (int64_t x = 0; x < W; ++x) dst[x] += wk * src[x];
      }
    }
  });
  if (r == 0) return rows;

  auto out = at::empty({B, H, W}, maps.options());
  float* po = out.data_ptr<float>();
  at::parallel_for(0, B * H, 16, [&](int64_t a, int64_t b) {
    for (int64_t row = a; row < b; ++row) {
      const int64_t bi = row / H, y = row % H;
      float* dst = po + row * W;
      std::fill(dst, dst + W, 0.0f);
      for (int64_t k = 0; k <= 2 * r; ++k) {
        const float wk = taps[k];
        const float* src = pr + (bi * H + reflect(y + k - r, H)) * W;
        for (int64_t x = 0; x < W; ++x) dst[x] += wk * src[x];
      }
    }
  });
  return out;
}

}  // namespace lake::ops::cpu
