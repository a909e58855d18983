#pragma once
// A small pickle reader for `torch.save` zip files (internal).
//
// LibTorch's own unpickler (torch::jit::pickle_load) turns `collections.OrderedDict` into
// None, which is how every `state_dict()` is pickled, and rejects unknown classes (an
// OpenCLIP checkpoint may hold an argparse.Namespace). This reader builds plain values
// instead: dicts (OrderedDict included), lists, tuples, scalars, strings and tensors;
// any other object becomes an opaque placeholder. It never executes code.
//
//   auto value = lake::detail::read_torch_save("model.pt");   // throws c10::Error
//   for (auto& [key, v] : value->dict) ...

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lake::detail {

struct PyValue;
using PyValuePtr = std::shared_ptr<PyValue>;

struct PyValue {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Tensor, Storage, Object };
  Kind kind = Kind::None;
  int64_t i = 0;            // Bool, Int
  double f = 0.0;           // Float
  std::string s;            // Str, Bytes, Global ("module.name"), Object (its class)
  std::vector<PyValuePtr> items;                            // Tuple, List
  std::vector<std::pair<PyValuePtr, PyValuePtr>> dict;      // Dict, in insertion order
  at::Tensor tensor;        // Tensor, Storage (1-D, the storage's dtype)
};

/// Reads the pickled object of a `torch.save` zip file at `path`. Errors name the file.
PyValuePtr read_torch_save(const std::string& path);

}  // namespace lake::detail
