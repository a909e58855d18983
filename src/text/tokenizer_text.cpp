// CLIP's text side before BPE: strict UTF-8, Python's str.lower() and html.unescape, the
// cleaning (whitespace, case) and the pre-tokenizer pattern (see include/lake/tokenizer.h).
#include <c10/util/Exception.h>

#include <algorithm>
#include <iterator>
#include <string_view>

#include "detail/format.h"
#include "detail/tokenizer_state.h"
#include "detail/unicode_tables.h"
#include "lake/core/utf8.h"

namespace lake::detail {
namespace tokenizer_impl {
namespace {

namespace uc = unicode;

template <size_t N>
bool in_ranges(const uc::Range (&table)[N], char32_t c) {
  const auto* it = std::upper_bound(std::begin(table), std::end(table), c,
                                    [](char32_t v, const uc::Range& r) { return v < r.first; });
  return it != std::begin(table) && c <= (it - 1)->last;
}

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

}  // namespace

// ---------------------------------------------------------------- UTF-8 ---
// The rules live in lake/core/utf8.h; here the strict decoder raises, naming `what`.

std::u32string utf8_decode(std::string_view s, const std::string& what) {
  std::u32string out;
  const size_t bad = core::utf8_decode(s, out);
  TORCH_CHECK(bad == core::kUtf8Valid,
              fmt::format("{} is not valid UTF-8 (bad byte sequence at byte offset {})", what, bad));
  return out;
}

bool is_py_space(char32_t c) { return in_ranges(uc::kReSpace, c); }

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

}  // namespace tokenizer_impl
}  // namespace lake::detail
