#pragma once
// Loading a CLIP ViT from an archive, and its forward pass (ours, in C++: LibTorch has
// no forward hooks, so every intermediate tensor LAKE needs is read here).

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lake/clip_config.h"
#include "lake/dtype.h"  // the dtype names LoadOptions / SaveClipOptions take
#include "lake/tokenizer.h"

namespace lake {

/// How to load an archive. Every field has a default; see docs/archives.md.
struct LoadOptions {
  /// Device the weights live on and the forward runs on.
  c10::Device device = c10::kCPU;
  /// Compute dtype: kFloat (default), or kHalf / kBFloat16 (CUDA). Archives holding
  /// fp16 weights (OpenAI's) are converted to this type.
  c10::ScalarType dtype = c10::kFloat;
  /// Overrides the MLP activation found in (or assumed for) the archive.
  std::optional<Activation> activation;
  /// Override the head counts (0: recorded in the archive, else width / 64 as CLIP does).
  int64_t vision_heads = 0;
  int64_t text_heads = 0;
  /// Load the text tower too (needed by `encode_text` and the semantic branch).
  bool load_text = true;
};

/// Which intermediate tensors a pass through the image tower keeps. Layers are
/// 1-based block indices (block l's output is the residual stream after l blocks).
struct VisionTaps {
  std::vector<int64_t> residual_layers;  ///< keep the residual stream after these blocks
  std::vector<int64_t> mlp_layers;       ///< keep these blocks' MLP hidden units (after the activation)
  int64_t project_layer = 0;             ///< block whose patch tokens go through ln_post and proj (0: none)
  bool embedding = false;                ///< run all blocks and return the image embedding
};

/// Result of `ClipModel::forward_vision`. Token tensors include the CLS token at index 0.
struct VisionForward {
  std::vector<at::Tensor> residual;  ///< per residual_layers entry: (B, 1 + N, D)
  std::vector<at::Tensor> mlp;       ///< per mlp_layers entry: (B, 1 + N, 4 D)
  at::Tensor projected;              ///< (B, N, E) patch tokens of project_layer through ln_post, proj
  at::Tensor embedding;              ///< (B, E) when taps.embedding
  int64_t grid_h = 0;                ///< patch grid rows: H / patch_size
  int64_t grid_w = 0;                ///< patch grid columns: W / patch_size
  int64_t blocks_run = 0;            ///< how many blocks were evaluated
};

/// A loaded CLIP ViT. Cheap to copy (copies share the weights); const methods are
/// safe to call from several threads at once.
class ClipModel {
 public:
  struct Impl;
  explicit ClipModel(std::shared_ptr<const Impl> impl);

  const ClipConfig& config() const;
  c10::Device device() const;
  c10::ScalarType dtype() const;
  /// The file the model was loaded from.
  const std::string& path() const;

  /// (B, 3, H, W) floating images, CLIP-normalised, H and W multiples of the patch size
  /// (any size: the positional embedding is resized bicubically from the trained grid)
  /// -> (B, embed_dim) image embeddings (not normalised), in the model's dtype.
  at::Tensor encode_image(const at::Tensor& images) const;

  /// (T, L) int64 token ids, L <= context_length (see Tokenizer::tokenize)
  /// -> (T, embed_dim) text embeddings (not normalised). Needs the text tower.
  at::Tensor encode_text(const at::Tensor& tokens) const;

  /// The image tower with taps: stops after the deepest block that `taps` needs.
  VisionForward forward_vision(const at::Tensor& images, const VisionTaps& taps) const;

  /// Positional embedding for a grid_h x grid_w patch grid: (1 + grid_h * grid_w, D),
  /// bicubic interpolation of the trained grid (antialiased when shrinking), cached.
  at::Tensor positional_embedding(int64_t grid_h, int64_t grid_w) const;

  /// The BPE vocabulary embedded in the archive (LAKE exports), or nullptr.
  std::shared_ptr<const Tokenizer> tokenizer() const;

  /// Parameter names in the OpenAI layout ("visual.conv1.weight", ...), sorted.
  std::vector<std::string> parameter_names() const;
  /// A parameter as loaded (model dtype and device). Errors name unknown names.
  at::Tensor parameter(const std::string& name) const;

  /// 64-bit hash of the parameter names, shapes and values (as loaded), as 16 hex digits.
  /// Identifies the backbone a normality model was fitted with.
  std::string fingerprint() const;
  /// 64-bit hash of the archive's image-tower parameters ("visual.*") as stored in the file:
  /// names, stored dtypes, shapes and bytes, taken before conversion to the compute dtype and
  /// device. Every load of one archive has the same value whatever its dtype, device or
  /// load_text (the text tower is not hashed). The same image-tower tensors stored in the same
  /// dtype give the same value in any file; stored in another dtype (an fp16 copy), another.
  /// Identifies the backbone of a `.lake` file (format version 2).
  const std::string& weights_fingerprint() const;

  const Impl& impl() const { return *impl_; }

 private:
  std::shared_ptr<const Impl> impl_;
};

/// Loads a CLIP ViT from `path`: an OpenAI TorchScript archive, a `torch.save(state_dict)`
/// or `.safetensors` file in the OpenAI / OpenCLIP naming, a transformers CLIP checkpoint
/// (its folder or a weights file beside its config.json), an OpenCLIP hub folder
/// (open_clip_config.json + open_clip_model.safetensors / open_clip_pytorch_model.bin, or
/// one of those files; heads, activation and mean/std from the config), or a LAKE export.
/// Hyper-parameters are inferred from the parameter shapes. Errors name the file and what was expected: missing file,
/// not an archive, truncated archive, missing or misshapen parameters, ResNet CLIP.
ClipModel load_clip(const std::string& path, const LoadOptions& options = {});

/// The keys under which training checkpoints keep their state dict (OpenCLIP's
/// {"epoch": .., "state_dict": {...}}, others' "model" / "model_state_dict"), tried in order by
/// `load_clip` (a torch.save file) and by pylake.export (a mapping in memory).
inline constexpr const char* kCheckpointStateDictKeys[] = {"state_dict", "model", "model_state_dict"};

/// The prefixes wrappers put before every parameter name, removed in this order while every
/// name has one (by `load_clip` and `clip_from_state_dict`): DataParallel /
/// DistributedDataParallel ("module."), torch.compile ("_orig_mod.").
inline constexpr const char* kWrapperPrefixes[] = {"module.", "_orig_mod."};

/// Builds a CLIP ViT from tensors in memory, named in the OpenAI layout ("visual.conv1.weight",
/// ...; what `parameter_names()` lists; kWrapperPrefixes removed), exactly as `load_clip` builds
/// one from a state dict file: the architecture inferred from the shapes and every shape checked. The tensors are
/// shared, not copied, where they already have the compute dtype and device. `name` stands for
/// the file in errors and becomes `path()`. `image_mean` / `image_std`: 3 values each, the
/// normalisation recorded in the config (empty: OpenAI's).
ClipModel clip_from_state_dict(std::map<std::string, at::Tensor> tensors, const LoadOptions& options = {},
                               const std::string& name = "<state dict>", const std::vector<float>& image_mean = {},
                               const std::vector<float>& image_std = {});

/// How `save_clip` writes a LAKE export.
struct SaveClipOptions {
  /// dtype of the stored weights: kFloat (default), kHalf or kBFloat16.
  c10::ScalarType dtype = c10::kFloat;
  /// The gzip'd BPE merges file to embed (bpe_simple_vocab_16e6.txt.gz's bytes); empty: the
  /// model's own (a LAKE export's), else none.
  std::string vocabulary;
  /// Free text recorded as the "source" metadata entry.
  std::string source;
};

/// Writes `model` as a LAKE export, format version 2: a safetensors file holding every
/// parameter under its OpenAI name (`parameter_names()`, converted to `options.dtype`) and,
/// in its metadata, format=lake-clip, format_version=2, the activation, every ClipConfig
/// hyper-parameter, the normalisation mean/std, the source and the vocabulary (base64 under
/// "vocabulary_gz_base64"); see docs/archives.md. Written atomically, one tensor converted at
/// a time. Returns the metadata written, without the vocabulary. `load_clip` reads it back.
std::map<std::string, std::string> save_clip(const ClipModel& model, const std::string& path,
                                             const SaveClipOptions& options = {});

}  // namespace lake
