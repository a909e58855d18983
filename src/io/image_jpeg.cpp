// JPEG through libjpeg(-turbo), decoded as PIL does: full size, accurate integer DCT, fancy
// upsampling, grey / RGB / CMYK (converted to RGB as PIL's "CMYK;I"); a truncated file and
// too many progressive scans are errors. The stages that call libjpeg follow the rule in
// detail/image_decode.h (no C++ object with a destructor between a setjmp and a longjmp).

#include "detail/format.h"
#include "detail/image_decode.h"
#include "detail/limits.h"

#include <ATen/ATen.h>

#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>

// jpeglib.h needs size_t and FILE declared before it.
#include <jpeglib.h>
#include <jerror.h>

namespace lake::detail::image_io {
namespace {

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

}  // namespace

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

}  // namespace lake::detail::image_io

// jmorecfg.h's macros would leak into the next file of a unity build.
#undef LOCAL
#undef GLOBAL
#undef EXTERN
#undef METHODDEF
#undef FAR
