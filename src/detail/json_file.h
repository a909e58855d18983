#pragma once
// Reading the JSON configs that come with checkpoints (transformers' config.json, OpenCLIP's
// open_clip_config.json) in one place (internal).

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "detail/format.h"

namespace lake::detail {

/// The JSON object in `file`; a missing file, invalid JSON or a non-object is a
/// c10::ValueError naming the file.
inline nlohmann::json read_json_object(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  TORCH_CHECK_VALUE(in.good(), fmt::format("'{}' could not be opened for reading", file.string()));
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    TORCH_CHECK_VALUE(j.is_object(), fmt::format("'{}' is not a JSON object", file.string()));
    return j;
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK_VALUE(false, fmt::format("'{}' is not valid JSON: {}", file.string(), e.what()));
  }
}

}  // namespace lake::detail
