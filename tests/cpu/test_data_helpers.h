// Helpers shared by the tokenizer, data loader and prepare tests: temporary folders, files, running
// the sophiagpt executable, and the vocabulary location. Header-only.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace sgpt_test {
namespace fs = std::filesystem;

// The vocabulary the tests use: data/cache/gpt2 in the source tree, put there by
// scripts/fetch_assets.sh. Missing files fail the test (CI must fetch them), never skip it.
inline std::string vocab_dir() {
  const std::string dir = std::string(SGPT_SOURCE_DIR) + "/data/cache/gpt2";
  if (!fs::exists(dir + "/encoder.json") || !fs::exists(dir + "/vocab.bpe"))
    ADD_FAILURE() << "GPT-2 vocabulary missing in " << dir
                  << ": run scripts/fetch_assets.sh before the tests";
  return dir;
}

// A fresh folder, removed with everything in it when the object dies.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/sgpt-test-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q.append("'\\''");
    else q.push_back(c);
  }
  q.push_back('\'');
  return q;
}

struct RunResult {
  int code = -1;       // exit status
  std::string output;  // stdout and stderr together
};

// Runs `sophiagpt ARGS...` (each argument shell-quoted) with optional stdin bytes.
inline RunResult run_exe(const std::vector<std::string>& args, const std::string& stdin_bytes = "") {
  static int counter = 0;
  const std::string in = (fs::temp_directory_path() / ("sgpt-stdin-" + std::to_string(::getpid()) + "-" +
                                                       std::to_string(counter++))).string();
  write_file(in, stdin_bytes);
  std::string cmd = shell_quote(SGPT_EXE);
  for (const auto& a : args) cmd.append(" ").append(shell_quote(a));
  cmd.append(" < ").append(shell_quote(in)).append(" 2>&1");
  RunResult r;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  fs::remove(in);
  return r;
}

// llm.c shard bytes per docs/design.md section 4, written here independently of the code under test.
inline std::string llmc_shard_bytes(const std::vector<uint16_t>& tokens, int32_t magic = 20240520,
                                     int32_t version = 1, int32_t count = -1) {
  int32_t header[256] = {};
  header[0] = magic;
  header[1] = version;
  header[2] = count >= 0 ? count : int32_t(tokens.size());
  std::string s(reinterpret_cast<const char*>(header), sizeof header);
  s.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
  return s;
}

// Parses an llm.c shard (checks the header) into its tokens.
inline std::vector<uint16_t> parse_llmc_shard(const std::string& bytes) {
  EXPECT_GE(bytes.size(), 1024u);
  int32_t header[256];
  std::memcpy(header, bytes.data(), sizeof header);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(size_t(header[2]) * 2 + 1024, bytes.size());
  std::vector<uint16_t> t((bytes.size() - 1024) / 2);
  std::memcpy(t.data(), bytes.data() + 1024, t.size() * 2);
  return t;
}

inline std::vector<uint16_t> parse_u16(const std::string& bytes) {
  std::vector<uint16_t> t(bytes.size() / 2);
  std::memcpy(t.data(), bytes.data(), t.size() * 2);
  return t;
}

}  // namespace sgpt_test
