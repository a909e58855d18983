#pragma once
// The `.lake` file format (internal; NormalityModel::save / load in normality_io.cpp).
//
// Format version 2 (written): a safetensors file.
//   tensors:  neurons.<i>.indices (K) int64, neurons.<i>.scores / .mean / .std (K) float64,
//             galleries.<i> (M, K) float32, for each neuron layer i = 0, 1, ... in tap order;
//             text_embeddings (2, E) float32 when the model has them.
//   __metadata__: one entry, "lake-normality", a JSON object:
//     format = "lake-normality", format_version = 2, lake_version,
//     backbone = {weights_fingerprint (ClipModel::weights_fingerprint: the image tower as
//                 stored in the archive), describe, activation, vision_heads, patch_size,
//                 vision_width, embed_dim, image_mean, image_std},
//     options = {layers, k, score, seed, kind, image_size, text_weight, class_name,
//                normal_prompts, anomaly_prompts, semantic_layer, pooling, blur_sigma,
//                gallery_tile, batch_size}  (resolved: layers, image size, semantic layer, prompts),
//     shots, channels, neurons = [{layer, k}], gallery_rows (M), text_embeddings (bool),
//     image_threshold / pixel_threshold = number or null,
//     checksum = 16 hex digits: normality_v2_checksum of the rest of the object and every tensor.
//
// Format version 1 (read only): a torch.save-format zip holding a pickled dict (LibTorch's
// pickler) with the same fields (checksum: over the parsed state), read by LAKE's code-free
// pickle reader (detail/torch_pickle.h).

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>

namespace lake::detail {

/// Limits a `.lake` file must respect (named in one place); the backbone bounds the rest
/// (layers by its depth, channels by its width, gallery rows by shots x patches).
struct NormalityFileLimits {
  static constexpr int64_t kMaxShots = int64_t(1) << 24;       ///< normal images fitted on
  static constexpr int64_t kMaxPrompts = 100000;               ///< per prompt list
  static constexpr size_t kMaxStringBytes = size_t(1) << 16;   ///< per prompt / class name
};

/// The metadata key of a version-2 file's JSON header.
inline constexpr const char* kNormalityMetadataKey = "lake-normality";

/// The checksum of a version-2 file: a detail::Hasher over the canonical JSON dump of `header`
/// without its "checksum" key, then every tensor (name, dtype, shape, bytes) in name order.
std::string normality_v2_checksum(const nlohmann::json& header, const std::map<std::string, at::Tensor>& tensors);

}  // namespace lake::detail
