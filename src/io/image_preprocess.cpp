// CLIP preprocessing as torchvision and PIL do it (bicubic antialiased resize in PIL's two
// rounded passes, centre crop, ToTensor + Normalize), clip_normalize, and resize_mask
// (PIL's nearest-neighbour rule).

#include "lake/image_io.h"

#include "detail/format.h"
#include "detail/limits.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lake::detail::image_io {
namespace {

void check_mean_std(const float mean[3], const float stdev[3], const char* what) {
  TORCH_CHECK_VALUE(mean != nullptr && stdev != nullptr, fmt::format("{}: mean and std must point to 3 floats", what));
  for (int c = 0; c < 3; ++c) {
    TORCH_CHECK_VALUE(std::isfinite(mean[c]), fmt::format("{}: mean[{}] = {:g} is not finite", what, c, mean[c]));
    TORCH_CHECK_VALUE(std::isfinite(stdev[c]) && stdev[c] > 0,
                      fmt::format("{}: std[{}] = {:g}, expected a positive number", what, c, stdev[c]));
  }
}

// As ToTensor + Normalize: float32 x / 255, then (x - mean) / std. x: (3, H, W) with values 0..255.
at::Tensor normalize(const at::Tensor& x, const float mean[3], const float stdev[3]) {
  const auto dev = x.device();
  at::Tensor m = at::tensor(std::vector<float>(mean, mean + 3), at::kFloat).to(dev).view({3, 1, 1});
  at::Tensor s = at::tensor(std::vector<float>(stdev, stdev + 3), at::kFloat).to(dev).view({3, 1, 1});
  return x.to(at::kFloat).div_(255).sub_(m).div_(s).contiguous();
}

// Round half up (PIL's fixed-point rounding) and clamp to [0, 255].
at::Tensor round_clamp(const at::Tensor& x) { return (x + 0.5).floor_().clamp_(0, 255); }

// torchvision's CenterCrop offset int(round(diff / 2.0)): Python rounds ties to even.
int64_t center_offset(int64_t diff) {
  const int64_t k = diff / 2;
  return (diff % 2 == 0 || k % 2 == 0) ? k : k + 1;
}

// PIL's nearest-neighbour source indices (ImagingScaleAffine): x = s / 2, then x += s per
// output pixel, s = in / out, all in double; the index is floor(x). Mathematically the
// centre rule floor((i + 0.5) s); accumulating in double as PIL does decides the ties
// (centres falling exactly on a pixel boundary) the same way PIL does.
at::Tensor nearest_indices(int64_t in, int64_t out) {
  std::vector<int64_t> idx(static_cast<size_t>(out));
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  double x = scale * 0.5;
  for (auto& v : idx) {
    v = std::min(static_cast<int64_t>(x), in - 1);
    x += scale;
  }
  return at::tensor(idx, at::kLong);
}

}  // namespace
}  // namespace lake::detail::image_io

namespace lake {

at::Tensor clip_preprocess(const at::Tensor& image, int64_t size, const float mean[3], const float stdev[3],
                           bool center_crop) {
  using namespace detail::image_io;
  TORCH_CHECK_VALUE(image.defined(), "clip_preprocess: the image is an undefined tensor");
  TORCH_CHECK_VALUE(image.dim() == 3 && image.size(0) == 3,
                    fmt::format("clip_preprocess: expected a (3, H, W) RGB image, got {}", image.sizes()));
  TORCH_CHECK_VALUE(
      image.scalar_type() == at::kByte,
      fmt::format("clip_preprocess: expected a uint8 image (as read_image returns), got {}", image.scalar_type()));
  const int64_t h = image.size(1), w = image.size(2);
  TORCH_CHECK_VALUE(h > 0 && w > 0, fmt::format("clip_preprocess: expected a non-empty image, got {}", image.sizes()));
  TORCH_CHECK_VALUE(size > 0, fmt::format("clip_preprocess: size must be positive, got {}", size));
  check_mean_std(mean, stdev, "clip_preprocess");

  int64_t out_h = size, out_w = size;
  if (center_crop) {  // torchvision Resize(size): the shorter side becomes size
    if (w <= h) out_h = size * h / w;
    else out_w = size * w / h;
  }
  // PIL's separable resize: two passes, each rounded to uint8 values. Computed in double
  // so that only PIL's rounding, not ours, decides the result. Pillow (13) runs the vertical
  // pass first when the height loses more than twice as many pixels as the width, else
  // the horizontal one (measured against Pillow; older Pillow always goes horizontal first).
  // One channel at a time (the passes are per channel), so that the double copy of a large
  // image costs 8 bytes a pixel, not 24 (detail/limits.h).
  TORCH_CHECK_VALUE(
      out_h * out_w <= detail::limits::kDefaultMaxImagePixels,
      fmt::format(
          "clip_preprocess: resizing a {}x{} image to {}x{} would make more than the image pixel limit of {} pixels", h,
          w, out_h, out_w, detail::limits::kDefaultMaxImagePixels));
  const bool vertical_first = out_h < h && (h - out_h) > 2 * (w - out_w);
  std::vector<at::Tensor> planes;
  for (int64_t c = 0; c < 3; ++c) {
    at::Tensor x = image.narrow(0, c, 1).unsqueeze(0).to(at::kDouble);
    if (vertical_first) {
      x = round_clamp(at::_upsample_bicubic2d_aa(x, {out_h, w}, /*align_corners=*/false));
      if (out_w != w) x = round_clamp(at::_upsample_bicubic2d_aa(x, {out_h, out_w}, /*align_corners=*/false));
    } else {
      if (out_w != w) x = round_clamp(at::_upsample_bicubic2d_aa(x, {h, out_w}, /*align_corners=*/false));
      if (out_h != h) x = round_clamp(at::_upsample_bicubic2d_aa(x, {out_h, out_w}, /*align_corners=*/false));
    }
    planes.push_back(x.squeeze(0));
  }
  at::Tensor x = at::cat(planes, 0);
  if (center_crop) {
    x = x.narrow(1, center_offset(out_h - size), size).narrow(2, center_offset(out_w - size), size);
  }
  return normalize(x, mean, stdev);
}

at::Tensor clip_normalize(const at::Tensor& image, const float mean[3], const float stdev[3]) {
  using namespace detail::image_io;
  TORCH_CHECK_VALUE(
      image.defined() && image.dim() == 3 && image.size(0) == 3 && image.scalar_type() == at::kByte,
      fmt::format("clip_normalize: expected a (3, H, W) uint8 RGB image (as read_image returns), got {} {}",
                  image.defined() ? image.sizes() : at::IntArrayRef{},
                  image.defined() ? c10::toString(image.scalar_type()) : "undefined"));
  check_mean_std(mean, stdev, "clip_normalize");
  return normalize(image, mean, stdev);
}

at::Tensor resize_mask(const at::Tensor& mask, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(mask.defined(), "resize_mask: the mask is an undefined tensor");
  TORCH_CHECK_VALUE(mask.dim() == 2, fmt::format("resize_mask: expected a (H, W) bool mask, got {}", mask.sizes()));
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kBool,
                    fmt::format("resize_mask: expected a bool mask, got {}", mask.scalar_type()));
  TORCH_CHECK_VALUE(mask.size(0) > 0 && mask.size(1) > 0,
                    fmt::format("resize_mask: expected a non-empty mask, got {}", mask.sizes()));
  TORCH_CHECK_VALUE(height > 0 && width > 0,
                    fmt::format("resize_mask: expected a positive output size, got {}x{}", height, width));
  using namespace detail::image_io;
  at::Tensor rows = nearest_indices(mask.size(0), height).to(mask.device());
  at::Tensor cols = nearest_indices(mask.size(1), width).to(mask.device());
  return mask.index_select(0, rows).index_select(1, cols);
}

}  // namespace lake
