// A small, code-free pickle reader for torch.save zip files and TorchScript archives
// (see detail/torch_pickle.h); every size it reads is checked against detail/limits.h.

#include "detail/format.h"
#include "detail/torch_pickle.h"

#include "detail/limits.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

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

namespace {

using Kind = PyValue::Kind;

PyValuePtr make(Kind k) {
  auto v = std::make_shared<PyValue>();
  v->kind = k;
  return v;
}

c10::ScalarType storage_dtype(const std::string& global, const std::string& path) {
  static const std::map<std::string, c10::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},    {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.DoubleStorage", at::kDouble},
      {"torch.LongStorage", at::kLong},      {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},    {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},      {"torch.BoolStorage", at::kBool}};
  auto it = types.find(global);
  TORCH_CHECK(it != types.end(), fmt::format("'{}': unsupported tensor storage type {}", path, global));
  return it->second;
}

class Reader {
 public:
  Reader(const std::string& path, caffe2::serialize::PyTorchStreamReader& zip, const std::string& pkl,
         const std::string& pickle_name, const std::string& data_dir)
      : path_(path), zip_(zip), data_(pkl), pickle_(pickle_name), data_dir_(data_dir) {}

  PyValuePtr run() {
    while (true) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;              // PROTO
        case 0x95: bytes(8); break;          // FRAME
        case '.': {                          // STOP
          TORCH_CHECK(!stack_.empty(), fmt::format("'{}': empty pickle", path_));
          return stack_.back();
        }
        case '(': count(); marks_.push_back(stack_.size()); break;
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case 'N': push(make(Kind::None)); break;
        case 0x88: case 0x89: { auto v = make(Kind::Bool); v->i = op == 0x88; push(v); break; }
        case 'J': push_int(static_cast<int32_t>(le(4))); break;
        case 'K': push_int(u8()); break;
        case 'M': push_int(static_cast<int64_t>(le(2))); break;
        case 0x8a: push_long(u8()); break;
        case 0x8b: push_long(le(4)); break;
        case 'G': {
          uint64_t b = 0;
          for (int k = 0; k < 8; ++k) b = (b << 8) | u8();
          auto v = make(Kind::Float);
          std::memcpy(&v->f, &b, 8);
          push(v);
          break;
        }
        case 'X': push_str(Kind::Str, le(4)); break;
        case 0x8c: push_str(Kind::Str, u8()); break;
        case 0x8d: push_str(Kind::Str, le(8)); break;
        case 'T': push_str(Kind::Bytes, le(4)); break;
        case 'U': case 'C': push_str(Kind::Bytes, u8()); break;
        case 'B': push_str(Kind::Bytes, le(4)); break;
        case 0x8e: push_str(Kind::Bytes, le(8)); break;
        case ')': push(make(Kind::Tuple)); break;
        case 't': push(sequence(Kind::Tuple, pop_mark())); break;
        case 0x85: case 0x86: case 0x87: {
          std::vector<PyValuePtr> xs(op - 0x84);
          for (size_t k = xs.size(); k-- > 0;) xs[k] = pop();
          push(sequence(Kind::Tuple, std::move(xs)));
          break;
        }
        case ']': push(make(Kind::List)); break;
        case 'l': push(sequence(Kind::List, pop_mark())); break;
        case 'a': { auto x = pop(); auto& l = target("APPEND"); adopt(l, x); l.items.push_back(x); break; }
        case 'e': case 0x90: {                                        // APPENDS, ADDITEMS (a set as a list)
          auto xs = pop_mark();
          auto& l = target(op == 'e' ? "APPENDS" : "ADDITEMS");
          for (const auto& x : xs) adopt(l, x);
          l.items.insert(l.items.end(), xs.begin(), xs.end());
          break;
        }
        case '}': push(make(Kind::Dict)); break;
        case 'd': { auto v = make(Kind::Dict); set_items(*v, pop_mark()); push(v); break; }
        case 's': {
          auto val = pop(), key = pop();
          auto& d = target("SETITEM");
          adopt(d, key);
          adopt(d, val);
          d.dict.emplace_back(key, val);
          break;
        }
        case 'u': { auto xs = pop_mark(); set_items(target("SETITEMS"), xs); break; }
        case 0x8f: push(make(Kind::List)); break;                     // EMPTY_SET (as a list)
        case 0x91: push(sequence(Kind::List, pop_mark())); break;     // FROZENSET (as a list)
        case 'c': { std::string mod = line(), name = line(); push_global(mod + "." + name); break; }
        case 0x93: { auto name = pop(), mod = pop(); push_global(mod->s + "." + name->s); break; }
        case 'R': { auto args = pop(); auto fn = pop(); push(call(fn, args)); break; }
        case 0x81: { pop(); auto cls = pop(); push(object(cls)); break; }           // NEWOBJ
        case 0x92: { pop(); pop(); auto cls = pop(); push(object(cls)); break; }    // NEWOBJ_EX
        case 'b': {  // BUILD: kept (a TorchScript module's attributes, a state dict's _metadata)
          auto st = pop();
          auto& obj = target("BUILD");
          adopt(obj, st);
          obj.state = st;
          break;
        }
        case 'q': put(u8()); break;
        case 'r': put(le(4)); break;
        case 0x94: put(memo_.size()); break;
        case 'h': push(memo(u8())); break;
        case 'j': push(memo(le(4))); break;
        case 'Q': push(persistent(pop())); break;
        default:
          TORCH_CHECK(false, fmt::format("'{}': unsupported pickle opcode 0x{:x} at byte {} of {}", path_,
                                         static_cast<int>(op), pos_ - 1, pickle_));
      }
    }
  }

 private:
  uint8_t u8() {
    TORCH_CHECK(pos_ < data_.size(), fmt::format("'{}': the pickle ends early (truncated file?)", path_));
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t le(int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(u8()) << (8 * k);
    return v;
  }
  std::string bytes(uint64_t n) {
    TORCH_CHECK(n <= data_.size() - pos_, fmt::format("'{}': the pickle ends early (truncated file?)", path_));
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    auto end = data_.find('\n', pos_);
    TORCH_CHECK(end != std::string::npos, fmt::format("'{}': the pickle ends early (truncated file?)", path_));
    std::string s = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  // Every value pushed (and every MARK) counts against the element limit.
  void count() {
    TORCH_CHECK_VALUE(++elements_ <= limits::kMaxPickleElements,
                      fmt::format("'{}' ({}): the pickle pushes more than the pickle element limit of {} values", path_,
                                  pickle_, limits::kMaxPickleElements));
  }
  void push(PyValuePtr v) {
    count();
    stack_.push_back(std::move(v));
  }
  PyValuePtr& top() {
    TORCH_CHECK(!stack_.empty(), fmt::format("'{}': malformed pickle (stack underflow)", path_));
    return stack_.back();
  }
  // A value leaves the stack only to be placed inside another (or dropped): from then on it
  // is never modified, so no value can come to contain itself and depths stay exact.
  PyValuePtr pop() {
    auto v = top();
    stack_.pop_back();
    v->sealed = true;
    return v;
  }
  std::vector<PyValuePtr> pop_mark() {
    TORCH_CHECK(!marks_.empty() && marks_.back() <= stack_.size(),
                fmt::format("'{}': malformed pickle (no mark)", path_));
    std::vector<PyValuePtr> xs(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    for (auto& x : xs) x->sealed = true;
    return xs;
  }
  // The value on top of the stack, which `op` modifies.
  PyValue& target(const char* op) {
    PyValue& t = *top();
    TORCH_CHECK_VALUE(!t.sealed, fmt::format("'{}' ({}): the pickle modifies a value ({}) after placing it inside "
                                             "another, as a reference cycle does; LAKE's reader refuses cycles",
                                             path_, pickle_, op));
    return t;
  }
  void adopt(PyValue& parent, const PyValuePtr& child) {
    parent.depth = std::max(parent.depth, child->depth + 1);
    TORCH_CHECK_VALUE(
        parent.depth <= limits::kMaxPickleDepth,
        fmt::format("'{}' ({}): the pickle nests values more than the pickle nesting depth limit of {} deep", path_,
                    pickle_, limits::kMaxPickleDepth));
  }
  PyValuePtr sequence(Kind k, std::vector<PyValuePtr> xs) {
    auto v = make(k);
    for (const auto& x : xs) adopt(*v, x);
    v->items = std::move(xs);
    return v;
  }
  void put(uint64_t k) {
    TORCH_CHECK_VALUE(memo_.count(k) || static_cast<int64_t>(memo_.size()) < limits::kMaxPickleMemo,
                      fmt::format("'{}' ({}): the pickle's memo grows past the pickle memo limit of {} entries", path_,
                                  pickle_, limits::kMaxPickleMemo));
    memo_[k] = top();
  }
  PyValuePtr memo(uint64_t k) {
    auto it = memo_.find(k);
    TORCH_CHECK(it != memo_.end(), fmt::format("'{}': malformed pickle (memo {} unset)", path_, k));
    return it->second;
  }
  void push_int(int64_t i) { auto v = make(Kind::Int); v->i = i; push(v); }
  void push_long(uint64_t n) {
    std::string b = bytes(n);
    int64_t v = 0;
    for (size_t k = 0; k < b.size() && k < 8; ++k) v |= static_cast<int64_t>(static_cast<uint8_t>(b[k])) << (8 * k);
    if (!b.empty() && b.size() < 8 && (static_cast<uint8_t>(b.back()) & 0x80)) v -= int64_t(1) << (8 * b.size());
    push_int(v);
  }
  void push_str(Kind k, uint64_t n) { auto v = make(k); v->s = bytes(n); push(v); }
  void push_global(const std::string& name) { auto v = make(Kind::Global); v->s = name; push(v); }
  void set_items(PyValue& d, const std::vector<PyValuePtr>& xs) {
    for (size_t k = 0; k + 1 < xs.size(); k += 2) {
      adopt(d, xs[k]);
      adopt(d, xs[k + 1]);
      d.dict.emplace_back(xs[k], xs[k + 1]);
    }
  }
  static PyValuePtr object(const PyValuePtr& cls) {
    auto v = make(Kind::Object);
    v->s = cls->s;
    return v;
  }
  const PyValuePtr& arg(const PyValuePtr& args, size_t k, const char* fn) {
    TORCH_CHECK(args->kind == Kind::Tuple && args->items.size() > k,
                fmt::format("'{}': malformed call to {}", path_, fn));
    return args->items[k];
  }
  std::vector<int64_t> ints(const PyValuePtr& t, const char* what) {
    TORCH_CHECK(t->kind == Kind::Tuple || t->kind == Kind::List,
                fmt::format("'{}': a tensor's {} is not a tuple", path_, what));
    std::vector<int64_t> out;
    for (const auto& x : t->items) {
      TORCH_CHECK(x->kind == Kind::Int, fmt::format("'{}': a tensor's {} holds a non-integer", path_, what));
      out.push_back(x->i);
    }
    return out;
  }

  // A tensor over `storage` (1-D, numel elements): its sizes, strides and offset must stay
  // inside the storage (set_ would otherwise grow it, or read outside it), and it may not
  // have more elements than the storage (a stride-0 expansion to a size the file chose).
  // All checked before the view is made.
  at::Tensor tensor_view(const at::Tensor& storage, const PyValuePtr& offset_v, const PyValuePtr& sizes_v,
                         const PyValuePtr& strides_v) {
    TORCH_CHECK(offset_v->kind == Kind::Int, fmt::format("'{}': a tensor's storage offset is not an integer", path_));
    const int64_t offset = offset_v->i;
    const std::vector<int64_t> sizes = ints(sizes_v, "size"), strides = ints(strides_v, "stride");
    auto shape = [&] {
      return fmt::format("sizes {}, strides {}, offset {}", at::IntArrayRef(sizes), at::IntArrayRef(strides), offset);
    };
    TORCH_CHECK(sizes.size() == strides.size(),
                fmt::format("'{}': a tensor has {}: expected as many sizes as strides", path_, shape()));
    TORCH_CHECK(offset >= 0, fmt::format("'{}': a tensor has {}: expected a non-negative offset", path_, shape()));
    const int64_t storage_numel = storage.numel();
    bool empty = false;
    int64_t last = offset;  // the largest element index the tensor reaches
    int64_t numel = 1;
    bool numel_overflows = false;
    for (size_t d = 0; d < sizes.size(); ++d) {
      TORCH_CHECK(sizes[d] >= 0 && strides[d] >= 0,
                  fmt::format("'{}': a tensor has {}: expected non-negative sizes and strides", path_, shape()));
      if (sizes[d] == 0) empty = true;
      numel_overflows = numel_overflows || __builtin_mul_overflow(numel, sizes[d], &numel);
      int64_t reach = 0;
      if (sizes[d] > 0) {
        TORCH_CHECK_VALUE(
            !__builtin_mul_overflow(sizes[d] - 1, strides[d], &reach) && !__builtin_add_overflow(last, reach, &last),
            fmt::format("'{}': a tensor has {}, which overflows", path_, shape()));
      }
    }
    TORCH_CHECK_VALUE(
        empty || last < storage_numel,
        fmt::format("'{}': a tensor has {} but its storage holds {} elements: it reaches past its storage (corrupted?)",
                    path_, shape(), storage_numel));
    TORCH_CHECK_VALUE(
        !empty || offset <= storage_numel,
        fmt::format("'{}': a tensor has {} but its storage holds {} elements", path_, shape(), storage_numel));
    TORCH_CHECK_VALUE(
        empty || (!numel_overflows && numel <= storage_numel),
        fmt::format("'{}': a tensor has {} ({} elements) but its storage holds {}: more elements than the storage, "
                    "beyond the tensor-vs-storage limit",
                    path_, shape(), numel_overflows ? std::string("more than 2^63") : fmt::format("{}", numel),
                    storage_numel));
    return at::empty({0}, storage.options()).set_(storage.storage(), offset, sizes, strides);
  }

  PyValuePtr call(const PyValuePtr& fn, const PyValuePtr& args) {
    const std::string& f = fn->s;
    if (f == "collections.OrderedDict" || f == "builtins.dict") return make(Kind::Dict);
    if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") {
      const auto& st = arg(args, 0, f.c_str());
      TORCH_CHECK(st->kind == Kind::Storage, fmt::format("'{}': tensor without storage", path_));
      auto v = make(Kind::Tensor);
      v->tensor = tensor_view(st->tensor, arg(args, 1, f.c_str()), arg(args, 2, f.c_str()), arg(args, 3, f.c_str()));
      return v;
    }
    // LibTorch's pickler (torch::jit::pickle_save) wraps typed lists and dicts in these
    // helpers; each returns its first argument.
    if (f == "torch.jit._pickle.restore_type_tag" || f == "torch.jit._pickle.build_intlist" ||
        f == "torch.jit._pickle.build_doublelist" || f == "torch.jit._pickle.build_boollist" ||
        f == "torch.jit._pickle.build_tensorlist") {
      return arg(args, 0, f.c_str());
    }
    if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
      return arg(args, 0, f.c_str());
    }
    auto v = make(Kind::Object);  // anything else: an opaque placeholder
    v->s = f;
    return v;
  }

  PyValuePtr persistent(const PyValuePtr& pid) {
    // ('storage', storage_type, key, location, numel); the location is ignored (read to the CPU)
    TORCH_CHECK(pid->kind == Kind::Tuple && pid->items.size() >= 5 && pid->items[0]->s == "storage" &&
                    pid->items[2]->kind == Kind::Str,
                fmt::format("'{}': unsupported persistent id in pickle", path_));
    const std::string key = pid->items[2]->s;
    auto it = storages_.find(key);
    if (it != storages_.end()) return it->second;
    const c10::ScalarType dtype = storage_dtype(pid->items[1]->s, path_);
    TORCH_CHECK(pid->items[4]->kind == Kind::Int && pid->items[4]->i >= 0,
                fmt::format("'{}': a storage claims {} elements", path_, pid->items[4]->i));
    const int64_t numel = pid->items[4]->i;
    const std::string record = data_dir_ + key;
    TORCH_CHECK(zip_.hasRecord(record), fmt::format("'{}': tensor data record '{}' is missing", path_, record));
    // The storage is allocated at its record's size (checked against the file when the zip
    // was opened), never at the size the pickle claims.
    const size_t size = zip_.getRecordSize(record);
    const size_t elem = c10::elementSize(dtype);
    size_t need = 0;
    TORCH_CHECK_VALUE(
        !__builtin_mul_overflow(static_cast<size_t>(numel), elem, &need) && size >= need,
        fmt::format("'{}': a storage claims {} elements of {} bytes but its data record '{}' holds {} bytes", path_,
                    numel, elem, record, size));
    auto v = make(Kind::Storage);
    v->tensor = at::empty({numel}, at::TensorOptions().dtype(dtype));
    try {
      if (size == need) {
        if (need) zip_.getRecord(record, v->tensor.data_ptr(), need);
      } else if (need) {  // a record longer than its storage (bytes past the last element): read it, keep the
                          // prefix (an empty storage reads nothing: its data_ptr may be null)
        std::string buf = read_zip_record(zip_, path_, record, size, "zip record size");
        std::memcpy(v->tensor.data_ptr(), buf.data(), need);
      }
    } catch (const c10::ValueError&) {
      throw;
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, fmt::format("'{}': tensor data record '{}' could not be read (truncated file?): {}", path_,
                                     record, e.what_without_backtrace()));
    }
    storages_[key] = v;
    return v;
  }

  const std::string& path_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  const std::string& data_;
  const std::string pickle_;
  const std::string data_dir_;
  size_t pos_ = 0;
  int64_t elements_ = 0;
  std::vector<PyValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, PyValuePtr> memo_;
  std::map<std::string, PyValuePtr> storages_;
};

}  // namespace

PyValuePtr read_pickle_record(const std::string& path, caffe2::serialize::PyTorchStreamReader& zip,
                              const std::string& pickle, const std::string& data_dir) {
  if (zip.hasRecord("byteorder")) {
    const std::string order = read_zip_record(zip, path, "byteorder", limits::kMaxCodeRecordBytes, "code record size");
    TORCH_CHECK(order == "little",
                fmt::format("'{}' was saved on a big-endian machine; LAKE reads little-endian files", path));
  }
  const std::string pkl = read_zip_record(zip, path, pickle, limits::kMaxPickleBytes, "pickle record size");
  return Reader(path, zip, pkl, pickle, data_dir).run();
}

PyValuePtr read_torch_save(const std::string& path) {
  auto zip = open_torch_zip(path, "");
  TORCH_CHECK(zip->hasRecord("data.pkl"),
              fmt::format("'{}' is a zip file without data.pkl: not a torch.save file", path));
  return read_pickle_record(path, *zip, "data.pkl", "data/");
}

}  // namespace lake::detail
