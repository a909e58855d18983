#pragma once
// The anomaly head's kernels: each has a CPU implementation and a CUDA one (when LAKE is
// built with CUDA), chosen by the input's device in one place per op (src/ops/*.cpp).

#include "lake/ops/channel_moments.h"
#include "lake/ops/gather_normalize.h"
#include "lake/ops/nearest_neighbor.h"
#include "lake/ops/top_k.h"
#include "lake/ops/upsample_blur.h"

namespace lake::ops {

/// True when this build of LAKE carries the CUDA kernels.
bool cuda_kernels_available();

}  // namespace lake::ops
