#pragma once
// The check of a (B, 3, H, W) image batch, one rule for every entry point that takes one
// (internal): ClipModel.encode_image / forward_vision, NeuronProbe, NormalityModel.fit /
// score / calibrate / explain. The backbone adds its own rule on top (H and W multiples of
// the patch size, src/model/clip_model.cpp).

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <string>
#include <string_view>

#include "detail/format.h"

namespace lake::detail {

/// Who checks and what it calls the batch: "NormalityModel.fit(normal_images): expected (k, 3, H, W) ...".
struct ImageBatchSpec {
  std::string_view entry;          ///< the entry point, as the user calls it
  std::string_view arg = "images"; ///< the argument's name
  char batch = 'B';                ///< the batch dimension's letter in the message
  bool allow_empty = false;        ///< B = 0 allowed (fit zero-shot)
};

/// The one message text: "<entry>(<arg>): expected <qualifier>(<B>, 3, H, W) images<condition>, got <got>".
inline std::string image_batch_message(const ImageBatchSpec& spec, std::string_view qualifier,
                                       std::string_view condition, const std::string& got) {
  return fmt::format("{}({}): expected {}({}, 3, H, W) images{}, got {}", spec.entry, spec.arg, qualifier, spec.batch,
                     condition, got);
}

/// A c10::ValueError (Python ValueError) unless `images` is a defined 4-d tensor with 3
/// (RGB) channels, B >= 1 (B >= 0 with spec.allow_empty) and, when B >= 1, H, W >= 1 and
/// a floating dtype (CLIP-normalised values).
inline void check_image_batch(const at::Tensor& images, const ImageBatchSpec& spec) {
  TORCH_CHECK_VALUE(images.defined(), image_batch_message(spec, "", "", "an undefined tensor"));
  // "got": a tensor of another rank is "a tensor of shape [3, 32]", a batch with a wrong size "shape [1, 4, 32, 32]".
  TORCH_CHECK_VALUE(images.dim() == 4,
                    image_batch_message(spec, "", "", fmt::format("a tensor of shape {}", images.sizes())));
  auto shape = [&] { return fmt::format("shape {}", images.sizes()); };
  TORCH_CHECK_VALUE(images.size(1) == 3, image_batch_message(spec, "", " with 3 (RGB) channels", shape()));
  if (images.size(0) == 0) {
    TORCH_CHECK_VALUE(spec.allow_empty, image_batch_message(spec, "a non-empty batch of ", "", shape()));
    return;
  }
  TORCH_CHECK_VALUE(images.size(2) > 0 && images.size(3) > 0, image_batch_message(spec, "", " with H, W >= 1", shape()));
  TORCH_CHECK_VALUE(at::isFloatingType(images.scalar_type()),
                    image_batch_message(spec, "floating-point (CLIP-normalised) ", "",
                                        fmt::format("dtype {}", images.scalar_type())));
}

}  // namespace lake::detail
