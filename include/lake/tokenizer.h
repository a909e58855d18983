// CLIP's byte-level BPE tokenizer (OpenAI CLIP `SimpleTokenizer`), in C++.
//
// Text goes through the same pipeline as the reference implementation:
//
//   1. (reference only) ftfy.fix_text -- NOT implemented here. Input is assumed
//      to be valid UTF-8 text that ftfy would leave unchanged (plain prompts
//      are). Where ftfy would alter text (mojibake, curly quotes, ligatures,
//      full-width forms, non-NFC text, control characters, and its own HTML
//      unescaping of texts without '<', which matters for references nested
//      more than twice like "&amp;amp;amp;") ids can differ from Python's.
//   2. Python's html.unescape, applied twice (numeric and HTML5 named
//      references, with the standard's rules for invalid references and for
//      names without ';').
//   3. Whitespace collapse: re.sub(r"\s+", " ", text).strip() with Python
//      re's Unicode \s (== str.split(), as open_clip does; OpenAI's original
//      uses the regex module's \s, which differs only on U+001C..U+001F).
//   4. Python's str.lower() (full Unicode mapping, including one-to-many
//      mappings and the final-sigma rule).
//   5. Split with CLIP's pattern
//        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|
//        [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      (regex module, IGNORECASE), then each piece's UTF-8 bytes are mapped to
//      CLIP's byte alphabet and merged with the BPE ranks (`</w>` marks the
//      end of a word). "<|startoftext|>" / "<|endoftext|>" in the text become
//      the special ids (OpenAI's names; open_clip's copy names them
//      "<start_of_text>" / "<end_of_text>", the ids are the same).
//
// Unicode tables are generated from Python by tools/gen_unicode_tables.py.
// All methods are const and thread-safe; copies share the (immutable)
// vocabulary and a mutex-guarded cache of BPE results.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lake {

namespace detail {
struct TokenizerState;
}  // namespace detail

class Tokenizer {
 public:
  // An empty tokenizer; every method except is_loaded() raises until it is
  // assigned one made by from_file / from_bytes.
  Tokenizer() = default;

  // Reads CLIP's merges file (bpe_simple_vocab_16e6.txt.gz): gzip-compressed
  // or plain text, detected by the gzip magic bytes. The first line is a
  // header; the next 48894 lines are the merges ("a b", in rank order); later
  // lines are ignored. Raises if the file is missing or unreadable, the gzip
  // stream is corrupt or truncated, or the content is not a merges file.
  static Tokenizer from_file(const std::string& path);

  // Same as from_file, from the file's bytes already in memory (gzipped or
  // plain), e.g. the copy embedded in a model archive. `source` names the
  // bytes in error messages.
  static Tokenizer from_bytes(const std::string& bytes, const std::string& source = "<memory>");

  // True when a vocabulary is loaded (false only for a default-constructed Tokenizer).
  bool is_loaded() const { return state_ != nullptr; }

  // BPE ids of `text` (UTF-8), without start/end tokens. Raises if `text` is
  // not valid UTF-8.
  std::vector<int64_t> encode(const std::string& text) const;

  // Text of `ids` as the reference decodes it: the byte-level tokens are
  // joined, decoded as UTF-8 with invalid sequences replaced by U+FFFD, and
  // every "</w>" becomes a space (so words come back followed by one space).
  // The special ids decode to "<|startoftext|>" / "<|endoftext|>". Raises if
  // an id is outside [0, vocab_size()).
  std::string decode(const std::vector<int64_t>& ids) const;

  // (T, context_length) int64 CPU tensor for T = texts.size(): row i is
  // [sot] + encode(texts[i]) + [eot], zero padded. A row that does not fit is
  // cut to context_length with eot in the last slot when truncate is true (as
  // open_clip / OpenAI CLIP truncate=True); when truncate is false it raises,
  // naming the text index and its token count. Requires context_length >= 2.
  at::Tensor tokenize(const std::vector<std::string>& texts, int64_t context_length = 77,
                      bool truncate = true) const;

  // Id of "<|startoftext|>" (49406 for CLIP's vocabulary).
  int64_t sot_token() const;
  // Id of "<|endoftext|>" (49407 for CLIP's vocabulary).
  int64_t eot_token() const;
  // Number of ids (49408 for CLIP's vocabulary): 256 byte tokens, their 256
  // end-of-word forms, 48894 merges and the two special tokens.
  int64_t vocab_size() const;

  // The text after the reference's cleaning steps 2-4 (html.unescape twice,
  // whitespace collapse, lowercase), as UTF-8; exposed for testing.
  static std::string clean_text(const std::string& text);

  // The pieces the split pattern cuts clean text into, as UTF-8 (no BPE);
  // `text` is used as given (not cleaned). Exposed for testing.
  static std::vector<std::string> split_text(const std::string& text);

 private:
  explicit Tokenizer(std::shared_ptr<const detail::TokenizerState> state)
      : state_(std::move(state)) {}
  const detail::TokenizerState& state() const;

  std::shared_ptr<const detail::TokenizerState> state_;
};

}  // namespace lake
