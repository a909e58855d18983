// Reads CLIP archives: OpenAI TorchScript, torch.save(state_dict), safetensors, LAKE exports
// (transformers checkpoints: hf_checkpoint.cpp).

#include "detail/clip_archive.h"
#include "detail/format.h"
#include "detail/lake_export.h"
#include "detail/safetensors.h"
#include "detail/torch_pickle.h"

#include "detail/limits.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace lake::detail {
namespace {

using lake::detail::PyValue;
using lake::detail::PyValuePtr;

constexpr const char* kLakeConfigFile = "lake_config.txt";
constexpr const char* kLakeVocabFile = "lake_vocab.txt.gz";

std::string read_prefix(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), fmt::format("CLIP archive '{}' could not be opened for reading", path));
  std::string buf(n, '\0');
  in.read(&buf[0], static_cast<std::streamsize>(n));
  buf.resize(static_cast<size_t>(in.gcount()));
  return buf;
}

bool file_exists(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return in.good();
}

// A zip archive's records, opened once, its directory checked against the file first.
std::unique_ptr<caffe2::serialize::PyTorchStreamReader> open_zip(const std::string& path) {
  return open_torch_zip(path, "CLIP archive");
}

// TorchScript code records mention QuickGELU's constant 1.702, or aten::gelu. They are read
// as text (never compiled), each at most limits::kMaxCodeRecordBytes.
std::optional<Activation> activation_from_code(caffe2::serialize::PyTorchStreamReader& zip, const std::string& path) {
  bool quick = false, gelu = false;
  for (const auto& name : zip.getAllRecords()) {
    if (name.rfind("code/", 0) != 0 || name.size() < 3 || name.substr(name.size() - 3) != ".py") continue;
    const std::string code = read_zip_record(zip, path, name, limits::kMaxCodeRecordBytes, "code record size");
    quick = quick || code.find("1.702") != std::string::npos;
    gelu = gelu || code.find("torch.gelu(") != std::string::npos;
  }
  if (quick) return Activation::QuickGELU;
  if (gelu) return Activation::GELU;
  return std::nullopt;
}

// A TorchScript module pickles as an object whose BUILD state is the dict of its attributes:
// parameters and buffers as tensors, submodules as objects (their own attribute dicts),
// `training` and other plain values. The tensors, named by their attribute path as
// named_parameters() / named_buffers() name them. Objects whose state is not a dict
// (scripted classes with __getstate__) hold no module tensors and are not entered.
void collect_module_tensors(const PyValue& object, const std::string& prefix, RawArchive& out) {
  if (object.kind != PyValue::Kind::Object || !object.state || object.state->kind != PyValue::Kind::Dict) return;
  for (const auto& [key, value] : object.state->dict) {
    if (key->kind != PyValue::Kind::Str) continue;
    const std::string name = prefix + key->s;
    if (value->kind == PyValue::Kind::Tensor) {
      out.tensors.emplace(name, value->tensor);
    } else if (value->kind == PyValue::Kind::Object) {
      collect_module_tensors(*value, name + ".", out);  // depth <= limits::kMaxPickleDepth
    }
  }
}

// Read without torch::jit::load, which would compile the archive's code and run scripted
// classes' __setstate__: the weights come from data.pkl and the data/ records through
// LAKE's code-free pickle reader; the code records are only searched as text.
void read_torchscript(const std::string& path, caffe2::serialize::PyTorchStreamReader& zip, RawArchive& out) {
  TORCH_CHECK_VALUE(zip.hasRecord("data.pkl"),
                    fmt::format("CLIP archive '{}' is a TorchScript archive without data.pkl (its module and weights)",
                                path));
  PyValuePtr root;
  try {
    root = read_pickle_record(path, zip, "data.pkl", "data/");
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, fmt::format("CLIP archive {}", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false,
                fmt::format("CLIP archive '{}' is a TorchScript archive that could not be read: {}",
                            path, e.what_without_backtrace()));
  }
  TORCH_CHECK_VALUE(root->kind == PyValue::Kind::Object && root->state && root->state->kind == PyValue::Kind::Dict,
                    fmt::format("CLIP archive '{}' is a TorchScript archive whose data.pkl is not a module (an "
                                "object with a dict of attributes)", path));
  collect_module_tensors(*root, "", out);
  root.reset();
  const std::string config = fmt::format("extra/{}", kLakeConfigFile);
  if (zip.hasRecord(config)) {
    const std::string vocab = fmt::format("extra/{}", kLakeVocabFile);
    out.lake_config = parse_key_values(read_zip_record(zip, path, config, limits::kMaxCodeRecordBytes,
                                                       "code record size"),
                                       path + ":" + kLakeConfigFile);
    if (zip.hasRecord(vocab))
      out.vocabulary = read_zip_record(zip, path, vocab, limits::kMaxVocabularyBytes, "vocabulary size");
    check_lake_export_config(out, path, kLakeExportTorchScriptVersion);  // LAKE export v1
  } else {
    out.kind = ArchiveKind::OpenAIJit;
    out.activation_hint = activation_from_code(zip, path);
  }
}

std::map<std::string, at::Tensor> state_dict_tensors(const std::string& path) {
  PyValuePtr value;
  try {
    value = read_torch_save(path);
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, fmt::format("CLIP archive {}", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, fmt::format("CLIP archive {}", e.what_without_backtrace()));
  }
  TORCH_CHECK_VALUE(value->kind == PyValue::Kind::Dict,
                    fmt::format("CLIP archive '{}' holds a pickled {}, expected a state dict (a dict of parameter "
                                "name -> tensor)",
                                path, value->kind == PyValue::Kind::Object ? value->s : "non-dict value"));
  // Training checkpoints wrap the state dict: {"epoch": .., "state_dict": {...}}.
  const PyValuePtr* inner = nullptr;
  for (const char* wrapper : kCheckpointStateDictKeys) {
    for (const auto& [key, val] : value->dict)
      if (!inner && key->kind == PyValue::Kind::Str && key->s == wrapper && val->kind == PyValue::Kind::Dict)
        inner = &val;
  }
  if (inner) value = *inner;
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, val] : value->dict)
    if (key->kind == PyValue::Kind::Str && val->kind == PyValue::Kind::Tensor) out[key->s] = val->tensor;
  TORCH_CHECK_VALUE(!out.empty(),
                    fmt::format("CLIP archive '{}' is a torch.save file without any named tensors; expected a CLIP "
                                "state dict", path));
  return strip_wrapper_prefixes(std::move(out));
}

std::map<std::string, at::Tensor> safetensors_tensors(const std::string& path, SafetensorsFile file) {
  TORCH_CHECK_VALUE(!file.tensors.empty(),
                    fmt::format("CLIP archive '{}' is a safetensors file without any tensors", path));
  return strip_wrapper_prefixes(std::move(file.tensors));
}

bool is_zip(const std::string& head) {
  return head.size() == 4 && std::memcmp(head.data(), "PK\x03\x04", 4) == 0;
}

}  // namespace

}  // namespace lake::detail

namespace lake {

std::map<std::string, std::string> parse_key_values(const std::string& text, const std::string& source) {
  std::map<std::string, std::string> out;
  std::istringstream lines(text);
  std::string line;
  int lineno = 0;
  while (std::getline(lines, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    auto eq = line.find('=');
    TORCH_CHECK(eq != std::string::npos && eq > 0,
                fmt::format("{} line {}: expected 'key=value', got '{}'", source, lineno, line));
    out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

}  // namespace lake

namespace lake::detail {

std::map<std::string, at::Tensor> read_tensor_file(const std::string& path) {
  TORCH_CHECK_VALUE(file_exists(path), fmt::format("weights file '{}' does not exist or is not readable", path));
  if (looks_like_safetensors(path)) return safetensors_tensors(path, read_safetensors(path));
  TORCH_CHECK_VALUE(is_zip(read_prefix(path, 4)),
                    fmt::format("weights file '{}' is neither a safetensors file nor a torch.save zip archive", path));
  return state_dict_tensors(path);
}

RawArchive read_archive(const std::string& path) {
  TORCH_CHECK_VALUE(!path.empty(), "CLIP archive path is empty");
  const bool index = path.size() > 11 && path.compare(path.size() - 11, 11, ".index.json") == 0;
  if (std::filesystem::is_directory(path)) {
    // transformers (config.json) or OpenCLIP hub (open_clip_config.json); a folder with both
    // forms complete (laion's hub repos) reads as transformers, as it always has.
    const std::filesystem::path dir(path);
    bool transformers_weights = false;
    for (const char* n : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                          "pytorch_model.bin.index.json"})
      transformers_weights = transformers_weights || std::filesystem::is_regular_file(dir / n);
    const bool transformers = std::filesystem::is_regular_file(dir / "config.json");
    if (has_open_clip_config(path) && !(transformers && transformers_weights)) return read_open_clip_hub(path);
    TORCH_CHECK_VALUE(transformers,
                      fmt::format("CLIP archive '{}' is a folder without config.json or open_clip_config.json: "
                                  "expected a transformers CLIP checkpoint (config.json + model.safetensors or "
                                  "pytorch_model.bin), an OpenCLIP hub folder (open_clip_config.json + "
                                  "open_clip_model.safetensors or open_clip_pytorch_model.bin), or pass a weights "
                                  "file", path));
    return read_transformers(path);
  }
  if (index) return read_transformers(path);
  TORCH_CHECK_VALUE(file_exists(path), fmt::format("CLIP archive '{}' does not exist or is not readable", path));
  // A weights file in the OpenAI naming beside an open_clip_config.json is that hub folder's.
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const bool open_clip_folder = has_open_clip_config(parent.empty() ? "." : parent.string());
  if (looks_like_safetensors(path)) {
    SafetensorsFile file = read_safetensors(path);
    if (is_lake_export(file.metadata)) return read_lake_safetensors(path, std::move(file));  // LAKE export v2
    RawArchive out;
    out.tensors = safetensors_tensors(path, std::move(file));
    if (has_transformers_names(out.tensors)) return read_transformers(path);
    if (open_clip_folder) return read_open_clip_hub(path, std::move(out.tensors));
    out.kind = ArchiveKind::Safetensors;
    return out;
  }
  const std::string head = read_prefix(path, 4);
  if (head.size() >= 2 && static_cast<unsigned char>(head[0]) == 0x80) {
    TORCH_CHECK_VALUE(false,
                      fmt::format("CLIP archive '{}' is a legacy (pre-zip) torch.save pickle; re-save it with a "
                                  "current torch.save (the default zip format), e.g. torch.save(torch.load(f, "
                                  "weights_only=True), f)", path));
  }
  TORCH_CHECK_VALUE(is_zip(head),
                    fmt::format("CLIP archive '{}' is not a TorchScript archive, torch.save file or safetensors file "
                                "(expected a zip archive or a safetensors header; the file starts with {} bytes that "
                                "are neither)", path, head.size()));
  auto zip = open_zip(path);
  RawArchive out;
  if (zip->hasRecord("constants.pkl") || zip->hasRecord("code/__torch__.py")) {
    read_torchscript(path, *zip, out);
  } else if (zip->hasRecord("data.pkl")) {
    zip.reset();
    out.tensors = state_dict_tensors(path);
    if (has_transformers_names(out.tensors)) return read_transformers(path);  // pytorch_model.bin
    if (open_clip_folder) return read_open_clip_hub(path, std::move(out.tensors));
    out.kind = ArchiveKind::StateDict;
  } else {
    TORCH_CHECK_VALUE(false,
                      fmt::format("CLIP archive '{}' is a zip file but neither a TorchScript archive (no "
                                  "constants.pkl) nor a torch.save file (no data.pkl)", path));
  }
  return out;
}

}  // namespace lake::detail
