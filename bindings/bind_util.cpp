// Bindings: the rules pylake shares with liblake instead of writing them again in Python:
// dtype names (lake/dtype.h), atomic writing and key=value text (lake/files.h), the keys of a
// training checkpoint's state dict (lake/clip_model.h).
#include <torch/extension.h>

#include <pybind11/stl/filesystem.h>

#include <fmt/format.h>

#include <filesystem>
#include <string>
#include <vector>

#include "lake/clip_model.h"
#include "lake/dtype.h"
#include "lake/files.h"

namespace py = pybind11;

namespace lake::bindings {

namespace {

// A dtype given by name (a kDtypeNames name or alias) or as a torch.dtype LAKE names.
c10::ScalarType dtype_of(const py::handle& v) {
  if (py::isinstance<py::str>(v)) return parse_dtype(v.cast<std::string>());
  c10::ScalarType t;
  try {
    t = v.cast<c10::ScalarType>();
  } catch (const py::cast_error&) {
    throw py::type_error(fmt::format("expected a torch.dtype or its name, got {}", py::repr(v).cast<std::string>()));
  }
  for (const auto& d : kDtypeNames)
    if (d.type == t) return t;
  return parse_dtype(py::str(v).cast<std::string>());  // the unknown-dtype error, naming it
}

template <typename Types>
std::vector<std::string> names_of(const Types& types) {
  std::vector<std::string> out;
  for (c10::ScalarType t : types) out.push_back(dtype_name(t));
  return out;
}

}  // namespace

void bind_util(py::module_& m) {
  m.def("parse_dtype", &dtype_of, py::arg("dtype"),
        "torch.dtype of a dtype name or alias ('float32' / 'float', 'float16' / 'half', 'bfloat16', "
        "'float64' / 'double') or of a torch.dtype LAKE names; anything else is a ValueError naming every "
        "accepted name.");
  m.def("dtype_name", [](const py::handle& v) { return dtype_name(dtype_of(v)); }, py::arg("dtype"),
        "The one name of a dtype ('float32' for torch.float32, 'half', 'float').");
  m.def(
      "check_dtype",
      [](const py::handle& v, const std::string& entry) {
        const c10::ScalarType t = dtype_of(v);
        if (entry == "load_clip") {
          check_dtype(t, kLoadClipDtypes, "load_clip: dtype");
        } else if (entry == "save_clip") {
          check_dtype(t, kSaveClipDtypes, "save_clip: dtype");
        } else {
          TORCH_CHECK_VALUE(false,
                            fmt::format("check_dtype: entry must be 'load_clip' or 'save_clip', got '{}'", entry));
        }
        return t;
      },
      py::arg("dtype"), py::arg("entry"),
      "The torch.dtype `dtype` (a name or a torch.dtype) when `entry` ('load_clip', 'save_clip') takes it; "
      "else a ValueError naming the dtypes it takes.");
  m.attr("load_clip_dtypes") = py::tuple(py::cast(names_of(kLoadClipDtypes)));
  m.attr("save_clip_dtypes") = py::tuple(py::cast(names_of(kSaveClipDtypes)));

  m.def(
      "write_file_atomically",
      [](const std::filesystem::path& path, const py::buffer& data, const std::string& what) {
        const py::buffer_info info = data.request();  // with the GIL; `data` stays referenced by the caller
        TORCH_CHECK_VALUE(PyBuffer_IsContiguous(info.view(), 'C'),
                          fmt::format("{}: the data for '{}' is not a contiguous buffer", what, path.string()));
        const std::string target = path.string();
        py::gil_scoped_release release;
        write_file_atomically(target, info.ptr, static_cast<size_t>(info.size * info.itemsize), what.c_str());
      },
      py::arg("path"), py::arg("data"), py::arg("what") = "write_file_atomically",
      "Write the bytes of `data` (bytes, bytearray, memoryview, any contiguous buffer) to `path` atomically: "
      "a temporary file in the same folder, fsync, rename; on failure no temporary file is left and an existing "
      "file is unchanged. The folder must exist. The GIL is released while writing.");

  m.attr("checkpoint_state_dict_keys") =
      py::tuple(py::cast(std::vector<std::string>(std::begin(kCheckpointStateDictKeys), std::end(kCheckpointStateDictKeys))));

  m.def("parse_key_values", &parse_key_values, py::arg("text"), py::arg("source") = "<text>",
        "dict of 'key=value' lines (blank lines and '#' comments ignored; a value keeps any later '='); a "
        "malformed line is a RuntimeError naming `source` and the line.");
}

}  // namespace lake::bindings
