// Catch2 entry point for the LAKE C++ tests; sets LibTorch's thread count explicitly.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "lake/runtime.h"

int main(int argc, char* argv[]) {
  lake::set_num_threads(0);
  return Catch::Session().run(argc, argv);
}
