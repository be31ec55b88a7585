// `sophiagpt prepare`: text corpora -> token files for training.
//
// Every document (data/sources.h) becomes <|endoftext|> (50256) followed by its GPT-2 tokens.
// Document number d (0-based, in input order) goes to the validation split when
//   uniform01_double(philox(seed, d mod 2^32, d / 2^32, 0xFFFFFFFD, kDataSampler)) < val_fraction
// so the split is fixed by the seed and independent of thread count; when that picks no document
// at all (a small corpus) and val_fraction > 0, the last document is the validation split. A single
// document cannot be split (error). Tokenization runs on all
// cores (or `threads`); output order is document order either way.
//
// Output (in output_dir)
//   llmc     val_000000.bin, val_000001.bin, ..., train_000000.bin, ...: llm.c shards
//            (data/token_file.h) of at most shard_tokens tokens each; a document may span shards.
//   nanogpt  train.bin and val.bin: headerless uint16, as nanoGPT / the official Sophia trainer read.
//   manifest.json  {format, inputs [{path, documents, empty_documents, bytes, files, skipped}],
//            documents {train, val}, tokens {train, val}, invalid_utf8_replacements, seed,
//            val_fraction, shard_tokens, text_field, tokenizer {name, encoder_json_sha256,
//            vocab_bpe_sha256, vocab_size, eot}, shards [{file, split, tokens}]}
// Nothing is left half-done: files are written under temporary names (".tmp-<pid>-NAME") and
// renamed only after every input was read without error; the manifest is written last. An output
// directory that already holds prepared files is refused unless `overwrite`, which then removes
// the old files that the new run does not replace. The output directory is locked (DirLock,
// common/paths.h) while prepare runs: a second prepare into it is refused naming the first one's
// pid; the lock file is removed at the end.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/token_file.h"

namespace sgpt {

class Tokenizer;

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string output_dir;
  TokenFormat format = TokenFormat::kLlmc;
  uint64_t shard_tokens = 100'000'000;  // llmc only
  double val_fraction = 0.01;
  uint64_t seed = 1337;
  std::string text_field = "text";
  bool overwrite = false;
  bool allow_binary = false;  // tokenize .txt inputs that do not look like text (data/sources.h)
  int threads = 0;  // 0: every core
  std::function<void(const std::string&)> progress;  // progress lines (optional)
};

// Runs prepare and returns the manifest it wrote. Throws UserError for bad inputs/options.
nlohmann::json run_prepare(const PrepareOptions& opt, const Tokenizer& tok);

// Files in dir that prepare writes (shards, train.bin/val.bin, manifest.json).
std::vector<std::string> existing_prepared_files(const std::string& dir);

}  // namespace sgpt
