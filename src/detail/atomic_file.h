#pragma once
// Writing a file so that readers never see a partial one (internal): the bytes go to a
// temporary file in the target's folder, are flushed to disk, and the temporary file is
// renamed over the target. On any failure the temporary file is removed, the target is
// left as it was, and a c10::Error names the file and the cause.

#include <cstddef>
#include <string>

namespace lake::detail {

/// `what` prefixes the error message (e.g. "NormalityModel.save", "write_png").
void write_file_atomically(const std::string& path, const void* data, size_t size, const char* what);

}  // namespace lake::detail
