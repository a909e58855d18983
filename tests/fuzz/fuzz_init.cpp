// Linked into every fuzz_<target> executable (not into lake_tests, which replays the same
// targets with the project's thread settings): libFuzzer runs one input at a time, and an
// OpenMP pool of 2 threads on a loaded machine can stall in its barriers past libFuzzer's
// per-input timeout (a 16 px clip_preprocess "timed out" after 30 s at load 7), so the
// harnesses run ATen single-threaded.
#include <ATen/Parallel.h>

#include <cstdint>

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  at::set_num_threads(1);
  return 0;
}
