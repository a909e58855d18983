// CLIP's byte-level BPE tokenizer; see include/lake/tokenizer.h for the pipeline.
#include "lake/tokenizer.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <queue>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "detail/format.h"
#include "detail/limits.h"
#include "detail/unicode_tables.h"
#include "lake/core/utf8.h"

// Internals live in a named namespace (with internal linkage inside) so that they cannot
// collide with other sources when the library is compiled as a unity build.
namespace lake::detail {
namespace tokenizer_impl {
namespace {

namespace uc = unicode;

// Number of merges CLIP uses: lines[1 : 49152 - 256 - 2 + 1] of the merges file.
constexpr size_t kNumMerges = 49152 - 256 - 2;
constexpr const char* kSot = "<|startoftext|>";
constexpr const char* kEot = "<|endoftext|>";
// Bounds of the per-tokenizer cache of BPE results (cleared when full).
constexpr size_t kMaxCacheEntries = size_t{1} << 17;
constexpr size_t kMaxCachedPieceBytes = 256;

// ---------------------------------------------------------------- UTF-8 ---
// The rules live in lake/core/utf8.h; here the strict decoder raises, naming `what`.

using core::utf8_encode;
using core::utf8_replace_invalid;

std::u32string utf8_decode(std::string_view s, const std::string& what) {
  std::u32string out;
  const size_t bad = core::utf8_decode(s, out);
  TORCH_CHECK(bad == core::kUtf8Valid,
              fmt::format("{} is not valid UTF-8 (bad byte sequence at byte offset {})", what, bad));
  return out;
}

// ------------------------------------------------------- Unicode tables ---

template <size_t N>
bool in_ranges(const uc::Range (&table)[N], char32_t c) {
  const auto* it = std::upper_bound(std::begin(table), std::end(table), c,
                                    [](char32_t v, const uc::Range& r) { return v < r.first; });
  return it != std::begin(table) && c <= (it - 1)->last;
}

bool is_py_space(char32_t c) { return in_ranges(uc::kReSpace, c); }

// str.lower() of one code point, without the final-sigma rule.
void append_lower(char32_t c, std::u32string& out) {
  for (const auto& m : uc::kLowerMulti) {
    if (m.cp == c) {
      for (char32_t l : m.lower)
        if (l != 0) out.push_back(l);
      return;
    }
  }
  const auto* it = std::upper_bound(std::begin(uc::kLower), std::end(uc::kLower), c,
                                    [](char32_t v, const uc::LowerRun& r) { return v < r.first; });
  if (it != std::begin(uc::kLower)) {
    const auto& r = *(it - 1);
    if (c <= r.last && (c - r.first) % static_cast<char32_t>(r.stride) == 0) {
      out.push_back(static_cast<char32_t>(static_cast<int64_t>(c) + r.delta));
      return;
    }
  }
  out.push_back(c);
}

// CPython's handle_capital_sigma: is s[i] (U+03A3) in the Final_Sigma context?
bool is_final_sigma(const std::u32string& s, size_t i) {
  size_t j = i;
  while (j > 0 && in_ranges(uc::kCaseIgnorable, s[j - 1])) --j;
  if (j == 0 || !in_ranges(uc::kCased, s[j - 1])) return false;
  size_t k = i + 1;
  while (k < s.size() && in_ranges(uc::kCaseIgnorable, s[k])) ++k;
  return k == s.size() || !in_ranges(uc::kCased, s[k]);
}

std::u32string py_lower(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == 0x3A3) out.push_back(is_final_sigma(s, i) ? 0x3C2 : 0x3C3);
    else append_lower(s[i], out);
  }
  return out;
}

// ---------------------------------------------------------- html.unescape ---

const uc::Entity* find_entity(std::string_view name) {
  const auto* it = std::lower_bound(std::begin(uc::kEntities), std::end(uc::kEntities), name,
                                    [](const uc::Entity& e, std::string_view n) { return std::string_view(e.name) < n; });
  return it != std::end(uc::kEntities) && std::string_view(it->name) == name ? it : nullptr;
}

void append_utf8(const char* utf8, std::u32string& out) {
  out += utf8_decode(utf8, "entity table");
}

// The replacement of a numeric reference &#num; (num saturated above 0x10FFFF).
void append_numeric_ref(uint32_t num, std::u32string& out) {
  for (const auto& r : uc::kInvalidCharrefs) {
    if (r.number == num) {
      out.push_back(r.replacement);
      return;
    }
  }
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    out.push_back(0xFFFD);
  } else if (!in_ranges(uc::kInvalidCodepoints, num)) {
    out.push_back(num);
  }
}

// The replacement of a named reference (name includes its ';' if there was one).
void append_named_ref(std::u32string_view name, std::u32string& out) {
  if (const auto* e = find_entity(utf8_encode(name))) {
    append_utf8(e->value, out);
    return;
  }
  // Longest prefix that is an entity (only the legacy names without ';' can match).
  for (size_t x = name.size() - 1; x >= 2; --x) {
    if (const auto* e = find_entity(utf8_encode(name.substr(0, x)))) {
      append_utf8(e->value, out);
      out.append(name.substr(x));
      return;
    }
  }
  out.push_back(U'&');
  out.append(name);
}

int digit_value(char32_t c, int base) {
  if (c >= U'0' && c <= U'9') return static_cast<int>(c - U'0');
  if (base == 16 && c >= U'a' && c <= U'f') return static_cast<int>(c - U'a') + 10;
  if (base == 16 && c >= U'A' && c <= U'F') return static_cast<int>(c - U'A') + 10;
  return -1;
}

// Python's html.unescape: re.sub(r'&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)', ...)
std::u32string html_unescape(const std::u32string& s) {
  if (s.find(U'&') == std::u32string::npos) return s;
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    const size_t j = i + 1;
    if (j < n && s[j] == U'#') {
      const bool hex = j + 1 < n && (s[j + 1] == U'x' || s[j + 1] == U'X');
      // '#[0-9]+' is tried first; it fails on 'x', so the hex branch follows.
      const int base = hex ? 16 : 10;
      const size_t start = hex ? j + 2 : j + 1;
      size_t k = start;
      uint32_t num = 0;
      for (; k < n && digit_value(s[k], base) >= 0; ++k)
        num = std::min<uint32_t>(num * base + digit_value(s[k], base), 0x110000);
      if (k == start) {
        out.push_back(U'&');
        ++i;
        continue;
      }
      append_numeric_ref(num, out);
      i = k < n && s[k] == U';' ? k + 1 : k;
      continue;
    }
    size_t k = j;
    while (k < n && k - j < 32 && s[k] != U'\t' && s[k] != U'\n' && s[k] != U'\f' && s[k] != U' ' &&
           s[k] != U'<' && s[k] != U'&' && s[k] != U'#' && s[k] != U';')
      ++k;
    if (k == j) {
      out.push_back(U'&');
      ++i;
      continue;
    }
    const size_t end = k < n && s[k] == U';' ? k + 1 : k;
    append_named_ref(std::u32string_view(s).substr(j, end - j), out);
    i = end;
  }
  return out;
}

// ----------------------------------------------------- cleaning, splitting ---

// html.unescape twice, re.sub(r"\s+", " ", .).strip(), .lower()
std::u32string clean(const std::u32string& text) {
  const std::u32string unescaped = html_unescape(html_unescape(text));
  std::u32string collapsed;
  collapsed.reserve(unescaped.size());
  bool pending_space = false;
  for (char32_t c : unescaped) {
    if (is_py_space(c)) {
      pending_space = !collapsed.empty();
    } else {
      if (pending_space) collapsed.push_back(U' ');
      pending_space = false;
      collapsed.push_back(c);
    }
  }
  return py_lower(collapsed);
}

bool ci_equal(char32_t literal, char32_t c) {
  for (const auto& e : uc::kCaseEquiv) {
    if (e.ch != literal) continue;
    for (char32_t m : e.matches)  // zero-padded
      if (m != 0 && m == c) return true;
    return false;
  }
  return literal == c;
}

// Length of the first literal alternative matching s at i (IGNORECASE), 0 if none.
size_t match_literal(const std::u32string& s, size_t i) {
  static const std::u32string kLiterals[] = {U"<|startoftext|>", U"<|endoftext|>", U"'s", U"'t", U"'re",
                                             U"'ve", U"'m", U"'ll", U"'d"};
  for (const auto& lit : kLiterals) {
    if (s.size() - i < lit.size()) continue;
    size_t k = 0;
    while (k < lit.size() && ci_equal(lit[k], s[i + k])) ++k;
    if (k == lit.size()) return k;
  }
  return 0;
}

// re.findall of CLIP's pattern: (start, length) of each piece.
std::vector<std::pair<size_t, size_t>> split_pieces(const std::u32string& s) {
  std::vector<std::pair<size_t, size_t>> pieces;
  size_t i = 0;
  while (i < s.size()) {
    size_t len = match_literal(s, i);
    if (len == 0) {
      if (in_ranges(uc::kLetter, s[i])) {
        while (i + len < s.size() && in_ranges(uc::kLetter, s[i + len])) ++len;
      } else if (in_ranges(uc::kNumber, s[i])) {
        len = 1;
      } else if (in_ranges(uc::kOther, s[i])) {
        while (i + len < s.size() && in_ranges(uc::kOther, s[i + len])) ++len;
      }
    }
    if (len == 0) {
      ++i;  // no alternative matches here (whitespace): findall moves on
      continue;
    }
    pieces.emplace_back(i, len);
    i += len;
  }
  return pieces;
}

// ----------------------------------------------------------- vocabulary ---

// CLIP's bytes_to_unicode: printable bytes keep their code point, the others
// take 256, 257, ... in byte order. Returns the code point per byte and the
// bytes in vocabulary order.
void byte_alphabet(std::array<char32_t, 256>& cp_of_byte, std::array<uint8_t, 256>& byte_order) {
  auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
  int k = 0, extra = 0;
  for (int b = 0; b < 256; ++b)
    if (printable(b)) cp_of_byte[b] = static_cast<char32_t>(b), byte_order[k++] = static_cast<uint8_t>(b);
  for (int b = 0; b < 256; ++b)
    if (!printable(b)) cp_of_byte[b] = static_cast<char32_t>(256 + extra++), byte_order[k++] = static_cast<uint8_t>(b);
}

std::string gunzip(const std::string& data, const std::string& source) {
  std::string out;
  z_stream zs{};
  TORCH_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, fmt::format("could not initialise zlib to read '{}'", source));
  size_t pos = 0;
  std::array<char, 1 << 16> buf;
  int rc = Z_OK;
  while (true) {
    if (zs.avail_in == 0 && pos < data.size()) {
      const size_t chunk = std::min<size_t>(data.size() - pos, 1u << 30);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + pos));
      zs.avail_in = static_cast<uInt>(chunk);
      pos += chunk;
    }
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    if (out.size() + (buf.size() - zs.avail_out) > limits::kMaxVocabularyBytes) {  // a gzip bomb
      inflateEnd(&zs);
      TORCH_CHECK_VALUE(
          false, fmt::format("vocabulary '{}' decompresses to more than the vocabulary size limit of {} bytes", source,
                             limits::kMaxVocabularyBytes));
    }
    out.append(buf.data(), buf.size() - zs.avail_out);
    if (rc == Z_STREAM_END) {
      const size_t rest = zs.avail_in + (data.size() - pos);
      if (rest == 0) break;
      // Another gzip member follows (like Python's gzip module, read them all).
      const size_t at = data.size() - rest;
      if (rest < 2 || static_cast<unsigned char>(data[at]) != 0x1F || static_cast<unsigned char>(data[at + 1]) != 0x8B) {
        inflateEnd(&zs);
        TORCH_CHECK(false,
                    fmt::format("vocabulary '{}': unexpected data after the gzip stream at byte {}", source, at));
      }
      inflateReset(&zs);
      continue;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && pos == data.size()) {
      inflateEnd(&zs);
      TORCH_CHECK(false, fmt::format("vocabulary '{}' is a truncated gzip file", source));
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      const std::string msg = zs.msg ? std::string(zs.msg) : fmt::format("error {}", rc);
      inflateEnd(&zs);
      TORCH_CHECK(false, fmt::format("vocabulary '{}' is a corrupt gzip file (zlib: {})", source, msg));
    }
  }
  inflateEnd(&zs);
  return out;
}

}  // namespace
}  // namespace tokenizer_impl

struct TokenizerState {
  std::array<int32_t, 256> byte_id{};   // byte -> id of its alphabet character
  std::vector<std::string> id_bytes;    // id -> raw bytes of its vocabulary string
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a, b) -> (rank, merged id)
  int64_t sot = 0, eot = 0;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;

  static uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

  // BPE ids of one piece (its raw UTF-8 bytes).
  std::vector<int64_t> bpe(const std::string& piece) const {
    using namespace tokenizer_impl;
    if (piece == kSot) return {sot};
    if (piece == kEot) return {eot};
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = cache.find(piece);
      if (it != cache.end()) return it->second;
    }
    // The reference repeatedly takes the lowest-ranked adjacent pair and merges all of its
    // occurrences left to right. Same result in O(n log n): symbols form a linked list over
    // byte positions (a merge keeps the left position), candidate pairs sit in a min-heap of
    // (rank, position), and all entries of the lowest rank are applied as one left-to-right
    // batch; entries made stale by earlier merges fail the re-check and are dropped.
    TORCH_CHECK(piece.size() < (size_t{1} << 30), fmt::format("encode: a word of {} bytes is too long", piece.size()));
    const auto n = static_cast<int32_t>(piece.size());
    std::vector<int32_t> sym(n), prev(n), next(n);
    for (int32_t i = 0; i < n; ++i) {
      sym[i] = byte_id[static_cast<unsigned char>(piece[i])];
      prev[i] = i - 1;
      next[i] = i + 1;  // n: end of the word
    }
    if (n > 0) sym[n - 1] += 256;  // the "c</w>" form of the last character
    using Entry = std::pair<int32_t, int32_t>;  // (rank, left position)
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    auto pair_at = [&](int32_t p) -> const std::pair<int32_t, int32_t>* {
      if (p < 0 || next[p] >= n) return nullptr;
      auto it = merges.find(key(sym[p], sym[next[p]]));
      return it == merges.end() ? nullptr : &it->second;
    };
    auto push = [&](int32_t p) {
      if (const auto* m = pair_at(p)) heap.emplace(m->first, p);
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    std::vector<int32_t> batch;
    while (!heap.empty()) {
      const int32_t rank = heap.top().first;
      batch.clear();
      for (; !heap.empty() && heap.top().first == rank; heap.pop()) batch.push_back(heap.top().second);
      for (int32_t p : batch) {  // ascending positions = left to right
        const auto* m = sym[p] < 0 ? nullptr : pair_at(p);
        if (m == nullptr || m->first != rank) continue;  // stale: merged away or changed
        const int32_t q = next[p];
        sym[p] = m->second;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] < n) prev[next[q]] = p;
        push(prev[p]);
        push(p);
      }
    }
    std::vector<int64_t> ids;
    for (int32_t p = 0; p < n; p = next[p]) ids.push_back(sym[p]);
    if (piece.size() <= kMaxCachedPieceBytes) {
      std::lock_guard<std::mutex> lock(cache_mutex);
      if (cache.size() >= kMaxCacheEntries) cache.clear();
      cache.emplace(piece, ids);
    }
    return ids;
  }

  std::vector<int64_t> encode(const std::string& text, const std::string& what) const {
    using namespace tokenizer_impl;
    const std::u32string cleaned = clean(utf8_decode(text, what));
    std::vector<int64_t> ids;
    for (const auto& [start, len] : split_pieces(cleaned)) {
      const auto piece_ids = bpe(utf8_encode(std::u32string_view(cleaned).substr(start, len)));
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    }
    return ids;
  }
};

}  // namespace lake::detail

namespace lake {

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::error_code ec;
  TORCH_CHECK_VALUE(std::filesystem::exists(path, ec), fmt::format("vocabulary file '{}' does not exist", path));
  TORCH_CHECK(!std::filesystem::is_directory(path, ec), fmt::format("vocabulary file '{}' is a directory", path));
  // Read no more than a vocabulary can hold: a merges file, plain or gzipped, is at most the
  // decompressed limit (a plain 20 GB file is refused before a byte of it is read).
  const uintmax_t file_bytes = std::filesystem::file_size(path, ec);
  TORCH_CHECK_VALUE(
      !ec && file_bytes <= detail::limits::kMaxVocabularyBytes,
      fmt::format(
          "vocabulary file '{}' is {}, more than the vocabulary size limit of {} bytes (CLIP's merges file is 1.6 MB)",
          path, ec ? std::string("of unknown size") : fmt::format("{} bytes", file_bytes),
          detail::limits::kMaxVocabularyBytes));
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), fmt::format("vocabulary file '{}' cannot be opened", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  TORCH_CHECK(!in.bad(), fmt::format("error reading vocabulary file '{}'", path));
  return from_bytes(ss.str(), path);
}

Tokenizer Tokenizer::from_bytes(const std::string& bytes, const std::string& source) {
  using namespace detail::tokenizer_impl;
  const bool gz = bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1F &&
                  static_cast<unsigned char>(bytes[1]) == 0x8B;
  const std::string text = gz ? gunzip(bytes, source) : bytes;
  const std::u32string chars = utf8_decode(text, "vocabulary '" + source + "' (" + (gz ? "after gunzip" : "not gzip") + ")");

  std::array<char32_t, 256> cp_of_byte{};
  std::array<uint8_t, 256> byte_order{};
  byte_alphabet(cp_of_byte, byte_order);
  std::unordered_map<char32_t, uint8_t> byte_of_cp;
  for (int b = 0; b < 256; ++b) byte_of_cp[cp_of_byte[b]] = static_cast<uint8_t>(b);

  auto state = std::make_shared<detail::TokenizerState>();
  std::vector<std::u32string> vocab;  // vocabulary strings in id order
  for (int k = 0; k < 256; ++k) vocab.emplace_back(1, cp_of_byte[byte_order[k]]);
  for (int k = 0; k < 256; ++k) vocab.push_back(vocab[k] + U"</w>");
  for (int b = 0; b < 256; ++b)
    state->byte_id[b] = static_cast<int32_t>(std::find(byte_order.begin(), byte_order.end(), b) - byte_order.begin());

  // Lines 1 .. kNumMerges (line 0 is a header); each is two symbols of the byte alphabet.
  std::vector<std::pair<std::u32string, std::u32string>> merges;
  merges.reserve(kNumMerges);
  size_t line_start = chars.find(U'\n');
  for (size_t line = 1; line <= kNumMerges; ++line) {
    TORCH_CHECK(line_start != std::u32string::npos,
                fmt::format("vocabulary '{}' is not a CLIP merges file: it has {} lines, expected at least {}", source,
                            line, kNumMerges + 1));
    const size_t begin = line_start + 1;
    line_start = chars.find(U'\n', begin);
    const size_t end = line_start == std::u32string::npos ? chars.size() : line_start;
    std::vector<std::u32string> parts;
    for (size_t i = begin; i < end;) {
      while (i < end && is_py_space(chars[i])) ++i;
      size_t j = i;
      while (j < end && !is_py_space(chars[j])) ++j;
      if (j > i) parts.emplace_back(chars.substr(i, j - i));
      i = j;
    }
    TORCH_CHECK(parts.size() == 2,
                fmt::format("vocabulary '{}' is not a CLIP merges file: line {} has {} symbols, expected 2", source,
                            line + 1, parts.size()));
    for (const auto& p : parts)
      for (char32_t c : p)
        TORCH_CHECK(
            byte_of_cp.count(c),
            fmt::format(
                "vocabulary '{}' is not a CLIP merges file: line {} has character U+{:x} outside CLIP's byte alphabet",
                source, line + 1, static_cast<uint32_t>(c)));
    vocab.push_back(parts[0] + parts[1]);
    merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
  }
  vocab.emplace_back(U"<|startoftext|>");
  vocab.emplace_back(U"<|endoftext|>");

  // As the reference's dicts: a repeated string keeps its last id, a repeated pair its last rank.
  std::unordered_map<std::u32string, int32_t> id_of;
  for (size_t id = 0; id < vocab.size(); ++id) id_of[vocab[id]] = static_cast<int32_t>(id);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    auto a = id_of.find(merges[rank].first), b = id_of.find(merges[rank].second);
    if (a == id_of.end() || b == id_of.end()) continue;  // can never apply
    state->merges[detail::TokenizerState::key(a->second, b->second)] = {static_cast<int32_t>(rank),
                                                                         id_of.at(vocab[512 + rank])};
  }
  state->id_bytes.reserve(vocab.size());
  for (const auto& v : vocab) {
    std::string raw;
    for (char32_t c : v) raw.push_back(static_cast<char>(byte_of_cp.at(c)));
    state->id_bytes.push_back(std::move(raw));
  }
  state->sot = static_cast<int64_t>(vocab.size()) - 2;
  state->eot = static_cast<int64_t>(vocab.size()) - 1;
  return Tokenizer(std::move(state));
}

const detail::TokenizerState& Tokenizer::state() const {
  TORCH_CHECK(state_ != nullptr, "Tokenizer is empty: create it with Tokenizer::from_file or Tokenizer::from_bytes");
  return *state_;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text) const { return state().encode(text, "text"); }

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  using namespace detail::tokenizer_impl;
  const auto& st = state();
  std::string raw;
  for (size_t i = 0; i < ids.size(); ++i) {
    TORCH_CHECK(ids[i] >= 0 && ids[i] < vocab_size(),
                fmt::format("decode: id {} at position {} is outside the vocabulary [0, {})", ids[i], i, vocab_size()));
    raw += st.id_bytes[static_cast<size_t>(ids[i])];
  }
  const std::string text = utf8_replace_invalid(raw);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 4, "</w>") == 0) {
      out.push_back(' ');
      i += 4;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

at::Tensor Tokenizer::tokenize(const std::vector<std::string>& texts, int64_t context_length, bool truncate) const {
  const auto& st = state();
  TORCH_CHECK(context_length >= 2,
              fmt::format("tokenize: context_length must be at least 2 (room for the start and end tokens), got {}",
                          context_length));
  const auto rows = static_cast<int64_t>(texts.size());
  at::Tensor result = at::zeros({rows, context_length}, at::TensorOptions().dtype(at::kLong));
  int64_t* data = result.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const auto ids = st.encode(texts[r], fmt::format("text {}", r));
    const auto total = static_cast<int64_t>(ids.size()) + 2;
    TORCH_CHECK(truncate || total <= context_length,
                fmt::format("tokenize: text {} is too long: {} tokens including start and end, context_length is {}", r,
                            total, context_length));
    int64_t* row = data + r * context_length;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(ids.size()), context_length - 2);
    row[0] = st.sot;
    std::copy(ids.begin(), ids.begin() + n, row + 1);
    row[n + 1] = st.eot;
  }
  return result;
}

int64_t Tokenizer::sot_token() const { return state().sot; }
int64_t Tokenizer::eot_token() const { return state().eot; }
int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(state().id_bytes.size()); }

std::string Tokenizer::clean_text(const std::string& text) {
  using namespace detail::tokenizer_impl;
  return utf8_encode(clean(utf8_decode(text, "text")));
}

std::vector<std::string> Tokenizer::split_text(const std::string& text) {
  using namespace detail::tokenizer_impl;
  const std::u32string s = utf8_decode(text, "text");
  std::vector<std::string> out;
  for (const auto& [start, len] : split_pieces(s)) out.push_back(utf8_encode(std::u32string_view(s).substr(start, len)));
  return out;
}

}  // namespace lake
