// libFuzzer harness: lake::fuzz::fuzz_lake_file (tests/fuzz/targets.h). Built with LAKE_FUZZ=ON.
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return lake::fuzz::fuzz_lake_file(data, size);
}
