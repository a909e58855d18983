// PNG through libpng: decoding as PIL does (8-bit grey, grey+alpha, RGB or RGBA; no gamma
// or ICC correction) and write_png. The stages that call libpng follow the rule in
// detail/image_decode.h (no C++ object with a destructor between a setjmp and a longjmp).

#include "lake/image_io.h"

#include "detail/atomic_file.h"
#include "detail/format.h"
#include "detail/image_decode.h"

#include <ATen/ATen.h>

#include <csetjmp>
#include <cstddef>
#include <cstring>
#include <vector>

#include <png.h>

namespace lake::detail::image_io {
namespace {

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

}  // namespace

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

// ---- writing PNG ------------------------------------------------------------------

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

}  // namespace lake
