// Bindings: Activation, LoadOptions, ClipConfig, ClipModel, load_clip, Tokenizer.
#include <torch/extension.h>

#include <fmt/format.h>

#include <map>
#include <optional>
#include <vector>

#include "lake/clip_model.h"
#include "lake/tokenizer.h"
#include "options.h"

namespace py = pybind11;

namespace lake::bindings {

void bind_clip(py::module_& m) {
  bind_enum<Activation>(m, "Activation", &parse_activation,
                        {{"QuickGELU", Activation::QuickGELU}, {"GELU", Activation::GELU}},
                        "The MLP activation of a CLIP tower: 'quick_gelu' (OpenAI) or 'gelu'.");

  OptionsClass<LoadOptions>(m, "LoadOptions", "lake::LoadOptions: how load_clip loads an archive.")
      .converted_field("device", &LoadOptions::device,
                       [](const py::object& v) {
                         return py::isinstance<py::str>(v) ? c10::Device(v.cast<std::string>()) : v.cast<c10::Device>();
                       },
                       "torch.device (or its name) the weights live on and the forward runs on")
      .converted_field("dtype", &LoadOptions::dtype,
                       [](const py::object& v) {
                         return py::isinstance<py::str>(v) ? parse_dtype(v.cast<std::string>())
                                                           : v.cast<c10::ScalarType>();
                       },
                       "compute torch.dtype (float32; float16 / bfloat16 on CUDA; float64)")
      .optional_enum_field("activation", &LoadOptions::activation, &parse_activation,
                           "Activation (or its name) overriding the archive's; None: the archive's")
      .field("vision_heads", &LoadOptions::vision_heads, "head count override (0: recorded, else width / 64)")
      .field("text_heads", &LoadOptions::text_heads, "head count override (0: recorded, else width / 64)")
      .field("load_text", &LoadOptions::load_text, "also load the text tower")
      .finish();

  py::class_<ClipConfig>(m, "ClipConfig")
      .def_readonly("image_size", &ClipConfig::image_size)
      .def_readonly("patch_size", &ClipConfig::patch_size)
      .def_readonly("vision_width", &ClipConfig::vision_width)
      .def_readonly("vision_layers", &ClipConfig::vision_layers)
      .def_readonly("vision_heads", &ClipConfig::vision_heads)
      .def_readonly("embed_dim", &ClipConfig::embed_dim)
      .def_readonly("context_length", &ClipConfig::context_length)
      .def_readonly("vocab_size", &ClipConfig::vocab_size)
      .def_readonly("text_width", &ClipConfig::text_width)
      .def_readonly("text_layers", &ClipConfig::text_layers)
      .def_readonly("text_heads", &ClipConfig::text_heads)
      .def_property_readonly("grid_size", &ClipConfig::grid_size)
      .def_property_readonly("has_text", &ClipConfig::has_text)
      .def_property_readonly("activation", [](const ClipConfig& c) { return to_string(c.activation); })
      .def_readonly("activation_assumed", &ClipConfig::activation_assumed)
      .def_property_readonly("archive_kind", [](const ClipConfig& c) { return to_string(c.archive_kind); })
      .def_property_readonly("image_mean", [](const ClipConfig& c) {
        return std::vector<float>(c.image_mean, c.image_mean + 3);
      })
      .def_property_readonly("image_std", [](const ClipConfig& c) {
        return std::vector<float>(c.image_std, c.image_std + 3);
      })
      .def("__repr__", &ClipConfig::describe);

  py::class_<Tokenizer, std::shared_ptr<Tokenizer>>(m, "Tokenizer")
      .def_static("from_file", [](const std::string& p) { return std::make_shared<Tokenizer>(Tokenizer::from_file(p)); },
                  py::arg("path"))
      .def_static("from_bytes",
                  [](const py::bytes& b, const std::string& source) {
                    return std::make_shared<Tokenizer>(Tokenizer::from_bytes(std::string(b), source));
                  },
                  py::arg("data"), py::arg("source") = "<memory>")
      .def("encode", &Tokenizer::encode, py::arg("text"), py::call_guard<py::gil_scoped_release>())
      .def("decode", &Tokenizer::decode, py::arg("ids"))
      .def("tokenize",
           [](const Tokenizer& t, const std::vector<std::string>& texts, int64_t context_length, bool truncate) {
             return t.tokenize(texts, context_length, truncate);
           },
           py::arg("texts"), py::arg("context_length") = 77,
           py::arg("truncate") = true, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("sot_token", &Tokenizer::sot_token)
      .def_property_readonly("eot_token", &Tokenizer::eot_token)
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size);

  py::class_<ClipModel>(m, "ClipModel")
      .def_property_readonly("config", &ClipModel::config, py::return_value_policy::reference_internal)
      .def_property_readonly("device", &ClipModel::device)
      .def_property_readonly("dtype", &ClipModel::dtype)
      .def_property_readonly("path", &ClipModel::path)
      .def("encode_image", &ClipModel::encode_image, py::arg("images"), py::call_guard<py::gil_scoped_release>())
      .def("encode_text", &ClipModel::encode_text, py::arg("tokens"), py::call_guard<py::gil_scoped_release>())
      .def("positional_embedding", &ClipModel::positional_embedding, py::arg("grid_h"), py::arg("grid_w"))
      .def("tokenizer", [](const ClipModel& c) { return std::const_pointer_cast<Tokenizer>(c.tokenizer()); })
      .def("parameter_names", &ClipModel::parameter_names)
      .def("parameter", &ClipModel::parameter, py::arg("name"))
      .def("fingerprint", &ClipModel::fingerprint, py::call_guard<py::gil_scoped_release>())
      .def("weights_fingerprint", &ClipModel::weights_fingerprint)
      .def("__repr__",
           [](const ClipModel& c) { return fmt::format("ClipModel('{}', {})", c.path(), c.config().describe()); });

  m.def(
      "load_clip",
      [](const std::string& path, const LoadOptions& options) {
        torch::PyWarningHandler warnings;  // TORCH_WARN -> Python warnings
        std::optional<ClipModel> model;
        {
          py::gil_scoped_release release;
          model.emplace(load_clip(path, options));
        }
        return *model;
      },
      py::arg("path"), py::arg("options") = LoadOptions());

  m.def(
      "clip_from_state_dict",
      [](std::map<std::string, at::Tensor> tensors, const std::optional<std::string>& activation, int64_t vision_heads,
         int64_t text_heads, const std::string& name, const std::vector<float>& image_mean,
         const std::vector<float>& image_std) {
        LoadOptions o;
        if (activation) o.activation = parse_activation(*activation);
        o.vision_heads = vision_heads;
        o.text_heads = text_heads;
        torch::PyWarningHandler warnings;
        std::optional<ClipModel> model;
        {
          py::gil_scoped_release release;
          model.emplace(clip_from_state_dict(std::move(tensors), o, name, image_mean, image_std));
        }
        return *model;
      },
      py::arg("tensors"), py::arg("activation"), py::arg("vision_heads") = 0, py::arg("text_heads") = 0,
      py::arg("name") = "<state dict>", py::arg("image_mean") = std::vector<float>{},
      py::arg("image_std") = std::vector<float>{});

  m.def(
      "save_clip",
      [](const ClipModel& model, const std::string& path, const std::string& dtype, const py::bytes& vocabulary,
         const std::string& source) {
        SaveClipOptions o;
        o.dtype = parse_dtype(dtype);
        o.vocabulary = std::string(vocabulary);
        o.source = source;
        py::gil_scoped_release release;
        return save_clip(model, path, o);
      },
      py::arg("model"), py::arg("path"), py::arg("dtype") = "float32", py::arg("vocabulary") = py::bytes(),
      py::arg("source") = "");
}

}  // namespace lake::bindings
