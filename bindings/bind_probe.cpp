// Bindings: NeuronProbe, ProbeResult.
#include <torch/extension.h>

#include "lake/neuron_probe.h"

namespace py = pybind11;

namespace lake::bindings {

void bind_probe(py::module_& m) {
  py::class_<ProbeResult>(m, "ProbeResult")
      .def_readonly("layers", &ProbeResult::layers)
      .def_readonly("activations", &ProbeResult::activations)
      .def_readonly("cls", &ProbeResult::cls)
      .def_readonly("projected", &ProbeResult::projected)
      .def_readonly("grid_h", &ProbeResult::grid_h)
      .def_readonly("grid_w", &ProbeResult::grid_w);

  py::class_<NeuronProbe>(m, "NeuronProbe")
      .def(py::init([](const ClipModel& model, const std::vector<int64_t>& layers, const std::string& kind,
                       int64_t project_layer) {
             ProbeOptions o;
             o.layers = layers;
             o.kind = parse_probe_kind(kind);
             o.project_layer = project_layer;
             return NeuronProbe(model, o);
           }),
           py::arg("model"), py::arg("layers"), py::arg("kind") = "residual", py::arg("project_layer") = 0)
      .def("__call__", &NeuronProbe::operator(), py::arg("images"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("layers", &NeuronProbe::layers)
      .def_property_readonly("channels", &NeuronProbe::channels)
      .def_property_readonly("kind", [](const NeuronProbe& p) { return to_string(p.options().kind); });
}

}  // namespace lake::bindings
