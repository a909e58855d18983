#pragma once
// Hyper-parameters of a CLIP ViT, as inferred from an archive's parameter shapes.

#include <cstdint>
#include <string>

namespace lake {

/// The MLP non-linearity. OpenAI's CLIP models use QuickGELU (x * sigmoid(1.702 x));
/// most OpenCLIP models trained from scratch (e.g. ViT-B-16-plus-240) use exact GELU.
enum class Activation { QuickGELU, GELU };

/// "quick_gelu" or "gelu".
std::string to_string(Activation a);
/// Parses "quick_gelu" / "quickgelu" / "gelu" (case-insensitive); errors name the input.
Activation parse_activation(const std::string& name);

/// Where the weights came from.
enum class ArchiveKind {
  OpenAIJit,   ///< OpenAI's released TorchScript archives (traced, usually fp16).
  StateDict,   ///< `torch.save(state_dict)` in the OpenAI / OpenCLIP naming.
  LakeExport,    ///< `lake export`: weights, config and vocabulary in one file (v2 safetensors, v1 TorchScript).
  Safetensors,   ///< a `.safetensors` state dict in the OpenAI / OpenCLIP naming.
  Transformers,  ///< a transformers CLIP checkpoint (config.json + model.safetensors / pytorch_model.bin).
  OpenClipHub,   ///< an OpenCLIP hub folder (open_clip_config.json + open_clip_model.safetensors / .bin).
};
std::string to_string(ArchiveKind k);

/// Architecture of a CLIP ViT. Every field is inferred from parameter shapes the way
/// CLIP's own `build_model` does (heads = width / 64 unless the archive records them).
struct ClipConfig {
  int64_t image_size = 0;      ///< trained input resolution (pixels, square)
  int64_t patch_size = 0;      ///< ViT patch size (pixels)
  int64_t vision_width = 0;    ///< residual width D of the image tower
  int64_t vision_layers = 0;   ///< number of residual attention blocks
  int64_t vision_heads = 0;
  int64_t embed_dim = 0;       ///< joint image-text embedding size
  int64_t context_length = 0;  ///< text context (0 when the archive has no text tower)
  int64_t vocab_size = 0;
  int64_t text_width = 0;
  int64_t text_layers = 0;
  int64_t text_heads = 0;
  Activation activation = Activation::QuickGELU;
  /// True when nothing said which activation the MLP uses (not the options, the archive,
  /// its config nor its shapes: a bare state dict), so `activation` is QuickGELU by
  /// assumption; pylake.export refuses to record an assumption.
  bool activation_assumed = false;
  ArchiveKind archive_kind = ArchiveKind::StateDict;
  float image_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};  ///< CLIP normalisation
  float image_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

  /// Patches per side at the trained resolution.
  int64_t grid_size() const { return patch_size > 0 ? image_size / patch_size : 0; }
  /// MLP hidden width (4 D in every CLIP ViT).
  int64_t mlp_width() const { return 4 * vision_width; }
  bool has_text() const { return text_layers > 0; }
  /// One line, e.g. "ViT(image 224, patch 16, width 768, layers 12, heads 12, embed 512, quick_gelu)".
  std::string describe() const;
};

}  // namespace lake
