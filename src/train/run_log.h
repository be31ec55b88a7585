// log.jsonl's writer (docs/config.md, "Run directory"; docs/reliability.md): one JSON object per
// line, each one write(2); a failed write is cut back off the file, and a torn last line left by an
// earlier writer is removed when the log is opened.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace sgpt {

// One JSON object per line, each written with one write(2) and cut back when it fails (a full
// disk, the file-size limit), so the file never ends in a torn record. A torn last line left by
// an older writer (or a crash of the machine) is cut off, with a note, when the log is opened.
class JsonlLog {
 public:
  JsonlLog(const std::string& path, bool enabled) : path_(path) {
    if (!enabled) return;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) throw UserError("cannot open log file '" + path + "' for appending: " + std::strerror(errno));
    const off_t end = ::lseek(fd_, 0, SEEK_END);
    if (end > 0) {
      // Find the last newline; anything after it is a torn record.
      std::FILE* r = std::fopen(path.c_str(), "rb");
      off_t keep = 0;
      if (r) {
        const off_t from = std::max<off_t>(0, end - (1 << 20));
        std::fseek(r, from, SEEK_SET);
        std::string tail(static_cast<size_t>(end - from), '\0');
        tail.resize(std::fread(tail.data(), 1, tail.size(), r));
        std::fclose(r);
        const size_t nl = tail.rfind('\n');
        keep = nl == std::string::npos ? from : from + static_cast<off_t>(nl) + 1;
        if (nl == std::string::npos && from == 0) keep = 0;
      }
      if (r && keep < end && ::ftruncate(fd_, keep) == 0)
        std::fprintf(stderr, "note: '%s' ended in an incomplete line (%lld bytes, a write that was cut off): "
                     "removed\n", path.c_str(), static_cast<long long>(end - keep));
    }
  }
  ~JsonlLog() { if (fd_ >= 0) ::close(fd_); }
  JsonlLog(const JsonlLog&) = delete;
  JsonlLog& operator=(const JsonlLog&) = delete;
  void write(const nlohmann::json& j) {
    if (fd_ < 0) return;
    const std::string s = j.dump() + "\n";
    const off_t before = ::lseek(fd_, 0, SEEK_END);
    const ssize_t n = ::write(fd_, s.data(), s.size());
    if (n == static_cast<ssize_t>(s.size())) return;
    const int err = n < 0 ? errno : ENOSPC;  // a short write: the disk or the size limit
    if (before >= 0 && ::ftruncate(fd_, before) != 0) { /* the error below names the file */ }
    throw UserError("cannot append to the log file '" + path_ + "': " + std::strerror(err) +
                    " (the record was not written; the file ends with the previous record)");
  }
 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace sgpt
