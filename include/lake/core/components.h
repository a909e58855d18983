#pragma once
// Connected components of one (H, W) mask and AUPRO's per-pixel region weights, on raw
// row-major arrays. Header-only, standard library only (see lake/core/config.h).
//
//   std::vector<uint8_t> mask = {1, 0, 1,
//                                0, 1, 0,
//                                0, 0, 1};            // (3, 3), nonzero = foreground
//   std::vector<int64_t> labels(9);
//   int64_t n = lake::core::label_components(mask.data(), 3, 3, labels.data());  // n == 1
//
// lake::metrics::connected_components (lake/metrics.h) is the ATen front end of
// label_components; AUPRO (lake/core/metrics.h) weighs each anomalous pixel by
// region_weights.

#include "lake/core/config.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lake::core {

/// Two-pass 8-connected labelling of one (H, W) mask (nonzero = foreground) into `out`
/// ((H, W) int64, 0 = background, 1..n numbered in raster order of each component's first
/// pixel: the numbering of scipy.ndimage.label with a 3x3 structure). Returns n.
/// Provisional labels are merged with an iterative union-find (path halving), no recursion.
template <typename M>
int64_t label_components(const M* m, int64_t h, int64_t w, int64_t* out) {
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
      if (!is_set(m[i])) {
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

/// For each pixel of one (H, W) mask: 1 / |region| inside a ground-truth region (an
/// 8-connected component), 0 outside, into `weights` (resized to H * W); `labels` is scratch
/// (resized to H * W, left holding the components). Returns the number of regions.
template <typename M>
int64_t region_weights(const M* m, int64_t h, int64_t w, std::vector<int64_t>& labels, std::vector<double>& weights) {
  labels.resize(static_cast<size_t>(h * w));
  const int64_t n = label_components(m, h, w, labels.data());
  std::vector<double> size(static_cast<size_t>(n + 1), 0.0);
  for (int64_t l : labels) size[l] += 1;
  weights.resize(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) weights[i] = labels[i] ? 1.0 / size[labels[i]] : 0.0;
  return n;
}

}  // namespace lake::core
