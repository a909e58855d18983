// upsample_blur on the CPU, the two passes of lake/core/resample.h. Pass 1, per output row
// (parallel over B x H): bilinear upsampling of the row (torch's half-pixel rule, a
// precomputed lerp table per axis) into a buffer with r reflected samples on each side, then
// the horizontal Gaussian as 2 r + 1 contiguous multiply-adds. Pass 2, per output row: the
// vertical Gaussian as a weighted sum of 2 r + 1 whole rows of pass 1 (reflected row indices).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "lake/core/resample.h"
#include "ops/kernels.h"

namespace lake::ops::cpu {

at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, const at::Tensor& taps_in) {
  const int64_t B = maps.size(0), h = maps.size(1), w = maps.size(2);
  const int64_t r = (taps_in.size(0) - 1) / 2;
  const double* pt = taps_in.data_ptr<double>();
  const std::vector<float> taps(pt, pt + 2 * r + 1);
  const auto ys = core::lerp_table(h, H), xs = core::lerp_table(w, W);
  auto rows = at::empty({B, H, W}, maps.options());
  const float* in = maps.data_ptr<float>();
  float* pr = rows.data_ptr<float>();
  at::parallel_for(0, B * H, 16, [&](int64_t a, int64_t b) {
    std::vector<float> line(static_cast<size_t>(W + 2 * r));
    for (int64_t row = a; row < b; ++row)
      core::upsample_blur_row(in + (row / H) * h * w, w, ys, xs, row % H, taps.data(), r, line.data(), pr + row * W);
  });
  if (r == 0) return rows;

  auto out = at::empty({B, H, W}, maps.options());
  float* po = out.data_ptr<float>();
  at::parallel_for(0, B * H, 16, [&](int64_t a, int64_t b) {
    for (int64_t row = a; row < b; ++row)
      core::blur_column_row(pr + (row / H) * H * W, H, W, row % H, taps.data(), r, po + row * W);
  });
  return out;
}

}  // namespace lake::ops::cpu
