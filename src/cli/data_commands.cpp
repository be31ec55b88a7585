// `sophiagpt tokenize` and `sophiagpt prepare` (registered by add_data_commands).
//
//   tokenize [TEXT] [--file PATH] [--allow-special] [--json] [--vocab DIR]
//       Encodes TEXT (or the file, or standard input) and prints the ids, space-separated.
//   tokenize --decode [IDS...] [--file PATH] [--vocab DIR]
//       Decodes ids (arguments, or whitespace/comma-separated from the file or standard input;
//       a JSON array works) and writes the exact bytes, with no newline added.
//   prepare --input PATH... --output-dir DIR [--format llmc|nanogpt] [--shard-tokens N]
//       [--val-fraction F] [--seed N] [--text-field NAME] [--threads N] [--overwrite] [--allow-binary]
//       [--vocab DIR]
//       See src/data/prepare.h.
#include <algorithm>
#include <cctype>
#include <climits>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/seed_arg.h"
#include "common/error.h"
#include "common/paths.h"
#include "data/prepare.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace sgpt {
namespace {

std::string read_stream(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string read_input_file(const std::string& path) {
  if (path == "-") return read_stream(std::cin);
  check_input_file(path, "--file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw UserError(path + ": cannot open: " + std::strerror(errno));
  std::string s;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  const bool bad = std::ferror(f);
  std::fclose(f);
  if (bad) throw UserError(path + ": read error");
  return s;
}

std::vector<int> parse_ids(const std::string& text, const std::string& where) {
  std::vector<int> ids;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ',' || c == '[' || c == ']' || std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    size_t j = i;
    if (text[j] == '-') ++j;
    while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
    if (j == i || (j == i + 1 && text[i] == '-') || j - i > 10)
      throw UserError(where + ": '" + text.substr(i, std::min<size_t>(20, text.size() - i)) +
                      "' is not a token id");
    const long long v = std::stoll(text.substr(i, j - i));
    if (v < INT_MIN || v > INT_MAX) throw UserError(where + ": " + text.substr(i, j - i) + " is not a token id");
    ids.push_back(int(v));
    i = j;
  }
  return ids;
}

struct TokenizeArgs {
  std::vector<std::string> text;
  std::string file, vocab;
  bool decode = false, allow_special = false, json = false;
};

void run_tokenize(const TokenizeArgs& a) {
  const Tokenizer tok = Tokenizer::load(find_vocab_dir(a.vocab));
  if (a.decode) {
    std::vector<int> ids;
    if (!a.text.empty()) {
      for (const std::string& t : a.text) {
        const std::vector<int> part = parse_ids(t, "argument");
        ids.insert(ids.end(), part.begin(), part.end());
      }
    } else {
      ids = parse_ids(a.file.empty() ? read_stream(std::cin) : read_input_file(a.file),
                      a.file.empty() ? "stdin" : a.file);
    }
    const std::string out = tok.decode(ids);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return;
  }
  std::string text;
  if (!a.text.empty()) {
    for (size_t i = 0; i < a.text.size(); ++i) text += (i ? " " : "") + a.text[i];
  } else {
    text = a.file.empty() ? read_stream(std::cin) : read_input_file(a.file);
  }
  uint64_t replaced = 0;
  if (!utf8_valid(text)) {
    text = utf8_repair(text, &replaced);
    std::fprintf(stderr, "warning: input is not valid UTF-8: %llu ill-formed sequence(s) replaced by U+FFFD\n",
                 static_cast<unsigned long long>(replaced));
  }
  const std::vector<int> ids = tok.encode(text, a.allow_special);
  std::string out = a.json ? "[" : "";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += a.json ? ", " : " ";
    out += std::to_string(ids[i]);
  }
  out += a.json ? "]\n" : "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
}

struct PrepareArgs {
  PrepareOptions opt;
  std::string format = "llmc", vocab;
  std::string seed = "1337";  // parse_seed (cli/seed_arg.h): "-1" is an error, not 2^64 - 1
};

void run_prepare_command(PrepareArgs& a) {
  a.opt.seed = parse_seed(a.seed, "--seed");
  a.opt.format = parse_token_format(a.format);
  const Tokenizer tok = Tokenizer::load(find_vocab_dir(a.vocab));
  a.opt.progress = [](const std::string& line) { std::fprintf(stderr, "prepare: %s\n", line.c_str()); };
  const auto t0 = std::chrono::steady_clock::now();
  const nlohmann::json m = run_prepare(a.opt, tok);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t bytes = 0;
  for (const auto& in : m["inputs"]) bytes += in["bytes"].get<uint64_t>();
  std::printf("prepare: %llu documents (%llu train, %llu val), %llu tokens (%llu train, %llu val), "
              "%zu file(s) in %s\n",
              static_cast<unsigned long long>(m["documents"]["train"].get<uint64_t>() + m["documents"]["val"].get<uint64_t>()),
              static_cast<unsigned long long>(m["documents"]["train"].get<uint64_t>()),
              static_cast<unsigned long long>(m["documents"]["val"].get<uint64_t>()),
              static_cast<unsigned long long>(m["tokens"]["train"].get<uint64_t>() + m["tokens"]["val"].get<uint64_t>()),
              static_cast<unsigned long long>(m["tokens"]["train"].get<uint64_t>()),
              static_cast<unsigned long long>(m["tokens"]["val"].get<uint64_t>()), m["shards"].size(),
              a.opt.output_dir.c_str());
  std::printf("prepare: %.1f MB of text in %.1f s (%.2f MB/s)\n", bytes / 1e6, secs, bytes / 1e6 / std::max(secs, 1e-9));
  const uint64_t replaced = m["invalid_utf8_replacements"].get<uint64_t>();
  if (replaced > 0)
    std::printf("prepare: warning: %llu ill-formed UTF-8 sequence(s) replaced by U+FFFD\n",
                static_cast<unsigned long long>(replaced));
}

}  // namespace

void add_data_commands(CLI::App& app) {
  auto targs = std::make_shared<TokenizeArgs>();
  CLI::App* t = app.add_subcommand("tokenize", "Encode text to GPT-2 token ids, or decode ids to text");
  t->add_option("text", targs->text,
                "Text to encode (joined by spaces), or ids to decode with --decode; default: read --file or stdin");
  t->add_option("--file", targs->file, "Read the input from this file ('-' for stdin)");
  t->add_flag("--decode", targs->decode, "Decode token ids to text (the exact bytes, no newline added)");
  t->add_flag("--allow-special", targs->allow_special,
              "Encode the literal string <|endoftext|> as the special token 50256 (otherwise it is ordinary text)");
  t->add_flag("--json", targs->json, "Print the ids as a JSON array");
  t->add_option("--vocab", targs->vocab,
                "Folder holding encoder.json and vocab.bpe (default: $SGPT_VOCAB_DIR or data/cache/gpt2; "
                "get them with scripts/fetch_assets.sh)");
  t->callback([targs] { run_tokenize(*targs); });

  auto pargs = std::make_shared<PrepareArgs>();
  CLI::App* p = app.add_subcommand(
      "prepare",
      "Tokenize text corpora into training shards: <|endoftext|> before every document, a validation "
      "split by document, a manifest.json; files are written under temporary names and renamed at the end");
  p->add_option("--input", pargs->opt.inputs,
                "Inputs: .txt files (one document each), .jsonl files (one document per line), .tar archives "
                "of these, any of them .xz-compressed, directories of them, or OpenWebText's openwebtext.tar.xz")
      ->required();
  p->add_option("--output-dir", pargs->opt.output_dir, "Folder for the token files and manifest.json")->required();
  p->add_option("--format", pargs->format,
                "llmc: llm.c shards val_NNNNNN.bin/train_NNNNNN.bin; nanogpt: headerless train.bin/val.bin")
      ->check(CLI::IsMember({"llmc", "nanogpt"}))
      ->capture_default_str();
  p->add_option("--shard-tokens", pargs->opt.shard_tokens, "Tokens per llm.c shard")->capture_default_str();
  p->add_option("--val-fraction", pargs->opt.val_fraction,
                "Fraction of documents for the validation split, chosen by --seed")
      ->capture_default_str();
  p->add_option("--seed", pargs->seed, "Seed of the validation split, 0 to 2^64 - 1")->capture_default_str();
  p->add_option("--text-field", pargs->opt.text_field, "Field holding the document in .jsonl lines")
      ->capture_default_str();
  p->add_option("--threads", pargs->opt.threads, "Tokenizing threads (0: every core)")->capture_default_str();
  p->add_flag("--overwrite", pargs->opt.overwrite,
              "Replace prepared files already in --output-dir (otherwise they make prepare refuse)");
  p->add_flag("--allow-binary", pargs->opt.allow_binary,
              "Tokenize .txt inputs that do not look like text (NUL bytes and ill-formed UTF-8 over 1% of the "
              "bytes) instead of refusing them");
  p->add_option("--vocab", pargs->vocab, "Folder holding encoder.json and vocab.bpe (default: data/cache/gpt2)");
  p->callback([pargs] { run_prepare_command(*pargs); });
}

}  // namespace sgpt
