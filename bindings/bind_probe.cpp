// Bindings: ProbeKind, ProbeOptions, NeuronProbe, ProbeResult.
#include <torch/extension.h>

#include "lake/neuron_probe.h"
#include "options.h"

namespace py = pybind11;

namespace lake::bindings {

void bind_probe(py::module_& m) {
  bind_enum<ProbeKind>(m, "ProbeKind", &parse_probe_kind,
                       {{"Residual", ProbeKind::Residual}, {"Mlp", ProbeKind::Mlp}},
                       "Which neurons a probe reads: 'residual' (D channels) or 'mlp' (4 D hidden units).");

  OptionsClass<ProbeOptions>(m, "ProbeOptions", "lake::ProbeOptions: what a NeuronProbe reads.")
      .field("layers", &ProbeOptions::layers, "1-based block indices; negative ones count from the end")
      .enum_field("kind", &ProbeOptions::kind, &parse_probe_kind, "ProbeKind, or 'residual' / 'mlp'")
      .field("project_layer", &ProbeOptions::project_layer,
             "also return this block's patch tokens through ln_post and proj (0: no)")
      .finish();

  py::class_<ProbeResult>(m, "ProbeResult")
      .def_readonly("layers", &ProbeResult::layers)
      .def_readonly("activations", &ProbeResult::activations)
      .def_readonly("cls", &ProbeResult::cls)
      .def_readonly("projected", &ProbeResult::projected)
      .def_readonly("grid_h", &ProbeResult::grid_h)
      .def_readonly("grid_w", &ProbeResult::grid_w);

  py::class_<NeuronProbe>(m, "NeuronProbe")
      .def(py::init<ClipModel, ProbeOptions>(), py::arg("model"), py::arg("options"))
      .def("__call__", &NeuronProbe::operator(), py::arg("images"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("layers", &NeuronProbe::layers)
      .def_property_readonly("channels", &NeuronProbe::channels)
      .def_property_readonly("options", &NeuronProbe::options, py::return_value_policy::copy)
      .def_property_readonly("kind", [](const NeuronProbe& p) { return p.options().kind; });
}

}  // namespace lake::bindings
