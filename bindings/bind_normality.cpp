// Bindings: SensitivityScore, Pooling, SelectorOptions, NormalityOptions, SensitivitySelector,
// NeuronSet, NormalityModel, Prediction.
#include <torch/extension.h>

#include "lake/normality_model.h"
#include "lake/sensitivity_selector.h"
#include "options.h"

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

  bind_enum<SensitivityScore>(m, "SensitivityScore", &parse_sensitivity_score,
                              {{"Variance", SensitivityScore::Variance},
                               {"NormalizedVariance", SensitivityScore::NormalizedVariance},
                               {"CoefficientOfVariation", SensitivityScore::CoefficientOfVariation},
                               {"Random", SensitivityScore::Random}},
                              "How a channel's sensitivity is scored: 'variance', 'normalized_variance', 'cv' "
                              "('coefficient_of_variation'), 'random'.");
  bind_enum<Pooling>(m, "Pooling", &parse_pooling, {{"Max", Pooling::Max}, {"Top1Pct", Pooling::Top1Pct}},
                     "How the image score pools the anomaly map: 'max' or 'top1pct'.");

  OptionsClass<SelectorOptions>(m, "SelectorOptions", "lake::SelectorOptions: how SensitivitySelector picks.")
      .field("k", &SelectorOptions::k, "neurons kept per layer")
      .enum_field("score", &SelectorOptions::score, &parse_sensitivity_score, "SensitivityScore or its name")
      .field("seed", &SelectorOptions::seed, "seed of score='random'")
      .finish();

  OptionsClass<NormalityOptions>(m, "NormalityOptions",
                                 "lake::NormalityOptions: every option of NormalityModel, with the METHOD.md "
                                 "defaults (docs/method.md, 'Options').")
      .field("layers", &NormalityOptions::layers, "tapped blocks (1-based / negative); empty: quarter points")
      .field("k", &NormalityOptions::k, "sensitive neurons per layer")
      .enum_field("score", &NormalityOptions::score, &parse_sensitivity_score, "SensitivityScore or its name")
      .field("seed", &NormalityOptions::seed, "seed of score='random'")
      .enum_field("kind", &NormalityOptions::kind, &parse_probe_kind, "ProbeKind or its name")
      .field("image_size", &NormalityOptions::image_size, "backbone input side S; 0: the model's rule")
      .field("text_weight", &NormalityOptions::text_weight, "lambda of the fusion")
      .field("class_name", &NormalityOptions::class_name, "fills the prompt templates")
      .field("normal_prompts", &NormalityOptions::normal_prompts, "full sentences; empty: the ensemble")
      .field("anomaly_prompts", &NormalityOptions::anomaly_prompts, "full sentences; empty: the ensemble")
      .field("semantic_layer", &NormalityOptions::semantic_layer, "block meeting the text; 0: deepest tapped")
      .enum_field("pooling", &NormalityOptions::pooling, &parse_pooling, "Pooling or its name")
      .field("blur_sigma", &NormalityOptions::blur_sigma, "Gaussian blur of the map in output pixels (0: none)")
      .field("gallery_tile", &NormalityOptions::gallery_tile, "gallery rows per CPU search tile")
      .field("batch_size", &NormalityOptions::batch_size, "images per backbone forward")
      .field("vocabulary", &NormalityOptions::vocabulary, "BPE vocabulary file; empty: the archive's own")
      .finish();

  const SelectorOptions selector_defaults;
  py::class_<SensitivitySelector>(m, "SensitivitySelector")
      .def(py::init<SelectorOptions, ProbeKind>(), py::arg("options"), py::arg("kind") = ProbeKind::Residual)
      .def(py::init([](int64_t k, const py::object& score, uint64_t seed, const py::object& kind) {
             SelectorOptions o;
             o.k = k;
             o.score = enum_value<SensitivityScore>(score, &parse_sensitivity_score, "SensitivitySelector: score");
             o.seed = seed;
             return SensitivitySelector(o, enum_value<ProbeKind>(kind, &parse_probe_kind, "SensitivitySelector: kind"));
           }),
           py::arg("k") = selector_defaults.k, py::arg("score") = selector_defaults.score,
           py::arg("seed") = selector_defaults.seed, py::arg("kind") = ProbeKind::Residual)
      .def_property_readonly("options", &SensitivitySelector::options, py::return_value_policy::copy)
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
      .def(py::init<ClipModel, NormalityOptions>(), py::arg("model"), py::arg("options") = NormalityOptions())
      .def("fit", &NormalityModel::fit, py::arg("normal_images"), py::call_guard<py::gil_scoped_release>())
      .def("is_fitted", &NormalityModel::is_fitted)
      .def("score", &NormalityModel::score, py::arg("images"), py::arg("with_branches") = false,
           py::call_guard<py::gil_scoped_release>())
      .def("calibrate", &NormalityModel::calibrate, py::arg("normal_images"), py::arg("quantile") = 0.99,
           py::arg("leave_one_out") = false, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("options", &NormalityModel::options, py::return_value_policy::copy)
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
