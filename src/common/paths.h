// The file-system guards every subcommand uses (docs/reliability.md, "Run directories and output
// paths"): an exclusive lock on a folder for the lifetime of a writer, and the checks on paths a
// command reads or writes.
#pragma once
#include <string>

namespace sgpt {

// The lock file inside a locked folder. It stays there (an empty lock file is harmless; removing
// it while another process waits on it would let two holders exist).
inline constexpr const char* kLockFileName = ".sophiagpt.lock";

// An exclusive advisory lock (flock) on `dir`/.sophiagpt.lock, held until destruction or process
// exit: the operating system drops it when the process dies, so it never goes stale. The lock
// file records the holder's pid (for the message a second writer gets). `who` names the command
// ("train", "prepare") in that message. A second process exits with UserError:
//   "'DIR' is in use by another sophiagpt process (pid P, train): ..."
class DirLock {
 public:
  DirLock() = default;
  DirLock(const std::string& dir, const std::string& who);  // dir must exist
  ~DirLock();
  DirLock(DirLock&& o) noexcept;
  DirLock& operator=(DirLock&& o) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  bool held() const { return fd_ >= 0; }
  // Releases the lock and removes the lock file (for a start that failed and rolls back).
  void release_and_remove();

 private:
  int fd_ = -1;
  std::string path_;
};

// A file a command reads: UserError naming `option` and the path when it does not exist, is a
// directory or is not a regular file (a FIFO or /dev/stdin is accepted: it can be read).
void check_input_file(const std::string& path, const std::string& option);

// A file a command writes: refuses (UserError naming `option`) a path that exists and is not a
// regular file (a directory, a symbolic link, a device: never replaced), or that is a regular file
// when `overwrite` is false; and a path whose parent folder does not exist. The write itself goes
// through write_file_atomic (temporary name, fsync, rename).
void check_output_file(const std::string& path, bool overwrite, const std::string& option);

}  // namespace sgpt
