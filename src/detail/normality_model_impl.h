#pragma once
// What NormalityModel's two sources share (internal): src/model/normality_model.cpp
// (construction, options, fit) and normality_score.cpp (score, calibrate, explain).

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "detail/normality_state.h"
#include "lake/image_io.h"
#include "lake/normality_model.h"

// A named namespace: the unity build compiles every src/ file as one translation unit.
namespace lake::detail::normality {

// (B, 3, H, W), checked by the caller (detail::check_image_batch) -> the backbone's (B, 3, S, S) input.
at::Tensor to_backbone(const at::Tensor& images, int64_t size);

// The backbone's taps of `images` (B, 3, S, S), `batch_size` images per forward, handed
// to `fn(taps, first)` chunk by chunk (first: the chunk's first image). With batch_size 1
// the results do not depend on how many images a call holds, bit for bit.
// `batch_size` > 0 overrides the model's option for this call (score_prepared).
template <typename Fn>
void for_each_chunk(const NormalityModel::State& s, const at::Tensor& images, Fn&& fn, int64_t batch_size = 0) {
  const int64_t B = images.size(0), step = batch_size > 0 ? batch_size : s.options.batch_size;
  for (int64_t first = 0; first < B; first += step) fn(s.probe(images.slice(0, first, std::min(B, first + step))), first);
}

// Image j of a probe result, layer l: its selected channels, L2-normalised, (N, K) float32.
// The indices were validated once (State::set_neurons) and live on the model's device: no
// per-call range check, no device synchronisation.
at::Tensor sparse_tokens(const std::vector<at::Tensor>& device_indices, const ProbeResult& r, size_t l, int64_t j);

// Image files by the one rule of lake::prepare_image, at this model's S and normalisation.
std::vector<PreparedImage> prepare_files(const NormalityModel::State& s, const std::vector<std::string>& paths,
                                         const char* what);

at::Tensor stack_pixels(const std::vector<PreparedImage>& images);

}  // namespace lake::detail::normality
