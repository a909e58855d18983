// Bindings: lake::ops, the anomaly head's kernels (pylake.ops).
#include <torch/extension.h>

#include "lake/ops/ops.h"

namespace py = pybind11;

namespace lake::bindings {

void bind_ops(py::module_& root) {
  py::module_ m = root.def_submodule("ops", "The anomaly head's kernels (CPU, and CUDA when built with it).");
  m.def("cuda_kernels_available", &ops::cuda_kernels_available);
  m.def(
      "channel_moments",
      [](const at::Tensor& tokens, const std::optional<at::Tensor>& mask) {
        ops::Moments r = ops::channel_moments(tokens, mask.value_or(at::Tensor()));
        return std::make_tuple(r.count, r.mean, r.m2);
      },
      py::arg("tokens"), py::arg("mask") = py::none(), py::call_guard<py::gil_scoped_release>());
  m.def("top_k", &ops::top_k, py::arg("scores"), py::arg("k"), py::call_guard<py::gil_scoped_release>());
  m.def("gather_normalize", &ops::gather_normalize, py::arg("tokens"), py::arg("indices"), py::arg("eps") = 1e-12,
        py::call_guard<py::gil_scoped_release>());
  m.def(
      "nearest_neighbors",
      [](const at::Tensor& queries, const at::Tensor& gallery, int64_t tile, int64_t exclude_lo, int64_t exclude_hi) {
        ops::NearestOptions o;
        o.tile = tile;
        o.exclude_lo = exclude_lo;
        o.exclude_hi = exclude_hi;
        ops::NearestNeighbors r = ops::nearest_neighbors(queries, gallery, o);
        return std::make_tuple(r.distance, r.index);
      },
      py::arg("queries"), py::arg("gallery"), py::arg("tile") = 512, py::arg("exclude_lo") = 0,
      py::arg("exclude_hi") = 0, py::call_guard<py::gil_scoped_release>());
  m.def("upsample_blur", &ops::upsample_blur, py::arg("maps"), py::arg("height"), py::arg("width"),
        py::arg("sigma"), py::call_guard<py::gil_scoped_release>());
  m.def("gaussian_taps", &ops::gaussian_taps, py::arg("sigma"), py::arg("max_radius"));
}

}  // namespace lake::bindings
