// Evaluation metrics, the ATen side: argument checks, tensors to contiguous CPU arrays, and
// the streaming state of ImageMetrics / PixelMetrics. The curves, their integration, the
// connected components and the bin grid are the header-only core's (lake/core/metrics.h,
// lake/core/components.h, lake/core/pixel_histogram.h): one implementation of each rule.

#include "lake/metrics.h"

#include "lake/core/components.h"
#include "lake/core/metrics.h"
#include "lake/core/pixel_histogram.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "detail/format.h"

namespace lake::metrics {

namespace {

void check_scores(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(at::isFloatingType(x.scalar_type()),
                    fmt::format("{}: expected floating scores, got {}", name, x.scalar_type()));
  TORCH_CHECK_VALUE(x.numel() == 0 || at::isfinite(x).all().item<bool>(),
                    fmt::format("{}: expected finite scores, got NaN or infinite values", name));
}

void check_1d(const at::Tensor& scores, const at::Tensor& labels, const char* fn) {
  TORCH_CHECK_VALUE(
      scores.defined() && scores.dim() == 1,
      fmt::format("{}: expected (N) scores, got {}", fn, scores.defined() ? scores.sizes() : at::IntArrayRef{}));
  TORCH_CHECK_VALUE(labels.defined() && labels.dim() == 1 && labels.size(0) == scores.size(0),
                    fmt::format("{}: expected (N) labels matching the {} scores, got {}", fn, scores.size(0),
                                labels.defined() ? labels.sizes() : at::IntArrayRef{}));
  check_scores(scores, fn);
}

void check_maps(const at::Tensor& maps, const at::Tensor& masks, const char* fn) {
  TORCH_CHECK_VALUE(maps.defined() && maps.dim() == 3, fmt::format("{}: expected (B, H, W) anomaly maps, got {}", fn,
                                                                   maps.defined() ? maps.sizes() : at::IntArrayRef{}));
  TORCH_CHECK_VALUE(masks.defined() && masks.sizes() == maps.sizes(),
                    fmt::format("{}: expected (B, H, W) masks matching the maps {}, got {}", fn, maps.sizes(),
                                masks.defined() ? masks.sizes() : at::IntArrayRef{}));
  check_scores(maps, fn);
}

at::Tensor as_bool(const at::Tensor& x) { return x.to(at::kCPU).ne(0).contiguous(); }

// The exact curve's items of (N) scores and labels (any device and dtype).
std::vector<core::ScoredItem> image_items(const at::Tensor& scores, const at::Tensor& labels) {
  auto s = scores.to(at::kCPU, at::kDouble).contiguous();
  auto l = as_bool(labels);
  return core::image_items(s.data_ptr<double>(), l.data_ptr<bool>(), static_cast<size_t>(s.numel()));
}

// Appends the pixels of (B, H, W) maps and masks (any device; masks nonzero = anomalous)
// for the exact curve; returns the number of ground-truth regions.
double append_pixel_items(const at::Tensor& maps, const at::Tensor& masks, std::vector<core::ScoredItem>& items) {
  auto s = maps.to(at::kCPU, at::kDouble).contiguous();
  auto k = as_bool(masks);
  return core::append_pixel_items(s.data_ptr<double>(), k.data_ptr<bool>(), s.size(0), s.size(1), s.size(2), items);
}

core::Curve exact_curve(std::vector<core::ScoredItem>& items) { return core::exact_curve(items.data(), items.size()); }

}  // namespace

double auroc(const at::Tensor& scores, const at::Tensor& labels) {
  check_1d(scores, labels, "auroc");
  auto items = image_items(scores, labels);
  return core::auroc_of(exact_curve(items));
}

double average_precision(const at::Tensor& scores, const at::Tensor& labels) {
  check_1d(scores, labels, "average_precision");
  auto items = image_items(scores, labels);
  return core::ap_of(exact_curve(items));
}

double f1_max(const at::Tensor& scores, const at::Tensor& labels) {
  check_1d(scores, labels, "f1_max");
  auto items = image_items(scores, labels);
  return core::f1_of(exact_curve(items));
}

at::Tensor connected_components(const at::Tensor& mask) {
  TORCH_CHECK_VALUE(mask.defined() && mask.dim() == 2,
                    fmt::format("connected_components: expected an (H, W) mask, got {}",
                                mask.defined() ? mask.sizes() : at::IntArrayRef{}));
  auto m = as_bool(mask);
  auto out = at::empty(m.sizes(), at::kLong);
  core::label_components(m.data_ptr<bool>(), m.size(0), m.size(1), out.data_ptr<int64_t>());
  return out;
}

double aupro(const at::Tensor& maps, const at::Tensor& masks, double fpr_limit) {
  check_maps(maps, masks, "aupro");
  TORCH_CHECK_VALUE(fpr_limit > 0 && fpr_limit <= 1,
                    fmt::format("aupro: expected 0 < fpr_limit <= 1, got {:g}", fpr_limit));
  std::vector<core::ScoredItem> items;
  const double regions = append_pixel_items(maps, masks, items);
  return core::aupro_of(exact_curve(items), regions, fpr_limit);
}

// ---- ImageMetrics ---------------------------------------------------------------------

void ImageMetrics::update(const at::Tensor& scores, const at::Tensor& labels) {
  check_1d(scores, labels, "ImageMetrics.update");
  for (const core::ScoredItem& it : image_items(scores, labels)) {
    scores_.push_back(it.score);
    labels_.push_back(it.pos);
  }
}

ImageResult ImageMetrics::compute() const {
  const core::CurveMetrics m = core::image_metrics(scores_.data(), labels_.data(), scores_.size());
  return {m.auroc, m.ap, m.f1_max};
}

void ImageMetrics::reset() {
  scores_.clear();
  labels_.clear();
}

// ---- PixelMetrics ---------------------------------------------------------------------

PixelMetrics::PixelMetrics(std::optional<double> lo, std::optional<double> hi, int64_t bins, double fpr_limit,
                           int64_t exact_limit)
    : fixed_lo_(lo), fixed_hi_(hi), fpr_limit_(fpr_limit), bins_(bins), exact_limit_(exact_limit) {
  TORCH_CHECK_VALUE(
      lo.has_value() == hi.has_value(),
      fmt::format("PixelMetrics: expected both lo and hi (a fixed range) or neither (adaptive), got only {}",
                  lo ? "lo" : "hi"));
  if (lo) {
    TORCH_CHECK_VALUE(std::isfinite(*lo) && std::isfinite(*hi) && *hi > *lo,
                      fmt::format("PixelMetrics: expected a finite score range lo < hi, got [{:g}, {:g}]", *lo, *hi));
  }
  TORCH_CHECK_VALUE(bins >= 1, fmt::format("PixelMetrics: expected bins >= 1, got {}", bins));
  TORCH_CHECK_VALUE(fpr_limit > 0 && fpr_limit <= 1,
                    fmt::format("PixelMetrics: expected 0 < fpr_limit <= 1, got {:g}", fpr_limit));
  TORCH_CHECK_VALUE(exact_limit >= 0, fmt::format("PixelMetrics: expected exact_limit >= 0, got {}", exact_limit));
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
    TORCH_CHECK_VALUE(core::adaptive_range_fits(binned_, hist_.grid, seen_min, seen_max),
                      fmt::format("PixelMetrics.update: the scores seen span [{:g}, {:g}], too wide for the adaptive "
                                  "range; give a fixed range (lo, hi)",
                                  seen_min, seen_max));
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
  if (!binned_) {
    start_binning();
  } else if (!fixed_range()) {
    const bool nested = hist_.extend(seen_min_, seen_max_);  // adaptive: extends the grid to the range seen so far
    TORCH_INTERNAL_ASSERT(nested, "PixelMetrics: a filled bin fell outside the extended range");
  }
  add_binned(m.contiguous(), as_bool(masks));
}

void PixelMetrics::start_binning() {
  binned_ = true;
  // The adaptive grid spans everything seen (seen_* include this batch).
  hist_.start(fixed_range() ? core::BinGrid::fixed(*fixed_lo_, *fixed_hi_, bins_)
                            : core::BinGrid::adaptive(seen_min_, seen_max_, bins_));
  for (size_t i = 0; i < maps_.size(); ++i) add_binned(maps_[i], masks_[i]);
  maps_ = {};
  masks_ = {};
}

void PixelMetrics::add_binned(const at::Tensor& maps, const at::Tensor& masks) {
  const int64_t b = maps.size(0), h = maps.size(1), w = maps.size(2), hw = h * w;
  const bool* pk = masks.data_ptr<bool>();
  const core::BinIndex bin_of = hist_.grid.index();
  // Images are split over the intra-op threads; each chunk fills its own histograms, which
  // are merged in chunk order (integer counts are exact; the PRO sums are deterministic for a
  // given thread count).
  std::mutex mutex;
  std::map<int64_t, core::PartialHistogram> partials;
  auto run = [&](const auto* ps) {  // float or double maps
    at::parallel_for(0, b, 1, [&](int64_t begin, int64_t end) {
      core::PartialHistogram part(bins_);
      std::vector<int64_t> labels;
      std::vector<double> weights;
      for (int64_t img = begin; img < end; ++img)
        part.add_image(ps + img * hw, pk + img * hw, h, w, bin_of, labels, weights);
      std::lock_guard<std::mutex> lock(mutex);
      partials.emplace(begin, std::move(part));
    });
  };
  if (maps.scalar_type() == at::kDouble)
    run(maps.data_ptr<double>());
  else
    run(maps.data_ptr<float>());
  for (const auto& kv : partials) hist_.merge(kv.second);
}

PixelResult PixelMetrics::compute() const {
  TORCH_CHECK(pixels_ > 0, "PixelMetrics.compute: no pixels were streamed in (call update first)");
  core::CurveMetrics m;
  if (binned_) {
    m = hist_.metrics(fpr_limit_);
  } else {
    std::vector<core::ScoredItem> items;
    double regions = 0;
    for (size_t i = 0; i < maps_.size(); ++i) regions += append_pixel_items(maps_[i], masks_[i], items);
    m = core::curve_metrics(exact_curve(items), regions, fpr_limit_);
  }
  return {m.auroc, m.ap, m.f1_max, m.aupro};
}

void PixelMetrics::reset() {
  pixels_ = 0;
  binned_ = false;
  seen_min_ = seen_max_ = 0;
  maps_ = {};
  masks_ = {};
  hist_ = {};
}

std::optional<double> PixelMetrics::lo() const {
  if (fixed_range()) return fixed_lo_;
  if (!binned_) return std::nullopt;
  return hist_.grid.lo();
}

std::optional<double> PixelMetrics::hi() const {
  if (fixed_range()) return fixed_hi_;
  if (!binned_) return std::nullopt;
  return hist_.grid.hi();
}

std::optional<double> PixelMetrics::bin_width() const {
  if (fixed_range()) return (*fixed_hi_ - *fixed_lo_) / static_cast<double>(bins_);
  if (!binned_) return std::nullopt;
  return hist_.grid.width();
}

int64_t PixelMetrics::state_bytes() const {
  int64_t bytes = static_cast<int64_t>(sizeof(*this));
  for (const auto& t : maps_) bytes += static_cast<int64_t>(t.nbytes());
  for (const auto& t : masks_) bytes += static_cast<int64_t>(t.nbytes());
  bytes += static_cast<int64_t>((hist_.pos.capacity() + hist_.neg.capacity() + hist_.pro.capacity()) * sizeof(double));
  return bytes;
}

}  // namespace lake::metrics
