#pragma once
// What the image sources share (internal): src/io/image_io.cpp (files, formats, read_image),
// image_png.cpp (PNG decode and write_png), image_jpeg.cpp (JPEG decode) and
// image_preprocess.cpp (CLIP preprocessing, masks).
//
// libpng and libjpeg report errors by longjmp'ing out of their handler. longjmp must not
// skip a C++ destructor, so each call into the libraries happens in a small "stage"
// function that calls setjmp, holds no C++ object with a destructor, and returns false
// on error with the library's message in a plain char buffer. The C++ code around the
// stages (tensors, RAII guards, TORCH_CHECKs) never lies between a setjmp and a longjmp.

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "detail/format.h"
#include "lake/image_io.h"

namespace lake::detail::image_io {

// A message into the fixed buffer of a libpng / libjpeg error state, truncated to fit: those
// error paths longjmp out of the decoder, so the message may not live in heap memory.
template <size_t N, typename... Args>
void set_message(char (&buf)[N], fmt::format_string<Args...> f, Args&&... args) {
  *fmt::format_to_n(buf, N - 1, f, std::forward<Args>(args)...).out = '\0';
}

// A decoded image: (H, W, C) uint8 with C = 1 (grey), 2 (grey, alpha), 3 (RGB), 4 (RGBA).
using Hwc = at::Tensor;

// Refuses an empty image and one of more than options.max_pixels pixels (image_io.cpp).
void check_pixels(uint64_t width, uint64_t height, const ImageReadOptions& options, const std::string& path,
                  const char* format);

// The decoders, on the bytes of a whole file (image_png.cpp, image_jpeg.cpp).
Hwc decode_png(const std::vector<unsigned char>& bytes, const std::string& path, const ImageReadOptions& options);
Hwc decode_jpeg(const std::vector<unsigned char>& bytes, const std::string& path, const ImageReadOptions& options);

}  // namespace lake::detail::image_io
