// A small, code-free pickle reader for torch.save zip files and TorchScript archives
// (see detail/torch_pickle.h); every size it reads is checked against detail/limits.h.
// This is the unpickler's machine (opcodes, stack, memo); the tensors and storages it
// rebuilds are in torch_pickle_tensors.cpp, the zip archive in torch_zip.cpp.

#include "detail/format.h"
#include "detail/torch_pickle.h"
#include "detail/torch_pickle_reader.h"

#include "detail/limits.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <map>

namespace lake::detail {
namespace torch_pickle {

PyValuePtr make(Kind k) {
  auto v = std::make_shared<PyValue>();
  v->kind = k;
  return v;
}

PyValuePtr Reader::run() {
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

uint8_t Reader::u8() {
  TORCH_CHECK(pos_ < data_.size(), fmt::format("'{}': the pickle ends early (truncated file?)", path_));
  return static_cast<uint8_t>(data_[pos_++]);
}

uint64_t Reader::le(int n) {
  uint64_t v = 0;
  for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(u8()) << (8 * k);
  return v;
}

std::string Reader::bytes(uint64_t n) {
  TORCH_CHECK(n <= data_.size() - pos_, fmt::format("'{}': the pickle ends early (truncated file?)", path_));
  std::string s = data_.substr(pos_, n);
  pos_ += n;
  return s;
}

std::string Reader::line() {
  auto end = data_.find('\n', pos_);
  TORCH_CHECK(end != std::string::npos, fmt::format("'{}': the pickle ends early (truncated file?)", path_));
  std::string s = data_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return s;
}
// Every value pushed (and every MARK) counts against the element limit.
void Reader::count() {
  TORCH_CHECK_VALUE(++elements_ <= limits::kMaxPickleElements,
                    fmt::format("'{}' ({}): the pickle pushes more than the pickle element limit of {} values", path_,
                                pickle_, limits::kMaxPickleElements));
}

void Reader::push(PyValuePtr v) {
  count();
  stack_.push_back(std::move(v));
}

PyValuePtr& Reader::top() {
  TORCH_CHECK(!stack_.empty(), fmt::format("'{}': malformed pickle (stack underflow)", path_));
  return stack_.back();
}
// A value leaves the stack only to be placed inside another (or dropped): from then on it
// is never modified, so no value can come to contain itself and depths stay exact.
PyValuePtr Reader::pop() {
  auto v = top();
  stack_.pop_back();
  v->sealed = true;
  return v;
}

std::vector<PyValuePtr> Reader::pop_mark() {
  TORCH_CHECK(!marks_.empty() && marks_.back() <= stack_.size(),
              fmt::format("'{}': malformed pickle (no mark)", path_));
  std::vector<PyValuePtr> xs(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
  stack_.resize(marks_.back());
  marks_.pop_back();
  for (auto& x : xs) x->sealed = true;
  return xs;
}
// The value on top of the stack, which `op` modifies.
PyValue& Reader::target(const char* op) {
  PyValue& t = *top();
  TORCH_CHECK_VALUE(!t.sealed, fmt::format("'{}' ({}): the pickle modifies a value ({}) after placing it inside "
                                           "another, as a reference cycle does; LAKE's reader refuses cycles",
                                           path_, pickle_, op));
  return t;
}

void Reader::adopt(PyValue& parent, const PyValuePtr& child) {
  parent.depth = std::max(parent.depth, child->depth + 1);
  TORCH_CHECK_VALUE(
      parent.depth <= limits::kMaxPickleDepth,
      fmt::format("'{}' ({}): the pickle nests values more than the pickle nesting depth limit of {} deep", path_,
                  pickle_, limits::kMaxPickleDepth));
}

PyValuePtr Reader::sequence(Kind k, std::vector<PyValuePtr> xs) {
  auto v = make(k);
  for (const auto& x : xs) adopt(*v, x);
  v->items = std::move(xs);
  return v;
}

void Reader::put(uint64_t k) {
  TORCH_CHECK_VALUE(memo_.count(k) || static_cast<int64_t>(memo_.size()) < limits::kMaxPickleMemo,
                    fmt::format("'{}' ({}): the pickle's memo grows past the pickle memo limit of {} entries", path_,
                                pickle_, limits::kMaxPickleMemo));
  memo_[k] = top();
}

PyValuePtr Reader::memo(uint64_t k) {
  auto it = memo_.find(k);
  TORCH_CHECK(it != memo_.end(), fmt::format("'{}': malformed pickle (memo {} unset)", path_, k));
  return it->second;
}

void Reader::push_int(int64_t i) { auto v = make(Kind::Int); v->i = i; push(v); }
void Reader::push_long(uint64_t n) {
  std::string b = bytes(n);
  int64_t v = 0;
  for (size_t k = 0; k < b.size() && k < 8; ++k) v |= static_cast<int64_t>(static_cast<uint8_t>(b[k])) << (8 * k);
  if (!b.empty() && b.size() < 8 && (static_cast<uint8_t>(b.back()) & 0x80)) v -= int64_t(1) << (8 * b.size());
  push_int(v);
}

void Reader::push_str(Kind k, uint64_t n) { auto v = make(k); v->s = bytes(n); push(v); }
void Reader::push_global(const std::string& name) { auto v = make(Kind::Global); v->s = name; push(v); }

void Reader::set_items(PyValue& d, const std::vector<PyValuePtr>& xs) {
  for (size_t k = 0; k + 1 < xs.size(); k += 2) {
    adopt(d, xs[k]);
    adopt(d, xs[k + 1]);
    d.dict.emplace_back(xs[k], xs[k + 1]);
  }
}

PyValuePtr Reader::object(const PyValuePtr& cls) {
  auto v = make(Kind::Object);
  v->s = cls->s;
  return v;
}

}  // namespace torch_pickle

PyValuePtr read_pickle_record(const std::string& path, caffe2::serialize::PyTorchStreamReader& zip,
                              const std::string& pickle, const std::string& data_dir) {
  if (zip.hasRecord("byteorder")) {
    const std::string order = read_zip_record(zip, path, "byteorder", limits::kMaxCodeRecordBytes, "code record size");
    TORCH_CHECK(order == "little",
                fmt::format("'{}' was saved on a big-endian machine; LAKE reads little-endian files", path));
  }
  const std::string pkl = read_zip_record(zip, path, pickle, limits::kMaxPickleBytes, "pickle record size");
  return torch_pickle::Reader(path, zip, pkl, pickle, data_dir).run();
}

PyValuePtr read_torch_save(const std::string& path) {
  auto zip = open_torch_zip(path, "");
  TORCH_CHECK(zip->hasRecord("data.pkl"),
              fmt::format("'{}' is a zip file without data.pkl: not a torch.save file", path));
  return read_pickle_record(path, *zip, "data.pkl", "data/");
}

}  // namespace lake::detail
