// detail::write_file_atomically: temporary file, pieces written, fsync, rename.

#include "detail/atomic_file.h"

#include <c10/util/Exception.h>

#include "detail/format.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace lake::detail {

void FileSink::fail(int err) const {
  TORCH_CHECK(false, fmt::format("{}: writing '{}' failed: {} (nothing was written; an existing file is unchanged)",
                                 what, path, std::strerror(err ? err : EIO)));
}

void FileSink::write(const void* data, size_t size) {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(n < 0 ? errno : EIO);
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void write_file_atomically(const std::string& path, const std::function<void(FileSink&)>& produce,
                           const char* what) {
  // pid + a per-process counter: two threads (or processes) writing the same target never
  // share a temporary file.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TORCH_CHECK_VALUE(fd >= 0, fmt::format("{}: cannot create '{}' (to write '{}'): {}", what, tmp, path, std::strerror(errno)));
  FileSink sink{fd, path, what};
  try {
    produce(sink);
    if (::fsync(fd) != 0) sink.fail(errno);
  } catch (...) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw;
  }
  int err = 0;
  if (::close(fd) != 0) err = errno;
  if (err == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    std::remove(tmp.c_str());
    sink.fail(err);
  }
}

}  // namespace lake::detail

namespace lake {

void write_file_atomically(const std::string& path, const void* data, size_t size, const char* what) {
  detail::write_file_atomically(path, [&](detail::FileSink& out) { out.write(data, size); }, what);
}

}  // namespace lake
