// The tensors of a pickle (see detail/torch_pickle.h): its storages (persistent ids, read
// from their data records at the records' checked sizes) and the views over them that
// torch._utils._rebuild_tensor_v2 makes, every size, stride and offset checked first.

#include "detail/format.h"
#include "detail/torch_pickle.h"
#include "detail/torch_pickle_reader.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>

namespace lake::detail {
namespace torch_pickle {
namespace {

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

}  // namespace

const PyValuePtr& Reader::arg(const PyValuePtr& args, size_t k, const char* fn) {
  TORCH_CHECK(args->kind == Kind::Tuple && args->items.size() > k,
              fmt::format("'{}': malformed call to {}", path_, fn));
  return args->items[k];
}

std::vector<int64_t> Reader::ints(const PyValuePtr& t, const char* what) {
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
at::Tensor Reader::tensor_view(const at::Tensor& storage, const PyValuePtr& offset_v, const PyValuePtr& sizes_v,
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

PyValuePtr Reader::call(const PyValuePtr& fn, const PyValuePtr& args) {
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

PyValuePtr Reader::persistent(const PyValuePtr& pid) {
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

}  // namespace torch_pickle
}  // namespace lake::detail
