#pragma once
// Process-wide runtime settings.

namespace lake {

/// Sets LibTorch's intra-op thread count. LibTorch built from the pip wheel defaults
/// to one thread on some machines; `n <= 0` means "all hardware threads".
/// Returns the number of threads now in effect.
int set_num_threads(int n);

/// LibTorch's current intra-op thread count.
int get_num_threads();

}  // namespace lake
