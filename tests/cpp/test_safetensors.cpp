// The safetensors reader: tensors read back exactly (aligned views and misaligned copies),
// and every lying header a c10::ValueError naming the file and the tensor, before any data
// is touched. Also through lake::load_clip (the format is detected from the bytes).
#include <lake/clip_model.h>

#include <filesystem>
#include <fstream>

#include "detail/safetensors.h"
#include "fixtures.h"

using Catch::Contains;

namespace {

std::string scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / "lake_test_safetensors";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string write(const std::string& name, std::string header, const std::string& data,
                  int64_t length = -1) {
  const std::string path = scratch(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t n = length >= 0 ? static_cast<uint64_t>(length) : header.size();
  for (int k = 0; k < 8; ++k) out.put(static_cast<char>((n >> (8 * k)) & 0xff));
  out << header << data;
  return path;
}

std::string floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * sizeof(float));
}

}  // namespace

TEST_CASE("safetensors: tensors and metadata read back exactly", "[safetensors]") {
  const std::string path = write("ok.safetensors",
                                 R"({"__metadata__": {"format": "pt"}, "b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},)"
                                 R"( "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [1, 17]},)"
                                 R"( "e": {"dtype": "F16", "shape": [0, 3], "data_offsets": [17, 17]}})",
                                 std::string("\x07", 1) + floats({1.f, 2.f, 3.f, 4.f}));
  REQUIRE(lake::detail::looks_like_safetensors(path));
  auto f = lake::detail::read_safetensors(path);
  REQUIRE(f.metadata.at("format") == "pt");
  REQUIRE(f.tensors.at("b").item<uint8_t>() == 7);
  const at::Tensor a = f.tensors.at("a");  // at an odd offset: copied, aligned
  REQUIRE(a.sizes() == at::IntArrayRef({2, 2}));
  REQUIRE(at::equal(a, at::arange(1, 5, at::kFloat).view({2, 2})));
  REQUIRE(f.tensors.at("e").numel() == 0);
}

TEST_CASE("safetensors: lying headers are value errors naming the file and tensor", "[safetensors][bad-input]") {
  const std::string d8(8, '\0');
  auto check = [](const std::string& path, const std::string& needle) {
    REQUIRE_THROWS_AS(lake::detail::read_safetensors(path), c10::ValueError);
    REQUIRE_THROWS_WITH(lake::detail::read_safetensors(path), Contains(path) && Contains(needle));
  };
  check(write("eof.safetensors", R"({"a": {}})", d8, 100000), "declares a 100000-byte header");
  check(write("outside.safetensors", R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", d8),
        "tensor 'a' has data_offsets [0, 16] outside the data area of 8 bytes");
  check(write("overlap.safetensors",
              R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
              d8 + d8),
        "overlaps tensor 'a'");
  check(write("size.safetensors", R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", d8),
        "needs 12 bytes");
  check(write("dtype.safetensors", R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", d8),
        "tensor 'a' has unknown dtype 'Q4'");
  check(write("json.safetensors", R"({"a": {"dtype": )", d8), "not valid JSON");
  check(write("neg.safetensors", R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", d8),
        "tensor 'a' has shape [-2]");
  check(write("overflow.safetensors",
              R"({"a": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 8]}})", d8),
        "overflows");
}

TEST_CASE("load_clip detects safetensors by its bytes and rejects non-CLIP contents", "[safetensors][bad-input]") {
  const std::string path = write("not_clip.bin", R"({"fc.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                                 std::string(8, '\0'));
  REQUIRE_THROWS_AS(lake::load_clip(path), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::load_clip(path), Contains("not_clip.bin' is not a CLIP ViT"));
  const auto dir = scratch("empty_folder");
  std::filesystem::create_directories(dir);
  REQUIRE_THROWS_WITH(lake::load_clip(dir), Contains("is a folder without config.json"));
}
