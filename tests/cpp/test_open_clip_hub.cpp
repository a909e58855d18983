// OpenCLIP hub folders (open_clip_config.json beside open_clip_pytorch_model.bin): the config's
// heads and activation are used, and a config that disagrees with its weights is a
// c10::ValueError naming the config file, the key and both values. (The forward against
// OpenCLIP's: tests/python/test_open_clip_hub.py.)
#include <lake/clip_model.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "fixtures.h"

using Catch::Contains;
using lake::test::fixture;

namespace {

namespace fs = std::filesystem;

// The tiny fixture (ViT width 128, 3 layers, patch 8, image 32; text width 128, 2 layers,
// embed 64) as a hub folder with the given vision_cfg width and head_width. The weights are a
// symlink, as in a hub cache snapshot (and no fs::remove_all: libtorch.so exports its own,
// which crashes).
fs::path hub_folder(const std::string& name, int vision_width, int head_width) {
  const fs::path dir = fs::temp_directory_path() / "lake_test_open_clip_hub" / name;
  fs::create_directories(dir);
  const fs::path weights = dir / "open_clip_pytorch_model.bin";
  std::remove(weights.c_str());
  fs::create_symlink(fs::absolute(fixture("tiny_state_dict.pt")), weights);
  std::ofstream(dir / "open_clip_config.json")
      << R"({"model_cfg": {"embed_dim": 64, "quick_gelu": true, "vision_cfg": {"image_size": 32, "layers": 3, "width": )"
      << vision_width << R"(, "patch_size": 8, "head_width": )" << head_width
      << R"(}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2}},)"
      << R"( "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})";
  return dir;
}

}  // namespace

TEST_CASE("OpenCLIP hub folder: heads, activation and normalisation from open_clip_config.json", "[open_clip_hub]") {
  const fs::path dir = hub_folder("ok", 128, 32);
  for (const fs::path& p : {dir, dir / "open_clip_pytorch_model.bin"}) {
    const lake::ClipConfig c = lake::load_clip(p.string()).config();
    CHECK(c.archive_kind == lake::ArchiveKind::OpenClipHub);
    CHECK(c.activation == lake::Activation::QuickGELU);
    CHECK(c.vision_heads == 4);  // width 128 / head_width 32
    CHECK(c.text_heads == 4);
    CHECK(c.image_mean[1] == 0.5f);
    CHECK(c.image_std[2] == 0.25f);
  }
}

TEST_CASE("OpenCLIP hub folder: a config that disagrees with the weights is a value error", "[open_clip_hub][bad-input]") {
  const fs::path dir = hub_folder("mismatch", 256, 64);
  const std::string cfg = (dir / "open_clip_config.json").string();
  REQUIRE_THROWS_AS(lake::load_clip(dir.string()), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::load_clip(dir.string()),
                      Contains(cfg) && Contains("model_cfg.vision_cfg.width = 256") &&
                          Contains("open_clip_pytorch_model.bin") && Contains("width = 128"));
}
