// Process-wide runtime settings.

#include "lake/runtime.h"

#include <ATen/Parallel.h>

#include <thread>

namespace lake {

int set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return at::get_num_threads();
}

int get_num_threads() { return at::get_num_threads(); }

}  // namespace lake
