// Reads PNG (libpng) and JPEG (libjpeg-turbo) images as PIL does: the file, its format, the
// pixel limit, and the RGB / mask views of the decoded image. The decoders are in
// image_png.cpp and image_jpeg.cpp (detail/image_decode.h: how they call the C libraries),
// CLIP preprocessing in image_preprocess.cpp.

#include "lake/image_io.h"

#include "detail/format.h"
#include "detail/image_decode.h"
#include "detail/limits.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <vector>

#include <sys/stat.h>

namespace lake::detail::image_io {
namespace {

static_assert(ImageReadOptions{}.max_pixels == limits::kDefaultMaxImagePixels,
              "detail/limits.h documents ImageReadOptions' default pixel limit");

// ---- files ------------------------------------------------------------------------

std::vector<unsigned char> read_file(const std::string& path) {
  // stat(), not std::filesystem: LibTorch's libtorch.so exports a copy of std::filesystem
  // that interposes on libstdc++'s.
  struct stat st;
  TORCH_CHECK_VALUE(::stat(path.c_str(), &st) == 0, fmt::format("image file '{}' does not exist", path));
  TORCH_CHECK_VALUE((st.st_mode & S_IFMT) != S_IFDIR,
                    fmt::format("image file '{}' is a directory, expected a PNG or JPEG file", path));
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  TORCH_CHECK_VALUE(in.good(), fmt::format("image file '{}' could not be opened for reading", path));
  const std::streamoff size = in.tellg();
  TORCH_CHECK_VALUE(size >= 0, fmt::format("image file '{}' could not be read (no size)", path));
  TORCH_CHECK_VALUE(static_cast<uint64_t>(size) <= limits::kMaxImageFileBytes,
                    fmt::format("image file '{}' has {} bytes, more than the image file size limit of {} bytes", path,
                                size, limits::kMaxImageFileBytes));
  std::vector<unsigned char> bytes(static_cast<size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  TORCH_CHECK_VALUE(in.gcount() == size,
                    fmt::format("image file '{}' could not be read: got {} of its {} bytes", path, in.gcount(), size));
  TORCH_CHECK_VALUE(!bytes.empty(),
                    fmt::format("image file '{}' is empty (0 bytes), expected a PNG or JPEG file", path));
  return bytes;
}

enum class Format { Png, Jpeg };

bool starts_with(const std::vector<unsigned char>& b, const char* magic, size_t n, size_t at = 0) {
  return b.size() >= at + n && std::memcmp(b.data() + at, magic, n) == 0;
}

Format detect_format(const std::vector<unsigned char>& b, const std::string& path) {
  if (starts_with(b, "\x89PNG\r\n\x1a\n", 8)) return Format::Png;
  if (starts_with(b, "\xff\xd8\xff", 3)) return Format::Jpeg;
  const char* other = nullptr;
  if (starts_with(b, "GIF8", 4)) other = "GIF";
  else if (starts_with(b, "BM", 2)) other = "BMP";
  else if (starts_with(b, "II*\0", 4) || starts_with(b, "MM\0*", 4)) other = "TIFF";
  else if (starts_with(b, "RIFF", 4) && starts_with(b, "WEBP", 4, 8)) other = "WebP";
  else if (starts_with(b, "\x89PNG", 4)) other = "damaged PNG (bad signature)";
  TORCH_CHECK_VALUE(other == nullptr,
                    fmt::format("image file '{}' is a {} file; LAKE reads PNG and JPEG only", path, other));
  const auto head_end = b.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(8, b.size()));
  TORCH_CHECK_VALUE(false, fmt::format("image file '{}' is not a PNG or JPEG file (it starts with bytes {:02x}; PNG "
                                       "starts with 89 50 4e 47, JPEG with ff d8 ff)",
                                       path, fmt::join(b.begin(), head_end, " ")));
}

}  // namespace

void check_pixels(uint64_t width, uint64_t height, const ImageReadOptions& options, const std::string& path,
                  const char* format) {
  TORCH_CHECK_VALUE(
      width > 0 && height > 0,
      fmt::format("image file '{}' is a {} of size {}x{}: expected a non-empty image", path, format, width, height));
  const uint64_t pixels = width * height;  // < 2^62: both sides < 2^31 (PNG), < 2^16 (JPEG)
  TORCH_CHECK_VALUE(options.max_pixels <= 0 || pixels <= static_cast<uint64_t>(options.max_pixels),
                    fmt::format("image file '{}' is a {} of {}x{} = {} pixels, more than max_pixels = {} (a "
                                "decompression bomb? raise ImageReadOptions::max_pixels to read it)",
                                path, format, width, height, pixels, options.max_pixels));
}

namespace {

// ---- common -----------------------------------------------------------------------

Hwc decode(const std::string& path, const ImageReadOptions& options) {
  const std::vector<unsigned char> bytes = read_file(path);
  return detect_format(bytes, path) == Format::Png ? decode_png(bytes, path, options)
                                                   : decode_jpeg(bytes, path, options);
}

// PIL's convert("L"): L24 = (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
at::Tensor luminance(const Hwc& hwc) {
  if (hwc.size(2) <= 2) return hwc.select(2, 0);
  TORCH_INTERNAL_ASSERT(hwc.is_contiguous() && hwc.scalar_type() == at::kByte);
  const int64_t n = hwc.size(0) * hwc.size(1), c = hwc.size(2);
  at::Tensor out = at::empty({hwc.size(0), hwc.size(1)}, at::kByte);
  const uint8_t* in = hwc.data_ptr<uint8_t>();
  uint8_t* o = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i, in += c) {
    o[i] = static_cast<uint8_t>((in[0] * 19595u + in[1] * 38470u + in[2] * 7471u + 0x8000u) >> 16);
  }
  return out;
}

}  // namespace
}  // namespace lake::detail::image_io

namespace lake {

at::Tensor read_image(const std::string& path, const ImageReadOptions& options) {
  using namespace detail::image_io;
  const Hwc hwc = decode(path, options);
  const int64_t h = hwc.size(0), w = hwc.size(1);
  switch (hwc.size(2)) {
    case 1:
    case 2:
      return hwc.select(2, 0).unsqueeze(0).expand({3, h, w}).contiguous();
    default:
      return hwc.narrow(2, 0, 3).permute({2, 0, 1}).contiguous();
  }
}

at::Tensor read_mask(const std::string& path, const ImageReadOptions& options) {
  using namespace detail::image_io;
  return luminance(decode(path, options)).gt(127).contiguous();
}

PreparedImage prepare_image(const std::string& path, int64_t size, const float mean[3], const float stdev[3],
                            const ImageReadOptions& options) {
  const at::Tensor rgb = read_image(path, options);
  PreparedImage p;
  p.height = rgb.size(1);
  p.width = rgb.size(2);
  p.pixels = clip_preprocess(rgb, size, mean, stdev);
  return p;
}

}  // namespace lake
