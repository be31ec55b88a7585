// GPT-2 byte-level BPE tokenizer: encode UTF-8 text to token ids and decode ids back to bytes.
//
//   encode(text)  1. with allow_special, split text at each "<|endoftext|>" and emit id 50256
//                    there; otherwise that string is ordinary text (<, |, endoftext, |, >).
//                 2. pre-tokenize each segment with GPT-2's regex (pretokenize.h);
//                 3. start each piece as its UTF-8 bytes, one byte token each, and apply the
//                    merge rules of vocab.bpe (bpe_merge.h); emit the resulting ids.
//   decode(ids)   concatenation of every token's bytes: exact for any id sequence, so
//                 decode(encode(s)) == s for every valid UTF-8 string s.
// Text must be valid UTF-8 (encode throws UserError otherwise; repair with utf8_repair()). Pieces
// of up to 256 bytes are cached per thread, which is what makes encoding fast on real text.
// A Tokenizer is immutable after load and safe to use from many threads at once.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace sgpt {

class Pretokenizer;

class Tokenizer {
 public:
  // Loads and verifies the vocabulary in dir (see vocab.h); throws UserError naming the file.
  static Tokenizer load(const std::string& dir);

  std::vector<int> encode(std::string_view text, bool allow_special = false) const;
  // Appends the ids of text to out.
  void encode_append(std::string_view text, std::vector<int>& out, bool allow_special = false) const;
  // Throws UserError naming the position of an id outside [0, vocab_size()).
  std::string decode(std::span<const int> ids) const;
  std::string_view token_bytes(int id) const { return vocab_->token_bytes[size_t(id)]; }

  int vocab_size() const { return kGpt2VocabSize; }
  int eot() const { return kEndOfText; }
  const std::string& dir() const { return vocab_->dir; }
  // sha256 of encoder.json and of vocab.bpe, for manifests.
  const std::string& encoder_sha256() const { return vocab_->encoder_sha256; }
  const std::string& vocab_sha256() const { return vocab_->vocab_sha256; }

 private:
  void encode_ordinary(std::string_view text, std::vector<int>& out) const;
  void encode_piece(std::string_view piece, std::vector<int>& out) const;
  std::shared_ptr<const Vocab> vocab_;
  std::shared_ptr<const Pretokenizer> pre_;
};

}  // namespace sgpt
