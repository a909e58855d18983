#pragma once
// Evaluation metrics of the anomaly-detection protocol (METHOD.md, "Evaluation protocol"):
// image level AUROC, AP, F1-max; pixel level AUROC, AP, F1-max and AUPRO up to FPR 0.3.
//
// Definitions (identical to scikit-learn / anomalib / the official MVTec evaluation code):
//  * thresholds are the distinct score values; a sample is predicted anomalous when its
//    score is >= the threshold, so tied scores move together;
//  * AUROC: trapezoidal area under (FPR, TPR), starting at (0, 0)
//    (sklearn.metrics.roc_auc_score);
//  * AP: sum over thresholds, from high to low, of (R_n - R_{n-1}) P_n, no interpolation
//    (sklearn.metrics.average_precision_score);
//  * F1-max: max over thresholds of 2 P R / (P + R) = 2 TP / (TP + FP + #positives)
//    (the maximum over sklearn.metrics.precision_recall_curve);
//  * AUPRO: the ground-truth regions are the 8-connected components of every mask; at a
//    threshold, PRO = mean over all regions (of all images) of the fraction of the region
//    predicted anomalous, FPR = false positives / all normal pixels (of all images). The
//    PRO-vs-FPR curve, from (0, 0), is integrated with the trapezoid rule up to
//    `fpr_limit` (linearly interpolated there) and divided by `fpr_limit`.
//
// Degenerate inputs (documented, not errors, as in anomalib's evaluation loops where a
// category may lack one class): AUROC is NaN when positives or negatives are missing; AP
// and F1-max are NaN without positives (with positives only they are 1); AUPRO is NaN
// without any ground-truth region or without any normal pixel. Errors (c10::ValueError,
// naming the input): wrong shapes or sizes that do not match, non-finite scores.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lake::metrics {

/// Image-level ROC AUC. scores: (N) floating; labels: (N) bool or integer, nonzero = anomalous.
double auroc(const at::Tensor& scores, const at::Tensor& labels);
/// Average precision, sklearn's definition (no interpolation). Same inputs as auroc.
double average_precision(const at::Tensor& scores, const at::Tensor& labels);
/// The maximum F1 over all thresholds. Same inputs as auroc.
double f1_max(const at::Tensor& scores, const at::Tensor& labels);

/// 8-connected components of a (H, W) mask (bool, or any dtype with nonzero = foreground).
/// Returns (H, W) int64: 0 = background, 1..n numbered in raster order of each component's
/// first pixel (the numbering of scipy.ndimage.label). Iterative union-find, no recursion.
at::Tensor connected_components(const at::Tensor& mask);

/// Exact AUPRO (sorts every pixel). maps: (B, H, W) floating anomaly maps; masks: (B, H, W)
/// ground truth (bool or nonzero = anomalous); 0 < fpr_limit <= 1.
double aupro(const at::Tensor& maps, const at::Tensor& masks, double fpr_limit = 0.3);

struct ImageResult {
  double auroc, ap, f1_max;
};

/// Streams image scores in; keeps them (a test split holds a few thousand at most) and
/// computes the exact metrics.
class ImageMetrics {
 public:
  /// scores: (B) floating, labels: (B) bool or integer (nonzero = anomalous).
  void update(const at::Tensor& scores, const at::Tensor& labels);
  ImageResult compute() const;
  int64_t count() const { return static_cast<int64_t>(scores_.size()); }
  void reset();

 private:
  std::vector<double> scores_;
  std::vector<double> labels_;
};

struct PixelResult {
  double auroc, ap, f1_max, aupro;
};

/// Streamed pixel-level metrics with bounded memory.
///
/// While the pixels seen so far number at most `exact_limit`, the batches are kept and
/// compute() is exact (every pixel sorted). Past that, everything is folded into fixed
/// histograms over `bins` equal bins of [lo, hi] (scores outside are clamped into the end
/// bins) and the state no longer grows: 3 float64 arrays of `bins` plus counters. compute() in exact
/// mode needs 24 bytes per pixel transiently.
///
/// Binned results are the exact metrics of the scores quantised to their bin
/// (s -> floor((s - lo) / (hi - lo) * bins)): thresholds are restricted to the bin edges and
/// scores inside one bin become ties. Error bounds vs the exact metrics, with p_b, n_b the
/// fractions of anomalous / normal pixels in bin b and dF_b, dP_b the FPR and PRO mass of bin b:
///   |AUROC error| <= 1/2 sum_b p_b n_b <= 1/2 max_b n_b,
///   |AUPRO error| <= 1/(2 fpr_limit) sum_b dF_b dP_b (each bin's piece of the exact curve is
///   a monotone path inside the box its straight chord spans), plus the clipping at fpr_limit;
///   F1-max can only decrease (a subset of the thresholds), AP changes by O(max_b p_b) likewise.
/// With 10000 bins over the actual range of smooth anomaly maps these are ~1e-4; the tests
/// check 1e-3 on realistic maps. AUPRO's regions are found per image before binning, so
/// they are exact; only the thresholds are quantised.
class PixelMetrics {
 public:
  explicit PixelMetrics(double lo = 0.0, double hi = 1.0, int64_t bins = 10000, double fpr_limit = 0.3,
                        int64_t exact_limit = int64_t{1} << 21);

  /// maps: (B, H, W) floating anomaly maps; masks: (B, H, W) ground truth, bool or nonzero =
  /// anomalous. Errors: shapes, non-finite scores.
  void update(const at::Tensor& maps, const at::Tensor& masks);
  PixelResult compute() const;
  void reset();

  int64_t pixels() const { return pixels_; }
  /// Whether compute() is still exact (at most exact_limit pixels seen so far).
  bool is_exact() const { return !binned_; }
  /// The bytes the accumulator holds: at most about 5 * exact_limit + 32 * bins.
  int64_t state_bytes() const;
  double lo() const { return lo_; }
  double hi() const { return hi_; }
  int64_t bins() const { return bins_; }

 private:
  void add_binned(const at::Tensor& maps, const at::Tensor& masks);  // (B, H, W) float32 / bool, CPU, contiguous
  void flush();

  double lo_, hi_, fpr_limit_;
  int64_t bins_, exact_limit_;
  int64_t pixels_ = 0;
  bool binned_ = false;
  std::vector<at::Tensor> maps_, masks_;  // exact mode
  // Binned mode: per bin, anomalous and normal pixel counts and the PRO numerator
  // sum over regions of (region pixels in the bin) / |region|.
  std::vector<double> pos_, neg_, pro_;
  double regions_ = 0;
};

}  // namespace lake::metrics
