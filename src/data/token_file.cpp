// Token file reading, checking and writing (formats in token_file.h).
#include "data/token_file.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "common/error.h"

namespace sgpt {
namespace {

std::string errno_text() { return std::strerror(errno); }

// pread the whole range or throw.
void pread_all(int fd, void* buf, size_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw UserError(path + ": read error at byte offset " + std::to_string(offset) + ": " + errno_text());
    if (got == 0)
      throw UserError(path + ": file ends at byte offset " + std::to_string(offset) +
                      " (truncated while reading?)");
    p += got;
    n -= size_t(got);
    offset += uint64_t(got);
  }
}

}  // namespace

TokenFormat parse_token_format(const std::string& name) {
  if (name == "llmc") return TokenFormat::kLlmc;
  if (name == "nanogpt") return TokenFormat::kNanoGpt;
  throw UserError("unknown token file format '" + name + "' (expected llmc or nanogpt)");
}

const char* token_format_name(TokenFormat f) { return f == TokenFormat::kLlmc ? "llmc" : "nanogpt"; }

void TokenFile::open() const {
  // O_NONBLOCK: opening a FIFO by mistake must not wait for a writer (the fstat below refuses
  // anything but a regular file); reads from a regular file are unaffected.
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) throw UserError(path_ + ": cannot open: " + errno_text());
}

void TokenFile::close() const {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

TokenFile::TokenFile(std::string path, TokenFormat format) : path_(std::move(path)), format_(format) {
  open();
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw UserError(path_ + (S_ISDIR(st.st_mode) ? ": is a directory, not a token file" : ": is not a regular file (a token file must be one)"));
  }
  const uint64_t size = uint64_t(st.st_size);
  try {
    if (format_ == TokenFormat::kNanoGpt) {
      if (size >= uint64_t(kLlmcHeaderBytes)) {
        int32_t head[2];
        pread_all(fd_, head, sizeof head, 0, path_);
        if (head[0] == kLlmcShardMagic && head[1] == kLlmcShardVersion)
          throw UserError(path_ + ": looks like an llm.c shard; set data.format to llmc (its first int32 is "
                          "the llm.c magic " + std::to_string(kLlmcShardMagic) +
                          ", then version 1: a header, not headerless nanoGPT tokens)");
      }
      if (size % 2 != 0)
        throw UserError(path_ + ": size " + std::to_string(size) +
                        " bytes is odd, not a whole number of uint16 tokens (nanogpt format)");
      num_tokens_ = size / 2;
      data_offset_ = 0;
    } else {
      if (size < uint64_t(kLlmcHeaderBytes))
        throw UserError(path_ + ": " + std::to_string(size) +
                        " bytes is shorter than the 1024-byte llm.c header (headerless uint16 tokens, like "
                        "nanoGPT's train.bin? set data.format to nanogpt)");
      int32_t header[256];
      pread_all(fd_, header, sizeof header, 0, path_);
      if (header[0] != kLlmcShardMagic)
        throw UserError(path_ + ": bad magic " + std::to_string(header[0]) + " at byte offset 0 (expected " +
                        std::to_string(kLlmcShardMagic) + "; not an llm.c token shard: for headerless uint16 tokens, like "
                        "nanoGPT's train.bin, set data.format to nanogpt)");
      if (header[1] != kLlmcShardVersion)
        throw UserError(path_ + ": unsupported version " + std::to_string(header[1]) +
                        " at byte offset 4 (expected 1)");
      if (header[2] < 0)
        throw UserError(path_ + ": negative token count " + std::to_string(header[2]) + " at byte offset 8");
      num_tokens_ = uint64_t(header[2]);
      data_offset_ = uint64_t(kLlmcHeaderBytes);
      const uint64_t want = data_offset_ + 2 * num_tokens_;
      if (size != want)
        throw UserError(path_ + ": header says " + std::to_string(num_tokens_) + " tokens (" +
                        std::to_string(want) + " bytes) but the file has " + std::to_string(size) +
                        " bytes (" + (size < want ? "truncated" : "trailing data") + ")");
    }
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

TokenFile::~TokenFile() {
  if (fd_ >= 0) ::close(fd_);
}

TokenFile::TokenFile(TokenFile&& o) noexcept
    : path_(std::move(o.path_)), format_(o.format_), fd_(o.fd_), num_tokens_(o.num_tokens_),
      data_offset_(o.data_offset_) {
  o.fd_ = -1;
}

void TokenFile::read(uint64_t first, uint64_t count, int* out, int vocab_size) const {
  if (first + count > num_tokens_)
    throw UserError(path_ + ": read of tokens [" + std::to_string(first) + ", " +
                    std::to_string(first + count) + ") past the end (" + std::to_string(num_tokens_) + " tokens)");
  if (fd_ < 0) open();
  thread_local std::vector<uint16_t> raw;
  raw.resize(count);
  pread_all(fd_, raw.data(), count * 2, data_offset_ + 2 * first, path_);
  for (uint64_t i = 0; i < count; ++i) {
    const int id = raw[i];
    if (id >= vocab_size)
      throw UserError(path_ + ": token id " + std::to_string(id) + " at token " + std::to_string(first + i) +
                      " (byte offset " + std::to_string(data_offset_ + 2 * (first + i)) +
                      ") is not below the vocabulary size " + std::to_string(vocab_size));
    out[i] = id;
  }
}

namespace {
// Largest token id of files already scanned in this process, by (device, inode, size, mtime).
struct ScanKey {
  uint64_t dev, ino, size;
  int64_t mtime_s, mtime_ns;
  auto operator<=>(const ScanKey&) const = default;
};
std::mutex g_scan_mu;
std::map<ScanKey, uint16_t> g_scanned;
}  // namespace

void TokenFile::check_vocab(int vocab_size) const {
  if (vocab_size > 65535 || num_tokens_ == 0) return;  // every uint16 fits
  if (fd_ < 0) open();
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw UserError(path_ + ": cannot stat: " + errno_text());
  const ScanKey key{uint64_t(st.st_dev), uint64_t(st.st_ino), uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec),
                    int64_t(st.st_mtim.tv_nsec)};
  {
    std::lock_guard<std::mutex> lock(g_scan_mu);
    const auto it = g_scanned.find(key);
    if (it != g_scanned.end() && it->second < vocab_size) return;
  }
  // Chunks of 1 MiB; the max reduction vectorizes, so this runs at the speed of the read.
  constexpr uint64_t kChunk = uint64_t(1) << 19;  // tokens
  std::vector<uint16_t> buf(std::min<uint64_t>(kChunk, num_tokens_));
  uint16_t largest = 0;
  for (uint64_t first = 0; first < num_tokens_; first += kChunk) {
    const uint64_t n = std::min<uint64_t>(kChunk, num_tokens_ - first);
    pread_all(fd_, buf.data(), n * 2, data_offset_ + 2 * first, path_);
    uint16_t m = 0;
    for (uint64_t i = 0; i < n; ++i) m = std::max(m, buf[i]);
    largest = std::max(largest, m);
    if (m < vocab_size) continue;
    for (uint64_t i = 0; i < n; ++i)
      if (buf[i] >= vocab_size)
        throw UserError(path_ + ": token id " + std::to_string(buf[i]) + " at token " + std::to_string(first + i) +
                        " (byte offset " + std::to_string(data_offset_ + 2 * (first + i)) +
                        ") is not below the vocabulary size " + std::to_string(vocab_size) +
                        " (found when the file was opened: every token of a file is checked then)");
  }
  std::lock_guard<std::mutex> lock(g_scan_mu);
  g_scanned[key] = largest;
}

std::vector<std::string> expand_token_pattern(const std::string& pattern) {
  if (pattern.empty()) throw UserError("empty token file pattern");
  std::vector<std::string> files;
  if (pattern.find_first_of("*?[") == std::string::npos) {
    std::error_code ec;
    if (std::filesystem::is_directory(pattern, ec))
      throw UserError(pattern + ": is a directory; give a file or a glob such as " + pattern + "/train_*.bin");
    if (!std::filesystem::exists(pattern, ec)) throw UserError(pattern + ": token file not found");
    files.push_back(pattern);
    return files;
  }
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (files.empty()) throw UserError("no token files match '" + pattern + "'");
  return files;  // glob(3) sorts
}

void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  TokenFileWriter w(tmp, TokenFormat::kLlmc);
  try {
    w.append(tokens.data(), tokens.size());
    w.finish();
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    std::remove(tmp.c_str());
    throw UserError(path + ": cannot rename " + tmp + " into place: " + why);
  }
}

TokenFileWriter::TokenFileWriter(std::string tmp_path, TokenFormat format)
    : path_(std::move(tmp_path)), format_(format) {
  f_ = std::fopen(path_.c_str(), "wb");
  if (!f_) throw UserError(path_ + ": cannot create: " + errno_text());
  if (format_ == TokenFormat::kLlmc) {
    int32_t header[256] = {};
    if (std::fwrite(header, sizeof header, 1, f_) != 1) throw UserError(path_ + ": write error: " + errno_text());
  }
}

TokenFileWriter::~TokenFileWriter() {
  if (f_) std::fclose(f_);
}

void TokenFileWriter::append(const uint16_t* tokens, size_t n) {
  if (n && std::fwrite(tokens, 2, n, f_) != n) throw UserError(path_ + ": write error: " + errno_text());
  count_ += n;
}

void TokenFileWriter::finish() {
  if (format_ == TokenFormat::kLlmc) {
    if (count_ > uint64_t(INT32_MAX))
      throw UserError(path_ + ": " + std::to_string(count_) + " tokens do not fit the llm.c header (max 2^31-1)");
    int32_t header[3] = {kLlmcShardMagic, kLlmcShardVersion, int32_t(count_)};
    if (std::fseek(f_, 0, SEEK_SET) != 0 || std::fwrite(header, sizeof header, 1, f_) != 1)
      throw UserError(path_ + ": write error: " + errno_text());
  }
  const bool bad = std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0;
  const int err = errno;
  const bool close_bad = std::fclose(f_) != 0;
  f_ = nullptr;
  if (bad || close_bad) throw UserError(path_ + ": write error: " + std::strerror(bad ? err : errno));
}

}  // namespace sgpt
