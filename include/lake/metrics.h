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
//
// These functions check their arguments, bring the tensors to contiguous CPU arrays and call
// the header-only core, where each rule is implemented once without LibTorch:
// lake/core/metrics.h (curves, integration), lake/core/components.h (regions) and
// lake/core/pixel_histogram.h (PixelMetrics' bin grid); see docs/core.md.

#include "lake/core/pixel_histogram.h"

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>
#include <optional>
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

/// The metric names, one scheme for C++, the bindings and Python: the fields of ImageResult /
/// PixelResult (and of pylake.metrics' results), the functions of pylake.metrics, and the report
/// columns "image_<name>" / "pixel_<name>" (pylake.evaluate.METRIC_KEYS). C++'s function for "ap"
/// keeps sklearn's long name, average_precision.
inline constexpr const char* kImageMetricNames[] = {"auroc", "ap", "f1_max"};
inline constexpr const char* kPixelMetricNames[] = {"auroc", "ap", "f1_max", "aupro"};

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
/// compute() is exact (every pixel sorted). Past that, everything is folded into histograms
/// of `bins` equal bins and the state no longer grows: 3 float64 arrays of `bins` plus
/// counters (state_bytes(): 24 * bins + about 250 bytes, 768 KiB at the default 2^15 bins).
/// compute() in exact mode needs 24 bytes per pixel transiently.
///
/// The histogram's range:
///  * adaptive (the default, lo and hi not given): when binning starts, the range is the
///    [min, max] of all pixels seen so far (the kept batches and the batch that crosses
///    `exact_limit`), split into `bins` bins. A later batch outside the range extends it: the
///    bin width grows by the smallest power of two 2^k (k >= 0) that makes all pixels seen so
///    far fit, and the new lower edge is an edge of the old grid, so that every old bin lies
///    inside exactly one new bin (its counts and PRO numerators are added there, nothing is
///    split or approximated). The result is therefore exactly what binning every pixel with
///    the final grid from the start would give (the final grid depends on the order the
///    range was seen in; given the grid, the result does not). With min, max over all pixels
///    seen, the final bin width w = bin_width() satisfies
///      (max - min) / bins < w < 2 (max - min + w_0) / (bins - 1),
///    w_0 the first width ((max - min) / (bins - 1/2) over the first batches; bins >= 2 for
///    the upper bound), and w = w_0 when the first batches already span the whole range.
///    Constant first batches start from w_0 = max(|min|, 1) * 2^-24 / bins. Scores so far
///    apart that the grid's indices overflow (beyond about 1e300) are a ValueError: give a
///    fixed range then.
///  * fixed (lo < hi given): [lo, hi] split into `bins` bins; scores outside are clamped into
///    the end bins (their order among themselves is lost), w = (hi - lo) / bins.
///
/// Binned results are the exact metrics of the scores quantised to their bin of the final
/// grid (thresholds restricted to the bin edges, the scores of one bin become ties). With
/// p_b, n_b the fractions of all anomalous / normal pixels in bin b, r_b = p_b the recall
/// mass and dP_b the PRO mass of bin b, N_b its pixels and N_>b the pixels of the bins above,
/// the errors vs the exact metrics are bounded by
///   |AUROC error| <= 1/2 sum_b p_b n_b <= 1/2 max_b n_b <= w/2 sup f_n,
///   |AUPRO error| <= (1/2 sum_{b above c} n_b dP_b + n_c dP_c) / fpr_limit
///                 <= max_b n_b / fpr_limit <= w sup f_n / fpr_limit
///     (each bin's piece of the exact PRO curve is a monotone path inside the box its chord
///     spans; c is the bin whose FPR step reaches fpr_limit),
///   |AP error| <= sum_b r_b N_b / (N_>b + 1) (the precision varies by at most that within a bin),
///   0 <= exact F1-max - binned F1-max <= min(negatives in b*, 2 positives in b*) / #positives,
///     b* the bin of the exact optimum (binned F1-max is a maximum over fewer thresholds),
/// where f_n is the density of the normal pixels' scores (w sup f_n >= max_b n_b; with a fixed
/// range the end bins also hold the clamped scores, so the w terms need all scores inside
/// [lo, hi]). On smooth anomaly maps (upsampled, blurred patch scores in [0.17, 0.22], in
/// [1e3, 1e3 + 1e-2], or on ranges growing batch by batch) with the default 2^15 bins the
/// tests measure errors below 3e-6 for AUROC and AUPRO and below 2e-4 for AP and F1-max, each
/// within its bound (checked in tests/python/test_metrics.py). AUPRO's regions are found per
/// image before binning, so they are exact; only the thresholds are quantised.
class PixelMetrics {
 public:
  /// lo, hi: both given (lo < hi) for a fixed range, neither for the adaptive range.
  /// bins >= 1; 0 < fpr_limit <= 1; exact_limit >= 0 (0: bin from the first batch on).
  explicit PixelMetrics(std::optional<double> lo = std::nullopt, std::optional<double> hi = std::nullopt,
                        int64_t bins = int64_t{1} << 15, double fpr_limit = 0.3,
                        int64_t exact_limit = int64_t{1} << 21);

  /// maps: (B, H, W) floating anomaly maps (float64 is binned in float64, other types in
  /// float32); masks: (B, H, W) ground truth, bool or nonzero = anomalous. Errors: shapes,
  /// non-finite scores.
  void update(const at::Tensor& maps, const at::Tensor& masks);
  PixelResult compute() const;
  void reset();

  int64_t pixels() const { return pixels_; }
  /// Whether compute() is still exact (at most exact_limit pixels seen so far).
  bool is_exact() const { return !binned_; }
  /// The bytes the accumulator holds: at most about 5 * exact_limit (9 for float64 maps)
  /// + 24 * bins + 250.
  int64_t state_bytes() const;
  /// Whether the range was given (fixed) rather than adaptive.
  bool fixed_range() const { return fixed_lo_.has_value(); }
  /// The histogram's current range [lo, hi) and bin width: the given ones for a fixed range;
  /// for the adaptive range nullopt until binning starts, then the current grid's.
  std::optional<double> lo() const;
  std::optional<double> hi() const;
  std::optional<double> bin_width() const;
  int64_t bins() const { return bins_; }

 private:
  void start_binning();  // sets the grid (fixed, or from the range seen so far), bins the kept batches
  void add_binned(const at::Tensor& maps, const at::Tensor& masks);  // (B, H, W) CPU contiguous / bool

  std::optional<double> fixed_lo_, fixed_hi_;
  double fpr_limit_;
  int64_t bins_, exact_limit_;
  int64_t pixels_ = 0;
  bool binned_ = false;
  double seen_min_ = 0, seen_max_ = 0;  // over all pixels so far (valid when pixels_ > 0)
  std::vector<at::Tensor> maps_, masks_;  // exact mode
  core::PixelHistogram hist_;             // binned mode: the grid and the per-bin histograms
};

}  // namespace lake::metrics
