#pragma once
// UTF-8 <-> code points (header-only core, docs/core.md): the rules LAKE's CLIP tokenizer
// applies to prompts, vocabularies and decoded ids. Standard library only.
//
// Two readers, as Python has them:
//  - utf8_decode: strict, like bytes.decode("utf-8"). A sequence is well formed when its lead
//    byte is 0x00-0x7F, 0xC2-0xDF (2 bytes), 0xE0-0xEF (3) or 0xF0-0xF4 (4), every following
//    byte is 0x80-0xBF, and the code point is neither overlong (C0/C1 leads; E0 80..9F; F0
//    80..8F), nor a surrogate (U+D800-U+DFFF), nor above U+10FFFF. Anything else (a stray
//    continuation byte, F5-FF, a truncated sequence) stops decoding at the byte offset of the
//    sequence's lead byte.
//  - utf8_replace_invalid: bytes.decode("utf-8", errors="replace"): each maximal subpart of an
//    ill-formed sequence becomes one U+FFFD (the Unicode "best practice" CPython follows), so
//    "\xE2\x82" -> one U+FFFD, "\xF0\x80" -> two.
// utf8_append / utf8_encode write code points (the caller passes scalar values; they are not
// checked).

#include <cstddef>
#include <string>
#include <string_view>

namespace lake::core {

/// utf8_decode's result when all of the input is well formed.
inline constexpr size_t kUtf8Valid = static_cast<size_t>(-1);

/// Appends the code points of `s` to `out`. Returns kUtf8Valid, or the byte offset of the first
/// ill-formed sequence (`out` then holds the code points before it).
inline size_t utf8_decode(std::string_view s, std::u32string& out) {
  out.reserve(out.size() + s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    }
    size_t len = 0;
    char32_t cp = 0, min = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07, min = 0x10000;
    }
    bool ok = len != 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (!ok) return i;
    out.push_back(cp);
    i += len;
  }
  return kUtf8Valid;
}

/// Appends the UTF-8 bytes of one code point.
inline void utf8_append(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

/// Code points -> UTF-8.
inline std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(c, out);
  return out;
}

/// bytes.decode("utf-8", errors="replace") re-encoded: well-formed sequences are copied, each
/// maximal ill-formed subpart becomes U+FFFD (EF BF BD).
inline std::string utf8_replace_invalid(std::string_view b) {
  std::string out;
  out.reserve(b.size());
  size_t i = 0;
  while (i < b.size()) {
    const auto c = static_cast<unsigned char>(b[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // valid range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    size_t k = 1;
    while (len != 0 && k < len && i + k < b.size()) {
      const auto cc = static_cast<unsigned char>(b[i + k]);
      if (k == 1 ? (cc < lo || cc > hi) : (cc < 0x80 || cc > 0xBF)) break;
      ++k;
    }
    if (len != 0 && k == len) {
      out.append(b.substr(i, len));
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += k;
    }
  }
  return out;
}

}  // namespace lake::core
