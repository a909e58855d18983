// Bindings: read_image, read_mask, clip_preprocess, clip_normalize, prepare_image, write_png, resize_mask.
#include <torch/extension.h>

#include <pybind11/stl/filesystem.h>

#include <fmt/format.h>

#include <filesystem>
#include <vector>

#include "lake/image_io.h"

namespace py = pybind11;

namespace lake::bindings {

namespace {
const float* three_floats(const std::vector<float>& v, const char* name) {
  TORCH_CHECK_VALUE(v.size() == 3,
                    fmt::format("clip_preprocess: {} must have 3 values (R, G, B), got {}", name, v.size()));
  return v.data();
}
}  // namespace

void bind_image(py::module_& m) {
  const int64_t default_max_pixels = ImageReadOptions{}.max_pixels;
  m.def(
      "read_image",
      [](const std::filesystem::path& path, int64_t max_pixels) {
        ImageReadOptions o;
        o.max_pixels = max_pixels;
        return read_image(path.string(), o);
      },
      py::arg("path"), py::arg("max_pixels") = default_max_pixels, py::call_guard<py::gil_scoped_release>(),
      "PNG or JPEG file -> (3, H, W) uint8 RGB, as PIL's Image.open(path).convert('RGB').");
  m.def(
      "read_mask",
      [](const std::filesystem::path& path, int64_t max_pixels) {
        ImageReadOptions o;
        o.max_pixels = max_pixels;
        return read_mask(path.string(), o);
      },
      py::arg("path"), py::arg("max_pixels") = default_max_pixels, py::call_guard<py::gil_scoped_release>(),
      "PNG or JPEG mask -> (H, W) bool, true where PIL's convert('L') value is above 127.");
  m.def(
      "clip_preprocess",
      [](const at::Tensor& image, int64_t size, const std::vector<float>& mean, const std::vector<float>& std,
         bool center_crop) {
        return clip_preprocess(image, size, three_floats(mean, "mean"), three_floats(std, "std"), center_crop);
      },
      py::arg("image"), py::arg("size"), py::arg("mean"), py::arg("std"), py::arg("center_crop") = false,
      py::call_guard<py::gil_scoped_release>(),
      "(3, H, W) uint8 RGB -> (3, size, size) float32: PIL's bicubic resize (center_crop: shorter side, then "
      "centre crop, as CLIP's torchvision pipeline), / 255, normalised with mean and std.");
  m.def(
      "clip_normalize",
      [](const at::Tensor& image, const std::vector<float>& mean, const std::vector<float>& std) {
        return clip_normalize(image, three_floats(mean, "mean"), three_floats(std, "std"));
      },
      py::arg("image"), py::arg("mean"), py::arg("std"), py::call_guard<py::gil_scoped_release>(),
      "(3, H, W) uint8 RGB -> (3, H, W) float32 / 255, normalised with mean and std (no resize).");
  py::class_<PreparedImage>(m, "PreparedImage")
      .def_readonly("pixels", &PreparedImage::pixels)
      .def_readonly("height", &PreparedImage::height)
      .def_readonly("width", &PreparedImage::width);
  m.def(
      "prepare_image",
      [](const std::filesystem::path& path, int64_t size, const std::vector<float>& mean,
         const std::vector<float>& std) {
        return prepare_image(path.string(), size, three_floats(mean, "mean"), three_floats(std, "std"));
      },
      py::arg("path"), py::arg("size"), py::arg("mean"), py::arg("std"), py::call_guard<py::gil_scoped_release>(),
      "Image file -> PreparedImage(pixels (3, size, size) float32, height, width): the rule of every file entry "
      "point (read_image, then clip_preprocess without crop).");
  m.def(
      "write_png",
      [](const std::filesystem::path& path, const at::Tensor& image) { write_png(path.string(), image); },
      py::arg("path"), py::arg("image"), py::call_guard<py::gil_scoped_release>(),
      "Write (H, W) uint8/uint16 grey or (3, H, W) uint8 RGB as a PNG file, atomically.");
  m.def("resize_mask", &resize_mask, py::arg("mask"), py::arg("height"), py::arg("width"),
        py::call_guard<py::gil_scoped_release>(), "(H, W) bool -> (height, width) bool, nearest neighbour.");
}

}  // namespace lake::bindings
