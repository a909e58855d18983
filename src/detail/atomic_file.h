#pragma once
// Writing a file so that readers never see a partial one (internal): the bytes go to a
// temporary file in the target's folder, are flushed to disk, and the temporary file is
// renamed over the target. On any failure the temporary file is removed, the target is
// left as it was, and a c10::Error names the file and the cause.
//
//   detail::write_file_atomically(path, bytes.data(), bytes.size(), "NormalityModel.save");
//   detail::write_file_atomically(path, [&](detail::FileSink& out) {   // streamed, in pieces
//     for (const auto& piece : pieces) out.write(piece.data(), piece.size());
//   }, "save_clip");

#include <cstddef>
#include <functional>
#include <string>

#include "lake/files.h"

namespace lake::detail {

/// The temporary file being written; `write` appends (a c10::Error naming the target on failure).
struct FileSink {
  int fd = -1;
  const std::string& path;  ///< the target, for messages
  const char* what;
  void write(const void* data, size_t size);
  [[noreturn]] void fail(int err) const;
};

/// `produce` writes the file's contents through the sink, in as many pieces as it likes; an
/// exception it throws (or a failed write) leaves no temporary file and an existing target
/// unchanged, and propagates. `what` prefixes the error message (e.g. "save_clip").
void write_file_atomically(const std::string& path, const std::function<void(FileSink&)>& produce,
                           const char* what);

/// The same for bytes already in memory (e.g. "NormalityModel.save", "write_png"): the public
/// lake::write_file_atomically (lake/files.h), which pylake's writers call too.
using ::lake::write_file_atomically;

}  // namespace lake::detail
