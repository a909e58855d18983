// Model names resolved to files in the caches where the real tools put them (no network).

#include "lake/models.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>

#include "detail/format.h"

namespace lake {

namespace models_detail {

namespace fs = std::filesystem;

const char* kOpenAIBase = "https://openaipublic.azureedge.net/clip/models/";

KnownModel openai(const char* name, const char* description, const char* file, const char* sha256,
                  std::vector<std::string> same_weights) {
  return KnownModel{name, ModelSource::OpenAI, description, file,
                    fmt::format("{}{}/{}", kOpenAIBase, sha256, file), sha256, std::move(same_weights)};
}

KnownModel hub(const char* name, ModelSource source, const char* description) {
  return KnownModel{name, source, description, "", "", "", {}};
}

std::string env(const char* key) {
  const char* v = std::getenv(key);
  return v && *v ? std::string(v) : std::string();
}

std::string home() {
  std::string h = env("HOME");
  return h.empty() ? std::string("/") : h;
}

std::string xdg_cache() {
  std::string x = env("XDG_CACHE_HOME");
  return x.empty() ? (fs::path(home()) / ".cache").string() : x;
}

// The weights a hub repo in each layout needs: one group per file, alternatives in order.
std::vector<std::vector<std::string>> hub_files(ModelSource s, bool need_config = true) {
  if (s == ModelSource::Transformers)
    return {{"config.json"},
            {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"}};
  std::vector<std::vector<std::string>> g;
  if (need_config) g.push_back({"open_clip_config.json"});
  g.push_back({"open_clip_model.safetensors", "open_clip_pytorch_model.bin"});
  return g;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Every shard an index names is present beside it (a half-downloaded sharded checkpoint is
// not "on this machine").
bool shards_present(const fs::path& index) {
  std::ifstream in(index, std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) return false;
  for (const auto& v : j["weight_map"]) {
    if (!v.is_string() || v.get<std::string>().find('/') != std::string::npos) return false;
    if (!fs::is_regular_file(index.parent_path() / v.get<std::string>())) return false;
  }
  return true;
}

bool is_commit(const std::string& rev) {
  return rev.size() == 40 && std::all_of(rev.begin(), rev.end(), [](char c) { return std::isxdigit(c) && !std::isupper(c); });
}

// The folder of `repo` in the hub cache: "models--org--name".
std::string repo_folder(const std::string& repo) {
  return fmt::format("models--{}", std::regex_replace(repo, std::regex("/"), "--"));
}

// The snapshot folder of `repo` at `revision` in the hub cache, as huggingface_hub lays it
// out: models--org--name/refs/<revision> holds the commit, snapshots/<commit>/ the files.

fs::path snapshot_of(const std::string& repo, const std::string& revision) {
  fs::path root = fs::path(hf_hub_cache_dir()) / repo_folder(repo);
  std::string commit = revision;
  if (!is_commit(revision)) {
    std::ifstream ref(root / "refs" / revision);
    if (!ref.good()) return {};
    std::getline(ref, commit);
    while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
    if (commit.empty() || commit.find('/') != std::string::npos || commit.find("..") != std::string::npos) return {};
  }
  return root / "snapshots" / commit;
}

// The weights file of a snapshot holding every group of `files`, or "".
std::string complete_in(const fs::path& snapshot, const std::vector<std::vector<std::string>>& files) {
  if (snapshot.empty() || !fs::is_directory(snapshot)) return "";
  std::string weights;
  for (const auto& group : files) {
    std::string found;
    for (const auto& f : group) {
      const fs::path p = snapshot / f;
      if (!fs::is_regular_file(p)) continue;
      if (ends_with(f, ".index.json") && !shards_present(p)) continue;
      found = p.string();
      break;
    }
    if (found.empty()) return "";
    weights = found;  // the last group is the weights
  }
  return weights;
}

std::string describe_files(const std::vector<std::vector<std::string>>& files) {
  std::vector<std::string> groups;
  for (const auto& alternatives : files) groups.push_back(fmt::format("{}", fmt::join(alternatives, " or ")));
  return fmt::format("{}", fmt::join(groups, " + "));
}

std::string search_entry(const std::string& repo, const std::string& revision,
                         const std::vector<std::vector<std::string>>& files) {
  const fs::path snap = snapshot_of(repo, revision);
  const std::string where =
      snap.empty() ? fmt::format("{} (absent)",
                                 (fs::path(hf_hub_cache_dir()) / repo_folder(repo) / "refs" / revision).string())
                   : snap.string();
  return fmt::format("hub repo {}@{} ({}) at {}", repo, revision, describe_files(files), where);
}

const KnownModel* find_known(const std::string& name) {
  for (const auto& m : known_models())
    if (m.name == name) return &m;
  return nullptr;
}

// "org/name" with an optional "@revision".
bool split_repo(const std::string& s, std::string& repo, std::string& revision) {
  static const std::regex re(R"(^([A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*)(@([A-Za-z0-9_.\-/]+))?$)");
  std::smatch m;
  if (!std::regex_match(s, m, re)) return false;
  repo = m[1].str();
  revision = m[3].matched ? m[3].str() : "main";
  return revision.find("..") == std::string::npos;
}

bool has_weights_extension(const std::string& s) {
  for (const char* e : {".pt", ".pth", ".bin", ".safetensors", ".json", ".lake", ".ckpt", ".zip"})
    if (ends_with(s, e)) return true;
  return false;
}

}  // namespace models_detail

std::string to_string(ModelSource s) {
  switch (s) {
    case ModelSource::OpenAI: return "openai";
    case ModelSource::Transformers: return "transformers";
    case ModelSource::OpenClipHub: return "open_clip";
  }
  return "unknown";
}

const std::vector<KnownModel>& known_models() {
  using models_detail::hub;
  using models_detail::openai;
  static const std::vector<KnownModel> models = {
      openai("ViT-B/32", "ViT-B/32, 224 px, OpenAI", "ViT-B-32.pt",
             "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
             {"timm/vit_base_patch32_clip_224.openai", "openai/clip-vit-base-patch32"}),
      openai("ViT-B/16", "ViT-B/16, 224 px, OpenAI", "ViT-B-16.pt",
             "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
             {"timm/vit_base_patch16_clip_224.openai", "openai/clip-vit-base-patch16"}),
      openai("ViT-L/14", "ViT-L/14, 224 px, OpenAI", "ViT-L-14.pt",
             "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
             {"timm/vit_large_patch14_clip_224.openai", "openai/clip-vit-large-patch14"}),
      openai("ViT-L/14@336px", "ViT-L/14, 336 px, OpenAI (the paper's backbone)", "ViT-L-14-336px.pt",
             "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
             {"timm/vit_large_patch14_clip_336.openai", "openai/clip-vit-large-patch14-336"}),
      hub("openai/clip-vit-base-patch32", ModelSource::Transformers, "ViT-B/32, OpenAI, transformers layout"),
      hub("openai/clip-vit-base-patch16", ModelSource::Transformers, "ViT-B/16, OpenAI, transformers layout"),
      hub("openai/clip-vit-large-patch14", ModelSource::Transformers, "ViT-L/14, OpenAI, transformers layout"),
      hub("openai/clip-vit-large-patch14-336", ModelSource::Transformers, "ViT-L/14 336 px, OpenAI, transformers layout"),
      hub("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", ModelSource::OpenClipHub, "ViT-B/32, LAION-2B, OpenCLIP"),
      hub("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K", ModelSource::OpenClipHub, "ViT-B/16, LAION-2B, OpenCLIP"),
      hub("hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K", ModelSource::OpenClipHub, "ViT-L/14, LAION-2B, OpenCLIP"),
      hub("hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K", ModelSource::OpenClipHub, "ViT-H/14, LAION-2B, OpenCLIP"),
  };
  return models;
}

std::string hf_hub_cache_dir() {
  using namespace models_detail;
  for (const char* key : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"})
    if (!env(key).empty()) return env(key);
  const std::string hf_home = env("HF_HOME");
  return (fs::path(hf_home.empty() ? (fs::path(xdg_cache()) / "huggingface").string() : hf_home) / "hub").string();
}

std::string clip_cache_dir() { return (models_detail::fs::path(models_detail::home()) / ".cache" / "clip").string(); }

std::string lake_cache_dir() {
  using namespace models_detail;
  const std::string h = env("LAKE_HOME");
  return h.empty() ? (fs::path(xdg_cache()) / "lake").string() : h;
}

bool is_model_name(const std::string& request) {
  using namespace models_detail;
  std::error_code ec;
  if (request.empty() || fs::exists(request, ec)) return false;
  if (find_known(request)) return true;
  if (request.rfind("hf-hub:", 0) == 0) return true;
  std::string repo, rev;
  return !has_weights_extension(request) && split_repo(request, repo, rev);
}

ModelLocation locate_model(const std::string& request) {
  using namespace models_detail;
  ModelLocation loc;
  loc.request = request;
  if (!is_model_name(request)) {
    loc.path = request;
    return loc;
  }
  loc.is_name = true;
  if (const KnownModel* k = find_known(request); k && k->source == ModelSource::OpenAI) {
    loc.source = ModelSource::OpenAI;
    // LAKE_OPENAI_MIRROR: a base URL serving the same <sha256>/<file> paths (an internal mirror).
    const std::string mirror = env("LAKE_OPENAI_MIRROR");
    loc.url = mirror.empty() ? k->url
                             : fmt::format("{}{}{}/{}", mirror, ends_with(mirror, "/") ? "" : "/", k->sha256, k->file);
    loc.sha256 = k->sha256;
    loc.download_to = (fs::path(lake_cache_dir()) / "clip" / k->file).string();
    loc.form = "openai";
    for (const std::string& f : {(fs::path(clip_cache_dir()) / k->file).string(), loc.download_to}) {
      loc.searched.push_back(f);
      if (loc.path.empty() && fs::is_regular_file(f)) loc.path = f;
    }
    for (const auto& repo : k->same_weights) {
      // OpenCLIP's copies of OpenAI's weights come without a config (OpenCLIP knows the
      // architecture from the name); transformers' with one.
      const bool tf = repo.rfind("openai/", 0) == 0;
      auto files = tf ? hub_files(ModelSource::Transformers) : hub_files(ModelSource::OpenClipHub, false);
      loc.searched.push_back(search_entry(repo, "main", files));
      if (!loc.path.empty()) continue;
      loc.path = complete_in(snapshot_of(repo, "main"), files);
      if (!loc.path.empty()) loc.form = tf ? "transformers" : "state_dict";
    }
    return loc;
  }
  const bool open_clip = request.rfind("hf-hub:", 0) == 0;
  const std::string spec = open_clip ? request.substr(7) : request;
  TORCH_CHECK_VALUE(
      split_repo(spec, loc.repo, loc.revision),
      fmt::format("model name '{}' is not a hub repository id: expected 'org/name' (transformers layout), "
                  "'hf-hub:org/name' (OpenCLIP layout), optionally '@revision', or one of LAKE's names (`lake models`)",
                  request));
  loc.source = open_clip ? ModelSource::OpenClipHub : ModelSource::Transformers;
  loc.form = open_clip ? "open_clip" : "transformers";
  loc.hub_files = hub_files(loc.source);
  loc.searched.push_back(search_entry(loc.repo, loc.revision, loc.hub_files));
  loc.path = complete_in(snapshot_of(loc.repo, loc.revision), loc.hub_files);
  return loc;
}

std::string ModelLocation::missing_message() const {
  if (!is_name) return fmt::format("'{}' does not exist", request);
  const bool openai = source == ModelSource::OpenAI;
  std::string out =
      fmt::format("model '{}' is not on this machine{} (looked for {}). ", request,
                  openai ? "" : " (and there is no file or folder of that name)", fmt::join(searched, "; "));
  if (openai) {
    out += fmt::format(
        "Download it with `lake models --download '{}'` (pylake.load_clip downloads it when online), or put the file "
        "from {} (SHA-256 {}) at {}",
        request, url, sha256, download_to);
  } else {
    out += fmt::format(
        "Download it with `lake models --download '{}'` (pylake.load_clip downloads it when online; the files go to "
        "the Hugging Face cache {}), or pass the path of a folder holding {}",
        request, hf_hub_cache_dir(), models_detail::describe_files(hub_files));
  }
  return out;
}

}  // namespace lake
