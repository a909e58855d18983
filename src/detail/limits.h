#pragma once
// Every limit LAKE's readers put on files from outside, named in one place (internal).
//
// A file that exceeds one is refused with a c10::ValueError naming the file, the limit and
// the value the file asked for, before anything of that size is allocated. The limits are
// far above what any CLIP checkpoint, TorchScript archive, vocabulary or dataset image
// needs, and low enough that no file can make a reader allocate much more than the file's
// own size (docs/archives.md, "Limits").

#include <cstdint>

namespace lake::detail::limits {

// ---- pickles (torch.save data.pkl, TorchScript data.pkl / constants.pkl, .lake files) ----

/// Nesting depth of the values a pickle builds (a container inside a container ...).
/// State dicts nest about 5 deep, TorchScript module trees about 20 (an object and its
/// attribute dict per module level). Also bounds the recursion when a value tree is
/// walked or destroyed.
constexpr int64_t kMaxPickleDepth = 512;

/// Values a pickle may push (every opcode that creates or references a value, MARKs
/// included). A ViT-L/14 state dict pushes about 10^4; the bound keeps the value tree
/// under about 150 MB whatever the pickle says.
constexpr int64_t kMaxPickleElements = int64_t{1} << 20;

/// Entries of the pickle's memo (PUT / MEMOIZE).
constexpr int64_t kMaxPickleMemo = int64_t{1} << 20;

/// Bytes of one pickle record (data.pkl, constants.pkl): the program, not the tensors.
constexpr uint64_t kMaxPickleBytes = uint64_t{64} << 20;

// ---- zip archives (torch.save, TorchScript) ----------------------------------------------

/// Records in a zip's central directory.
constexpr uint64_t kMaxZipEntries = uint64_t{1} << 20;

/// Bytes of one stored (uncompressed) record: at most the zip file's own size (checked per
/// record, and the records together may not claim more bytes than the file has), and at
/// most this.
constexpr uint64_t kMaxZipRecordBytes = uint64_t{256} << 30;

/// Bytes one deflate-compressed record may decompress to (TorchScript's code/*.py and
/// *.debug_pkl records; tensor data is always stored).
constexpr uint64_t kMaxDecompressedRecordBytes = uint64_t{64} << 20;

/// Bytes all compressed records of one zip may decompress to together.
constexpr uint64_t kMaxDecompressedTotalBytes = uint64_t{256} << 20;

/// Bytes of one TorchScript code record read as text (activation detection) or of a LAKE
/// v1 export's lake_config.txt.
constexpr uint64_t kMaxCodeRecordBytes = uint64_t{16} << 20;

// ---- tensors ----------------------------------------------------------------------------

// A tensor rebuilt from a pickle (torch._utils._rebuild_tensor_v2) must lie inside its
// storage (offset + sum((size - 1) * stride) < storage elements) and may not have more
// elements than its storage (no stride-0 expansion to a file-supplied size); a storage's
// element count times its element size must equal its record's actual size. These are
// checks against the file, not numbers, so they have no constant.

/// Header bytes (JSON) of a safetensors file.
constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{100} << 20;

// ---- vocabulary ---------------------------------------------------------------------------

/// Bytes a gzip-compressed BPE vocabulary may decompress to (CLIP's is 1.6 MB).
constexpr uint64_t kMaxVocabularyBytes = uint64_t{64} << 20;

// ---- images -------------------------------------------------------------------------------

/// Bytes of an image file (files are read whole). A PNG of the default pixel limit in
/// 16-bit RGBA, stored without compression, is about 1.4 GB.
constexpr uint64_t kMaxImageFileBytes = uint64_t{2} << 30;

/// The default ImageReadOptions::max_pixels (include/lake/image_io.h, where the public
/// default lives; image_io.cpp asserts they agree): PIL's limit, 2 * Image.MAX_IMAGE_PIXELS,
/// checked from the header before any pixel is allocated. Decoded as uint8 that is at most
/// 4 bytes a pixel (RGBA, 716 MB); clip_preprocess then works on one channel at a time in
/// double (8 bytes a pixel, 1.4 GB at the limit) rather than on all three (24 bytes a pixel).
constexpr int64_t kDefaultMaxImagePixels = 178956970;

/// Scans of a progressive JPEG (libjpeg-turbo's recommended limit): each scan re-reads the
/// whole coefficient buffer, so a small file with many scans costs unbounded time.
constexpr int kMaxJpegScans = 500;

}  // namespace lake::detail::limits
