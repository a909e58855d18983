// Bindings: model names and caches (lake/models.h).
#include <torch/extension.h>

#include <fmt/format.h>

#include "lake/models.h"

namespace py = pybind11;

namespace lake::bindings {

void bind_models(py::module_& m) {
  py::class_<KnownModel>(m, "KnownModel")
      .def_readonly("name", &KnownModel::name)
      .def_property_readonly("source", [](const KnownModel& k) { return to_string(k.source); })
      .def_readonly("description", &KnownModel::description)
      .def_readonly("file", &KnownModel::file)
      .def_readonly("url", &KnownModel::url)
      .def_readonly("sha256", &KnownModel::sha256)
      .def_readonly("same_weights", &KnownModel::same_weights)
      .def("__repr__",
           [](const KnownModel& k) { return fmt::format("KnownModel('{}', {})", k.name, to_string(k.source)); });

  py::class_<ModelLocation>(m, "ModelLocation")
      .def_readonly("request", &ModelLocation::request)
      .def_readonly("is_name", &ModelLocation::is_name)
      .def_property_readonly("source", [](const ModelLocation& l) { return to_string(l.source); })
      .def_readonly("repo", &ModelLocation::repo)
      .def_readonly("revision", &ModelLocation::revision)
      .def_readonly("path", &ModelLocation::path)
      .def_readonly("form", &ModelLocation::form)
      .def_readonly("searched", &ModelLocation::searched)
      .def_readonly("hub_files", &ModelLocation::hub_files)
      .def_readonly("url", &ModelLocation::url)
      .def_readonly("sha256", &ModelLocation::sha256)
      .def_readonly("download_to", &ModelLocation::download_to)
      .def("missing_message", &ModelLocation::missing_message)
      .def("__repr__", [](const ModelLocation& l) {
        return fmt::format("ModelLocation('{}', path='{}')", l.request, l.path);
      });

  m.def("known_models", &known_models, py::return_value_policy::copy);
  m.def("is_model_name", &is_model_name, py::arg("request"));
  m.def("locate_model", &locate_model, py::arg("request"));
  m.def("hf_hub_cache_dir", &hf_hub_cache_dir);
  m.def("clip_cache_dir", &clip_cache_dir);
  m.def("lake_cache_dir", &lake_cache_dir);
}

}  // namespace lake::bindings
