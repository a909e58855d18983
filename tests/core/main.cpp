// Catch2 entry point of the header-only core's tests (lake_core_tests): its own translation
// unit, so that editing a test file recompiles only that file.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
