// A validating safetensors reader over a memory mapping, and a streaming writer (see
// detail/safetensors.h).

#include "detail/format.h"
#include "detail/safetensors.h"

#include "detail/atomic_file.h"
#include "detail/limits.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace lake::detail {
namespace {

using nlohmann::json;

// The file's bytes, mapped privately (the file is never written); unmapped with the last tensor.
struct Mapping {
  void* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data != nullptr && data != MAP_FAILED) ::munmap(data, size);
  }
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct DType {
  const char* name;
  c10::ScalarType type;
  size_t size;
};

const DType kDTypes[] = {
    {"F64", at::kDouble, 8},  {"F32", at::kFloat, 4},   {"F16", at::kHalf, 2},   {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},    {"I32", at::kInt, 4},     {"I16", at::kShort, 2},  {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},     {"BOOL", at::kBool, 1},   {"U16", at::kUInt16, 2}, {"U32", at::kUInt32, 4},
    {"U64", at::kUInt64, 8},  {"F8_E4M3", at::kFloat8_e4m3fn, 1}, {"F8_E5M2", at::kFloat8_e5m2, 1}};

const DType* find_dtype(const std::string& name) {
  for (const auto& t : kDTypes)
    if (name == t.name) return &t;
  return nullptr;
}

const DType* find_dtype(c10::ScalarType type) {
  for (const auto& t : kDTypes)
    if (type == t.type) return &t;
  return nullptr;
}

bool little_endian() {
  const uint16_t probe = 1;
  unsigned char b;
  std::memcpy(&b, &probe, 1);
  return b == 1;
}

uint64_t le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

// One header entry, validated against the data area.
struct Entry {
  std::string name;
  const DType* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& path, const std::string& name, const json& v, uint64_t data_size) {
  auto bad = [&](const std::string& what) {
    TORCH_CHECK_VALUE(false, fmt::format("safetensors file '{}': tensor '{}' {}", path, name, what));
  };
  if (!v.is_object()) bad("is not a JSON object in the header");
  Entry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) bad("has no \"dtype\" string");
  e.dtype = find_dtype(dt->get<std::string>());
  if (e.dtype == nullptr) bad("has unknown dtype '" + dt->get<std::string>() + "'");
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) bad("has no \"shape\" array");
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_integer() || (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0))
      bad("has shape " + sh->dump() + ": expected non-negative integers");
    const uint64_t n = d.get<uint64_t>();
    if (n > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, n, &numel))
      bad("has shape " + sh->dump() + " whose element count overflows");
    e.shape.push_back(static_cast<int64_t>(n));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(e.dtype->size), &nbytes))
    bad("has shape " + sh->dump() + " whose byte size overflows");
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    bad("has no \"data_offsets\" pair of non-negative integers");
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size)
    bad(fmt::format("has data_offsets [{}, {}] outside the data area of {} bytes", e.begin, e.end, data_size));
  if (e.end - e.begin != nbytes)
    bad(fmt::format("has data_offsets [{}, {}] ({} bytes) but dtype {} x shape {} needs {} bytes", e.begin, e.end,
                    e.end - e.begin, e.dtype->name, sh->dump(), nbytes));
  return e;
}

}  // namespace

bool looks_like_safetensors(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return false;
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 10) return false;
  unsigned char head[9];
  if (::pread(f.fd, head, sizeof head, 0) != static_cast<ssize_t>(sizeof head)) return false;
  const uint64_t n = le64(head);
  return n >= 2 && n <= static_cast<uint64_t>(st.st_size) - 8 && head[8] == '{';
}

SafetensorsFile read_safetensors(const std::string& path) {
  static_assert(sizeof(void*) == 8, "64-bit only");
  TORCH_CHECK(little_endian(), "safetensors: this reader needs a little-endian machine");
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  TORCH_CHECK_VALUE(f.fd >= 0,
                    fmt::format("safetensors file '{}' could not be opened: {}", path, std::strerror(errno)));
  struct stat st {};
  TORCH_CHECK_VALUE(::fstat(f.fd, &st) == 0 && S_ISREG(st.st_mode),
                    fmt::format("safetensors file '{}' is not a regular file", path));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  TORCH_CHECK_VALUE(
      file_size >= 8,
      fmt::format("safetensors file '{}' has {} bytes, fewer than its 8-byte header length", path, file_size));
  auto map = std::make_shared<Mapping>();
  map->size = static_cast<size_t>(file_size);
  // PROT_WRITE with MAP_PRIVATE: pages are copy-on-write, the file is never modified, and a
  // tensor written in place by a caller cannot fault.
  map->data = ::mmap(nullptr, map->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, f.fd, 0);
  TORCH_CHECK(map->data != MAP_FAILED,
              fmt::format("safetensors file '{}' could not be memory-mapped: {}", path, std::strerror(errno)));
  const auto* bytes = static_cast<const unsigned char*>(map->data);
  const uint64_t n = le64(bytes);
  TORCH_CHECK_VALUE(
      n <= file_size - 8,
      fmt::format("safetensors file '{}' declares a {}-byte header but the file has only {} bytes after the length",
                  path, n, file_size - 8));
  TORCH_CHECK_VALUE(
      n <= limits::kMaxSafetensorsHeaderBytes,
      fmt::format("safetensors file '{}' declares a {}-byte header, more than the safetensors header limit of {} bytes",
                  path, n, limits::kMaxSafetensorsHeaderBytes));
  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + n);
  } catch (const json::exception& e) {
    TORCH_CHECK_VALUE(false,
                      fmt::format("safetensors file '{}' has a header that is not valid JSON: {}", path, e.what()));
  }
  TORCH_CHECK_VALUE(header.is_object(),
                    fmt::format("safetensors file '{}' has a JSON header that is not an object", path));
  const uint64_t data_start = 8 + n, data_size = file_size - data_start;

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      TORCH_CHECK_VALUE(it->is_object(), fmt::format("safetensors file '{}': \"__metadata__\" is not an object", path));
      for (auto m = it->begin(); m != it->end(); ++m)
        if (m->is_string()) out.metadata[m.key()] = m->get<std::string>();
      continue;
    }
    entries.push_back(parse_entry(path, it.key(), *it, data_size));
  }
  // No two tensors may share bytes (zero-sized ones occupy none).
  std::vector<const Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    if (e->begin == e->end) continue;
    TORCH_CHECK_VALUE(
        prev == nullptr || e->begin >= prev->end,
        fmt::format("safetensors file '{}': tensor '{}' (bytes {}..{}) overlaps tensor '{}' (bytes {}..{})", path,
                    e->name, e->begin, e->end, prev ? prev->name : "", prev ? prev->begin : 0, prev ? prev->end : 0));
    prev = e;
  }

  for (const auto& e : entries) {
    const auto options = at::TensorOptions().dtype(e.dtype->type).device(at::kCPU);
    auto* ptr = static_cast<unsigned char*>(map->data) + data_start + e.begin;
    at::Tensor t;
    if (e.begin == e.end) {
      t = at::empty(e.shape, options);
    } else if (reinterpret_cast<uintptr_t>(ptr) % e.dtype->size == 0) {
      t = at::from_blob(ptr, e.shape, [map](void*) {}, options);
    } else {  // misaligned for the dtype: one aligned copy
      t = at::empty(e.shape, options);
      std::memcpy(t.data_ptr(), ptr, e.end - e.begin);
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata, std::optional<c10::ScalarType> dtype,
                       const char* what) {
  TORCH_CHECK(little_endian(), fmt::format("{}: the safetensors writer needs a little-endian machine", what));
  // The header from the shapes and the target dtype alone: nothing is converted yet.
  json header = json::object();
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK_VALUE(name != "__metadata__", fmt::format("{}: a tensor cannot be named '__metadata__'", what));
    const c10::ScalarType type = dtype ? *dtype : t.scalar_type();
    const DType* dt = find_dtype(type);
    TORCH_CHECK_VALUE(dt != nullptr,
                      fmt::format("{}: tensor '{}' has dtype {}, which safetensors cannot store", what, name, type));
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dt->size;
    header[name] = {{"dtype", dt->name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception& e) {
    TORCH_CHECK_VALUE(false, fmt::format("{}: a tensor name or metadata value is not valid UTF-8: {}", what, e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the data area starts 8-byte aligned
  unsigned char length[8];
  for (int k = 0; k < 8; ++k) length[k] = static_cast<unsigned char>((text.size() >> (8 * k)) & 0xff);

  write_file_atomically(path, [&](FileSink& out) {
    out.write(length, sizeof length);
    out.write(text.data(), text.size());
    for (const auto& [name, t] : tensors) {
      const at::Tensor cpu = t.detach().to(at::kCPU, dtype ? *dtype : t.scalar_type()).contiguous();
      if (cpu.numel() > 0) out.write(cpu.data_ptr(), cpu.nbytes());
    }
  }, what);
}

}  // namespace lake::detail
