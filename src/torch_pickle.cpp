// A small, code-free pickle reader for torch.save zip files (see detail/torch_pickle.h).

#include "detail/torch_pickle.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>

namespace lake::detail {
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
  TORCH_CHECK(it != types.end(), "'", path, "': unsupported tensor storage type ", global);
  return it->second;
}

class Reader {
 public:
  Reader(const std::string& path, caffe2::serialize::PyTorchStreamReader& zip, const std::string& pkl)
      : path_(path), zip_(zip), data_(pkl) {}

  PyValuePtr run() {
    while (true) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;              // PROTO
        case 0x95: bytes(8); break;          // FRAME
        case '.': {                          // STOP
          TORCH_CHECK(!stack_.empty(), "'", path_, "': empty pickle");
          return stack_.back();
        }
        case '(': marks_.push_back(stack_.size()); break;
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
        case 't': { auto v = make(Kind::Tuple); v->items = pop_mark(); push(v); break; }
        case 0x85: case 0x86: case 0x87: {
          auto v = make(Kind::Tuple);
          v->items.resize(op - 0x84);
          for (size_t k = v->items.size(); k-- > 0;) v->items[k] = pop();
          push(v);
          break;
        }
        case ']': push(make(Kind::List)); break;
        case 'l': { auto v = make(Kind::List); v->items = pop_mark(); push(v); break; }
        case 'a': { auto x = pop(); top()->items.push_back(x); break; }
        case 'e': { auto xs = pop_mark(); auto& l = top()->items; l.insert(l.end(), xs.begin(), xs.end()); break; }
        case '}': push(make(Kind::Dict)); break;
        case 'd': { auto v = make(Kind::Dict); set_items(*v, pop_mark()); push(v); break; }
        case 's': { auto val = pop(); auto key = pop(); top()->dict.emplace_back(key, val); break; }
        case 'u': { auto xs = pop_mark(); set_items(*top(), xs); break; }
        case 0x8f: push(make(Kind::List)); break;                     // EMPTY_SET (as a list)
        case 0x90: { auto xs = pop_mark(); auto& l = top()->items; l.insert(l.end(), xs.begin(), xs.end()); break; }
        case 0x91: { auto v = make(Kind::List); v->items = pop_mark(); push(v); break; }
        case 'c': { std::string mod = line(), name = line(); push_global(mod + "." + name); break; }
        case 0x93: { auto name = pop(), mod = pop(); push_global(mod->s + "." + name->s); break; }
        case 'R': { auto args = pop(); auto fn = pop(); push(call(fn, args)); break; }
        case 0x81: { pop(); auto cls = pop(); push(object(cls)); break; }           // NEWOBJ
        case 0x92: { pop(); pop(); auto cls = pop(); push(object(cls)); break; }    // NEWOBJ_EX
        case 'b': pop(); break;  // BUILD: object state (e.g. state_dict._metadata) is not needed
        case 'q': memo_[u8()] = top(); break;
        case 'r': memo_[le(4)] = top(); break;
        case 0x94: memo_[memo_.size()] = top(); break;
        case 'h': push(memo(u8())); break;
        case 'j': push(memo(le(4))); break;
        case 'Q': push(persistent(pop())); break;
        default:
          TORCH_CHECK(false, "'", path_, "': unsupported pickle opcode 0x", std::hex, static_cast<int>(op),
                      " at byte ", std::dec, pos_ - 1);
      }
    }
  }

 private:
  uint8_t u8() {
    TORCH_CHECK(pos_ < data_.size(), "'", path_, "': the pickle ends early (truncated file?)");
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t le(int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(u8()) << (8 * k);
    return v;
  }
  std::string bytes(uint64_t n) {
    TORCH_CHECK(n <= data_.size() - pos_, "'", path_, "': the pickle ends early (truncated file?)");
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    auto end = data_.find('\n', pos_);
    TORCH_CHECK(end != std::string::npos, "'", path_, "': the pickle ends early (truncated file?)");
    std::string s = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  void push(PyValuePtr v) { stack_.push_back(std::move(v)); }
  PyValuePtr& top() {
    TORCH_CHECK(!stack_.empty(), "'", path_, "': malformed pickle (stack underflow)");
    return stack_.back();
  }
  PyValuePtr pop() {
    auto v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<PyValuePtr> pop_mark() {
    TORCH_CHECK(!marks_.empty() && marks_.back() <= stack_.size(), "'", path_, "': malformed pickle (no mark)");
    std::vector<PyValuePtr> xs(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return xs;
  }
  PyValuePtr memo(uint64_t k) {
    auto it = memo_.find(k);
    TORCH_CHECK(it != memo_.end(), "'", path_, "': malformed pickle (memo ", k, " unset)");
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
  static void set_items(PyValue& d, const std::vector<PyValuePtr>& xs) {
    for (size_t k = 0; k + 1 < xs.size(); k += 2) d.dict.emplace_back(xs[k], xs[k + 1]);
  }
  static PyValuePtr object(const PyValuePtr& cls) {
    auto v = make(Kind::Object);
    v->s = cls->s;
    return v;
  }
  const PyValuePtr& arg(const PyValuePtr& args, size_t k, const char* fn) {
    TORCH_CHECK(args->kind == Kind::Tuple && args->items.size() > k, "'", path_, "': malformed call to ", fn);
    return args->items[k];
  }
  std::vector<int64_t> ints(const PyValuePtr& t, const char* what) {
    TORCH_CHECK(t->kind == Kind::Tuple || t->kind == Kind::List, "'", path_, "': a tensor's ", what,
                " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : t->items) {
      TORCH_CHECK(x->kind == Kind::Int, "'", path_, "': a tensor's ", what, " holds a non-integer");
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
    TORCH_CHECK(offset_v->kind == Kind::Int, "'", path_, "': a tensor's storage offset is not an integer");
    const int64_t offset = offset_v->i;
    const std::vector<int64_t> sizes = ints(sizes_v, "size"), strides = ints(strides_v, "stride");
    auto shape = [&] { return c10::str("sizes ", at::IntArrayRef(sizes), ", strides ", at::IntArrayRef(strides),
                                       ", offset ", offset); };
    TORCH_CHECK(sizes.size() == strides.size(), "'", path_, "': a tensor has ", shape(),
                ": expected as many sizes as strides");
    TORCH_CHECK(offset >= 0, "'", path_, "': a tensor has ", shape(), ": expected a non-negative offset");
    const int64_t storage_numel = storage.numel();
    bool empty = false;
    int64_t last = offset;  // the largest element index the tensor reaches
    int64_t numel = 1;
    bool numel_overflows = false;
    for (size_t d = 0; d < sizes.size(); ++d) {
      TORCH_CHECK(sizes[d] >= 0 && strides[d] >= 0, "'", path_, "': a tensor has ", shape(),
                  ": expected non-negative sizes and strides");
      if (sizes[d] == 0) empty = true;
      numel_overflows = numel_overflows || __builtin_mul_overflow(numel, sizes[d], &numel);
      int64_t reach = 0;
      if (sizes[d] > 0) {
        TORCH_CHECK_VALUE(!__builtin_mul_overflow(sizes[d] - 1, strides[d], &reach) &&
                              !__builtin_add_overflow(last, reach, &last),
                          "'", path_, "': a tensor has ", shape(), ", which overflows");
      }
    }
    TORCH_CHECK_VALUE(empty || last < storage_numel, "'", path_, "': a tensor has ", shape(),
                      " but its storage holds ", storage_numel,
                      " elements: it reaches past its storage (corrupted?)");
    TORCH_CHECK_VALUE(!empty || offset <= storage_numel, "'", path_, "': a tensor has ", shape(),
                      " but its storage holds ", storage_numel, " elements");
    TORCH_CHECK_VALUE(empty || (!numel_overflows && numel <= storage_numel), "'", path_, "': a tensor has ",
                      shape(), " (", numel_overflows ? "more than 2^63" : std::to_string(numel),
                      " elements) but its storage holds ", storage_numel,
                      ": more elements than the storage, beyond the tensor-vs-storage limit");
    return at::empty({0}, storage.options()).set_(storage.storage(), offset, sizes, strides);
  }

  PyValuePtr call(const PyValuePtr& fn, const PyValuePtr& args) {
    const std::string& f = fn->s;
    if (f == "collections.OrderedDict" || f == "builtins.dict") return make(Kind::Dict);
    if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") {
      const auto& st = arg(args, 0, f.c_str());
      TORCH_CHECK(st->kind == Kind::Storage, "'", path_, "': tensor without storage");
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
    // ('storage', storage_type, key, location, numel)
    TORCH_CHECK(pid->kind == Kind::Tuple && pid->items.size() >= 5 && pid->items[0]->s == "storage", "'", path_,
                "': unsupported persistent id in pickle");
    const std::string key = pid->items[2]->s;
    auto it = storages_.find(key);
    if (it != storages_.end()) return it->second;
    const c10::ScalarType dtype = storage_dtype(pid->items[1]->s, path_);
    const int64_t numel = pid->items[4]->i;
    TORCH_CHECK(pid->items[4]->kind == Kind::Int && numel >= 0, "'", path_, "': a storage claims ", numel,
                " elements");
    const std::string record = "data/" + key;
    TORCH_CHECK(zip_.hasRecord(record), "'", path_, "': tensor data record '", record, "' is missing");
    at::DataPtr ptr;
    size_t size = 0;
    try {
      std::tie(ptr, size) = zip_.getRecord(record);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "'", path_, "': tensor data record '", record, "' could not be read (truncated file?): ",
                  e.what_without_backtrace());
    }
    size_t need = 0;
    TORCH_CHECK(!__builtin_mul_overflow(static_cast<size_t>(numel), c10::elementSize(dtype), &need) && size >= need,
                "'", path_, "': tensor data record '", record, "' holds ", size, " bytes, expected ", numel, " x ",
                c10::elementSize(dtype));
    auto v = make(Kind::Storage);
    v->tensor = at::empty({numel}, at::TensorOptions().dtype(dtype));
    if (need) std::memcpy(v->tensor.data_ptr(), ptr.get(), need);
    storages_[key] = v;
    return v;
  }

  const std::string& path_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  const std::string& data_;
  size_t pos_ = 0;
  std::vector<PyValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, PyValuePtr> memo_;
  std::map<std::string, PyValuePtr> storages_;
};

}  // namespace

PyValuePtr read_torch_save(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "'", path, "' is not a readable torch.save zip file (truncated or corrupted?): ",
                e.what_without_backtrace());
  }
  TORCH_CHECK(zip->hasRecord("data.pkl"), "'", path, "' is a zip file without data.pkl: not a torch.save file");
  if (zip->hasRecord("byteorder")) {
    auto [ptr, size] = zip->getRecord("byteorder");
    std::string order(static_cast<const char*>(ptr.get()), size);
    TORCH_CHECK(order == "little", "'", path, "' was saved on a big-endian machine; LAKE reads little-endian files");
  }
  at::DataPtr ptr;
  size_t size = 0;
  try {
    std::tie(ptr, size) = zip->getRecord("data.pkl");
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "'", path, "': data.pkl could not be read (truncated file?): ", e.what_without_backtrace());
  }
  const std::string pkl(static_cast<const char*>(ptr.get()), size);
  return Reader(path, *zip, pkl).run();
}

}  // namespace lake::detail
