// Bindings: lake::doctor (pylake.doctor wraps it in typed results).
#include <torch/extension.h>

#include "lake/doctor.h"

namespace py = pybind11;

namespace lake::bindings {

void bind_doctor(py::module_& m) {
  py::class_<DoctorOptions>(m, "DoctorOptions")
      .def(py::init<>())
      .def_readwrite("devices", &DoctorOptions::devices)
      .def_readwrite("end_to_end", &DoctorOptions::end_to_end)
      .def_readwrite("fault", &DoctorOptions::fault)
      .def_readwrite("environment", &DoctorOptions::environment);

  py::class_<DoctorCheck>(m, "DoctorCheck")
      .def_readonly("name", &DoctorCheck::name)
      .def_readonly("device", &DoctorCheck::device)
      .def_readonly("status", &DoctorCheck::status)
      .def_readonly("detail", &DoctorCheck::detail)
      .def_readonly("max_error", &DoctorCheck::max_error)
      .def_readonly("tolerance", &DoctorCheck::tolerance);

  py::class_<DoctorReport>(m, "DoctorReport")
      .def_readonly("environment", &DoctorReport::environment)
      .def_readonly("checks", &DoctorReport::checks)
      .def_readonly("seconds", &DoctorReport::seconds)
      .def("ok", &DoctorReport::ok)
      .def("count", &DoctorReport::count, py::arg("status"))
      .def("to_text", &DoctorReport::to_text)
      .def("to_json", &DoctorReport::to_json);

  m.def("doctor_check_names", &doctor_check_names, py::arg("end_to_end") = true);
  m.def("doctor", &doctor, py::arg("options") = DoctorOptions(), py::call_guard<py::gil_scoped_release>());
}

}  // namespace lake::bindings
