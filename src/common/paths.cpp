#include "common/paths.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/error.h"

namespace sgpt {
namespace fs = std::filesystem;

namespace {
std::string read_holder(int fd) {
  char buf[64] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "pid unknown" : s;
}
}  // namespace

DirLock::DirLock(const std::string& dir, const std::string& who) {
  path_ = (fs::path(dir) / kLockFileName).string();
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
      throw UserError("cannot lock '" + dir + "' (opening '" + path_ + "'): " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      const std::string holder = read_holder(fd);
      ::close(fd);
      if (err == EWOULDBLOCK)
        throw UserError("'" + dir + "' is in use by another sophiagpt process (" + holder +
                        "): only one process may write a folder at a time; wait for it to end, stop it, or "
                        "choose another folder");
      throw UserError("cannot lock '" + dir + "' ('" + path_ + "'): " + std::strerror(err));
    }
    // The file we locked must still be the one under the name (another process may have removed
    // it in between, in release_and_remove): otherwise two processes could hold "the" lock.
    struct stat a {}, b {};
    if (::fstat(fd, &a) == 0 && ::stat(path_.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
      const std::string me = "pid " + std::to_string(::getpid()) + ", " + who + "\n";
      if (::ftruncate(fd, 0) == 0) {
        [[maybe_unused]] const ssize_t n = ::pwrite(fd, me.data(), me.size(), 0);
      }
      fd_ = fd;
      return;
    }
    ::close(fd);
  }
  throw UserError("cannot lock '" + dir + "': its lock file '" + path_ + "' keeps being replaced");
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor drops the lock
}

DirLock::DirLock(DirLock&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }

DirLock& DirLock::operator=(DirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

void DirLock::release_and_remove() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still holding it: a waiter re-checks the name (above)
  ::close(fd_);
  fd_ = -1;
}

void check_input_file(const std::string& path, const std::string& option) {
  if (path.empty()) throw UserError(option + " must not be empty");
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw UserError(option + " '" + path + "' does not exist");
  if (fs::is_directory(st)) throw UserError(option + " '" + path + "' is a directory, not a file");
  if (!fs::is_regular_file(st) && !fs::is_fifo(st) && !fs::is_character_file(st))
    throw UserError(option + " '" + path + "' is not a regular file");
  if (::access(path.c_str(), R_OK) != 0)
    throw UserError(option + " '" + path + "' cannot be read: " + std::strerror(errno));
}

void check_output_file(const std::string& path, bool overwrite, const std::string& option) {
  if (path.empty()) throw UserError(option + " must not be empty");
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(path, ec);
  if (fs::exists(st)) {
    if (fs::is_symlink(st))
      throw UserError(option + " '" + path + "' is a symbolic link: it is never replaced; name the file itself");
    if (fs::is_directory(st)) throw UserError(option + " '" + path + "' is a directory, not a file");
    if (!fs::is_regular_file(st))
      throw UserError(option + " '" + path + "' exists and is not a regular file (a device, a pipe or a socket): " +
                      "it is never replaced");
    if (!overwrite) throw UserError(option + " '" + path + "' exists (pass --overwrite to replace it)");
  }
  fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) parent = ".";
  if (!fs::is_directory(parent, ec))
    throw UserError(option + " '" + path + "': its folder '" + parent.string() + "' does not exist");
}

}  // namespace sgpt
