#pragma once
// Model names: "ViT-L/14@336px", "openai/clip-vit-large-patch14-336",
// "hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K", resolved to files already on disk where
// the real tools put them (OpenAI's clip package, the Hugging Face hub cache, LAKE's own
// cache). This header only finds files; it never touches the network. Downloading what is
// missing is the Python layer's job (pylake.load_clip, `lake models --download`), which
// writes into the same places this resolver searches. See docs/archives.md, "Model names".

#include <string>
#include <vector>

namespace lake {

/// Where a model name's weights come from.
enum class ModelSource {
  OpenAI,        ///< an OpenAI release archive (`ViT-B-16.pt`), published with its SHA-256
  Transformers,  ///< a Hugging Face hub repo in transformers' layout (config.json + model.safetensors)
  OpenClipHub,   ///< a Hugging Face hub repo in OpenCLIP's layout (open_clip_config.json + weights)
};
std::string to_string(ModelSource s);

/// One entry of LAKE's table of known names (`lake models`).
struct KnownModel {
  std::string name;         ///< "ViT-L/14@336px", "openai/clip-vit-large-patch14-336", "hf-hub:laion/..."
  ModelSource source;
  std::string description;  ///< "ViT-L/14 at 336 px, OpenAI"
  std::string file;         ///< OpenAI: the archive's file name ("ViT-L-14-336px.pt")
  std::string url;          ///< OpenAI: the published download URL
  std::string sha256;       ///< OpenAI: its SHA-256 (also the URL's second-to-last part)
  /// OpenAI: hub repos holding the same weights, searched in the hub cache too (OpenCLIP's
  /// `timm/...openai` copy, transformers' `openai/clip-vit-...`).
  std::vector<std::string> same_weights;
};

/// The known names, in display order.
const std::vector<KnownModel>& known_models();

/// Where the caches are (environment read at each call):
///   hf_hub_cache_dir(): HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
///     XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub (as huggingface_hub)
///   clip_cache_dir():   ~/.cache/clip (OpenAI's clip package and OpenCLIP's URL downloads)
///   lake_cache_dir():   LAKE_HOME, else XDG_CACHE_HOME/lake, else ~/.cache/lake
std::string hf_hub_cache_dir();
std::string clip_cache_dir();
std::string lake_cache_dir();

/// The result of resolving a name or path.
struct ModelLocation {
  std::string request;     ///< what was asked for
  bool is_name = false;    ///< false: `request` is an existing file or folder (path == request)
  ModelSource source = ModelSource::OpenAI;
  std::string repo;        ///< hub repos: "org/name"
  std::string revision;    ///< hub repos: branch, tag or commit ("main" unless "org/name@rev")
  std::string path;        ///< the local weights (file or folder); empty when not on this machine
  std::string form;        ///< which layout `path` has: "openai", "transformers", "open_clip", "state_dict"
  std::vector<std::string> searched;  ///< every place looked, in order
  /// Hub repos: the files to fetch, one group per needed file, alternatives in order of
  /// preference ({"config.json"}, {"model.safetensors", "pytorch_model.bin"}).
  std::vector<std::vector<std::string>> hub_files;
  /// OpenAI: where to download from (LAKE_OPENAI_MIRROR, when set, replaces
  /// "https://openaipublic.azureedge.net/clip/models/") and the digest to verify
  std::string url, sha256;
  std::string download_to;  ///< OpenAI: where a download goes (LAKE's cache)
  /// The error for a model that is not on this machine: what is missing, where it was
  /// looked for, and where to put it.
  std::string missing_message() const;
};

/// True when `request` names a model rather than a path: a known name, "hf-hub:org/name",
/// or "org/name[@rev]" that is not an existing path and has no file extension of a
/// weights file. Existing paths are never names.
bool is_model_name(const std::string& request);

/// Resolves `request`: an existing path is returned as is; a name is looked up in the
/// caches (no network). An unknown name shape is a ValueError listing the accepted forms.
ModelLocation locate_model(const std::string& request);

}  // namespace lake
