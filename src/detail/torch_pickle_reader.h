#pragma once
// The unpickler of detail/torch_pickle.h (internal): its machine (the opcodes, the stack,
// the memo and the limits, src/io/torch_pickle.cpp) and what rebuilds tensors from their
// storages (the persistent ids and the _rebuild_* calls, src/io/torch_pickle_tensors.cpp).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "detail/torch_pickle.h"

namespace caffe2::serialize {
class PyTorchStreamReader;
}

namespace lake::detail {
// A named namespace: the unity build compiles every src/ file as one translation unit.
namespace torch_pickle {

using Kind = PyValue::Kind;

/// A new value of kind `k`.
PyValuePtr make(Kind k);

class Reader {
 public:
  Reader(const std::string& path, caffe2::serialize::PyTorchStreamReader& zip, const std::string& pkl,
         const std::string& pickle_name, const std::string& data_dir)
      : path_(path), zip_(zip), data_(pkl), pickle_(pickle_name), data_dir_(data_dir) {}

  PyValuePtr run();

 private:
  // ---- the machine (torch_pickle.cpp) ----
  uint8_t u8();
  uint64_t le(int n);
  std::string bytes(uint64_t n);
  std::string line();
  void count();
  void push(PyValuePtr v);
  PyValuePtr& top();
  PyValuePtr pop();
  std::vector<PyValuePtr> pop_mark();
  PyValue& target(const char* op);
  void adopt(PyValue& parent, const PyValuePtr& child);
  PyValuePtr sequence(Kind k, std::vector<PyValuePtr> xs);
  void put(uint64_t k);
  PyValuePtr memo(uint64_t k);
  void push_int(int64_t i);
  void push_long(uint64_t n);
  void push_str(Kind k, uint64_t n);
  void push_global(const std::string& name);
  void set_items(PyValue& d, const std::vector<PyValuePtr>& xs);
  static PyValuePtr object(const PyValuePtr& cls);

  // ---- tensors and storages (torch_pickle_tensors.cpp) ----
  const PyValuePtr& arg(const PyValuePtr& args, size_t k, const char* fn);
  std::vector<int64_t> ints(const PyValuePtr& t, const char* what);
  at::Tensor tensor_view(const at::Tensor& storage, const PyValuePtr& offset_v, const PyValuePtr& sizes_v,
                         const PyValuePtr& strides_v);
  // REDUCE: the globals a state dict calls (OrderedDict, _rebuild_tensor_v2, ...).
  PyValuePtr call(const PyValuePtr& fn, const PyValuePtr& args);
  // BINPERSID: a storage, read from its data record once per key.
  PyValuePtr persistent(const PyValuePtr& pid);

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

}  // namespace torch_pickle
}  // namespace lake::detail
