#pragma once
// LAKE version. Bumped with each release; the archive and model-file formats carry
// their own version numbers (see clip_model.h and normality_model.h).
#define LAKE_VERSION_MAJOR 0
#define LAKE_VERSION_MINOR 1
#define LAKE_VERSION_PATCH 0
#define LAKE_VERSION_STRING "0.1.0"
