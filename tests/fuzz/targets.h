#pragma once
// Fuzz targets for every reader of files from outside (docs/archives.md, "Fuzzing").
//
// One function per target: it hands `data` to one reader, catches c10::Error (the readers'
// way of refusing bad input) and lets everything else escape: a crash, a sanitizer report,
// another exception type. libFuzzer harnesses (tests/fuzz/fuzz_<target>.cpp, clang,
// LAKE_FUZZ=ON, `make fuzz`) call them; so does the Catch2 test that replays the seeds and
// the inputs that found bugs (tests/cpp/test_fuzz_corpus.cpp, the normal build).
//
// The readers take paths, so most targets write the bytes to a per-process temporary file
// (/dev/shm, else $TMPDIR, else /tmp) in a folder of its own, and read that.
//
//   lake::fuzz::fuzz_safetensors(bytes.data(), bytes.size());   // 0; throws on a bug

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lake::fuzz {

/// lake::read_image on the bytes (PNG or JPEG; max_pixels 2^22 so that a header cannot ask
/// for more memory than the fuzzer's RSS limit), then read_mask and clip_preprocess.
int fuzz_png_jpeg(const uint8_t* data, size_t size);
/// detail::read_torch_save on a torch.save zip whose data.pkl is the bytes (a valid zip
/// around them, with storage records data/0 .. data/3 of 4, 16, 64 and 256 bytes).
int fuzz_pickle(const uint8_t* data, size_t size);
/// lake::load_clip (load_text = false) on the bytes as a file (any form: a torch.save or
/// TorchScript zip, a safetensors file ...).
int fuzz_zip_archive(const uint8_t* data, size_t size);
/// detail::read_safetensors on the bytes as a file.
int fuzz_safetensors(const uint8_t* data, size_t size);
/// lake::NormalityModel::load on the bytes as a .lake file, for the tiny CLIP of the test
/// fixtures (LAKE_FUZZ_CLIP, else LAKE_FIXTURES_DIR/tiny_export.pt); without it, returns 0.
int fuzz_lake_file(const uint8_t* data, size_t size);
/// Tokenizer::encode (and tokenize, decode) of the bytes as text, with CLIP's vocabulary
/// (LAKE_FUZZ_VOCAB, else LAKE_SHARED_DIR/clip/bpe_simple_vocab_16e6.txt.gz); without it, 0.
int fuzz_tokenizer(const uint8_t* data, size_t size);
/// Tokenizer::from_bytes on the bytes (a gzipped or plain merges file).
int fuzz_vocabulary(const uint8_t* data, size_t size);
/// detail::parse_key_values on the bytes as text.
int fuzz_key_values(const uint8_t* data, size_t size);

/// A target by name ("png_jpeg", "pickle", ...; the suffix of its fuzz_ function).
using Target = int (*)(const uint8_t*, size_t);
struct NamedTarget {
  const char* name;
  Target run;
};
/// Every target, in the order above.
const std::vector<NamedTarget>& all_targets();

}  // namespace lake::fuzz
