#pragma once
// The streamed, binned pixel curve of lake::metrics::PixelMetrics on plain arrays: the bin
// grid (fixed or adaptive, extended by powers of two so that old bins nest in new ones) and
// the per-bin histograms of anomalous pixels, normal pixels and PRO mass. Header-only,
// standard library only (see lake/core/config.h). lake/metrics.h documents the grid, its
// extension rule and the error bounds of the binned metrics.
//
//   lake::core::PixelHistogram hist;
//   hist.start(lake::core::BinGrid::fixed(0.0, 1.0, 1 << 15));  // or BinGrid::adaptive(min, max, bins)
//   lake::core::PartialHistogram part(hist.grid.bins);
//   std::vector<int64_t> labels;                                // scratch
//   std::vector<double> weights;
//   for (each (H, W) image s, mask k) part.add_image(s, k, h, w, hist.grid.index(), labels, weights);
//   hist.merge(part);
//   lake::core::CurveMetrics m = hist.metrics(0.3);             // auroc, ap, f1_max, aupro
//
// Images can be binned into several PartialHistograms in parallel and merged in a fixed
// order (integer counts are exact; the PRO sums then depend only on that order).

#include "lake/core/components.h"
#include "lake/core/config.h"
#include "lake/core/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace lake::core {

/// The bin of a score under a BinGrid (a trivially copyable functor, for the inner loops on
/// the host or the device): floor((floor((s - origin) * inv_unit) - offset) * inv_span),
/// clamped to [0, bins - 1]; `!(i >= 0)` also catches a NaN.
struct BinIndex {
  double origin, inv_unit, offset, inv_span, last;
  int64_t bins;
  LAKE_HOST_DEVICE int64_t operator()(double v) const {
    const double i = std::floor((std::floor((v - origin) * inv_unit) - offset) * inv_span);
    return !(i >= 0) ? int64_t{0} : (i >= last ? bins - 1 : static_cast<int64_t>(i));
  }
};

/// Bin i of the `bins` bins holds the scores s with
///   floor((floor((s - origin) * inv_unit) - offset) / span) == i (clamped to the range),
/// i.e. the base cells [origin + k unit, origin + (k + 1) unit) for k in
/// [offset + i span, offset + (i + 1) span); unit = 1 / inv_unit and origin are fixed when
/// binning starts, span (a power of two) and offset (an integer) change on extension. The
/// base index k is an integer-valued double (exact below 2^53), so nesting is exact.
struct BinGrid {
  int64_t bins = 1;
  double origin = 0, inv_unit = 1, unit = 1, offset = 0, span = 1;

  /// [lo, hi] in `bins` bins: floor((s - lo) * bins / (hi - lo)).
  static BinGrid fixed(double lo, double hi, int64_t bins) {
    return make(bins, lo, static_cast<double>(bins) / (hi - lo));
  }
  /// [min, max] of the scores seen in bins - 1/2 bins: the maximum's base index is bins - 1
  /// (floor of bins - 1/2, rounding cannot reach bins). A constant range (min == max) gets
  /// the width max(|min|, 1) * 2^-24 / bins.
  static BinGrid adaptive(double min, double max, int64_t bins) {
    const double b = static_cast<double>(bins), range = max - min;
    return make(bins, min, range > 0 ? (b - 0.5) / range : b / (std::max(std::abs(min), 1.0) * std::ldexp(1.0, -24)));
  }

  LAKE_HOST_DEVICE double base_index(double s) const { return std::floor((s - origin) * inv_unit); }
  BinIndex index() const { return {origin, inv_unit, offset, 1.0 / span, static_cast<double>(bins - 1), bins}; }
  /// The grid's range [lo, hi) and bin width.
  double lo() const { return origin + offset * unit; }
  double hi() const { return origin + (offset + static_cast<double>(bins) * span) * unit; }
  double width() const { return span * unit; }

 private:
  static BinGrid make(int64_t bins, double origin, double inv_unit) {
    BinGrid g;
    g.bins = bins;
    g.origin = origin;
    g.inv_unit = inv_unit;
    g.unit = 1.0 / inv_unit;
    return g;
  }
};

/// Whether an adaptive grid can take scores spanning [min, max] with finite base indices:
/// before binning starts (`started` false) the range must be finite, after it the current
/// grid's base indices of min and max.
inline bool adaptive_range_fits(bool started, const BinGrid& grid, double min, double max) {
  return started ? std::isfinite(grid.base_index(min)) && std::isfinite(grid.base_index(max))
                 : std::isfinite(max - min);
}

/// One chunk's histograms, filled image by image, merged into a PixelHistogram.
struct PartialHistogram {
  std::vector<int64_t> counts;  // 2 * bin + anomalous
  std::vector<double> pro;      // PRO numerator per bin
  double regions = 0;

  explicit PartialHistogram(int64_t bins)
      : counts(static_cast<size_t>(2 * bins), 0), pro(static_cast<size_t>(bins), 0.0) {}

  /// Bins one (H, W) image: scores s (any arithmetic type, read as double), mask k (nonzero
  /// = anomalous). Regions are found on the exact mask; labels, weights: scratch.
  template <typename S, typename M>
  void add_image(const S* s, const M* k, int64_t h, int64_t w, const BinIndex& bin_of, std::vector<int64_t>& labels,
                 std::vector<double>& weights) {
    const int64_t hw = h * w;
    for (int64_t i = 0; i < hw; ++i) ++counts[2 * bin_of(static_cast<double>(s[i])) + (is_set(k[i]) ? 1 : 0)];
    if (!std::any_of(k, k + hw, [](M v) { return is_set(v); })) return;
    regions += static_cast<double>(region_weights(k, h, w, labels, weights));
    for (int64_t i = 0; i < hw; ++i)
      if (is_set(k[i])) pro[bin_of(static_cast<double>(s[i]))] += weights[i];
  }
};

/// The binned state: the grid, per bin the anomalous and normal pixel counts and the PRO
/// numerator (sum over regions of the region's pixels in the bin / |region|), and the number
/// of regions. Its size does not depend on the pixels seen.
struct PixelHistogram {
  BinGrid grid;
  std::vector<double> pos, neg, pro;
  double regions = 0;

  /// Starts binning on `g` with empty bins (regions are kept: none before binning starts).
  void start(const BinGrid& g) {
    grid = g;
    pos.assign(static_cast<size_t>(g.bins), 0.0);
    neg.assign(static_cast<size_t>(g.bins), 0.0);
    pro.assign(static_cast<size_t>(g.bins), 0.0);
  }

  void merge(const PartialHistogram& part) {
    for (int64_t i = 0; i < grid.bins; ++i) {
      neg[i] += static_cast<double>(part.counts[2 * i]);
      pos[i] += static_cast<double>(part.counts[2 * i + 1]);
      pro[i] += part.pro[i];
    }
    regions += part.regions;
  }

  /// Adaptive range: extends the grid to hold [min, max] (all scores seen so far). The new
  /// lower edge is the edge of the old bin holding the minimum (an edge of the old grid); the
  /// new width the smallest power-of-two multiple of the old one that reaches the maximum, so
  /// each old bin nests in exactly one new bin and its counts move there unchanged. Returns
  /// false, changing nothing, if a filled bin would fall outside (a bug, not an input error).
  bool extend(double min, double max) {
    // Base indices of everything seen; base_index is monotone, so every pixel lies in [lo, hi].
    const double lo = grid.base_index(min), hi = grid.base_index(max);
    const double b = static_cast<double>(grid.bins);
    if (lo >= grid.offset && hi < grid.offset + b * grid.span) return true;
    const double shift = std::floor((lo - grid.offset) / grid.span);  // in old bins (negative when extending down)
    const double offset = grid.offset + shift * grid.span;
    double span = grid.span;
    while (!(hi < offset + b * span)) span *= 2;
    const double ratio = span / grid.span;  // a power of two: each old bin nests in new bin (i - shift) / ratio
    std::vector<double> npos(pos.size(), 0.0), nneg(neg.size(), 0.0), npro(pro.size(), 0.0);
    for (int64_t i = 0; i < grid.bins; ++i) {
      if (pos[i] == 0 && neg[i] == 0) continue;  // empty bins have no PRO mass either
      const double j = std::floor((static_cast<double>(i) - shift) / ratio);
      if (!(j >= 0 && j < b)) return false;
      const auto k = static_cast<size_t>(j);
      npos[k] += pos[i];
      nneg[k] += neg[i];
      npro[k] += pro[i];
    }
    pos = std::move(npos);
    neg = std::move(nneg);
    pro = std::move(npro);
    grid.offset = offset;
    grid.span = span;
    return true;
  }

  Curve curve() const { return binned_curve(pos.data(), neg.data(), pro.data(), pos.size()); }
  CurveMetrics metrics(double fpr_limit = 0.3) const { return curve_metrics(curve(), regions, fpr_limit); }
};

}  // namespace lake::core
