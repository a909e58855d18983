// lake::save_clip (LAKE export v2, safetensors) read back by lake::load_clip: the same model
// as its source (a v1 export); the weights as the independent safetensors reader sees them;
// crafted metadata and failing writes as errors that name the file and leave nothing behind.
#include <lake/clip_model.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "detail/base64.h"
#include "detail/safetensors.h"
#include "fixtures.h"

using Catch::Contains;
using lake::test::fixture;
using lake::test::load_tensors;

namespace {

std::string export_scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / "lake_test_clip_export";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string export_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// `meta` changed by `edit`, the tensors as they are, written by the generic writer.
std::string export_craft(const std::string& name, const std::string& good,
                  const std::function<void(std::map<std::string, std::string>&)>& edit) {
  auto f = lake::detail::read_safetensors(good);
  edit(f.metadata);
  const std::string path = export_scratch(name);
  lake::detail::write_safetensors(path, f.tensors, f.metadata);
  return path;
}

}  // namespace

TEST_CASE("save_clip: a v1 export re-saved as v2 loads as the same model", "[clip_export]") {
  const lake::ClipModel v1 = lake::load_clip(fixture("tiny_export.pt"));
  const std::string path = export_scratch("tiny_v2.safetensors");
  lake::SaveClipOptions o;
  o.source = "catch2";
  const auto meta = lake::save_clip(v1, path, o);
  CHECK(meta.at("format") == "lake-clip");
  CHECK(meta.at("format_version") == "2");
  CHECK(meta.at("vision_layers") == "3");
  CHECK(meta.at("source") == "catch2");
  CHECK(meta.count("vocabulary_gz_base64") == 0);

  const lake::ClipModel v2 = lake::load_clip(path);
  const lake::ClipConfig &a = v1.config(), &b = v2.config();
  CHECK(b.archive_kind == lake::ArchiveKind::LakeExport);
  CHECK(b.describe() == a.describe());
  for (int i = 0; i < 3; ++i) {
    CHECK(b.image_mean[i] == a.image_mean[i]);
    CHECK(b.image_std[i] == a.image_std[i]);
  }
  CHECK(v2.fingerprint() == v1.fingerprint());
  auto ref = load_tensors("tiny_reference.pt");
  CHECK(at::equal(v2.encode_image(ref["images"]), v1.encode_image(ref["images"])));
  CHECK(at::equal(v2.encode_text(ref["tokens"]), v1.encode_text(ref["tokens"])));
  REQUIRE(v2.tokenizer() != nullptr);
  CHECK(at::equal(v2.tokenizer()->tokenize({"a photo of a cat"}), v1.tokenizer()->tokenize({"a photo of a cat"})));

  // The file, read as plain safetensors: every parameter, the metadata as returned.
  auto f = lake::detail::read_safetensors(path);
  CHECK(f.tensors.size() == v1.parameter_names().size());
  for (const auto& name : v1.parameter_names()) CHECK(at::equal(f.tensors.at(name), v1.parameter(name)));
  std::string vocab;
  REQUIRE(lake::detail::base64_decode(f.metadata.at("vocabulary_gz_base64"), vocab));
  f.metadata.erase("vocabulary_gz_base64");
  CHECK(f.metadata == meta);

  // Saved again: byte for byte the same file.
  const std::string again = export_scratch("tiny_v2_again.safetensors");
  lake::save_clip(v2, again, o);
  CHECK(export_bytes(again) == export_bytes(path));
}

TEST_CASE("save_clip: float16 and bfloat16 store the rounded weights", "[clip_export]") {
  const lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    INFO(dtype);
    lake::SaveClipOptions o;
    o.dtype = dtype;
    const std::string path = export_scratch("tiny_half.safetensors");
    lake::save_clip(m, path, o);
    auto f = lake::detail::read_safetensors(path);
    for (const auto& name : m.parameter_names()) {
      CHECK(f.tensors.at(name).scalar_type() == dtype);
      CHECK(at::equal(f.tensors.at(name), m.parameter(name).to(dtype)));
    }
    CHECK(lake::load_clip(path).tokenizer() == nullptr);  // the state dict had no vocabulary
  }
  lake::SaveClipOptions bad;
  bad.dtype = at::kDouble;
  REQUIRE_THROWS_AS(lake::save_clip(m, export_scratch("x.safetensors"), bad), c10::ValueError);
}

TEST_CASE("base64: round trip and strict decoding", "[clip_export]") {
  for (const std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    std::string back;
    REQUIRE(lake::detail::base64_decode(lake::detail::base64_encode(s), back));
    CHECK(back == s);
  }
  CHECK(lake::detail::base64_encode("foobar") == "Zm9vYmFy");
  CHECK(lake::detail::base64_encode("fo") == "Zm8=");
  std::string out;
  for (const char* bad : {"Zm9", "Zm9v!mFy", "Zm=v", "Zm9=", "Zg==Zg==", "Zh=="}) {
    INFO(bad);
    CHECK_FALSE(lake::detail::base64_decode(bad, out));
  }
}

TEST_CASE("LAKE export v2: crafted metadata is a value error naming the file and key", "[clip_export][bad-input]") {
  const std::string good = export_scratch("good.safetensors");
  lake::save_clip(lake::load_clip(fixture("tiny_export.pt")), good);
  auto check = [](const std::string& path, const std::string& needle) {
    REQUIRE_THROWS_AS(lake::load_clip(path), c10::ValueError);
    REQUIRE_THROWS_WITH(lake::load_clip(path), Contains(path) && Contains(needle));
  };
  check(export_craft("v3.safetensors", good, [](auto& m) { m["format_version"] = "3"; }),
        "format version 3; this build of LAKE reads versions 1 and 2 (upgrade LAKE)");
  check(export_craft("v1.safetensors", good, [](auto& m) { m["format_version"] = "1"; }), "says format_version=1");
  check(export_craft("b64.safetensors", good, [](auto& m) { m["vocabulary_gz_base64"] = "*"; }),
        "__metadata__ key 'vocabulary_gz_base64' is not valid base64");
  check(export_craft("layers.safetensors", good, [](auto& m) { m["vision_layers"] = "4"; }),
        "says vision_layers=4 but the weights' shapes give vision_layers=3");
  check(export_craft("image.safetensors", good, [](auto& m) { m["image_size"] = "224"; }), "image_size=224");
  check(export_craft("embed.safetensors", good, [](auto& m) { m["embed_dim"] = "512"; }), "embed_dim=512");
}

TEST_CASE("save_clip: failures leave nothing behind and an existing file unchanged", "[clip_export][bad-input]") {
  const lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  const std::string missing_dir = export_scratch("no_such_dir") + "/m.safetensors";
  REQUIRE_THROWS_AS(lake::save_clip(m, missing_dir), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::save_clip(m, missing_dir), Contains("cannot create") && Contains(missing_dir));
  CHECK_FALSE(std::filesystem::exists(export_scratch("no_such_dir")));

  // A folder of this case's own: the other cases write (atomically, through .tmp. files) into
  // export_scratch's folder, and CTest runs them in parallel.
  const auto own = std::filesystem::temp_directory_path() / "lake_test_clip_export_failures";
  std::filesystem::create_directories(own);
  const std::string existing = (own / "existing.safetensors").string();
  { std::ofstream(existing, std::ios::binary) << "previous"; }
  lake::SaveClipOptions bad;
  bad.vocabulary = "not a gzip'd merges file";
  REQUIRE_THROWS_AS(lake::save_clip(m, existing, bad), c10::ValueError);
  CHECK(export_bytes(existing) == "previous");
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(existing).parent_path()))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}
