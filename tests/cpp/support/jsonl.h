// A tiny JSON reader for test-vector files (one JSON object per line).
//
// Supports exactly what the vectors use: a flat object whose values are
// strings (with all JSON escapes, \uXXXX and surrogate pairs), integers, or
// arrays of integers. Anything else throws std::runtime_error.
//
//   auto obj = lake::test::parse_json_object(line);
//   const std::string& text = obj.at("text").str;
//   const std::vector<int64_t>& ids = obj.at("bpe_ids").ints;
#pragma once

#include "lake/core/utf8.h"

#include <cstdint>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace lake::test {

struct JsonValue {
  enum class Kind { kString, kInt, kIntArray };
  Kind kind = Kind::kString;
  std::string str;            // kString: UTF-8
  std::vector<int64_t> ints;  // kInt: one element; kIntArray: the elements
};

using JsonObject = std::map<std::string, JsonValue>;

namespace detail {

class JsonReader {
 public:
  explicit JsonReader(const std::string& s) : s_(s) {}

  JsonObject object() {
    JsonObject obj;
    expect('{');
    if (peek() == '}') {
      ++pos_;
      return end(obj);
    }
    while (true) {
      std::string key = string();
      expect(':');
      obj[key] = value();
      const char c = next();
      if (c == '}') return end(obj);
      if (c != ',') fail("expected ',' or '}'");
    }
  }

 private:
  JsonObject end(JsonObject& obj) {
    skip_ws();
    if (pos_ != s_.size()) fail("trailing characters");
    return std::move(obj);
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("jsonl: " + what + " at offset " + std::to_string(pos_));
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r' || s_[pos_] == '\n')) ++pos_;
  }
  char peek() {
    skip_ws();
    if (pos_ >= s_.size()) fail("unexpected end");
    return s_[pos_];
  }
  char next() {
    const char c = peek();
    ++pos_;
    return c;
  }
  void expect(char c) {
    if (next() != c) fail(std::string("expected '") + c + "'");
  }

  JsonValue value() {
    JsonValue v;
    const char c = peek();
    if (c == '"') {
      v.str = string();
    } else if (c == '[') {
      v.kind = JsonValue::Kind::kIntArray;
      ++pos_;
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      while (true) {
        v.ints.push_back(integer());
        const char d = next();
        if (d == ']') break;
        if (d != ',') fail("expected ',' or ']'");
      }
    } else {
      v.kind = JsonValue::Kind::kInt;
      v.ints.push_back(integer());
    }
    return v;
  }

  int64_t integer() {
    skip_ws();
    const size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    if (pos_ == start || (pos_ == start + 1 && s_[start] == '-')) fail("expected an integer");
    return std::stoll(s_.substr(start, pos_ - start));
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("short \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else fail("bad hex digit in \\u escape");
    }
    return v;
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out.push_back(c);  // raw UTF-8 bytes pass through
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 6 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') fail("unpaired high surrogate");
            pos_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired low surrogate");
          }
          lake::core::utf8_append(cp, out);
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace detail

// Parses one line holding a JSON object; throws std::runtime_error on malformed input.
inline JsonObject parse_json_object(const std::string& line) { return detail::JsonReader(line).object(); }

// Reads every non-empty line of a JSON-lines file; throws if it cannot be opened or a line is malformed.
inline std::vector<JsonObject> read_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("jsonl: cannot open '" + path + "'");
  std::vector<JsonObject> rows;
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      rows.push_back(parse_json_object(line));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(path + ":" + std::to_string(number) + ": " + e.what());
    }
  }
  return rows;
}

}  // namespace lake::test
