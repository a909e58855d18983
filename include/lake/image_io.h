#pragma once
// Reading images and ground-truth masks (PNG, JPEG) and CLIP's image preprocessing.
// Decoding follows PIL (`Image.open(p).convert("RGB")`), which the tests check pixel for
// pixel, so that C++ and Python users of LAKE see the same input tensors.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace lake {

/// How images are read.
struct ImageReadOptions {
  /// Refuse images with more pixels than this (width * height), checked from the file's
  /// header before anything is allocated: protection against decompression bombs. The
  /// default is PIL's limit (`Image.MAX_IMAGE_PIXELS` * 2, where PIL errors out).
  /// `max_pixels <= 0` disables the check.
  int64_t max_pixels = 178956970;
};

/// Decodes a PNG or JPEG file to `(3, H, W) uint8` RGB, contiguous, on the CPU. The format
/// is detected from the file's first bytes, not from its extension.
///
/// As PIL's `Image.open(path).convert("RGB")`, with which the tests check it:
///  - grey (1, 2, 4, 8 bit) is replicated to the three channels; grey+alpha and RGBA drop
///    the alpha channel (no compositing); palette images are looked up (transparency
///    ignored); JPEG CMYK (Adobe, inverted) becomes RGB by PIL's formula.
///  - 16-bit PNG samples are scaled to 8 bits with rounding: `(v * 255 + 32767) / 65535`.
///    PIL differs here: it keeps the high byte (`v >> 8`) of 16-bit RGB(A) and grey+alpha,
///    and *clips* 16-bit grey (mode "I;16") to `min(v, 255)`.
///  - no gamma, ICC profile or EXIF orientation is applied (PIL's `open` applies none).
///  - JPEG: libjpeg(-turbo) with PIL's settings (accurate integer DCT, fancy upsampling).
///
/// Errors (ValueError) name the file: missing, empty, not a PNG/JPEG (other formats are
/// named when recognised), corrupt or truncated data, more than `options.max_pixels`
/// pixels. The file is read once; safe to call from several threads at once.
at::Tensor read_image(const std::string& path, const ImageReadOptions& options = {});

/// Reads a ground-truth mask: any image `read_image` reads, reduced to one channel (grey
/// and grey+alpha: the grey channel; RGB(A) and palette: PIL's luminance
/// `(19595 R + 38470 G + 7471 B + 32768) >> 16`, i.e. `convert("L")`), then
/// `(H, W) bool`, true where the value is above 127. Equal to PIL's
/// `np.asarray(Image.open(p).convert("L")) > 127` except for 16-bit grey PNGs, where PIL
/// tests `min(v, 255) > 127` and LAKE the scaled value (`v > 32767`).
at::Tensor read_mask(const std::string& path, const ImageReadOptions& options = {});

/// CLIP preprocessing of one image: `(3, H, W) uint8` RGB (any device)
/// -> `(3, size, size) float32`, `(x / 255 - mean[c]) / std[c]`.
///
/// The resize is PIL's antialiased bicubic (`Image.resize(..., BICUBIC)`), computed with
/// `at::_upsample_bicubic2d_aa` as PIL does: two separable passes, each rounded (half up)
/// and clamped to [0, 255], a pass skipped when its side does not change, in Pillow's
/// order (vertical first when the height loses more than twice as many pixels as the
/// width, else horizontal first). PIL's fixed-point weights still make a few pixels
/// differ from PIL's by 1 (of 255).
///  - `center_crop = false`: resize straight to (size, size), ignoring the aspect ratio.
///  - `center_crop = true`: CLIP's own pipeline (torchvision `Resize(size, BICUBIC)`,
///    `CenterCrop(size)`): the shorter side becomes `size`, the longer
///    `floor(size * long / short)`, then the centre (size, size) crop at torchvision's
///    offsets `round((side - size) / 2)` (ties to even, as Python's `round`).
at::Tensor clip_preprocess(const at::Tensor& image, int64_t size, const float mean[3], const float std[3],
                           bool center_crop = false);

/// CLIP normalisation without resizing: `(3, H, W) uint8` RGB -> `(3, H, W) float32`,
/// `(x / 255 - mean[c]) / std[c]`, the last step of `clip_preprocess`.
at::Tensor clip_normalize(const at::Tensor& image, const float mean[3], const float std[3]);

/// An image file as a CLIP backbone at `size x size` sees it, with the file's own size.
struct PreparedImage {
  at::Tensor pixels;   ///< (3, size, size) float32: clip_preprocess(read_image(path), size)
  int64_t height = 0;  ///< the file's height and width: the resolution of its anomaly map
  int64_t width = 0;
};

/// The one rule by which every file entry point of LAKE (NormalityModel's `*_files`
/// methods, Python's `NormalityModel.score(path)`, `lake predict`, `lake eval`) turns an
/// image file into the backbone's input: decode with `read_image` (as PIL), resize the
/// uint8 pixels straight to `size x size` with PIL's antialiased bicubic (`clip_preprocess`,
/// no centre crop: the whole image is inspected), normalise with `mean` / `std`. The maps
/// come back at the file's resolution (`height x width`).
PreparedImage prepare_image(const std::string& path, int64_t size, const float mean[3], const float std[3],
                            const ImageReadOptions& options = {});

/// Writes a PNG file: `(H, W)` uint8 or uint16 grey, or `(3, H, W)` uint8 RGB (any device).
/// Atomic: the bytes go to a temporary file in the same folder that is renamed over `path`,
/// so a reader never sees a partial file and a failure leaves an existing file unchanged.
/// Errors (naming the file): shapes, dtypes, an unwritable folder.
void write_png(const std::string& path, const at::Tensor& image);

/// Nearest-neighbour resize of a `(H, W) bool` mask (any device) to `(height, width) bool`,
/// as PIL's `Image.resize((width, height), NEAREST)`, pixel for pixel: output pixel `i`
/// takes the input pixel whose cell holds its centre, `floor((i + 0.5) * H / height)`,
/// computed as PIL does (accumulated in double), so that centres falling exactly on a
/// cell boundary go PIL's way. (torch's "nearest-exact" computes the same centres in
/// float32 and can differ there; its "nearest" uses corners, not centres.)
at::Tensor resize_mask(const at::Tensor& mask, int64_t height, int64_t width);

}  // namespace lake
