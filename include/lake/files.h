#pragma once
// Two rules of LAKE's files, each implemented once and used by every reader and writer, C++
// and Python (pylake._C.write_file_atomically, pylake._C.parse_key_values):
//
//   lake::write_file_atomically("out/report.json", text.data(), text.size(), "write_text");
//   auto config = lake::parse_key_values("format=lake-clip\nformat_version=1\n", "lake_config.txt");

#include <cstddef>
#include <map>
#include <string>

namespace lake {

/// Writes `size` bytes to `path` so that no reader ever sees a partial file: a temporary file
/// in the same folder (`<path>.tmp.<pid>.<n>`), the bytes, fsync, rename over `path`. On any
/// failure the temporary file is removed, an existing `path` is left byte for byte as it was,
/// and a c10::Error names `what`, the file and the cause (ValueError when the temporary file
/// cannot be created, e.g. a missing folder or no permission; Error when writing fails).
/// The folder must exist. Defined in src/io/atomic_file.cpp (detail::write_file_atomically also
/// takes a producer that writes in pieces).
void write_file_atomically(const std::string& path, const void* data, size_t size, const char* what);

/// Parses "key=value" lines: the key is everything before the first '=' (non-empty), the value
/// everything after (may hold '=', kept verbatim); a trailing '\r' is dropped; blank lines and
/// lines starting with '#' are ignored; a later line wins over an earlier one with the same key.
/// A line without '=' or with an empty key is a c10::Error "<source> line <n>: expected
/// 'key=value', got '<line>'". Defined in src/io/clip_archive.cpp.
std::map<std::string, std::string> parse_key_values(const std::string& text, const std::string& source);

}  // namespace lake
