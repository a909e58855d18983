// pylake._C: the Python extension. Thin: one binding per C++ entity, no logic.
#include <torch/extension.h>

#include "lake/lake.h"

namespace py = pybind11;

namespace lake::bindings {
void bind_clip(py::module_& m);
void bind_probe(py::module_& m);
void bind_image(py::module_& m);
void bind_normality(py::module_& m);
void bind_metrics(py::module_& m);
void bind_ops(py::module_& m);
void bind_doctor(py::module_& m);
void bind_models(py::module_& m);
void bind_util(py::module_& m);
}  // namespace lake::bindings

PYBIND11_MODULE(_C, m) {
  m.doc() = "LAKE C++ core (liblake). Use the `pylake` package rather than this module.";
  m.attr("__version__") = LAKE_VERSION_STRING;

  // LAKE errors keep their Python type: TORCH_CHECK_VALUE -> ValueError, TORCH_CHECK_INDEX
  // -> IndexError, other TORCH_CHECKs -> RuntimeError, with the message without C++ backtrace.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  m.def("set_num_threads", &lake::set_num_threads, py::arg("n"),
        "Set LibTorch's intra-op thread count (n <= 0: all hardware threads); returns the count in effect.");
  m.def("get_num_threads", &lake::get_num_threads);
  lake::bindings::bind_clip(m);
  lake::bindings::bind_probe(m);
  lake::bindings::bind_ops(m);
  lake::bindings::bind_image(m);
  lake::bindings::bind_normality(m);
  lake::bindings::bind_metrics(m);
  lake::bindings::bind_doctor(m);
  lake::bindings::bind_models(m);
  lake::bindings::bind_util(m);
}
