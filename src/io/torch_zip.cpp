// The zip side of the torch.save / TorchScript reader (see detail/torch_pickle.h): the
// central directory checked against the file before PyTorchStreamReader (miniz) reads it,
// and records read at their checked sizes (detail/limits.h).

#include "detail/format.h"
#include "detail/torch_pickle.h"

#include "detail/limits.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <fstream>

#include <sys/stat.h>

namespace lake::detail {

// ---- the zip directory, checked before PyTorchStreamReader (miniz) reads it ---------------
//
// miniz allocates a record at the size the central directory claims, and
// PyTorchStreamReader's constructor already reads two records; so the directory is parsed
// here first (zip64 included) and every entry checked against the file.
namespace torch_zip {

uint64_t le_at(const char* p, int n) {
  uint64_t v = 0;
  for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[k])) << (8 * k);
  return v;
}

class ZipCheck {
 public:
  ZipCheck(const std::string& path, const std::string& what)
      : path_(path), who_(what.empty() ? "'" + path + "'" : what + " '" + path + "'"), in_(path, std::ios::binary) {}

  void run() {
    struct stat st;
    TORCH_CHECK(::stat(path_.c_str(), &st) == 0 && in_.good(), fmt::format("{} could not be opened for reading", who_));
    size_ = static_cast<uint64_t>(st.st_size);
    // End of central directory: 22 bytes + a comment of up to 65535, at the end of the file.
    const uint64_t tail_n = std::min<uint64_t>(size_, 22 + 65535);
    const std::string tail = read_at(size_ - tail_n, tail_n);
    int64_t at = -1;
    for (int64_t k = static_cast<int64_t>(tail_n) - 22; k >= 0; --k) {
      if (le_at(tail.data() + k, 4) == 0x06054b50) {
        at = k;
        break;
      }
    }
    corrupt_if(at < 0, "no end-of-central-directory record");
    const char* e = tail.data() + at;
    uint64_t entries = le_at(e + 10, 2), cd_size = le_at(e + 12, 4), cd_offset = le_at(e + 16, 4);
    if (entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {  // zip64
      const uint64_t eocd = size_ - tail_n + static_cast<uint64_t>(at);
      corrupt_if(eocd < 20, "a zip64 archive without its locator");
      const std::string loc = read_at(eocd - 20, 20);
      corrupt_if(le_at(loc.data(), 4) != 0x07064b50, "a zip64 archive without its locator");
      const uint64_t z64 = le_at(loc.data() + 8, 8);
      corrupt_if(z64 > size_ || size_ - z64 < 56, "a zip64 end record outside the file");
      const std::string rec = read_at(z64, 56);
      corrupt_if(le_at(rec.data(), 4) != 0x06064b50, "a damaged zip64 end record");
      entries = le_at(rec.data() + 32, 8);
      cd_size = le_at(rec.data() + 40, 8);
      cd_offset = le_at(rec.data() + 48, 8);
    }
    corrupt_if(cd_offset > size_ || cd_size > size_ - cd_offset, "a central directory outside the file");
    TORCH_CHECK_VALUE(entries <= limits::kMaxZipEntries,
                      fmt::format("{}'s zip directory lists {} records, more than the limit of {} zip records", who_,
                                  entries, limits::kMaxZipEntries));
    const std::string cd = read_at(cd_offset, cd_size);
    size_t pos = 0;
    uint64_t claimed = 0, inflated = 0;
    for (uint64_t k = 0; k < entries; ++k) {
      corrupt_if(cd.size() - pos < 46 || le_at(cd.data() + pos, 4) != 0x02014b50, "a damaged central directory");
      const char* h = cd.data() + pos;
      const uint64_t method = le_at(h + 10, 2), name_n = le_at(h + 28, 2), extra_n = le_at(h + 30, 2),
                     comment_n = le_at(h + 32, 2);
      uint64_t comp = le_at(h + 20, 4), uncomp = le_at(h + 24, 4), offset = le_at(h + 42, 4);
      corrupt_if(cd.size() - pos - 46 < name_n + extra_n + comment_n, "a damaged central directory");
      const std::string name(h + 46, name_n);
      zip64_sizes(h + 46 + name_n, extra_n, uncomp, comp, offset);
      pos += 46 + name_n + extra_n + comment_n;
      check_entry(name, method, comp, uncomp, offset, claimed, inflated);
    }
  }

 private:
  void corrupt_if(bool bad, const char* detail) {
    TORCH_CHECK(!bad, fmt::format("{} is not a readable zip archive (truncated or corrupted?): {}", who_, detail));
  }

  std::string read_at(uint64_t offset, uint64_t n) {
    std::string buf(n, '\0');  // n <= the file's size (checked by every caller)
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(&buf[0], static_cast<std::streamsize>(n));
    corrupt_if(static_cast<uint64_t>(in_.gcount()) != n, "the file ends early");
    return buf;
  }

  // The zip64 extended-information extra field replaces the 32-bit fields that are 0xFFFFFFFF.
  void zip64_sizes(const char* extra, uint64_t n, uint64_t& uncomp, uint64_t& comp, uint64_t& offset) {
    for (uint64_t p = 0; p + 4 <= n;) {
      const uint64_t id = le_at(extra + p, 2), len = le_at(extra + p + 2, 2);
      corrupt_if(n - p - 4 < len, "a damaged zip64 extra field");
      if (id == 0x0001) {
        uint64_t q = p + 4;
        for (uint64_t* field : {&uncomp, &comp, &offset}) {
          if (*field != 0xFFFFFFFF) continue;
          corrupt_if(p + 4 + len - q < 8, "a damaged zip64 extra field");
          *field = le_at(extra + q, 8);
          q += 8;
        }
        return;
      }
      p += 4 + len;
    }
  }

  void check_entry(const std::string& name, uint64_t method, uint64_t comp, uint64_t uncomp, uint64_t offset,
                   uint64_t& claimed, uint64_t& inflated) {
    if (method == 0) {  // stored: its bytes are in the file
      TORCH_CHECK_VALUE(uncomp <= size_ && uncomp <= limits::kMaxZipRecordBytes,
                        fmt::format("{}: zip record '{}' claims {} bytes, more than the zip record size limit (the "
                                    "file's own {} bytes, at most {})",
                                    who_, name, uncomp, size_, limits::kMaxZipRecordBytes));
      corrupt_if(comp != uncomp, "a stored record whose sizes disagree");
    } else if (method == 8) {  // deflate: TorchScript's code records
      TORCH_CHECK_VALUE(
          uncomp <= limits::kMaxDecompressedRecordBytes,
          fmt::format(
              "{}: zip record '{}' decompresses to {} bytes, more than the decompressed record size limit of {} bytes",
              who_, name, uncomp, limits::kMaxDecompressedRecordBytes));
      inflated += uncomp;
      TORCH_CHECK_VALUE(
          inflated <= limits::kMaxDecompressedTotalBytes,
          fmt::format(
              "{}: the compressed zip records decompress to more than the total decompressed size limit of {} bytes",
              who_, limits::kMaxDecompressedTotalBytes));
    } else {
      TORCH_CHECK(
          false,
          fmt::format(
              "{}: zip record '{}' uses compression method {}; PyTorch archives use stored (0) or deflate (8) records",
              who_, name, method));
    }
    // A local header (30 bytes + the name) and the data, inside the file; records do not overlap.
    const uint64_t span = 30 + name.size() + comp;
    corrupt_if(offset > size_ || size_ - offset < span, "a record that lies outside the file");
    claimed += span;
    TORCH_CHECK_VALUE(claimed <= size_,
                      fmt::format("{}: the zip records claim more bytes than the file's {} (overlapping records; each "
                                  "byte of a record must be the file's own)",
                                  who_, size_));
  }

  const std::string& path_;
  std::string who_;
  std::ifstream in_;
  uint64_t size_ = 0;
};

}  // namespace torch_zip

std::unique_ptr<caffe2::serialize::PyTorchStreamReader> open_torch_zip(const std::string& path,
                                                                       const std::string& what) {
  torch_zip::ZipCheck(path, what).run();
  try {
    return std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, fmt::format("{}'{}' is not a readable zip archive (truncated or corrupted?): {}",
                                   what.empty() ? "" : what + " ", path, e.what_without_backtrace()));
  }
}

std::string read_zip_record(caffe2::serialize::PyTorchStreamReader& zip, const std::string& path,
                            const std::string& name, uint64_t limit, const char* limit_name) {
  TORCH_CHECK(zip.hasRecord(name), fmt::format("'{}': zip record '{}' is missing", path, name));
  const size_t n = zip.getRecordSize(name);
  TORCH_CHECK_VALUE(n <= limit, fmt::format("'{}': zip record '{}' holds {} bytes, more than the {} limit of {} bytes",
                                            path, name, n, limit_name, limit));
  std::string out(n, '\0');
  try {
    if (n) zip.getRecord(name, &out[0], n);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, fmt::format("'{}': zip record '{}' could not be read (truncated file?): {}", path, name,
                                   e.what_without_backtrace()));
  }
  return out;
}

}  // namespace lake::detail
