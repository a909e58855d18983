// Reads PNG (libpng) and JPEG (libjpeg-turbo) images as PIL does; CLIP preprocessing.
//
// libpng and libjpeg report errors by longjmp'ing out of their handler. longjmp must not
// skip a C++ destructor, so each call into the libraries happens in a small "stage"
// function that calls setjmp, holds no C++ object with a destructor, and returns false
// on error with the library's message in a plain char buffer. The C++ code around the
// stages (tensors, RAII guards, TORCH_CHECKs) never lies between a setjmp and a longjmp.

#include "lake/image_io.h"

#include "detail/atomic_file.h"
#include "detail/format.h"
#include "detail/limits.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <utility>
#include <vector>

#include <sys/stat.h>

#include <png.h>
// jpeglib.h needs size_t and FILE declared before it.
#include <jpeglib.h>
#include <jerror.h>

namespace lake::detail::image_io {
namespace {

// A message into the fixed buffer of a libpng / libjpeg error state, truncated to fit: those
// error paths longjmp out of the decoder, so the message may not live in heap memory.
template <size_t N, typename... Args>
void set_message(char (&buf)[N], fmt::format_string<Args...> f, Args&&... args) {
  *fmt::format_to_n(buf, N - 1, f, std::forward<Args>(args)...).out = '\0';
}

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

// A decoded image: (H, W, C) uint8 with C = 1 (grey), 2 (grey, alpha), 3 (RGB), 4 (RGBA).
using Hwc = at::Tensor;

// ---- PNG --------------------------------------------------------------------------

// Everything a PNG stage touches: plain data only (see the comment at the top).
struct PngState {
  png_structp png;
  png_infop info;
  const unsigned char* data;
  size_t size;
  size_t pos;
  png_uint_32 width, height;
  int bit_depth, color_type, interlace, channels;
  char message[256];
};

[[noreturn]] void png_on_error(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  set_message(s->message, "{}", msg ? msg : "unknown libpng error");
  png_longjmp(png, 1);
}

// libpng's default warning handler writes to stderr; a library stays quiet. libpng's own
// warnings (bad ancillary chunk CRC, too much image data, ...) do not stop the decode, as in PIL.
void png_on_warning(png_structp, png_const_charp) {}

void png_read_memory(png_structp png, png_bytep out, size_t n) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > s->size - s->pos) png_error(png, "unexpected end of data (the file is truncated)");
  std::memcpy(out, s->data + s->pos, n);
  s->pos += n;
}

// Stage 1: the header, then the transformations to 8-bit grey / grey+alpha / RGB / RGBA.
bool png_stage_header(PngState* s) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_read_fn(s->png, s, &png_read_memory);
  // The dimensions are checked against max_pixels by the caller; lift libpng's own
  // 1e6 x 1e6 limit so that the caller's message is the one users see.
  png_set_user_limits(s->png, 0x7fffffff, 0x7fffffff);
  png_read_info(s->png, s->info);
  png_get_IHDR(s->png, s->info, &s->width, &s->height, &s->bit_depth, &s->color_type, &s->interlace, nullptr,
               nullptr);
  return true;
}

bool png_stage_transform(PngState* s) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  // Palette -> RGB (RGBA with tRNS), grey < 8 bit -> 8 bit by bit replication (as PIL's
  // "L;2" / "L;4" unpackers), tRNS -> alpha. No gamma transformation is set up, so no
  // gamma or ICC correction happens (as PIL).
  png_set_expand(s->png);
  png_set_scale_16(s->png);  // (v * 255 + 32895) >> 16, equal to (v * 255 + 32767) / 65535
  png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  s->channels = png_get_channels(s->png, s->info);
  return true;
}

// Stage 2: the pixels. Trailing chunks (and a missing IEND) are not read, as in PIL.
bool png_stage_pixels(PngState* s, png_bytepp rows) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_read_image(s->png, rows);
  return true;
}

struct PngGuard {
  PngState* s;
  ~PngGuard() { png_destroy_read_struct(&s->png, s->info ? &s->info : nullptr, nullptr); }
};

uint32_t big_endian_u32(const unsigned char* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

Hwc decode_png(const std::vector<unsigned char>& bytes, const std::string& path, const ImageReadOptions& options) {
  // IHDR must come first: check its size before libpng reads the chunks that follow.
  if (bytes.size() >= 24 && std::memcmp(bytes.data() + 12, "IHDR", 4) == 0) {
    check_pixels(big_endian_u32(bytes.data() + 16), big_endian_u32(bytes.data() + 20), options, path, "PNG");
  }
  PngState s;
  std::memset(&s, 0, sizeof(s));
  s.data = bytes.data();
  s.size = bytes.size();
  s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, &png_on_error, &png_on_warning);
  TORCH_CHECK(s.png != nullptr, fmt::format("image file '{}': libpng could not be initialised (out of memory?)", path));
  PngGuard guard{&s};
  s.info = png_create_info_struct(s.png);
  TORCH_CHECK(s.info != nullptr,
              fmt::format("image file '{}': libpng could not be initialised (out of memory?)", path));

  TORCH_CHECK_VALUE(png_stage_header(&s),
                    fmt::format("image file '{}' is a corrupt or truncated PNG: {}", path, s.message));
  check_pixels(s.width, s.height, options, path, "PNG");
  TORCH_CHECK_VALUE(png_stage_transform(&s), fmt::format("image file '{}' is a corrupt PNG: {}", path, s.message));
  TORCH_INTERNAL_ASSERT(s.channels >= 1 && s.channels <= 4, fmt::format("libpng gave {} channels", s.channels));
  TORCH_INTERNAL_ASSERT(png_get_rowbytes(s.png, s.info) == size_t(s.width) * size_t(s.channels));

  at::Tensor out = at::empty({int64_t(s.height), int64_t(s.width), s.channels}, at::kByte);
  std::vector<png_bytep> rows(s.height);
  const size_t stride = size_t(s.width) * size_t(s.channels);
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = out.data_ptr<uint8_t>() + y * stride;
  TORCH_CHECK_VALUE(png_stage_pixels(&s, rows.data()),
                    fmt::format("image file '{}' is a corrupt or truncated PNG: {}", path, s.message));
  return out;
}

// ---- JPEG -------------------------------------------------------------------------

struct JpegState {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  std::jmp_buf jump;
  jpeg_progress_mgr progress;
  bool finishing;  // reading what follows the last scan: running out of data is harmless
  bool over_limit;  // stopped by a limit (message says which), not by bad data
  char message[JMSG_LENGTH_MAX];
};

// err is the first thing libjpeg sees; find the state around it.
JpegState* jpeg_state(j_common_ptr c) {
  return reinterpret_cast<JpegState*>(reinterpret_cast<char*>(c->err) - offsetof(JpegState, err));
}

[[noreturn]] void jpeg_on_error(j_common_ptr c) {
  JpegState* s = jpeg_state(c);
  (*c->err->format_message)(c, s->message);
  std::longjmp(s->jump, 1);
}

// Warnings are tolerated (as PIL does: "extraneous bytes before marker", ...) except
// running out of data: libjpeg would pad the image with grey, PIL reports the file as
// truncated. Nothing is printed.
void jpeg_on_message(j_common_ptr c, int level) {
  if (level >= 0) return;  // trace messages
  JpegState* s = jpeg_state(c);
  if (c->err->msg_code == JWRN_JPEG_EOF && !s->finishing) {
    (*c->err->format_message)(c, s->message);
    std::longjmp(s->jump, 1);
  }
  c->err->num_warnings++;
}

void jpeg_on_output(j_common_ptr) {}

// Called by libjpeg as it reads each scan: a progressive JPEG of many scans (each re-reads
// the whole coefficient buffer) stops at limits::kMaxJpegScans.
void jpeg_on_progress(j_common_ptr c) {
  if (!c->is_decompressor) return;
  const int scans = reinterpret_cast<j_decompress_ptr>(c)->input_scan_number;
  if (scans <= limits::kMaxJpegScans) return;
  JpegState* s = jpeg_state(c);
  set_message(s->message, "it has more than {} scans, the JPEG scan limit", limits::kMaxJpegScans);
  s->over_limit = true;
  std::longjmp(s->jump, 1);
}

bool jpeg_stage_header(JpegState* s, const unsigned char* data, size_t size) {
  if (setjmp(s->jump)) return false;
  jpeg_create_decompress(&s->cinfo);
  jpeg_mem_src(&s->cinfo, data, static_cast<unsigned long>(size));
  if (jpeg_read_header(&s->cinfo, TRUE) != JPEG_HEADER_OK) {
    set_message(s->message, "no image in the stream (tables only)");
    return false;
  }
  return true;
}

bool jpeg_stage_start(JpegState* s) {
  if (setjmp(s->jump)) return false;
  jpeg_start_decompress(&s->cinfo);
  return true;
}

bool jpeg_stage_pixels(JpegState* s, unsigned char* out, size_t stride) {
  if (setjmp(s->jump)) return false;
  while (s->cinfo.output_scanline < s->cinfo.output_height) {
    JSAMPROW row = out + size_t(s->cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&s->cinfo, &row, 1);
  }
  s->finishing = true;
  jpeg_finish_decompress(&s->cinfo);
  return true;
}

struct JpegGuard {
  JpegState* s;
  ~JpegGuard() { jpeg_destroy_decompress(&s->cinfo); }
};

// PIL reads CMYK JPEGs as Adobe's inverted CMYK ("CMYK;I") and converts to RGB with
// cmyk2rgb: with the stored (inverted) c and k, R = k - (((255 - c) * k + 128) * 257 >> 16).
Hwc cmyk_to_rgb(const at::Tensor& cmyk) {
  at::Tensor v = cmyk.to(at::kInt);
  at::Tensor k = v.narrow(2, 3, 1);
  at::Tensor t = (255 - v.narrow(2, 0, 3)) * k + 128;
  at::Tensor muldiv = (t.bitwise_right_shift(8) + t).bitwise_right_shift(8);
  return (k - muldiv).clamp(0, 255).to(at::kByte);
}

Hwc decode_jpeg(const std::vector<unsigned char>& bytes, const std::string& path, const ImageReadOptions& options) {
  JpegState s;
  std::memset(&s, 0, sizeof(s));
  s.cinfo.err = jpeg_std_error(&s.err);
  s.err.error_exit = &jpeg_on_error;
  s.err.emit_message = &jpeg_on_message;
  s.err.output_message = &jpeg_on_output;
  s.progress.progress_monitor = &jpeg_on_progress;
  JpegGuard guard{&s};  // jpeg_destroy_decompress is a no-op on a zeroed, never-created struct

  TORCH_CHECK_VALUE(bytes.size() <= std::numeric_limits<unsigned long>::max(),
                    fmt::format("image file '{}' is too large for libjpeg", path));
  TORCH_CHECK_VALUE(jpeg_stage_header(&s, bytes.data(), bytes.size()),
                    fmt::format("image file '{}' is a corrupt or truncated JPEG: {}", path, s.message));
  check_pixels(s.cinfo.image_width, s.cinfo.image_height, options, path, "JPEG");
  s.cinfo.progress = &s.progress;

  // PIL's settings: full size, accurate integer DCT, fancy upsampling, and its colour
  // spaces (grey stays grey, CMYK/YCCK become CMYK, everything else RGB).
  J_COLOR_SPACE space = s.cinfo.jpeg_color_space;
  if (space == JCS_GRAYSCALE) {
    s.cinfo.out_color_space = JCS_GRAYSCALE;
  } else if (space == JCS_CMYK || space == JCS_YCCK) {
    s.cinfo.out_color_space = JCS_CMYK;
  } else {
    s.cinfo.out_color_space = JCS_RGB;
  }
  s.cinfo.scale_num = 1;
  s.cinfo.scale_denom = 1;
  s.cinfo.dct_method = JDCT_ISLOW;
  s.cinfo.do_fancy_upsampling = TRUE;
  s.cinfo.do_block_smoothing = TRUE;

  TORCH_CHECK_VALUE(jpeg_stage_start(&s),
                    fmt::format("image file '{}{}{}", path,
                                s.over_limit ? "' is refused: " : "' is a corrupt or truncated JPEG: ", s.message));
  const int channels = s.cinfo.output_components;
  TORCH_INTERNAL_ASSERT(channels == 1 || channels == 3 || channels == 4,
                        fmt::format("libjpeg gave {} components", channels));
  at::Tensor out =
      at::empty({int64_t(s.cinfo.output_height), int64_t(s.cinfo.output_width), channels}, at::kByte);
  TORCH_CHECK_VALUE(jpeg_stage_pixels(&s, out.data_ptr<uint8_t>(), size_t(s.cinfo.output_width) * channels),
                    fmt::format("image file '{}{}{}", path,
                                s.over_limit ? "' is refused: " : "' is a corrupt or truncated JPEG: ", s.message));
  return channels == 4 ? cmyk_to_rgb(out) : out;
}

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

void check_mean_std(const float mean[3], const float stdev[3], const char* what) {
  TORCH_CHECK_VALUE(mean != nullptr && stdev != nullptr, fmt::format("{}: mean and std must point to 3 floats", what));
  for (int c = 0; c < 3; ++c) {
    TORCH_CHECK_VALUE(std::isfinite(mean[c]), fmt::format("{}: mean[{}] = {:g} is not finite", what, c, mean[c]));
    TORCH_CHECK_VALUE(std::isfinite(stdev[c]) && stdev[c] > 0,
                      fmt::format("{}: std[{}] = {:g}, expected a positive number", what, c, stdev[c]));
  }
}

// As ToTensor + Normalize: float32 x / 255, then (x - mean) / std. x: (3, H, W) with values 0..255.
at::Tensor normalize(const at::Tensor& x, const float mean[3], const float stdev[3]) {
  const auto dev = x.device();
  at::Tensor m = at::tensor(std::vector<float>(mean, mean + 3), at::kFloat).to(dev).view({3, 1, 1});
  at::Tensor s = at::tensor(std::vector<float>(stdev, stdev + 3), at::kFloat).to(dev).view({3, 1, 1});
  return x.to(at::kFloat).div_(255).sub_(m).div_(s).contiguous();
}

// Round half up (PIL's fixed-point rounding) and clamp to [0, 255].
at::Tensor round_clamp(const at::Tensor& x) { return (x + 0.5).floor_().clamp_(0, 255); }

// torchvision's CenterCrop offset int(round(diff / 2.0)): Python rounds ties to even.
int64_t center_offset(int64_t diff) {
  const int64_t k = diff / 2;
  return (diff % 2 == 0 || k % 2 == 0) ? k : k + 1;
}

// PIL's nearest-neighbour source indices (ImagingScaleAffine): x = s / 2, then x += s per
// output pixel, s = in / out, all in double; the index is floor(x). Mathematically the
// centre rule floor((i + 0.5) s); accumulating in double as PIL does decides the ties
// (centres falling exactly on a pixel boundary) the same way PIL does.
at::Tensor nearest_indices(int64_t in, int64_t out) {
  std::vector<int64_t> idx(static_cast<size_t>(out));
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  double x = scale * 0.5;
  for (auto& v : idx) {
    v = std::min(static_cast<int64_t>(x), in - 1);
    x += scale;
  }
  return at::tensor(idx, at::kLong);
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

at::Tensor clip_preprocess(const at::Tensor& image, int64_t size, const float mean[3], const float stdev[3],
                           bool center_crop) {
  using namespace detail::image_io;
  TORCH_CHECK_VALUE(image.defined(), "clip_preprocess: the image is an undefined tensor");
  TORCH_CHECK_VALUE(image.dim() == 3 && image.size(0) == 3,
                    fmt::format("clip_preprocess: expected a (3, H, W) RGB image, got {}", image.sizes()));
  TORCH_CHECK_VALUE(
      image.scalar_type() == at::kByte,
      fmt::format("clip_preprocess: expected a uint8 image (as read_image returns), got {}", image.scalar_type()));
  const int64_t h = image.size(1), w = image.size(2);
  TORCH_CHECK_VALUE(h > 0 && w > 0, fmt::format("clip_preprocess: expected a non-empty image, got {}", image.sizes()));
  TORCH_CHECK_VALUE(size > 0, fmt::format("clip_preprocess: size must be positive, got {}", size));
  check_mean_std(mean, stdev, "clip_preprocess");

  int64_t out_h = size, out_w = size;
  if (center_crop) {  // torchvision Resize(size): the shorter side becomes size
    if (w <= h) out_h = size * h / w;
    else out_w = size * w / h;
  }
  // PIL's separable resize: two passes, each rounded to uint8 values. Computed in double
  // so that only PIL's rounding, not ours, decides the result. Pillow (13) runs the vertical
  // pass first when the height loses more than twice as many pixels as the width, else
  // the horizontal one (measured against Pillow; older Pillow always goes horizontal first).
  // One channel at a time (the passes are per channel), so that the double copy of a large
  // image costs 8 bytes a pixel, not 24 (detail/limits.h).
  TORCH_CHECK_VALUE(
      out_h * out_w <= detail::limits::kDefaultMaxImagePixels,
      fmt::format(
          "clip_preprocess: resizing a {}x{} image to {}x{} would make more than the image pixel limit of {} pixels", h,
          w, out_h, out_w, detail::limits::kDefaultMaxImagePixels));
  const bool vertical_first = out_h < h && (h - out_h) > 2 * (w - out_w);
  std::vector<at::Tensor> planes;
  for (int64_t c = 0; c < 3; ++c) {
    at::Tensor x = image.narrow(0, c, 1).unsqueeze(0).to(at::kDouble);
    if (vertical_first) {
      x = round_clamp(at::_upsample_bicubic2d_aa(x, {out_h, w}, /*align_corners=*/false));
      if (out_w != w) x = round_clamp(at::_upsample_bicubic2d_aa(x, {out_h, out_w}, /*align_corners=*/false));
    } else {
      if (out_w != w) x = round_clamp(at::_upsample_bicubic2d_aa(x, {h, out_w}, /*align_corners=*/false));
      if (out_h != h) x = round_clamp(at::_upsample_bicubic2d_aa(x, {out_h, out_w}, /*align_corners=*/false));
    }
    planes.push_back(x.squeeze(0));
  }
  at::Tensor x = at::cat(planes, 0);
  if (center_crop) {
    x = x.narrow(1, center_offset(out_h - size), size).narrow(2, center_offset(out_w - size), size);
  }
  return normalize(x, mean, stdev);
}

at::Tensor clip_normalize(const at::Tensor& image, const float mean[3], const float stdev[3]) {
  using namespace detail::image_io;
  TORCH_CHECK_VALUE(
      image.defined() && image.dim() == 3 && image.size(0) == 3 && image.scalar_type() == at::kByte,
      fmt::format("clip_normalize: expected a (3, H, W) uint8 RGB image (as read_image returns), got {} {}",
                  image.defined() ? image.sizes() : at::IntArrayRef{},
                  image.defined() ? c10::toString(image.scalar_type()) : "undefined"));
  check_mean_std(mean, stdev, "clip_normalize");
  return normalize(image, mean, stdev);
}

at::Tensor resize_mask(const at::Tensor& mask, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(mask.defined(), "resize_mask: the mask is an undefined tensor");
  TORCH_CHECK_VALUE(mask.dim() == 2, fmt::format("resize_mask: expected a (H, W) bool mask, got {}", mask.sizes()));
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kBool,
                    fmt::format("resize_mask: expected a bool mask, got {}", mask.scalar_type()));
  TORCH_CHECK_VALUE(mask.size(0) > 0 && mask.size(1) > 0,
                    fmt::format("resize_mask: expected a non-empty mask, got {}", mask.sizes()));
  TORCH_CHECK_VALUE(height > 0 && width > 0,
                    fmt::format("resize_mask: expected a positive output size, got {}x{}", height, width));
  using namespace detail::image_io;
  at::Tensor rows = nearest_indices(mask.size(0), height).to(mask.device());
  at::Tensor cols = nearest_indices(mask.size(1), width).to(mask.device());
  return mask.index_select(0, rows).index_select(1, cols);
}

}  // namespace lake

// ---- writing PNG ------------------------------------------------------------------

namespace lake::detail::image_io {
namespace {

// Plain data only, as the read stages (see the comment at the top).
struct PngWriteState {
  png_structp png;
  png_infop info;
  std::vector<unsigned char>* out;
  char message[256];
};

[[noreturn]] void png_write_on_error(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngWriteState*>(png_get_error_ptr(png));
  set_message(s->message, "{}", msg ? msg : "unknown libpng error");
  png_longjmp(png, 1);
}

void png_write_memory(png_structp png, png_bytep data, size_t n) {
  auto* s = static_cast<PngWriteState*>(png_get_io_ptr(png));
  s->out->insert(s->out->end(), data, data + n);
}

void png_flush_memory(png_structp) {}

bool png_stage_write(PngWriteState* s, png_uint_32 width, png_uint_32 height, int bit_depth, int color_type,
                     png_bytepp rows) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_write_fn(s->png, s, &png_write_memory, &png_flush_memory);
  png_set_compression_level(s->png, 6);
  png_set_IHDR(s->png, s->info, width, height, bit_depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(s->png, s->info);
  if (bit_depth == 16) png_set_swap(s->png);  // our samples are little-endian in memory, PNG's big-endian
  png_write_image(s->png, rows);
  png_write_end(s->png, nullptr);
  return true;
}

struct PngWriteGuard {
  PngWriteState* s;
  ~PngWriteGuard() { png_destroy_write_struct(&s->png, s->info ? &s->info : nullptr); }
};

}  // namespace
}  // namespace lake::detail::image_io

namespace lake {

void write_png(const std::string& path, const at::Tensor& image) {
  using namespace detail::image_io;
  TORCH_CHECK_VALUE(image.defined(), fmt::format("write_png: the image for '{}' is an undefined tensor", path));
  const bool grey = image.dim() == 2, rgb = image.dim() == 3 && image.size(0) == 3;
  TORCH_CHECK_VALUE(
      grey || rgb,
      fmt::format("write_png: expected a (H, W) grey or (3, H, W) RGB image for '{}', got {}", path, image.sizes()));
  const bool wide = image.scalar_type() == at::kUInt16;
  TORCH_CHECK_VALUE(image.scalar_type() == at::kByte || (grey && wide),
                    fmt::format("write_png: expected uint8 pixels (or uint16 for a grey image) for '{}', got {}", path,
                                image.scalar_type()));
  const int64_t h = image.size(grey ? 0 : 1), w = image.size(grey ? 1 : 2);
  TORCH_CHECK_VALUE(h > 0 && w > 0 && h < (int64_t{1} << 31) && w < (int64_t{1} << 31),
                    fmt::format("write_png: expected a non-empty image for '{}', got {}", path, image.sizes()));
  // Interleaved rows: (H, W) or (H, W, 3).
  const at::Tensor hwc = (grey ? image : image.permute({1, 2, 0})).to(at::kCPU).contiguous();
  const int64_t row_bytes = w * (grey ? 1 : 3) * (wide ? 2 : 1);
  auto* base = static_cast<unsigned char*>(hwc.data_ptr());
  std::vector<png_bytep> rows(static_cast<size_t>(h));
  for (int64_t y = 0; y < h; ++y) rows[static_cast<size_t>(y)] = base + y * row_bytes;

  std::vector<unsigned char> bytes;
  PngWriteState s{};
  s.out = &bytes;
  s.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &s, &png_write_on_error, &png_on_warning);
  TORCH_CHECK(s.png != nullptr, "write_png: libpng could not be initialised (out of memory?)");
  PngWriteGuard guard{&s};
  s.info = png_create_info_struct(s.png);
  TORCH_CHECK(s.info != nullptr, "write_png: libpng could not be initialised (out of memory?)");
  const bool ok = png_stage_write(&s, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), wide ? 16 : 8,
                                  grey ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, rows.data());
  TORCH_CHECK(ok, fmt::format("write_png: encoding '{}' failed: {}", path, s.message));
  detail::write_file_atomically(path, bytes.data(), bytes.size(), "write_png");
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

// jmorecfg.h's macros would leak into the next file of a unity build.
#undef LOCAL
#undef GLOBAL
#undef EXTERN
#undef METHODDEF
#undef FAR
