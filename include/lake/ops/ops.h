#pragma once
// The anomaly head's kernels: each has a CPU implementation and a CUDA one (when LAKE is
// built with CUDA), chosen by the input's device in one place per op (src/ops/ops.cpp).
// They are PyTorch dispatcher ops, lake::channel_moments, lake::top_k, lake::gather_normalize,
// lake::nearest_neighbors and lake::upsample_blur (src/ops/registration.cpp): the functions
// declared here call them through c10::Dispatcher, so torch.profiler names every call, and
// Python sees them as torch.ops.lake.* (schemas and fake kernels: docs/kernels.md).

#include "lake/ops/channel_moments.h"
#include "lake/ops/gather_normalize.h"
#include "lake/ops/nearest_neighbor.h"
#include "lake/ops/top_k.h"
#include "lake/ops/upsample_blur.h"

namespace lake::ops {

/// True when this build of LAKE carries the CUDA kernels.
bool cuda_kernels_available();

}  // namespace lake::ops
