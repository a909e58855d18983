#pragma once
// NormalityModel: LAKE's few-shot normality model (METHOD.md): sensitive neurons, a
// per-layer gallery of normal patches in that sparse subspace, CLIP's text as a
// secondary verifier, and the fused anomaly map.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lake/clip_model.h"
#include "lake/image_io.h"
#include "lake/neuron_probe.h"
#include "lake/sensitivity_selector.h"

namespace lake {

/// How the image score pools the anomaly map.
enum class Pooling {
  Max,      ///< the map's maximum (METHOD.md default)
  Top1Pct,  ///< the mean of the top 1 % pixels
};
std::string to_string(Pooling p);
Pooling parse_pooling(const std::string& name);

/// Every METHOD.md default, as an option. Python: keyword arguments of the same names.
struct NormalityOptions {
  std::vector<int64_t> layers;        ///< tapped blocks (1-based / negative); empty: quarter points of the depth
  int64_t k = 100;                    ///< sensitive neurons per layer
  SensitivityScore score = SensitivityScore::Variance;
  uint64_t seed = 0;                  ///< for score = Random
  ProbeKind kind = ProbeKind::Residual;
  int64_t image_size = 0;             ///< backbone input S x S; 0: 518 for /14, 240 for /16-plus-240, else the model's
  double text_weight = 0.3;           ///< lambda of the fusion (paper: 0.3 best)
  std::string class_name = "object";  ///< fills the prompt templates
  std::vector<std::string> normal_prompts;   ///< full sentences; empty: the METHOD.md ensemble
  std::vector<std::string> anomaly_prompts;  ///< full sentences; empty: the METHOD.md ensemble
  int64_t semantic_layer = 0;         ///< block whose tokens go through ln_post/proj; 0: the deepest tapped
  Pooling pooling = Pooling::Max;
  double blur_sigma = 4.0;            ///< Gaussian blur of the map, in pixels of the output (0: none)
  int64_t gallery_tile = 512;         ///< gallery rows per tile of the CPU nearest-neighbour search
  /// Images per backbone forward in fit/score/calibrate. 1 (default): every image's result
  /// is bit-identical whatever the batch it arrives in; larger batches are faster on CUDA
  /// and agree with 1 to float rounding (about 1e-6).
  int64_t batch_size = 1;
  std::string vocabulary;             ///< BPE vocabulary file; empty: the one embedded in the model's archive
};

/// What `score` returns. Maps are at the input images' resolution.
struct Prediction {
  at::Tensor pred_score;    ///< (B) float32 image scores
  at::Tensor anomaly_map;   ///< (B, H, W) float32
  at::Tensor pred_label;    ///< (B) bool, when an image threshold is set
  at::Tensor pred_mask;     ///< (B, H, W) bool, when a pixel threshold is set
  at::Tensor visual_map;    ///< (B, H, W) the visual branch alone, on request
  at::Tensor semantic_map;  ///< (B, H, W) the semantic branch alone, on request
};

/// One neuron of an explanation.
struct NeuronDeviation {
  int64_t layer = 0;     ///< 1-based block
  int64_t channel = 0;   ///< channel index in that layer's tokens
  double deviation = 0;  ///< max over patches of |activation - normal mean| / normal std
  at::Tensor map;        ///< (H, W) float32 per-pixel deviation at the image's resolution
};

/// Copies share one state (like ClipModel): fitting a copy refits the original. `score`,
/// `explain` and `save` are const and safe from several threads at once; `fit`,
/// `calibrate` and `set_thresholds` must not run concurrently with anything else.
class NormalityModel {
 public:
  NormalityModel(ClipModel model, NormalityOptions options = {});

  /// Fits on (k, 3, H, W) CLIP-normalised normal images (k >= 1); the backbone runs on
  /// `batch_size` images at a time. An empty tensor (k = 0) gives the zero-shot model (semantic branch only).
  void fit(const at::Tensor& normal_images);
  bool is_fitted() const;

  /// (B, 3, H, W) CLIP-normalised images -> Prediction with maps at H x W.
  Prediction score(const at::Tensor& images, bool with_branches = false) const;

  /// Sets the image and pixel thresholds to the `quantile` of normal images' scores and
  /// map values. leave_one_out: the images are the fit images (same order), each scored
  /// against the gallery without its own patches.
  void calibrate(const at::Tensor& normal_images, double quantile = 0.99, bool leave_one_out = false);
  std::optional<double> image_threshold() const;
  std::optional<double> pixel_threshold() const;
  void set_thresholds(std::optional<double> image, std::optional<double> pixel);

  /// The `top` selected neurons that deviate most on a (3, H, W) or (1, 3, H, W) image.
  std::vector<NeuronDeviation> explain(const at::Tensor& image, int64_t top = 10) const;

  // ---- Image files -------------------------------------------------------------------
  // The one rule of every file entry point (these methods, Python's `NormalityModel` given
  // paths, `lake fit / predict / eval / inspect`): each file is decoded and resized to the
  // backbone's S x S by `prepare_image` (PIL-equal decoding, PIL's bicubic on the uint8
  // pixels, no crop), and its maps come back at the file's own resolution. With
  // batch_size 1 a file's score and map are bit-identical whichever of these paths, and
  // whatever batch of files, it is scored in.

  /// The backbone input of one file at this model's S and normalisation.
  PreparedImage prepare(const std::string& path) const;
  /// fit on normal image files (of any sizes); an empty list gives the zero-shot model.
  void fit_files(const std::vector<std::string>& paths);
  /// Scores image files of one size (H, W): maps (B, H, W). Files of different sizes are
  /// an error naming two of them: score them in separate calls.
  Prediction score_files(const std::vector<std::string>& paths, bool with_branches = false) const;
  /// Scores images already prepared by `prepare` (files of any sizes; an input pipeline
  /// decodes the next files while this runs): one Prediction per image (B = 1), maps at
  /// that file's resolution. The backbone runs on `batch_size` images at a time (0: the
  /// model's option). At batch size 1 each result is bit-identical to score_files({path});
  /// larger batches agree with it to float rounding (docs/evaluation.md, "Batch size").
  std::vector<Prediction> score_prepared(const std::vector<PreparedImage>& images, bool with_branches = false,
                                         int64_t batch_size = 0) const;
  /// calibrate on normal image files (of any sizes; each map at its file's resolution).
  /// leave_one_out: the files are the fit files, in the same order.
  void calibrate_files(const std::vector<std::string>& paths, double quantile = 0.99, bool leave_one_out = false);
  /// explain one image file; the maps at the file's resolution.
  std::vector<NeuronDeviation> explain_file(const std::string& path, int64_t top = 10) const;

  /// Writes a versioned file atomically (a temporary file renamed into place): format version 2,
  /// a safetensors file with a JSON header (src/detail/normality_file.h, docs/method.md).
  void save(const std::string& path) const;
  /// Reads a file written by `save` (format version 2, or 1) for `model`: a load of the archive
  /// it was fitted on, in any dtype or device, with or without the text tower (version 2;
  /// ClipModel::weights_fingerprint). Every field is checked against the file before use; a
  /// c10::ValueError names the file and the field for a different backbone, a truncated,
  /// corrupted or inconsistent file, or a version this LAKE does not read.
  static NormalityModel load(const std::string& path, ClipModel model);

  const NormalityOptions& options() const;
  const ClipModel& model() const;
  /// The resolved options: tapped layers, image size, semantic layer.
  const std::vector<int64_t>& layers() const;
  int64_t image_size() const;
  int64_t semantic_layer() const;
  /// The neuron set (empty layers before fit and for the zero-shot model).
  const NeuronSet& neurons() const;
  /// Per layer (M, K) float32: L2-normalised normal patches restricted to the neurons.
  const std::vector<at::Tensor>& galleries() const;
  /// (2, E): the normal and the anomalous text embedding (L2-normalised).
  const at::Tensor& text_embeddings() const;
  /// The prompts used (resolved from the options).
  const std::vector<std::string>& normal_prompts() const;
  const std::vector<std::string>& anomaly_prompts() const;
  /// Number of normal images fitted on.
  int64_t shots() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

/// The METHOD.md prompt ensemble for a class: states x templates, "{}" filled.
std::vector<std::string> default_prompts(const std::string& class_name, bool anomalous);

/// The current format version written by NormalityModel::save.
constexpr int64_t kNormalityFormatVersion = 2;

}  // namespace lake
