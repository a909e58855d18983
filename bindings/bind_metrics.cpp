// Bindings: evaluation metrics (lake::metrics), as names prefixed `metrics_` and the
// ImageMetrics / PixelMetrics accumulators. Names follow lake::metrics::kImageMetricNames /
// kPixelMetricNames (bound as IMAGE_METRICS / PIXEL_METRICS): average_precision is `metrics_ap`.
#include <torch/extension.h>

#include "lake/metrics.h"

namespace py = pybind11;

namespace lake::bindings {

void bind_metrics(py::module_& m) {
  using namespace lake::metrics;
  m.def("metrics_auroc", &auroc, py::arg("scores"), py::arg("labels"), py::call_guard<py::gil_scoped_release>());
  m.def("metrics_ap", &average_precision, py::arg("scores"), py::arg("labels"),
        py::call_guard<py::gil_scoped_release>());
  m.def("metrics_f1_max", &f1_max, py::arg("scores"), py::arg("labels"), py::call_guard<py::gil_scoped_release>());
  m.def("metrics_connected_components", &connected_components, py::arg("mask"),
        py::call_guard<py::gil_scoped_release>());
  m.def("metrics_aupro", &aupro, py::arg("maps"), py::arg("masks"), py::arg("fpr_limit") = 0.3,
        py::call_guard<py::gil_scoped_release>());

  m.attr("IMAGE_METRICS") = py::tuple(py::cast(std::vector<std::string>(std::begin(kImageMetricNames),
                                                                        std::end(kImageMetricNames))));
  m.attr("PIXEL_METRICS") = py::tuple(py::cast(std::vector<std::string>(std::begin(kPixelMetricNames),
                                                                        std::end(kPixelMetricNames))));
  py::class_<ImageResult>(m, "ImageResult")
      .def_readonly("auroc", &ImageResult::auroc)
      .def_readonly("ap", &ImageResult::ap)
      .def_readonly("f1_max", &ImageResult::f1_max);
  py::class_<PixelResult>(m, "PixelResult")
      .def_readonly("auroc", &PixelResult::auroc)
      .def_readonly("ap", &PixelResult::ap)
      .def_readonly("f1_max", &PixelResult::f1_max)
      .def_readonly("aupro", &PixelResult::aupro);

  py::class_<ImageMetrics>(m, "ImageMetrics")
      .def(py::init<>())
      .def("update", &ImageMetrics::update, py::arg("scores"), py::arg("labels"))
      .def("compute", &ImageMetrics::compute)
      .def("count", &ImageMetrics::count)
      .def("reset", &ImageMetrics::reset);
  py::class_<PixelMetrics>(m, "PixelMetrics")
      .def(py::init<std::optional<double>, std::optional<double>, int64_t, double, int64_t>(),
           py::arg("lo") = py::none(), py::arg("hi") = py::none(), py::arg("bins") = int64_t{1} << 15,
           py::arg("fpr_limit") = 0.3, py::arg("exact_limit") = int64_t{1} << 21)
      .def("update", &PixelMetrics::update, py::arg("maps"), py::arg("masks"), py::call_guard<py::gil_scoped_release>())
      .def("compute", &PixelMetrics::compute, py::call_guard<py::gil_scoped_release>())
      .def("reset", &PixelMetrics::reset)
      .def("is_exact", &PixelMetrics::is_exact)
      .def("state_bytes", &PixelMetrics::state_bytes)
      .def_property_readonly("pixels", &PixelMetrics::pixels)
      .def_property_readonly("fixed_range", &PixelMetrics::fixed_range)
      .def_property_readonly("lo", &PixelMetrics::lo)
      .def_property_readonly("hi", &PixelMetrics::hi)
      .def_property_readonly("bin_width", &PixelMetrics::bin_width)
      .def_property_readonly("bins", &PixelMetrics::bins);
}

}  // namespace lake::bindings
