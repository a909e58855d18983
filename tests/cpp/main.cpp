// Catch2 entry point for the LAKE C++ tests; sets LibTorch's thread count explicitly.
#define CATCH_CONFIG_RUNNER
// c10's logging header defines a one-argument CHECK; include it first so that Catch2's
// CHECK (defined after it) wins in every test file, also in the unity build.
#include <c10/util/Logging.h>
#include <catch2/catch.hpp>

#include "lake/runtime.h"

int main(int argc, char* argv[]) {
  lake::set_num_threads(0);
  return Catch::Session().run(argc, argv);
}
