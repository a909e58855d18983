// Reading CLIP's BPE merges file (plain or gzipped) into a TokenizerState: the byte
// alphabet, the merges and the vocabulary (see include/lake/tokenizer.h).
#include <c10/util/Exception.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "detail/format.h"
#include "detail/limits.h"
#include "detail/tokenizer_state.h"

namespace lake::detail {
namespace tokenizer_impl {
namespace {

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

}  // namespace lake
