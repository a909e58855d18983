#pragma once
// A small pickle reader for `torch.save` zip files and TorchScript archives (internal).
//
// LibTorch's own unpickler (torch::jit::pickle_load) turns `collections.OrderedDict` into
// None, which is how every `state_dict()` is pickled, and rejects unknown classes (an
// OpenCLIP checkpoint may hold an argparse.Namespace); torch::jit::load compiles an
// archive's code and runs scripted classes' `__setstate__`. This reader builds plain values
// instead: dicts (OrderedDict included), lists, tuples, scalars, strings and tensors; any
// other object becomes an opaque placeholder that keeps its class name and its BUILD state
// (a TorchScript module: the dict of its attributes). It never executes code.
//
// Everything is bounded (detail/limits.h): the zip's directory is validated against the
// file before any record is read, records are read at their checked sizes, pickles have a
// bounded depth, element and memo count, and a value can never contain itself (a pickle
// that modifies a value after placing it inside another is refused), so value trees are
// finite and shallow.
//
//   auto value = lake::detail::read_torch_save("model.pt");   // throws c10::Error
//   for (auto& [key, v] : value->dict) ...
//
//   auto zip = lake::detail::open_torch_zip("jit.pt", "CLIP archive");
//   auto root = lake::detail::read_pickle_record("jit.pt", *zip, "data.pkl", "data/");

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace caffe2::serialize {
class PyTorchStreamReader;
}

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
  PyValuePtr state;         // Object, Dict: the argument of BUILD (nullptr when none)
  int32_t depth = 0;        // nesting depth below this value (0: no children)
  bool sealed = false;      // placed inside another value: never modified again
};

/// Reads the pickled object of a `torch.save` zip file at `path`. Errors name the file.
PyValuePtr read_torch_save(const std::string& path);

/// Opens a zip archive written by PyTorch (torch.save, torch.jit.save) after checking its
/// central directory against the file: every record inside the file, stored records no
/// larger than it and not overlapping, compressed ones within the decompression limits.
/// `what` starts every error ("CLIP archive"); a damaged zip is a c10::Error, a limit a
/// c10::ValueError.
std::unique_ptr<caffe2::serialize::PyTorchStreamReader> open_torch_zip(const std::string& path,
                                                                       const std::string& what);

/// The bytes of record `name` (relative to the archive's folder), refused with a
/// c10::ValueError naming `limit_name` when the directory says it is larger than `limit`.
std::string read_zip_record(caffe2::serialize::PyTorchStreamReader& zip, const std::string& path,
                            const std::string& name, uint64_t limit, const char* limit_name);

/// Reads the pickle record `pickle` of an open zip; its persistent storages are the
/// records `data_dir` + key ("data/" for torch.save and TorchScript's data.pkl,
/// "constants/" for TorchScript's constants.pkl).
PyValuePtr read_pickle_record(const std::string& path, caffe2::serialize::PyTorchStreamReader& zip,
                              const std::string& pickle, const std::string& data_dir);

}  // namespace lake::detail
