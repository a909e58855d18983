// Model names resolved to cache files (lake/models.h): the hub cache layout, the order of
// the OpenAI places, names vs paths, and the error for a model that is not on this machine.
// The Python tests cross-check the same rules against huggingface_hub itself.
#include <lake/clip_model.h>
#include <lake/models.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include <unistd.h>

#include "fixtures.h"

using Catch::Contains;
namespace fs = std::filesystem;

namespace {

// Sets environment variables for one test and restores them afterwards.
struct ScopedEnv {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  void set(const std::string& key, const std::optional<std::string>& value) {
    const char* old = std::getenv(key.c_str());
    saved.emplace_back(key, old ? std::optional<std::string>(old) : std::nullopt);
    if (value) ::setenv(key.c_str(), value->c_str(), 1); else ::unsetenv(key.c_str());
  }
  ~ScopedEnv() {
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) {
      if (it->second) ::setenv(it->first.c_str(), it->second->c_str(), 1); else ::unsetenv(it->first.c_str());
    }
  }
};

// A new folder per call (never fs::remove_all: libtorch.so exports its own, which crashes;
// see test_image_io.cpp). Under the temporary directory, named by process and call.
fs::path fresh_dir(const std::string& name) {
  static int calls = 0;
  fs::path d = fs::temp_directory_path() /
               ("lake_test_models_" + std::to_string(::getpid()) + "_" + std::to_string(calls++)) / name;
  fs::create_directories(d);
  return d;
}

void copy_into(const std::string& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

}  // namespace

TEST_CASE("models: cache locations follow huggingface_hub's environment rules", "[models]") {
  ScopedEnv env;
  env.set("HOME", "/h");
  for (const char* k : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "LAKE_HOME"}) env.set(k, std::nullopt);
  CHECK(lake::hf_hub_cache_dir() == "/h/.cache/huggingface/hub");
  CHECK(lake::lake_cache_dir() == "/h/.cache/lake");
  CHECK(lake::clip_cache_dir() == "/h/.cache/clip");
  env.set("XDG_CACHE_HOME", "/x");
  CHECK(lake::hf_hub_cache_dir() == "/x/huggingface/hub");
  CHECK(lake::lake_cache_dir() == "/x/lake");
  env.set("HF_HOME", "/hf");
  CHECK(lake::hf_hub_cache_dir() == "/hf/hub");
  env.set("HUGGINGFACE_HUB_CACHE", "/legacy");
  CHECK(lake::hf_hub_cache_dir() == "/legacy");
  env.set("HF_HUB_CACHE", "/new");
  CHECK(lake::hf_hub_cache_dir() == "/new");
}

TEST_CASE("models: names and paths", "[models]") {
  CHECK(lake::is_model_name("ViT-L/14@336px"));
  CHECK(lake::is_model_name("openai/clip-vit-base-patch16"));
  CHECK(lake::is_model_name("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K"));
  CHECK_FALSE(lake::is_model_name("weights/model.safetensors"));
  CHECK_FALSE(lake::is_model_name("/abs/folder"));
  CHECK_FALSE(lake::is_model_name(fixture("tiny_state_dict.pt")));
  CHECK_THROWS_WITH(lake::locate_model("hf-hub:two words"), Contains("not a hub repository id"));
}

TEST_CASE("models: OpenAI names from the clip cache, LAKE's cache, then the hub cache", "[models]") {
  const fs::path root = fresh_dir("openai");
  ScopedEnv env;
  env.set("HOME", (root / "home").string());
  env.set("LAKE_HOME", (root / "lake").string());
  env.set("HF_HUB_CACHE", (root / "hub").string());
  env.set("LAKE_OPENAI_MIRROR", std::nullopt);
  lake::ModelLocation loc = lake::locate_model("ViT-B/16");
  CHECK(loc.is_name);
  CHECK(loc.path.empty());
  CHECK(loc.download_to == (root / "lake" / "clip" / "ViT-B-16.pt").string());
  CHECK(loc.url == "https://openaipublic.azureedge.net/clip/models/" + loc.sha256 + "/ViT-B-16.pt");
  CHECK_THROWS_WITH(lake::load_clip("ViT-B/16"), Contains(loc.download_to) && Contains(loc.sha256) &&
                                                      Contains("lake models --download"));

  // OpenCLIP's hub copy (weights only): refs/main -> snapshots/<commit>/open_clip_model.safetensors
  const fs::path repo = root / "hub" / "models--timm--vit_base_patch16_clip_224.openai";
  fs::create_directories(repo / "refs");
  std::ofstream(repo / "refs" / "main") << "abc123";
  CHECK(lake::locate_model("ViT-B/16").path.empty());  // the snapshot is not there yet
  copy_into(fixture("tiny_state_dict.pt"), repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin");
  CHECK(lake::locate_model("ViT-B/16").path == (repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin").string());
  CHECK(lake::locate_model("ViT-B/16").form == "state_dict");

  copy_into(fixture("tiny_openai_jit_fp32.pt"), loc.download_to);
  CHECK(lake::locate_model("ViT-B/16").path == loc.download_to);
  const fs::path clip_file = root / "home" / ".cache" / "clip" / "ViT-B-16.pt";
  copy_into(fixture("tiny_openai_jit_fp32.pt"), clip_file);
  CHECK(lake::locate_model("ViT-B/16").path == clip_file.string());
  const lake::ClipModel by_name = lake::load_clip("ViT-B/16");
  CHECK(by_name.path() == clip_file.string());
  CHECK(by_name.fingerprint() == lake::load_clip(fixture("tiny_openai_jit_fp32.pt")).fingerprint());

  env.set("LAKE_OPENAI_MIRROR", "http://mirror.local/clip");
  CHECK(lake::locate_model("ViT-B/16").url == "http://mirror.local/clip/" + loc.sha256 + "/ViT-B-16.pt");
}

TEST_CASE("models: a hub repo is found only when complete", "[models]") {
  const fs::path root = fresh_dir("hub");
  ScopedEnv env;
  env.set("HF_HUB_CACHE", root.string());
  const fs::path snap = root / "models--org--oc" / "snapshots" / "0123456789abcdef0123456789abcdef01234567";
  copy_into(fixture("tiny_state_dict.pt"), snap / "open_clip_pytorch_model.bin");
  // A 40-hex revision is the commit itself (no refs file needed); no open_clip_config.json yet.
  CHECK(lake::locate_model("hf-hub:org/oc@0123456789abcdef0123456789abcdef01234567").path.empty());
  std::ofstream(snap / "open_clip_config.json") << "{}";
  lake::ModelLocation loc = lake::locate_model("hf-hub:org/oc@0123456789abcdef0123456789abcdef01234567");
  CHECK(loc.path == (snap / "open_clip_pytorch_model.bin").string());
  CHECK(loc.source == lake::ModelSource::OpenClipHub);
  CHECK(lake::locate_model("hf-hub:org/oc").path.empty());  // no refs/main
  CHECK_THROWS_WITH(lake::load_clip("org/oc"), Contains("model 'org/oc' is not on this machine") &&
                                                  Contains("config.json") && Contains(root.string()));
}
