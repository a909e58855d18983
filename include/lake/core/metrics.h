#pragma once
// The metric curves of the anomaly-detection protocol on plain arrays: ROC, PR and PRO
// curves over the distinct thresholds, AUROC, AP, F1-max and AUPRO. Header-only, standard
// library only: no LibTorch, no Eigen, no fmt (see lake/core/config.h and docs/core.md).
//
//   std::vector<float> scores = {0.1f, 0.4f, 0.35f, 0.8f};
//   std::vector<int> labels = {0, 0, 1, 1};                              // nonzero = anomalous
//   double auc = lake::core::auroc(scores.data(), labels.data(), 4);     // 0.75
//   // (B, H, W) anomaly maps and ground-truth masks, row-major:
//   double pro = lake::core::aupro(maps.data(), masks.data(), b, h, w);  // FPR limit 0.3
//
// Definitions (scikit-learn's, anomalib's and the official MVTec evaluation code's; the ATen
// API lake/metrics.h documents them in full and calls these functions):
//  * thresholds are the distinct score values; a sample is predicted anomalous when its
//    score is >= the threshold, so tied scores move together;
//  * AUROC: trapezoidal area under (FPR, TPR) from (0, 0); AP: sum over the thresholds, high
//    to low, of (R_n - R_{n-1}) P_n, no interpolation; F1-max: max of 2 TP / (TP + FP + #pos);
//  * AUPRO: regions are the 8-connected components of every mask (lake/core/components.h);
//    PRO = mean over all regions of the fraction predicted anomalous, FPR over all normal
//    pixels; the PRO(FPR) curve from (0, 0), trapezoids up to fpr_limit (interpolated
//    linearly there), divided by fpr_limit.
// Degenerate inputs give NaN: AUROC without positives or negatives, AP and F1-max without
// positives, AUPRO without regions or without normal pixels. Preconditions (checked by the
// ATen front ends, not here): finite scores, 0 < fpr_limit <= 1.
//
// The streamed, binned curve of lake::metrics::PixelMetrics is lake/core/pixel_histogram.h.

#include "lake/core/components.h"
#include "lake/core/config.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace lake::core {

/// One sample (an image or a pixel) of an exact curve.
struct ScoredItem {
  double score;
  double pos;  // 1 anomalous, 0 normal
  double pro;  // 1 / |region| for a pixel of a ground-truth region, else 0
};

/// A curve over the distinct thresholds, from the highest to the lowest: at point i, the
/// cumulative weight of anomalous samples (pos), normal samples (neg) and the PRO numerator
/// (pro) scoring >= threshold i. The totals are the last entries.
struct Curve {
  std::vector<double> pos, neg, pro;
  double total_pos = 0, total_neg = 0, total_pro = 0;
  void push(double p, double n, double r) {
    pos.push_back(p);
    neg.push_back(n);
    pro.push_back(r);
  }
};

/// The exact curve: sorts `items` by score, descending (in place), and cuts at every
/// distinct value.
inline Curve exact_curve(ScoredItem* items, size_t n) {
  std::sort(items, items + n, [](const ScoredItem& a, const ScoredItem& b) { return a.score > b.score; });
  Curve c;
  double p = 0, neg = 0, r = 0;
  for (size_t i = 0; i < n; ++i) {
    p += items[i].pos;
    neg += 1.0 - items[i].pos;
    r += items[i].pro;
    if (i + 1 == n || items[i + 1].score != items[i].score) c.push(p, neg, r);
  }
  c.total_pos = p;
  c.total_neg = neg;
  c.total_pro = r;
  return c;
}

/// A binned curve: one threshold per bin's lower edge, from the top bin (bins - 1) down;
/// empty bins are skipped. pos, neg, pro: (bins) per-bin weights.
inline Curve binned_curve(const double* pos, const double* neg, const double* pro, size_t bins) {
  Curve c;
  double p = 0, n = 0, r = 0;
  for (size_t b = bins; b-- > 0;) {
    if (pos[b] == 0 && neg[b] == 0) continue;
    p += pos[b];
    n += neg[b];
    r += pro[b];
    c.push(p, n, r);
  }
  c.total_pos = p;
  c.total_neg = n;
  c.total_pro = r;
  return c;
}

/// The trapezoid between (x0, y0) and (x, y).
LAKE_HOST_DEVICE inline double trapezoid(double x0, double y0, double x, double y) { return (x - x0) * (y + y0) * 0.5; }

inline double auroc_of(const Curve& c) {
  if (c.total_pos <= 0 || c.total_neg <= 0) return std::numeric_limits<double>::quiet_NaN();
  double area = 0, x0 = 0, y0 = 0;
  for (size_t i = 0; i < c.pos.size(); ++i) {
    const double x = c.neg[i] / c.total_neg, y = c.pos[i] / c.total_pos;
    area += trapezoid(x0, y0, x, y);
    x0 = x;
    y0 = y;
  }
  return area;
}

inline double ap_of(const Curve& c) {
  if (c.total_pos <= 0) return std::numeric_limits<double>::quiet_NaN();
  double ap = 0, tp0 = 0;
  for (size_t i = 0; i < c.pos.size(); ++i) {
    const double tp = c.pos[i];
    if (tp > tp0) ap += (tp - tp0) / c.total_pos * (tp / (tp + c.neg[i]));
    tp0 = tp;
  }
  return ap;
}

inline double f1_of(const Curve& c) {
  if (c.total_pos <= 0) return std::numeric_limits<double>::quiet_NaN();
  double best = 0;
  for (size_t i = 0; i < c.pos.size(); ++i) best = std::max(best, 2 * c.pos[i] / (c.pos[i] + c.neg[i] + c.total_pos));
  return best;
}

/// The area under PRO(FPR) from (0, 0) up to FPR = limit (interpolated there), / limit.
/// `regions` is the number of ground-truth regions: PRO = pro / regions. 0 < limit <= 1.
inline double aupro_of(const Curve& c, double regions, double limit) {
  if (regions <= 0 || c.total_neg <= 0) return std::numeric_limits<double>::quiet_NaN();
  double area = 0, x0 = 0, y0 = 0;
  for (size_t i = 0; i < c.pos.size(); ++i) {
    const double x = std::min(1.0, c.neg[i] / c.total_neg), y = std::min(1.0, c.pro[i] / regions);
    if (x >= limit) {
      // The segment crosses (or ends at) the limit: interpolate linearly there.
      const double y_lim = x > x0 ? y0 + (y - y0) * (limit - x0) / (x - x0) : y0;
      area += trapezoid(x0, y0, limit, y_lim);
      return area / limit;
    }
    area += trapezoid(x0, y0, x, y);
    x0 = x;
    y0 = y;
  }
  // Not reached for limit <= 1: the last point's FPR is total_neg / total_neg = 1.
  return area / limit;
}

/// All four numbers of one curve (aupro is NaN when regions == 0, as for image scores).
struct CurveMetrics {
  double auroc, ap, f1_max, aupro;
};

inline CurveMetrics curve_metrics(const Curve& c, double regions = 0, double fpr_limit = 0.3) {
  return {auroc_of(c), ap_of(c), f1_of(c), aupro_of(c, regions, fpr_limit)};
}

// ---- plain-array front ends ---------------------------------------------------------------

/// The items of image scores: scores (n) of any arithmetic type (read as double), labels (n)
/// nonzero = anomalous.
template <typename S, typename L>
std::vector<ScoredItem> image_items(const S* scores, const L* labels, size_t n) {
  std::vector<ScoredItem> items(n);
  for (size_t i = 0; i < n; ++i) items[i] = {static_cast<double>(scores[i]), is_set(labels[i]) ? 1.0 : 0.0, 0.0};
  return items;
}

/// Image-level AUROC, AP and F1-max of scores (n) and labels (n) (aupro is NaN).
template <typename S, typename L>
CurveMetrics image_metrics(const S* scores, const L* labels, size_t n) {
  auto items = image_items(scores, labels, n);
  return curve_metrics(exact_curve(items.data(), items.size()));
}

// One metric of image_metrics (the same curve; the other two cost a pass over it).
template <typename S, typename L>
double auroc(const S* scores, const L* labels, size_t n) { return image_metrics(scores, labels, n).auroc; }

template <typename S, typename L>
double average_precision(const S* scores, const L* labels, size_t n) { return image_metrics(scores, labels, n).ap; }

template <typename S, typename L>
double f1_max(const S* scores, const L* labels, size_t n) { return image_metrics(scores, labels, n).f1_max; }

/// Appends the pixels of (B, H, W) row-major maps and masks (nonzero = anomalous) to `items`
/// for an exact pixel curve; returns the number of ground-truth regions (found per image).
template <typename S, typename M>
double append_pixel_items(const S* maps, const M* masks, int64_t b, int64_t h, int64_t w,
                          std::vector<ScoredItem>& items) {
  const int64_t hw = h * w;
  items.reserve(items.size() + static_cast<size_t>(b * hw));
  std::vector<int64_t> labels;
  std::vector<double> weights;
  double r = 0;
  for (int64_t img = 0; img < b; ++img) {
    r += static_cast<double>(region_weights(masks + img * hw, h, w, labels, weights));
    for (int64_t i = 0; i < hw; ++i) {
      const int64_t j = img * hw + i;
      items.push_back({static_cast<double>(maps[j]), is_set(masks[j]) ? 1.0 : 0.0, weights[i]});
    }
  }
  return r;
}

/// Exact pixel-level AUROC, AP, F1-max and AUPRO of (B, H, W) maps and masks (every pixel
/// sorted: 24 bytes per pixel transiently). 0 < fpr_limit <= 1.
template <typename S, typename M>
CurveMetrics pixel_metrics(const S* maps, const M* masks, int64_t b, int64_t h, int64_t w, double fpr_limit = 0.3) {
  std::vector<ScoredItem> items;
  const double regions = append_pixel_items(maps, masks, b, h, w, items);
  return curve_metrics(exact_curve(items.data(), items.size()), regions, fpr_limit);
}

/// Exact AUPRO of (B, H, W) maps and masks. 0 < fpr_limit <= 1.
template <typename S, typename M>
double aupro(const S* maps, const M* masks, int64_t b, int64_t h, int64_t w, double fpr_limit = 0.3) {
  std::vector<ScoredItem> items;
  const double regions = append_pixel_items(maps, masks, b, h, w, items);
  return aupro_of(exact_curve(items.data(), items.size()), regions, fpr_limit);
}

}  // namespace lake::core
