#pragma once
// The BPE tokenizer's internals (internal), shared by its three sources: src/text/
// tokenizer_text.cpp (UTF-8, CLIP's text cleaning and its pre-tokenizer pattern),
// tokenizer_vocab.cpp (reading a merges file into a TokenizerState) and tokenizer.cpp
// (byte-pair encoding, decoding, Tokenizer's methods).

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lake/core/utf8.h"
#include "lake/tokenizer.h"

// Internals live in a named namespace so that they cannot collide with other sources when
// the library is compiled as a unity build.
namespace lake::detail {
namespace tokenizer_impl {

// Number of merges CLIP uses: lines[1 : 49152 - 256 - 2 + 1] of the merges file.
constexpr size_t kNumMerges = 49152 - 256 - 2;
constexpr const char* kSot = "<|startoftext|>";
constexpr const char* kEot = "<|endoftext|>";
// Bounds of the per-tokenizer cache of BPE results (cleared when full).
constexpr size_t kMaxCacheEntries = size_t{1} << 17;
constexpr size_t kMaxCachedPieceBytes = 256;

// The UTF-8 rules live in lake/core/utf8.h.
using core::utf8_encode;
using core::utf8_replace_invalid;

// ---- tokenizer_text.cpp ----------------------------------------------------------------

/// The strict decoder: raises, naming `what`, on a bad byte sequence.
std::u32string utf8_decode(std::string_view s, const std::string& what);
/// Python's `str.isspace` as `re`'s \s sees it.
bool is_py_space(char32_t c);
/// CLIP's text cleaning: html.unescape twice, re.sub(r"\s+", " ", .).strip(), .lower().
std::u32string clean(const std::u32string& text);
/// re.findall of CLIP's pattern: (start, length) of each piece.
std::vector<std::pair<size_t, size_t>> split_pieces(const std::u32string& s);

}  // namespace tokenizer_impl

struct TokenizerState {
  std::array<int32_t, 256> byte_id{};   // byte -> id of its alphabet character
  std::vector<std::string> id_bytes;    // id -> raw bytes of its vocabulary string
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a, b) -> (rank, merged id)
  int64_t sot = 0, eot = 0;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;

  static uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

  // BPE ids of one piece (its raw UTF-8 bytes). Defined in tokenizer.cpp.
  std::vector<int64_t> bpe(const std::string& piece) const;
  // The ids of `text`; `what` names it in errors. Defined in tokenizer.cpp.
  std::vector<int64_t> encode(const std::string& text, const std::string& what) const;
};

}  // namespace lake::detail
