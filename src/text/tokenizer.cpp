// CLIP's byte-level BPE tokenizer: byte-pair encoding, decoding and Tokenizer's methods;
// see include/lake/tokenizer.h for the pipeline. The text cleaning and the pre-tokenizer
// pattern are in tokenizer_text.cpp, reading the merges file in tokenizer_vocab.cpp.
#include "lake/tokenizer.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <queue>
#include <string_view>
#include <utility>

#include "detail/format.h"
#include "detail/tokenizer_state.h"

namespace lake::detail {

// BPE ids of one piece (its raw UTF-8 bytes).
std::vector<int64_t> TokenizerState::bpe(const std::string& piece) const {
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

std::vector<int64_t> TokenizerState::encode(const std::string& text, const std::string& what) const {
  using namespace tokenizer_impl;
  const std::u32string cleaned = clean(utf8_decode(text, what));
  std::vector<int64_t> ids;
  for (const auto& [start, len] : split_pieces(cleaned)) {
    const auto piece_ids = bpe(utf8_encode(std::u32string_view(cleaned).substr(start, len)));
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }
  return ids;
}

}  // namespace lake::detail

namespace lake {

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
