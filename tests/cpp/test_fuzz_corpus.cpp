// Replays the fuzz seeds (tests/fuzz/seeds/<target>/) and the inputs that found bugs
// (tests/fuzz/corpus/<target>/) through the fuzz targets (tests/fuzz/targets.h) in the normal
// build, without libFuzzer: each reader must refuse bad input with a c10::Error and nothing
// else (no other exception; a crash fails the whole run, which make sanitize also catches).
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "../fuzz/targets.h"

#ifndef LAKE_SOURCE_DIR
#define LAKE_SOURCE_DIR "."
#endif

namespace fuzz_corpus_test {

std::vector<std::string> files_under(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const std::filesystem::path kFuzzDir = std::filesystem::path(LAKE_SOURCE_DIR) / "tests" / "fuzz";

}  // namespace fuzz_corpus_test

TEST_CASE("every fuzz seed and kept crash is refused with a c10::Error or read", "[fuzz]") {
  using namespace fuzz_corpus_test;
  size_t seeds = 0;
  for (const auto& target : lake::fuzz::all_targets()) {
    DYNAMIC_SECTION("target " << target.name) {
      for (const char* kind : {"seeds", "corpus"}) {
        for (const std::string& path : files_under(kFuzzDir / kind / target.name)) {
          INFO(path);
          const std::vector<uint8_t> bytes = read_bytes(path);
          CHECK_NOTHROW(target.run(bytes.data(), bytes.size()));
          if (std::string(kind) == "seeds") ++seeds;
        }
      }
      // Every target has committed seeds, except those whose seeds are generated archives
      // (make fuzz writes them into build-fuzz/seeds; no generated archives in git).
      if (target.name != std::string("zip_archive") && target.name != std::string("safetensors")) CHECK(seeds > 0);
    }
  }
}

TEST_CASE("every folder of tests/fuzz/seeds and tests/fuzz/corpus names a fuzz target", "[fuzz]") {
  using namespace fuzz_corpus_test;
  std::set<std::string> names;
  for (const auto& t : lake::fuzz::all_targets()) names.insert(t.name);
  for (const char* kind : {"seeds", "corpus"}) {
    std::error_code ec;
    if (!std::filesystem::is_directory(kFuzzDir / kind, ec)) continue;
    for (const auto& e : std::filesystem::directory_iterator(kFuzzDir / kind))
      if (e.is_directory()) CHECK(names.count(e.path().filename().string()) == 1);
  }
}
