// detail::write_file_atomically: temporary file, fsync, rename.

#include "detail/atomic_file.h"

#include <c10/util/Exception.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace lake::detail {

void write_file_atomically(const std::string& path, const void* data, size_t size, const char* what) {
  // pid + a per-process counter: two threads (or processes) writing the same target never
  // share a temporary file.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TORCH_CHECK_VALUE(fd >= 0, what, ": cannot create '", tmp, "' (to write '", path, "'): ", std::strerror(errno));
  const auto* bytes = static_cast<const char*>(data);
  size_t done = 0;
  bool ok = true;
  while (ok && done < size) {
    const ssize_t n = ::write(fd, bytes + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  int err = ok ? 0 : errno;
  if (ok && ::fsync(fd) != 0) ok = false, err = errno;
  if (::close(fd) != 0 && ok) ok = false, err = errno;
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) ok = false, err = errno;
  if (!ok) {
    std::remove(tmp.c_str());
    TORCH_CHECK(false, what, ": writing '", path, "' failed: ", std::strerror(err ? err : EIO),
                " (nothing was written; an existing file is unchanged)");
  }
}

}  // namespace lake::detail
