// The core's text helpers, lake/core/utf8.h and lake/core/hash.h, with only include/, the
// standard library and fmt (Debian's libfmt-dev 9 here; liblake uses LibTorch's fmt 12).
//
// Golden values come from outside the code under test:
//  - UTF-8: CPython 3.11's bytes.decode("utf-8") (the code points, or the start offset of
//    the UnicodeDecodeError) and bytes.decode("utf-8", errors="replace"), in a one-off run on
//    exactly these byte strings.
//  - The hash: digests printed by liblake's Hasher before it moved into the core (src/util/hash.cpp
//    at commit 02bfdbb), which an independent Python re-implementation of the rule in
//    lake/core/hash.h reproduced digit for digit. They are also the checksums every .lake
//    file carries: changing one breaks the files already written.
#include <lake/core/hash.h>
#include <lake/core/utf8.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace core = lake::core;

namespace {

struct Utf8Case {
  std::string bytes;
  size_t bad;                        // start offset of CPython's UnicodeDecodeError, or kUtf8Valid
  std::u32string decoded;            // the code points when valid (before `bad` otherwise)
  std::u32string replaced;           // bytes.decode("utf-8", errors="replace")
};

const size_t kOk = core::kUtf8Valid;
const char32_t R = 0xFFFD;

const std::vector<Utf8Case> kUtf8Cases = {
    {"", kOk, U"", U""},
    {"abc", kOk, U"abc", U"abc"},
    {"\xC3\xA9", kOk, {0xE9}, {0xE9}},
    {"\xE2\x82\xAC", kOk, {0x20AC}, {0x20AC}},
    {"\xF0\x9F\x98\x80", kOk, {0x1F600}, {0x1F600}},
    {"\xF4\x8F\xBF\xBF", kOk, {0x10FFFF}, {0x10FFFF}},  // the last code point
    {"\xED\x9F\xBF", kOk, {0xD7FF}, {0xD7FF}},          // just below the surrogates
    {"\xEE\x80\x80", kOk, {0xE000}, {0xE000}},          // just above them
    // overlong forms
    {"a\xC0\xAF" "b", 1, U"a", {U'a', R, R, U'b'}},
    {"\xC1\xBF", 0, U"", {R, R}},
    {"\xE0\x80\xAF", 0, U"", {R, R, R}},
    {"\xE0\x9F\xBF", 0, U"", {R, R, R}},
    {"\xF0\x8F\xBF\xBF", 0, U"", {R, R, R, R}},
    // surrogates, above U+10FFFF, bytes that never lead
    {"\xED\xA0\x80", 0, U"", {R, R, R}},
    {"\xED\xBF\xBF", 0, U"", {R, R, R}},
    {"\xF4\x90\x80\x80", 0, U"", {R, R, R, R}},
    {"\xF5\x80\x80\x80", 0, U"", {R, R, R, R}},
    {"\xFF", 0, U"", {R}},
    {"\x80", 0, U"", {R}},
    // truncated sequences: one U+FFFD for the maximal subpart
    {"ab\xE2\x82", 2, U"ab", {U'a', U'b', R}},
    {"\xF0\x9F\x98", 0, U"", {R}},
    {"\xC3", 0, U"", {R}},
    {"x\xE2(\xA1", 1, U"x", {U'x', R, U'(', R}},  // a lead byte cut short by an ASCII byte
};

}  // namespace

TEST_CASE("utf8_decode: code points and the offset of the first ill-formed sequence, as CPython", "[core][utf8]") {
  for (const auto& c : kUtf8Cases) {
    CAPTURE(c.bytes);
    std::u32string out;
    CHECK(core::utf8_decode(c.bytes, out) == c.bad);
    CHECK(out == c.decoded);
  }
}

TEST_CASE("utf8_decode appends to what the output already holds", "[core][utf8]") {
  std::u32string out = U"x";
  CHECK(core::utf8_decode("\xC3\xA9", out) == core::kUtf8Valid);
  CHECK(out == std::u32string{U'x', 0xE9});
}

TEST_CASE("utf8_replace_invalid: bytes.decode(errors='replace'), re-encoded", "[core][utf8]") {
  for (const auto& c : kUtf8Cases) {
    CAPTURE(c.bytes);
    CHECK(core::utf8_replace_invalid(c.bytes) == core::utf8_encode(c.replaced));
  }
}

TEST_CASE("utf8_encode: the byte sequences CPython writes, and decode(encode(s)) == s", "[core][utf8]") {
  CHECK(core::utf8_encode(U"") == "");
  CHECK(core::utf8_encode(std::u32string{0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000, 0x10FFFF}) ==
        "\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF\xF0\x90\x80\x80\xF4\x8F\xBF\xBF");
  for (const auto& c : kUtf8Cases) {
    if (c.bad != core::kUtf8Valid) continue;
    CHECK(core::utf8_encode(c.decoded) == c.bytes);
  }
}

TEST_CASE("Hasher: the digests of the rule .lake checksums and fingerprints use", "[core][hash]") {
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  // bytes(): lengths around the 8-byte words (0, tail only, one word, word + tail, ...).
  const std::vector<std::pair<size_t, const char*>> prefixes = {
      {0, "14650fb0739d0383"},  {1, "44bd7fd473cd8655"},  {7, "c95cb7fb5a918bf7"},
      {8, "eb3359656a874b30"},  {9, "2f8c425403e50ba1"},  {15, "be596cab3cfccd05"},
      {16, "d9f54ba40f0d469e"}, {17, "69167fc5938f9768"}, {43, "3989b043115d5253"}};
  for (const auto& [n, digest] : prefixes) {
    CAPTURE(n);
    core::Hasher h;
    h.bytes(fox.data(), n);
    CHECK(h.hex() == digest);
  }
  core::Hasher seed;
  CHECK(seed.value() == 1469598103934665603ull);
  CHECK(seed.hex() == "14650fb0739d0383");

  core::Hasher s;
  s.str("visual.conv1.weight");
  CHECK(s.hex() == "f8bef456c8d0600a");

  core::Hasher w;
  w.word(0);
  w.word(1);
  w.word(0xffffffffffffffffull);
  CHECK(w.hex() == "f587c33e63c7600b");

  // str() puts the length first: ("", "a") is not ("a", "").
  core::Hasher s2, s3;
  s2.str("");
  s2.str("a");
  s3.str("a");
  s3.str("");
  CHECK(s2.hex() == "f2011bdfb8379a13");
  CHECK(s3.hex() != s2.hex());

  core::Hasher undefined_tensor;  // what detail::Hasher::tensor() writes for an undefined tensor
  undefined_tensor.word(0xdeadbeefull);
  CHECK(undefined_tensor.hex() == "8a97ff9132ea79f3");
}

TEST_CASE("Hasher::hex: 16 digits, zero-padded", "[core][hash]") {
  core::Hasher h;
  h.word(50030);  // a digest below 2^44
  CHECK(h.value() == 0x00000aa22bf47f71ull);
  CHECK(h.hex() == "00000aa22bf47f71");
}
