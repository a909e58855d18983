// Bindings: SensitivitySelector, NeuronSet, NormalityModel, Prediction.
#include <torch/extension.h>

#include "lake/normality_model.h"
#include "lake/sensitivity_selector.h"

namespace py = pybind11;

namespace lake::bindings {

void bind_normality(py::module_& m) {
  py::class_<ChannelStats>(m, "ChannelStats")
      .def(py::init<>())
      .def("update", &ChannelStats::update, py::arg("tokens"), py::arg("mask") = at::Tensor())
      .def("merge", &ChannelStats::merge, py::arg("other"))
      .def("variance", &ChannelStats::variance)
      .def_readonly("count", &ChannelStats::count)
      .def_readonly("mean", &ChannelStats::mean)
      .def_readonly("m2", &ChannelStats::m2);

  py::class_<LayerNeurons>(m, "LayerNeurons")
      .def_readonly("layer", &LayerNeurons::layer)
      .def_readonly("indices", &LayerNeurons::indices)
      .def_readonly("scores", &LayerNeurons::scores)
      .def_readonly("mean", &LayerNeurons::mean)
      .def_readonly("std", &LayerNeurons::std);

  py::class_<NeuronSet>(m, "NeuronSet")
      .def_property_readonly("kind", [](const NeuronSet& s) { return to_string(s.kind); })
      .def_readonly("channels", &NeuronSet::channels)
      .def_readonly("layers", &NeuronSet::layers)
      .def("total", &NeuronSet::total);

  py::class_<SensitivitySelector>(m, "SensitivitySelector")
      .def(py::init([](int64_t k, const std::string& score, uint64_t seed, const std::string& kind) {
             return SensitivitySelector({k, parse_sensitivity_score(score), seed}, parse_probe_kind(kind));
           }),
           py::arg("k") = 100, py::arg("score") = "variance", py::arg("seed") = 0, py::arg("kind") = "residual")
      .def("update", &SensitivitySelector::update, py::arg("layer"), py::arg("activations"),
           py::call_guard<py::gil_scoped_release>())
      .def("select", &SensitivitySelector::select, py::call_guard<py::gil_scoped_release>())
      .def("stats", &SensitivitySelector::stats, py::arg("layer"), py::return_value_policy::copy)
      .def("reset", &SensitivitySelector::reset);
  m.def("top_k_channels", &top_k_channels, py::arg("scores"), py::arg("k"));
  m.attr("NORMALITY_FORMAT_VERSION") = kNormalityFormatVersion;
  m.def("default_prompts", &default_prompts, py::arg("class_name"), py::arg("anomalous"));

  py::class_<Prediction>(m, "Prediction")
      .def_readonly("pred_score", &Prediction::pred_score)
      .def_readonly("anomaly_map", &Prediction::anomaly_map)
      .def_readonly("pred_label", &Prediction::pred_label)
      .def_readonly("pred_mask", &Prediction::pred_mask)
      .def_readonly("visual_map", &Prediction::visual_map)
      .def_readonly("semantic_map", &Prediction::semantic_map);

  py::class_<NeuronDeviation>(m, "NeuronDeviation")
      .def_readonly("layer", &NeuronDeviation::layer)
      .def_readonly("channel", &NeuronDeviation::channel)
      .def_readonly("deviation", &NeuronDeviation::deviation)
      .def_readonly("map", &NeuronDeviation::map);

  py::class_<NormalityModel>(m, "NormalityModel")
      .def(py::init([](const ClipModel& model, const std::vector<int64_t>& layers, int64_t k, const std::string& score,
                       uint64_t seed, const std::string& kind, int64_t image_size, double text_weight,
                       const std::string& class_name, const std::vector<std::string>& normal_prompts,
                       const std::vector<std::string>& anomaly_prompts, int64_t semantic_layer,
                       const std::string& pooling, double blur_sigma, int64_t gallery_tile,
                       int64_t batch_size, const std::string& vocabulary) {
             NormalityOptions o;
             o.layers = layers;
             o.k = k;
             o.score = parse_sensitivity_score(score);
             o.seed = seed;
             o.kind = parse_probe_kind(kind);
             o.image_size = image_size;
             o.text_weight = text_weight;
             o.class_name = class_name;
             o.normal_prompts = normal_prompts;
             o.anomaly_prompts = anomaly_prompts;
             o.semantic_layer = semantic_layer;
             o.pooling = parse_pooling(pooling);
             o.blur_sigma = blur_sigma;
             o.gallery_tile = gallery_tile;
             o.batch_size = batch_size;
             o.vocabulary = vocabulary;
             return NormalityModel(model, o);
           }),
           py::arg("model"), py::arg("layers"), py::arg("k"), py::arg("score"), py::arg("seed"), py::arg("kind"),
           py::arg("image_size"), py::arg("text_weight"), py::arg("class_name"), py::arg("normal_prompts"),
           py::arg("anomaly_prompts"), py::arg("semantic_layer"), py::arg("pooling"), py::arg("blur_sigma"),
           py::arg("gallery_tile"), py::arg("batch_size"), py::arg("vocabulary"))
      .def("fit", &NormalityModel::fit, py::arg("normal_images"), py::call_guard<py::gil_scoped_release>())
      .def("is_fitted", &NormalityModel::is_fitted)
      .def("score", &NormalityModel::score, py::arg("images"), py::arg("with_branches") = false,
           py::call_guard<py::gil_scoped_release>())
      .def("calibrate", &NormalityModel::calibrate, py::arg("normal_images"), py::arg("quantile") = 0.99,
           py::arg("leave_one_out") = false, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("batch_size", [](const NormalityModel& m) { return m.options().batch_size; })
      .def_property_readonly("gallery_tile", [](const NormalityModel& m) { return m.options().gallery_tile; })
      .def_property_readonly("class_name", [](const NormalityModel& m) { return m.options().class_name; })
      .def_property_readonly("image_threshold", &NormalityModel::image_threshold)
      .def_property_readonly("pixel_threshold", &NormalityModel::pixel_threshold)
      .def("set_thresholds", &NormalityModel::set_thresholds, py::arg("image"), py::arg("pixel"))
      .def("explain", &NormalityModel::explain, py::arg("image"), py::arg("top") = 10,
           py::call_guard<py::gil_scoped_release>())
      .def("prepare", &NormalityModel::prepare, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def("fit_files", &NormalityModel::fit_files, py::arg("paths"), py::call_guard<py::gil_scoped_release>())
      .def("score_files", &NormalityModel::score_files, py::arg("paths"), py::arg("with_branches") = false,
           py::call_guard<py::gil_scoped_release>())
      .def("score_prepared", &NormalityModel::score_prepared, py::arg("images"), py::arg("with_branches") = false,
           py::arg("batch_size") = 0, py::call_guard<py::gil_scoped_release>())
      .def("calibrate_files", &NormalityModel::calibrate_files, py::arg("paths"), py::arg("quantile") = 0.99,
           py::arg("leave_one_out") = false, py::call_guard<py::gil_scoped_release>())
      .def("explain_file", &NormalityModel::explain_file, py::arg("path"), py::arg("top") = 10,
           py::call_guard<py::gil_scoped_release>())
      .def("save", &NormalityModel::save, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def_static("load", &NormalityModel::load, py::arg("path"), py::arg("model"),
                  py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("layers", &NormalityModel::layers)
      .def_property_readonly("image_size", &NormalityModel::image_size)
      .def_property_readonly("semantic_layer", &NormalityModel::semantic_layer)
      .def_property_readonly("neurons", &NormalityModel::neurons, py::return_value_policy::copy)
      .def_property_readonly("galleries", &NormalityModel::galleries)
      .def_property_readonly("text_embeddings", &NormalityModel::text_embeddings)
      .def_property_readonly("normal_prompts", &NormalityModel::normal_prompts)
      .def_property_readonly("anomaly_prompts", &NormalityModel::anomaly_prompts)
      .def_property_readonly("shots", &NormalityModel::shots)
      .def_property_readonly("model", &NormalityModel::model);
}

}  // namespace lake::bindings
