#pragma once
// LAKE: Latent Anomaly Knowledge Excavation. The umbrella header: the whole public API.

#include "lake/version.h"
#include "lake/runtime.h"
#include "lake/clip_config.h"
#include "lake/tokenizer.h"
#include "lake/clip_model.h"
#include "lake/models.h"
#include "lake/neuron_probe.h"
#include "lake/sensitivity_selector.h"
#include "lake/normality_model.h"
#include "lake/image_io.h"
#include "lake/metrics.h"
#include "lake/ops/ops.h"
#include "lake/doctor.h"
