// Evaluation metrics: exact (sorted) and binned (streamed) ROC / PR / PRO curves.

#include "lake/metrics.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>

namespace lake::metrics {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A curve over the distinct thresholds, from the highest to the lowest: at point i, the
// cumulative weight of anomalous samples (pos), normal samples (neg) and the PRO numerator
// (pro) scoring >= threshold i. The totals are the last entries.
struct Curve {
  std::vector<double> pos, neg, pro;
  double total_pos = 0, total_neg = 0, total_pro = 0;
  void push(double p, double n, double r) {
    pos.push_back(p);
    neg.push_back(n);
    pro.push_back(r);
  }
};

struct Item {
  double score;
  double pos;  // 1 anomalous, 0 normal
  double pro;  // 1 / |region| for a pixel of a ground-truth region, else 0
};

// Exact curve: sort by score, descending, and cut at every distinct value.
Curve exact_curve(std::vector<Item>& items) {
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.score > b.score; });
  Curve c;
  double p = 0, n = 0, r = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    p += items[i].pos;
    n += 1.0 - items[i].pos;
    r += items[i].pro;
    if (i + 1 == items.size() || items[i + 1].score != items[i].score) c.push(p, n, r);
  }
  c.total_pos = p;
  c.total_neg = n;
  c.total_pro = r;
  return c;
}

// Binned curve: one threshold per bin lower edge, from the top bin down (empty bins skipped).
Curve binned_curve(const std::vector<double>& pos, const std::vector<double>& neg, const std::vector<double>& pro) {
  Curve c;
  double p = 0, n = 0, r = 0;
  for (size_t b = pos.size(); b-- > 0;) {
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

double auroc_of(const Curve& c) {
  if (c.total_pos <= 0 || c.total_neg <= 0) return kNaN;
  double area = 0, x0 = 0, y0 = 0;
  for (size_t i = 0; i < c.pos.size(); ++i) {
    const double x = c.neg[i] / c.total_neg, y = c.pos[i] / c.total_pos;
    area += (x - x0) * (y + y0) * 0.5;
    x0 = x;
    y0 = y;
  }
  return area;
}

double ap_of(const Curve& c) {
  if (c.total_pos <= 0) return kNaN;
  double ap = 0, tp0 = 0;
  for (size_t i = 0; i < c.pos.size(); ++i) {
    const double tp = c.pos[i];
    if (tp > tp0) ap += (tp - tp0) / c.total_pos * (tp / (tp + c.neg[i]));
    tp0 = tp;
  }
  return ap;
}

double f1_of(const Curve& c) {
  if (c.total_pos <= 0) return kNaN;
  double best = 0;
  for (size_t i = 0; i < c.pos.size(); ++i) best = std::max(best, 2 * c.pos[i] / (c.pos[i] + c.neg[i] + c.total_pos));
  return best;
}

// The area under PRO(FPR) from (0, 0) up to FPR = limit (interpolated there), / limit.
// `regions` is the number of ground-truth regions: PRO = pro / regions.
double aupro_of(const Curve& c, double regions, double limit) {
  if (regions <= 0 || c.total_neg <= 0) return kNaN;
  double area = 0, x0 = 0, y0 = 0;
  for (size_t i = 0; i < c.pos.size(); ++i) {
    const double x = std::min(1.0, c.neg[i] / c.total_neg), y = std::min(1.0, c.pro[i] / regions);
    if (x >= limit) {
      // The segment crosses (or ends at) the limit: interpolate linearly there.
      const double y_lim = x > x0 ? y0 + (y - y0) * (limit - x0) / (x - x0) : y0;
      area += (limit - x0) * (y0 + y_lim) * 0.5;
      return area / limit;
    }
    area += (x - x0) * (y + y0) * 0.5;
    x0 = x;
    y0 = y;
  }
  TORCH_INTERNAL_ASSERT(false, "aupro: the FPR curve does not reach 1");
}

void check_scores(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(at::isFloatingType(x.scalar_type()), name, ": expected floating scores, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.numel() == 0 || at::isfinite(x).all().item<bool>(), name,
                    ": expected finite scores, got NaN or infinite values");
}

void check_1d(const at::Tensor& scores, const at::Tensor& labels, const char* fn) {
  TORCH_CHECK_VALUE(scores.defined() && scores.dim() == 1, fn, ": expected (N) scores, got ",
                    scores.defined() ? scores.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(labels.defined() && labels.dim() == 1 && labels.size(0) == scores.size(0), fn,
                    ": expected (N) labels matching the ", scores.size(0), " scores, got ",
                    labels.defined() ? labels.sizes() : at::IntArrayRef{});
  check_scores(scores, fn);
}

void check_maps(const at::Tensor& maps, const at::Tensor& masks, const char* fn) {
  TORCH_CHECK_VALUE(maps.defined() && maps.dim() == 3, fn, ": expected (B, H, W) anomaly maps, got ",
                    maps.defined() ? maps.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(masks.defined() && masks.sizes() == maps.sizes(), fn,
                    ": expected (B, H, W) masks matching the maps ", maps.sizes(), ", got ",
                    masks.defined() ? masks.sizes() : at::IntArrayRef{});
  check_scores(maps, fn);
}

at::Tensor as_bool(const at::Tensor& x) { return x.to(at::kCPU).ne(0).contiguous(); }

std::vector<Item> image_items(const at::Tensor& scores, const at::Tensor& labels) {
  auto s = scores.to(at::kCPU, at::kDouble).contiguous();
  auto l = as_bool(labels);
  const double* ps = s.data_ptr<double>();
  const bool* pl = l.data_ptr<bool>();
  std::vector<Item> items(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < items.size(); ++i) items[i] = {ps[i], pl[i] ? 1.0 : 0.0, 0.0};
  return items;
}

// Two-pass 8-connected labelling of one (H, W) mask into `out`; returns the number of
// components. Provisional labels are merged with an iterative union-find (path halving).
int64_t label_components(const bool* m, int64_t h, int64_t w, int64_t* out) {
  std::vector<int64_t> parent{0};
  auto find = [&parent](int64_t a) {
    while (parent[a] != a) {
      parent[a] = parent[parent[a]];
      a = parent[a];
    }
    return a;
  };
  auto unite = [&](int64_t a, int64_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);
  };
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const int64_t i = y * w + x;
      if (!m[i]) {
        out[i] = 0;
        continue;
      }
      int64_t lab = 0;
      // Already visited neighbours: W, NW, N, NE.
      const int64_t nb[4] = {x > 0 ? out[i - 1] : 0, (y > 0 && x > 0) ? out[i - w - 1] : 0, y > 0 ? out[i - w] : 0,
                             (y > 0 && x + 1 < w) ? out[i - w + 1] : 0};
      for (int64_t n : nb) {
        if (n == 0) continue;
        if (lab == 0)
          lab = n;
        else if (n != lab)
          unite(lab, n);
      }
      if (lab == 0) {
        lab = static_cast<int64_t>(parent.size());
        parent.push_back(lab);
      }
      out[i] = lab;
    }
  }
  // Final labels in raster order of each component's first pixel.
  std::vector<int64_t> final_label(parent.size(), 0);
  int64_t count = 0;
  for (int64_t i = 0; i < h * w; ++i) {
    if (out[i] == 0) continue;
    const int64_t r = find(out[i]);
    if (final_label[r] == 0) final_label[r] = ++count;
    out[i] = final_label[r];
  }
  return count;
}

// For each pixel of one (H, W) mask: 1 / |region| inside a region, 0 outside. Returns the
// number of regions.
int64_t region_weights(const bool* m, int64_t h, int64_t w, std::vector<int64_t>& labels,
                       std::vector<double>& weights) {
  labels.resize(static_cast<size_t>(h * w));
  const int64_t n = label_components(m, h, w, labels.data());
  std::vector<double> size(static_cast<size_t>(n + 1), 0.0);
  for (int64_t l : labels) size[l] += 1;
  weights.resize(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) weights[i] = labels[i] ? 1.0 / size[labels[i]] : 0.0;
  return n;
}

// Appends the pixels of (B, H, W) maps and masks (any device; masks nonzero = anomalous)
// for the exact curve; returns the number of ground-truth regions.
double append_pixel_items(const at::Tensor& maps, const at::Tensor& masks, std::vector<Item>& items) {
  auto s = maps.to(at::kCPU, at::kDouble).contiguous();
  auto k = as_bool(masks);
  const int64_t b = s.size(0), h = s.size(1), w = s.size(2), hw = h * w;
  const double* ps = s.data_ptr<double>();
  const bool* pk = k.data_ptr<bool>();
  items.reserve(items.size() + static_cast<size_t>(b * hw));
  std::vector<int64_t> labels;
  std::vector<double> weights;
  double r = 0;
  for (int64_t img = 0; img < b; ++img) {
    r += static_cast<double>(region_weights(pk + img * hw, h, w, labels, weights));
    for (int64_t i = 0; i < hw; ++i) {
      const int64_t j = img * hw + i;
      items.push_back({ps[j], pk[j] ? 1.0 : 0.0, weights[i]});
    }
  }
  return r;
}

}  // namespace

double auroc(const at::Tensor& scores, const at::Tensor& labels) {
  check_1d(scores, labels, "auroc");
  auto items = image_items(scores, labels);
  return auroc_of(exact_curve(items));
}

double average_precision(const at::Tensor& scores, const at::Tensor& labels) {
  check_1d(scores, labels, "average_precision");
  auto items = image_items(scores, labels);
  return ap_of(exact_curve(items));
}

double f1_max(const at::Tensor& scores, const at::Tensor& labels) {
  check_1d(scores, labels, "f1_max");
  auto items = image_items(scores, labels);
  return f1_of(exact_curve(items));
}

at::Tensor connected_components(const at::Tensor& mask) {
  TORCH_CHECK_VALUE(mask.defined() && mask.dim() == 2, "connected_components: expected an (H, W) mask, got ",
                    mask.defined() ? mask.sizes() : at::IntArrayRef{});
  auto m = as_bool(mask);
  auto out = at::empty(m.sizes(), at::kLong);
  label_components(m.data_ptr<bool>(), m.size(0), m.size(1), out.data_ptr<int64_t>());
  return out;
}

double aupro(const at::Tensor& maps, const at::Tensor& masks, double fpr_limit) {
  check_maps(maps, masks, "aupro");
  TORCH_CHECK_VALUE(fpr_limit > 0 && fpr_limit <= 1, "aupro: expected 0 < fpr_limit <= 1, got ", fpr_limit);
  std::vector<Item> items;
  const double regions = append_pixel_items(maps, masks, items);
  return aupro_of(exact_curve(items), regions, fpr_limit);
}

// ---- ImageMetrics ---------------------------------------------------------------------

void ImageMetrics::update(const at::Tensor& scores, const at::Tensor& labels) {
  check_1d(scores, labels, "ImageMetrics.update");
  for (const Item& it : image_items(scores, labels)) {
    scores_.push_back(it.score);
    labels_.push_back(it.pos);
  }
}

ImageResult ImageMetrics::compute() const {
  std::vector<Item> items(scores_.size());
  for (size_t i = 0; i < items.size(); ++i) items[i] = {scores_[i], labels_[i], 0.0};
  Curve c = exact_curve(items);
  return {auroc_of(c), ap_of(c), f1_of(c)};
}

void ImageMetrics::reset() {
  scores_.clear();
  labels_.clear();
}

// ---- PixelMetrics ---------------------------------------------------------------------

PixelMetrics::PixelMetrics(std::optional<double> lo, std::optional<double> hi, int64_t bins, double fpr_limit,
                           int64_t exact_limit)
    : fixed_lo_(lo), fixed_hi_(hi), fpr_limit_(fpr_limit), bins_(bins), exact_limit_(exact_limit) {
  TORCH_CHECK_VALUE(lo.has_value() == hi.has_value(),
                    "PixelMetrics: expected both lo and hi (a fixed range) or neither (adaptive), got only ",
                    lo ? "lo" : "hi");
  if (lo) {
    TORCH_CHECK_VALUE(std::isfinite(*lo) && std::isfinite(*hi) && *hi > *lo,
                      "PixelMetrics: expected a finite score range lo < hi, got [", *lo, ", ", *hi, "]");
  }
  TORCH_CHECK_VALUE(bins >= 1, "PixelMetrics: expected bins >= 1, got ", bins);
  TORCH_CHECK_VALUE(fpr_limit > 0 && fpr_limit <= 1, "PixelMetrics: expected 0 < fpr_limit <= 1, got ", fpr_limit);
  TORCH_CHECK_VALUE(exact_limit >= 0, "PixelMetrics: expected exact_limit >= 0, got ", exact_limit);
}

void PixelMetrics::update(const at::Tensor& maps, const at::Tensor& masks) {
  check_maps(maps, masks, "PixelMetrics.update");
  if (maps.numel() == 0) return;
  // float64 stays float64 (a narrow range far from 0 needs it), anything else is float32.
  const auto dtype = maps.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto m = maps.to(at::kCPU, dtype);
  const auto [mn_t, mx_t] = at::aminmax(m);
  const double mn = mn_t.item<double>(), mx = mx_t.item<double>();
  const double seen_min = pixels_ == 0 ? mn : std::min(seen_min_, mn);
  const double seen_max = pixels_ == 0 ? mx : std::max(seen_max_, mx);
  if (!fixed_range() && (binned_ || pixels_ + maps.numel() > exact_limit_)) {
    // Checked before any state changes: the adaptive grid's base indices must stay finite.
    const bool ok = binned_ ? std::isfinite(base_index(seen_min)) && std::isfinite(base_index(seen_max))
                            : std::isfinite(seen_max - seen_min);
    TORCH_CHECK_VALUE(ok, "PixelMetrics.update: the scores seen span [", seen_min, ", ", seen_max,
                      "], too wide for the adaptive range; give a fixed range (lo, hi)");
  }
  seen_min_ = seen_min;
  seen_max_ = seen_max;
  pixels_ += maps.numel();
  if (!binned_ && pixels_ <= exact_limit_) {
    // Own copies: the caller may reuse its buffers.
    maps_.push_back(m.clone(at::MemoryFormat::Contiguous));
    masks_.push_back(as_bool(masks).clone(at::MemoryFormat::Contiguous));
    return;
  }
  if (!binned_)
    start_binning();
  else if (!fixed_range())
    fit_range();
  m = m.contiguous();
  auto k = as_bool(masks);
  if (dtype == at::kDouble)
    add_binned<double>(m, k);
  else
    add_binned<float>(m, k);
}

void PixelMetrics::start_binning() {
  binned_ = true;
  const double b = static_cast<double>(bins_);
  if (fixed_range()) {
    origin_ = *fixed_lo_;
    inv_unit_ = b / (*fixed_hi_ - *fixed_lo_);  // the pre-adaptive formula: floor((s - lo) * bins / (hi - lo))
  } else {
    // [min, max] of everything seen (seen_* include this batch) in bins - 1/2 bins: the
    // maximum's base index is bins - 1 (floor of bins - 1/2, rounding cannot reach bins).
    origin_ = seen_min_;
    const double range = seen_max_ - seen_min_;
    inv_unit_ = range > 0 ? (b - 0.5) / range : b / (std::max(std::abs(seen_min_), 1.0) * std::ldexp(1.0, -24));
  }
  unit_ = 1.0 / inv_unit_;
  offset_ = 0;
  span_ = 1;
  pos_.assign(static_cast<size_t>(bins_), 0.0);
  neg_.assign(static_cast<size_t>(bins_), 0.0);
  pro_.assign(static_cast<size_t>(bins_), 0.0);
  for (size_t i = 0; i < maps_.size(); ++i) {
    if (maps_[i].scalar_type() == at::kDouble)
      add_binned<double>(maps_[i], masks_[i]);
    else
      add_binned<float>(maps_[i], masks_[i]);
  }
  maps_ = {};
  masks_ = {};
}

void PixelMetrics::fit_range() {
  // Base indices of everything seen; base_index is monotone, so every pixel lies in [lo, hi].
  const double lo = base_index(seen_min_), hi = base_index(seen_max_);
  const double b = static_cast<double>(bins_);
  if (lo >= offset_ && hi < offset_ + b * span_) return;
  // New lower edge: the edge of the old bin holding the minimum (an edge of the old grid).
  // New width: the smallest power-of-two multiple of the old one that reaches the maximum.
  const double shift = std::floor((lo - offset_) / span_);  // in old bins (negative when extending down)
  const double offset = offset_ + shift * span_;
  double span = span_;
  while (!(hi < offset + b * span)) span *= 2;
  const double ratio = span / span_;  // a power of two: each old bin nests in new bin (i - shift) / ratio
  std::vector<double> pos(pos_.size(), 0.0), neg(neg_.size(), 0.0), pro(pro_.size(), 0.0);
  for (int64_t i = 0; i < bins_; ++i) {
    if (pos_[i] == 0 && neg_[i] == 0) continue;  // empty bins have no PRO mass either
    const double j = std::floor((static_cast<double>(i) - shift) / ratio);
    TORCH_INTERNAL_ASSERT(j >= 0 && j < b, "PixelMetrics: a filled bin fell outside the extended range");
    const auto k = static_cast<size_t>(j);
    pos[k] += pos_[i];
    neg[k] += neg_[i];
    pro[k] += pro_[i];
  }
  pos_ = std::move(pos);
  neg_ = std::move(neg);
  pro_ = std::move(pro);
  offset_ = offset;
  span_ = span;
}

template <typename scalar_t>
void PixelMetrics::add_binned(const at::Tensor& maps, const at::Tensor& masks) {
  const int64_t b = maps.size(0), h = maps.size(1), w = maps.size(2), hw = h * w;
  const scalar_t* ps = maps.data_ptr<scalar_t>();
  const bool* pk = masks.data_ptr<bool>();
  const int64_t nbins = bins_;
  // The grid of the header (local copies for the inner loop): base index, then bin. Clamped:
  // the fixed range by definition, the adaptive one never needs it (the grid covers every
  // pixel seen); `!(i >= 0)` also catches a NaN.
  const double origin = origin_, inv_unit = inv_unit_, offset = offset_, inv_span = 1.0 / span_;
  const double last = static_cast<double>(nbins - 1);
  auto bin_of = [=](scalar_t v) {
    const double i = std::floor((std::floor((static_cast<double>(v) - origin) * inv_unit) - offset) * inv_span);
    return !(i >= 0) ? int64_t{0} : (i >= last ? nbins - 1 : static_cast<int64_t>(i));
  };
  // Images are split over the intra-op threads; each chunk fills its own histograms, which
  // are merged in chunk order (integer counts are exact; the PRO sums are deterministic for a
  // given thread count).
  struct Partial {
    std::vector<int64_t> counts;  // 2 * bin + anomalous
    std::vector<double> pro;
    double regions = 0;
  };
  std::mutex mutex;
  std::map<int64_t, Partial> partials;
  at::parallel_for(0, b, 1, [&](int64_t begin, int64_t end) {
    Partial part;
    part.counts.assign(static_cast<size_t>(2 * nbins), 0);
    part.pro.assign(static_cast<size_t>(nbins), 0.0);
    std::vector<int64_t> labels;
    std::vector<double> weights;
    for (int64_t img = begin; img < end; ++img) {
      const scalar_t* s = ps + img * hw;
      const bool* k = pk + img * hw;
      for (int64_t i = 0; i < hw; ++i) ++part.counts[2 * bin_of(s[i]) + (k[i] ? 1 : 0)];
      if (!std::any_of(k, k + hw, [](bool v) { return v; })) continue;
      part.regions += static_cast<double>(region_weights(k, h, w, labels, weights));
      for (int64_t i = 0; i < hw; ++i)
        if (k[i]) part.pro[bin_of(s[i])] += weights[i];
    }
    std::lock_guard<std::mutex> lock(mutex);
    partials[begin] = std::move(part);
  });
  for (const auto& kv : partials) {
    const Partial& part = kv.second;
    for (int64_t i = 0; i < nbins; ++i) {
      neg_[i] += static_cast<double>(part.counts[2 * i]);
      pos_[i] += static_cast<double>(part.counts[2 * i + 1]);
      pro_[i] += part.pro[i];
    }
    regions_ += part.regions;
  }
}

template void PixelMetrics::add_binned<float>(const at::Tensor&, const at::Tensor&);
template void PixelMetrics::add_binned<double>(const at::Tensor&, const at::Tensor&);

PixelResult PixelMetrics::compute() const {
  TORCH_CHECK(pixels_ > 0, "PixelMetrics.compute: no pixels were streamed in (call update first)");
  if (binned_) {
    Curve c = binned_curve(pos_, neg_, pro_);
    return {auroc_of(c), ap_of(c), f1_of(c), aupro_of(c, regions_, fpr_limit_)};
  }
  std::vector<Item> items;
  double regions = 0;
  for (size_t i = 0; i < maps_.size(); ++i) regions += append_pixel_items(maps_[i], masks_[i], items);
  Curve c = exact_curve(items);
  return {auroc_of(c), ap_of(c), f1_of(c), aupro_of(c, regions, fpr_limit_)};
}

void PixelMetrics::reset() {
  pixels_ = 0;
  binned_ = false;
  seen_min_ = seen_max_ = 0;
  origin_ = offset_ = 0;
  inv_unit_ = unit_ = span_ = 1;
  maps_ = {};
  masks_ = {};
  pos_ = {};
  neg_ = {};
  pro_ = {};
  regions_ = 0;
}

std::optional<double> PixelMetrics::lo() const {
  if (fixed_range()) return fixed_lo_;
  if (!binned_) return std::nullopt;
  return origin_ + offset_ * unit_;
}

std::optional<double> PixelMetrics::hi() const {
  if (fixed_range()) return fixed_hi_;
  if (!binned_) return std::nullopt;
  return origin_ + (offset_ + static_cast<double>(bins_) * span_) * unit_;
}

std::optional<double> PixelMetrics::bin_width() const {
  if (fixed_range()) return (*fixed_hi_ - *fixed_lo_) / static_cast<double>(bins_);
  if (!binned_) return std::nullopt;
  return span_ * unit_;
}

int64_t PixelMetrics::state_bytes() const {
  int64_t bytes = static_cast<int64_t>(sizeof(*this));
  for (const auto& t : maps_) bytes += static_cast<int64_t>(t.nbytes());
  for (const auto& t : masks_) bytes += static_cast<int64_t>(t.nbytes());
  bytes += static_cast<int64_t>((pos_.capacity() + neg_.capacity() + pro_.capacity()) * sizeof(double));
  return bytes;
}

}  // namespace lake::metrics
