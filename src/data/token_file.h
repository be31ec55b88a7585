// Token files on disk, and the checks every reader applies.
//
// Formats (docs/design.md section 4)
//   llm.c shard   header of 256 little-endian int32: [0] = 20240520 (magic), [1] = 1 (version),
//                 [2] = token count N; then N uint16 tokens. File size must be exactly 1024 + 2N.
//   nanoGPT file  headerless uint16 tokens (train.bin / val.bin of nanoGPT and the official
//                 Sophia trainer); file size must be even. A file that starts with the llm.c
//                 magic and version is refused as a nanoGPT file ("looks like an llm.c shard"):
//                 those two int32 read as tokens are 56920, 308, 1, 0, and 56920 is beyond
//                 GPT-2's vocabulary, so no GPT-2 token file starts that way.
// Offsets are 64-bit throughout, so shards over 2 GB (and 4 GB) work. Reads use pread(2) on a
// descriptor kept open; every token read is checked against the vocabulary size and a bad one is
// reported with the file, the token index and the byte offset.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace sgpt {

inline constexpr int32_t kLlmcShardMagic = 20240520;
inline constexpr int32_t kLlmcShardVersion = 1;
inline constexpr int64_t kLlmcHeaderBytes = 256 * 4;

enum class TokenFormat { kLlmc, kNanoGpt };
TokenFormat parse_token_format(const std::string& name);  // "llmc" | "nanogpt", else UserError
const char* token_format_name(TokenFormat f);

// One token file, opened and checked (header, size). Throws UserError naming the file.
class TokenFile {
 public:
  TokenFile(std::string path, TokenFormat format);
  ~TokenFile();
  TokenFile(TokenFile&& o) noexcept;
  TokenFile& operator=(TokenFile&&) = delete;
  TokenFile(const TokenFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t num_tokens() const { return num_tokens_; }
  // Reads tokens [first, first + count) as int32 into out, checking each is < vocab_size. Reopens
  // the file if close() was called.
  void read(uint64_t first, uint64_t count, int* out, int vocab_size) const;
  // Reads the whole file once and throws UserError naming the file, the position and the id of the
  // first token >= vocab_size (the check read() makes, done up front so that bad data is found
  // when the file is opened, not when training reaches it). The largest id of a file is cached
  // per process (keyed by device, inode, size and modification time), so opening the same
  // unchanged file again costs nothing.
  void check_vocab(int vocab_size) const;
  // Releases the descriptor (readers of many shards keep only some open); read() reopens.
  void close() const;
  bool is_open() const { return fd_ >= 0; }

 private:
  void open() const;
  std::string path_;
  TokenFormat format_;
  mutable int fd_ = -1;
  uint64_t num_tokens_ = 0;
  uint64_t data_offset_ = 0;  // byte offset of token 0
};

// Files matching a glob pattern (or the single file `pattern` names), sorted by name. Throws
// UserError when nothing matches.
std::vector<std::string> expand_token_pattern(const std::string& pattern);

// Writes an llm.c shard atomically: to "<path>.tmp.<pid>", then rename(2) over path.
void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens);

// Streaming writer used by prepare: tokens are appended, the header is patched on finish().
// Writes to tmp_path; the caller renames. format kNanoGpt writes no header.
class TokenFileWriter {
 public:
  TokenFileWriter(std::string tmp_path, TokenFormat format);
  ~TokenFileWriter();  // closes (does not delete) an unfinished file
  void append(const uint16_t* tokens, size_t n);
  void finish();  // patches the llm.c header, flushes and closes; throws UserError on I/O errors
  uint64_t num_tokens() const { return count_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  TokenFormat format_;
  std::FILE* f_ = nullptr;
  uint64_t count_ = 0;
};

}  // namespace sgpt
