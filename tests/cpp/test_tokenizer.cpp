// Tests of lake::Tokenizer against OpenAI CLIP's SimpleTokenizer.
//
// Needs ../shared/clip (LAKE_SHARED_DIR): bpe_simple_vocab_16e6.txt.gz and
// tokenizer_vectors.jsonl (ids produced by the Python reference). When the
// folder is missing every test that needs it is skipped with a warning.
// Links zlib (to build the plain-text copy of the vocabulary).
#include <c10/util/Exception.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lake/tokenizer.h"
#include "support/jsonl.h"

#ifndef LAKE_SHARED_DIR
#define LAKE_SHARED_DIR "../shared"
#endif

// Everything in its own namespace: the test sources may be compiled as one unity build.
namespace tokenizer_test {
namespace {

std::string vocab_path() { return std::string(LAKE_SHARED_DIR) + "/clip/bpe_simple_vocab_16e6.txt.gz"; }
std::string vectors_path() { return std::string(LAKE_SHARED_DIR) + "/clip/tokenizer_vectors.jsonl"; }

bool have_shared() {
  return std::filesystem::exists(vocab_path()) && std::filesystem::exists(vectors_path());
}

// Skips the current test (with a visible warning) when ../shared is not there.
#define LAKE_TOKENIZER_REQUIRE_SHARED()                                                                   \
  do {                                                                                          \
    if (!have_shared()) {                                                                       \
      WARN("SKIPPED: CLIP vocabulary / test vectors not found under LAKE_SHARED_DIR='"          \
           << LAKE_SHARED_DIR << "'");                                                          \
      return;                                                                                   \
    }                                                                                           \
  } while (0)

const lake::Tokenizer& clip_tokenizer() {
  static const lake::Tokenizer tok = lake::Tokenizer::from_file(vocab_path());
  return tok;
}

const std::vector<lake::test::JsonObject>& vectors() {
  static const std::vector<lake::test::JsonObject> rows = lake::test::read_jsonl(vectors_path());
  return rows;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string gunzip(const std::string& gz) {
  z_stream zs{};
  REQUIRE(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  zs.avail_in = static_cast<uInt>(gz.size());
  std::string out;
  char buf[1 << 15];
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - zs.avail_out);
  }
  inflateEnd(&zs);
  REQUIRE(rc == Z_STREAM_END);
  return out;
}

std::vector<int64_t> row_of(const at::Tensor& t, int64_t r) {
  const at::Tensor row = t[r].contiguous();
  return std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST_CASE("tokenizer: special tokens and vocabulary size", "[tokenizer]") {
  LAKE_TOKENIZER_REQUIRE_SHARED();
  const auto& tok = clip_tokenizer();
  CHECK(tok.sot_token() == 49406);
  CHECK(tok.eot_token() == 49407);
  CHECK(tok.vocab_size() == 49408);
  CHECK(tok.encode("<|startoftext|>a<|endoftext|>") == std::vector<int64_t>{49406, 320, 49407});
  CHECK(tok.decode({49406, 320, 49407}) == "<|startoftext|>a <|endoftext|>");
}

TEST_CASE("tokenizer: reference vectors (encode)", "[tokenizer]") {
  LAKE_TOKENIZER_REQUIRE_SHARED();
  const auto& tok = clip_tokenizer();
  REQUIRE(vectors().size() == 595);
  size_t matched = 0;
  for (const auto& row : vectors()) {
    const std::string& text = row.at("text").str;
    INFO("text: '" << text << "'");
    const auto ids = tok.encode(text);
    CHECK(ids == row.at("bpe_ids").ints);
    matched += ids == row.at("bpe_ids").ints;
  }
  CHECK(matched == vectors().size());
}

TEST_CASE("tokenizer: reference vectors (tokenize, context 77)", "[tokenizer]") {
  LAKE_TOKENIZER_REQUIRE_SHARED();
  const auto& tok = clip_tokenizer();
  std::vector<std::string> texts;
  for (const auto& row : vectors()) texts.push_back(row.at("text").str);
  const at::Tensor t = tok.tokenize(texts, 77);
  REQUIRE(t.dim() == 2);
  REQUIRE(t.size(0) == static_cast<int64_t>(texts.size()));
  REQUIRE(t.size(1) == 77);
  REQUIRE(t.scalar_type() == at::kLong);
  REQUIRE(t.device().is_cpu());
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << i << ": '" << texts[i] << "'");
    CHECK(row_of(t, static_cast<int64_t>(i)) == vectors()[i].at("context77").ints);
  }
}

TEST_CASE("tokenizer: decode(encode(x)) round trip", "[tokenizer]") {
  LAKE_TOKENIZER_REQUIRE_SHARED();
  const auto& tok = clip_tokenizer();
  // The reference decodes every end of word to one space.
  for (const std::string text : {"a photo of a cat", "the quick brown fox jumps over the lazy dog",
                                 "industrial inspection of a metal nut", "x", "supercalifragilisticexpialidocious"}) {
    INFO(text);
    CHECK(tok.decode(tok.encode(text)) == text + " ");
  }
  CHECK(tok.encode("a photo of a cat.") == std::vector<int64_t>{320, 1125, 539, 320, 2368, 269});
  CHECK(tok.decode(tok.encode("a photo of a cat.")) == "a photo of a cat . ");
  CHECK(tok.decode({}).empty());
  // Unicode survives the byte-level round trip.
  CHECK(tok.decode(tok.encode("\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac")) == "\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac ");
}

TEST_CASE("tokenizer: cleaning follows the Python reference", "[tokenizer]") {
  using lake::Tokenizer;
  // Expected values computed with html.unescape twice, whitespace collapse and str.lower().
  CHECK(Tokenizer::clean_text("&amp;amp;") == "&");
  CHECK(Tokenizer::clean_text("&amp;amp;amp;") == "&amp;");
  CHECK(Tokenizer::clean_text("&notit;") == "\xc2\xacit;");
  CHECK(Tokenizer::clean_text("&#0;x") == "\xef\xbf\xbdx");
  CHECK(Tokenizer::clean_text("&#x80;") == "\xe2\x82\xac");
  CHECK(Tokenizer::clean_text("&#xD800;") == "\xef\xbf\xbd");
  CHECK(Tokenizer::clean_text("&#1114112;") == "\xef\xbf\xbd");
  CHECK(Tokenizer::clean_text("a&#1;b") == "ab");
  CHECK(Tokenizer::clean_text("&#X41;&#65&#x") == "aa&#x");
  CHECK(Tokenizer::clean_text("&AMP&ampx&") == "&&x&");
  CHECK(Tokenizer::clean_text("&fjlig;") == "fj");
  CHECK(Tokenizer::clean_text("&nbsp;x") == "x");
  CHECK(Tokenizer::clean_text(" \xe3\x80\x80 a\xc2\x85" "b\x1c ") == "a b");
  // Final sigma and one-to-many lowercase.
  CHECK(Tokenizer::clean_text("\xce\x91\xce\xa3 \xce\x91\xce\xa3\xce\x91 \xce\xa3") ==
        "\xce\xb1\xcf\x82 \xce\xb1\xcf\x83\xce\xb1 \xcf\x83");
  CHECK(Tokenizer::clean_text("\xc4\xb0STANBUL") == "i\xcc\x87stanbul");
}

TEST_CASE("tokenizer: split pattern", "[tokenizer]") {
  using V = std::vector<std::string>;
  // U+017F (long s) matches 's' under IGNORECASE, as in the regex module.
  CHECK(lake::Tokenizer::split_text("it's 12 cats' \xc5\xbf'\xc5\xbf don'tx") ==
        V{"it", "'s", "1", "2", "cats", "'", "\xc5\xbf", "'\xc5\xbf", "don", "'t", "x"});
  CHECK(lake::Tokenizer::split_text("hello<|endoftext|>x<|startoftext|>") ==
        V{"hello", "<|endoftext|>", "x", "<|startoftext|>"});
  CHECK(lake::Tokenizer::split_text("\xc2\xbd\xe2\x85\xa0x") == V{"\xc2\xbd", "\xe2\x85\xa0", "x"});
  CHECK(lake::Tokenizer::split_text(std::string("a\0d\0", 4)) == V{"a", std::string(1, '\0'), "d", std::string(1, '\0')});
}

TEST_CASE("tokenizer: truncation", "[tokenizer]") {
  LAKE_TOKENIZER_REQUIRE_SHARED();
  const auto& tok = clip_tokenizer();
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "cat ";
  const auto ids = tok.encode(long_text);
  REQUIRE(ids.size() == 100);

  const at::Tensor t = tok.tokenize({"a cat", long_text}, 77, true);
  const auto row = row_of(t, 1);
  CHECK(row.front() == tok.sot_token());
  CHECK(row.back() == tok.eot_token());
  CHECK(std::vector<int64_t>(row.begin() + 1, row.end() - 1) == std::vector<int64_t>(ids.begin(), ids.begin() + 75));

  const std::string msg = error_of([&] { tok.tokenize({"a cat", long_text}, 77, false); });
  CHECK_THAT(msg, Catch::Contains("text 1") && Catch::Contains("102"));
  CHECK_NOTHROW(tok.tokenize({long_text}, 102, false));
  CHECK(row_of(tok.tokenize({"a cat"}, 2), 0) == std::vector<int64_t>{49406, 49407});
  CHECK_THROWS_AS(tok.tokenize({"a cat"}, 1), c10::Error);
  CHECK(tok.tokenize(std::vector<std::string>{}, 77).sizes() == at::IntArrayRef({0, 77}));
  CHECK(tok.tokenize({"a cat"}, 5).sizes() == at::IntArrayRef({1, 5}));
}

TEST_CASE("tokenizer: loading errors", "[tokenizer]") {
  const std::string missing = "/nonexistent/lake/bpe_vocab.txt.gz";
  CHECK_THAT(error_of([&] { lake::Tokenizer::from_file(missing); }),
             Catch::Contains("'" + missing + "'") && Catch::Contains("does not exist"));
  CHECK_THAT(error_of([] { lake::Tokenizer::from_bytes("hello world\n", "mem.txt"); }),
             Catch::Contains("mem.txt") && Catch::Contains("not a CLIP merges file"));
  CHECK_THAT(error_of([] { lake::Tokenizer::from_bytes(std::string("\x89PNG\r\n\x1a\n\xff\xfe", 10), "img"); }),
             Catch::Contains("not valid UTF-8"));
  const lake::Tokenizer empty;
  CHECK_FALSE(empty.is_loaded());
  CHECK_THROWS_AS(empty.encode("a"), c10::Error);

  LAKE_TOKENIZER_REQUIRE_SHARED();
  const std::string gz = read_file(vocab_path());
  CHECK_THAT(error_of([&] { lake::Tokenizer::from_bytes(gz.substr(0, gz.size() / 2), "half.gz"); }),
             Catch::Contains("half.gz") && Catch::Contains("truncated"));
  std::string corrupt = gz;
  for (size_t i = 100; i < 200; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5A);
  CHECK_THAT(error_of([&] { lake::Tokenizer::from_bytes(corrupt, "bad.gz"); }), Catch::Contains("bad.gz"));
}

TEST_CASE("tokenizer: from_bytes, gzipped and plain", "[tokenizer]") {
  LAKE_TOKENIZER_REQUIRE_SHARED();
  const std::string gz = read_file(vocab_path());
  const auto from_gz = lake::Tokenizer::from_bytes(gz, "embedded.gz");
  const auto from_plain = lake::Tokenizer::from_bytes(gunzip(gz), "embedded.txt");
  CHECK(from_plain.vocab_size() == 49408);
  for (const auto& row : vectors()) {
    const std::string& text = row.at("text").str;
    INFO(text);
    CHECK(from_plain.encode(text) == row.at("bpe_ids").ints);
    CHECK(from_gz.encode(text) == row.at("bpe_ids").ints);
  }
}

TEST_CASE("tokenizer: decode errors and replacement", "[tokenizer]") {
  LAKE_TOKENIZER_REQUIRE_SHARED();
  const auto& tok = clip_tokenizer();
  CHECK_THAT(error_of([&] { tok.decode({320, 49408}); }), Catch::Contains("49408") && Catch::Contains("position 1"));
  CHECK_THROWS_AS(tok.decode({-1}), c10::Error);
  CHECK_THROWS_AS(tok.encode(std::string("bad \xff utf8")), c10::Error);
  // Ids 127 and 102 are the bytes 0xC3 and 0xA9 ("\xc3\xa9" is U+00E9); an incomplete
  // sequence decodes to U+FFFD, like errors="replace".
  CHECK(tok.decode({127, 102}) == "\xc3\xa9");
  CHECK(tok.decode({127}) == "\xef\xbf\xbd");
  CHECK(tok.decode({127, 320}) == "\xef\xbf\xbd" "a ");
}

TEST_CASE("tokenizer: concurrent encode", "[tokenizer]") {
  LAKE_TOKENIZER_REQUIRE_SHARED();
  const auto tok = lake::Tokenizer::from_file(vocab_path());  // cold cache
  std::vector<std::string> texts;
  for (const auto& row : vectors()) texts.push_back(row.at("text").str);
  std::vector<std::vector<std::vector<int64_t>>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (size_t rep = 0; rep < 3; ++rep)
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + t * 97) % texts.size();  // different orders per thread
          auto ids = tok.encode(texts[k]);
          if (rep == 0) {
            if (results[t].empty()) results[t].resize(texts.size());
            results[t][k] = std::move(ids);
          }
        }
    });
  }
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < results.size(); ++t)
    for (size_t i = 0; i < texts.size(); ++i) {
      INFO("thread " << t << ", text " << i);
      CHECK(results[t][i] == vectors()[i].at("bpe_ids").ints);
    }
}

}  // namespace tokenizer_test
