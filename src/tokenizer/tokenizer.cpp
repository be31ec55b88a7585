// GPT-2 BPE encode/decode (see tokenizer.h).
#include "tokenizer/tokenizer.h"

#include <string>
#include <unordered_map>

#include "common/error.h"
#include "tokenizer/bpe_merge.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/utf8.h"

namespace sgpt {
namespace {

constexpr size_t kCacheMaxPiece = 256;      // longer pieces are not cached
constexpr size_t kCacheMaxEntries = 1 << 18;  // cleared when it grows past this
constexpr size_t kHeapThreshold = 64;       // pieces this long or longer use the O(n log n) merge

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Per-thread cache piece -> ids, valid for one vocabulary at a time.
struct PieceCache {
  const void* owner = nullptr;
  std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>> map;
};

}  // namespace

Tokenizer Tokenizer::load(const std::string& dir) {
  Tokenizer t;
  t.vocab_ = std::make_shared<const Vocab>(load_vocab(dir));
  t.pre_ = std::make_shared<const Pretokenizer>();
  return t;
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int>& out) const {
  thread_local PieceCache cache;
  const bool cacheable = piece.size() <= kCacheMaxPiece;
  if (cacheable) {
    if (cache.owner != vocab_.get()) {
      cache.map.clear();
      cache.owner = vocab_.get();
    }
    if (auto it = cache.map.find(piece); it != cache.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> ids(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) ids[i] = vocab_->byte_token[uint8_t(piece[i])];
  if (ids.size() < kHeapThreshold) bpe_merge_small(vocab_->merges, ids);
  else bpe_merge_heap(vocab_->merges, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    if (cache.map.size() >= kCacheMaxEntries) cache.map.clear();
    cache.map.emplace(std::string(piece), std::move(ids));
  }
}

void Tokenizer::encode_ordinary(std::string_view text, std::vector<int>& out) const {
  pre_->split(text, [&](std::string_view piece) { encode_piece(piece, out); });
}

void Tokenizer::encode_append(std::string_view text, std::vector<int>& out,
                              bool allow_special) const {
  if (const size_t good = utf8_valid_prefix(text); good != text.size())
    throw UserError("text to encode is not valid UTF-8 (first bad byte at offset " +
                    std::to_string(good) + ")");
  if (!allow_special) {
    encode_ordinary(text, out);
    return;
  }
  size_t pos = 0;
  while (true) {
    const size_t hit = text.find(kEndOfTextString, pos);
    encode_ordinary(text.substr(pos, hit == std::string_view::npos ? std::string_view::npos : hit - pos),
                    out);
    if (hit == std::string_view::npos) break;
    out.push_back(kEndOfText);
    pos = hit + kEndOfTextString.size();
  }
}

std::vector<int> Tokenizer::encode(std::string_view text, bool allow_special) const {
  std::vector<int> out;
  out.reserve(text.size() / 3 + 1);
  encode_append(text, out, allow_special);
  return out;
}

std::string Tokenizer::decode(std::span<const int> ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= kGpt2VocabSize)
      throw UserError("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                      " is outside the GPT-2 vocabulary (0.." + std::to_string(kGpt2VocabSize - 1) + ")");
    out += vocab_->token_bytes[size_t(ids[i])];
  }
  return out;
}

}  // namespace sgpt
