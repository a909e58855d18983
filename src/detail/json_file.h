#pragma once
// Reading the JSON configs that come with checkpoints (transformers' config.json, OpenCLIP's
// open_clip_config.json) in one place (internal).

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace lake::detail {

/// The JSON object in `file`; a missing file, invalid JSON or a non-object is a
/// c10::ValueError naming the file.
inline nlohmann::json read_json_object(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  TORCH_CHECK_VALUE(in.good(), "'", file.string(), "' could not be opened for reading");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    nlohmann::json j = nlohmann::json::parse(ss.str());
    TORCH_CHECK_VALUE(j.is_object(), "'", file.string(), "' is not a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK_VALUE(false, "'", file.string(), "' is not valid JSON: ", e.what());
  }
}

}  // namespace lake::detail
