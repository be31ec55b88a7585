// A training run's directory while `sophiagpt train` starts and runs (docs/reliability.md, "Run
// directories"): rank 0 takes an exclusive lock on it for the whole run (a second writer exits
// with code 2 naming the folder and the holder's pid; readers such as eval, sample and export
// need no lock), and a start that fails before its first step leaves the folder as it found it:
// the files and folders this start created are removed and log.jsonl is cut back to its length
// at the start.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/paths.h"

namespace sgpt {

class RunDirStart {
 public:
  // Creates `dir` (and missing parents) when needed and locks it; `who` names the command.
  RunDirStart(const std::string& dir, const std::string& who);
  // Rolls back when neither commit() nor rollback() ran, then releases the lock and removes its file.
  ~RunDirStart();
  RunDirStart(const RunDirStart&) = delete;
  RunDirStart& operator=(const RunDirStart&) = delete;

  // A file this start is about to create (removed on rollback when it did not exist before).
  void will_create(const std::string& path);
  // A file this start appends to (cut back to its present length on rollback).
  void will_append(const std::string& path);
  // The run has started (its first step ran): nothing is rolled back any more.
  void commit() { committed_ = true; }
  // Undoes what this start created and releases the lock; safe to call twice. Never throws.
  void rollback() noexcept;

 private:
  std::string dir_;
  std::vector<std::string> created_dirs_;  // outermost last
  std::vector<std::string> created_files_;
  std::vector<std::pair<std::string, int64_t>> appended_;  // path, length at the start (-1: absent)
  DirLock lock_;
  bool committed_ = false;
  bool rolled_back_ = false;
};

// A name for a file to be set aside or recorded that no file in its folder has yet:
// `base`, else `base.1`, `base.2`, ... (for `<checkpoint>.bad` and `config.resume_N.json`,
// `stem` + `.1` + `ext`).
std::string first_free_name(const std::string& stem, const std::string& ext = "");

}  // namespace sgpt
