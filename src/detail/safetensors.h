#pragma once
// A validating reader for safetensors files (internal).
//
// Format: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data area (offsets are relative to its start). Everything in the header is
// checked against the file before any tensor is made; the tensors are views of a
// private read-only-to-the-file memory mapping (copied only when misaligned for their
// dtype), which the tensors keep alive.
//
//   auto f = lake::detail::read_safetensors("model.safetensors");  // throws c10::ValueError
//   at::Tensor w = f.tensors.at("visual.conv1.weight");              // CPU, stored dtype
//
//   lake::detail::write_safetensors("out.safetensors", {{"w", w}}, {{"format", "pt"}}, at::kHalf);

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace lake::detail {

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;          ///< CPU, the stored dtype
  std::map<std::string, std::string> metadata;        ///< "__metadata__" (string values only)
};

/// True when `path` is a regular file that starts like a safetensors file: an 8-byte
/// header length that fits in the file, followed by '{'. Reads 9 bytes.
bool looks_like_safetensors(const std::string& path);

/// Reads and validates `path`. Bad input is a c10::ValueError naming the file (and the
/// tensor, where one is at fault).
SafetensorsFile read_safetensors(const std::string& path);

/// Writes `tensors` and `metadata` ("__metadata__", string values) as a safetensors file that
/// the safetensors library reads: data offsets in name order, no gaps, the JSON header padded
/// with spaces to a multiple of 8 bytes. The tensors are converted to `dtype` (nullopt: their
/// own), moved to the CPU and made contiguous one at a time as they are written, so no second
/// copy of all of them is ever held. Written atomically (detail::write_file_atomically): on any
/// failure nothing is left behind and an existing file is unchanged. `what` prefixes errors.
void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata,
                       std::optional<c10::ScalarType> dtype = std::nullopt, const char* what = "write_safetensors");

}  // namespace lake::detail
