#include "train/run_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/error.h"

namespace sgpt {
namespace fs = std::filesystem;

RunDirStart::RunDirStart(const std::string& dir, const std::string& who) : dir_(dir) {
  if (dir.empty()) throw UserError("--out-dir must not be empty");
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(dir, ec);
  if (fs::exists(st) && !fs::is_directory(fs::status(dir, ec)))
    throw UserError("--out-dir '" + dir + "' exists and is not a directory");
  // The folders this start creates, innermost first in the walk, so rollback removes them inner
  // to outer.
  for (fs::path p = fs::absolute(dir, ec); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    created_dirs_.insert(created_dirs_.begin(), p.string());
    if (p == p.parent_path()) break;
  }
  fs::create_directories(dir, ec);
  if (ec) {
    created_dirs_.clear();
    throw UserError("cannot create --out-dir '" + dir + "': " + ec.message());
  }
  std::reverse(created_dirs_.begin(), created_dirs_.end());  // innermost first
  try {
    lock_ = DirLock(dir, who);
  } catch (...) {
    for (const std::string& d : created_dirs_) fs::remove(d, ec);
    created_dirs_.clear();
    rolled_back_ = true;
    throw;
  }
}

RunDirStart::~RunDirStart() {
  if (!committed_) rollback();
  // The lock file lives as long as its holder (a process killed with -9 leaves it; the next
  // start takes it over): a finished run's folder holds only the run's files.
  lock_.release_and_remove();
}

void RunDirStart::will_create(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) created_files_.push_back(path);
}

void RunDirStart::will_append(const std::string& path) {
  struct stat st {};
  appended_.emplace_back(path, ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1);
}

void RunDirStart::rollback() noexcept {
  if (rolled_back_ || committed_) return;
  rolled_back_ = true;
  std::error_code ec;
  for (const auto& [path, len] : appended_) {
    if (len < 0) fs::remove(path, ec);
    else if (::truncate(path.c_str(), len) != 0) { /* best effort */ }
  }
  for (const std::string& f : created_files_) fs::remove(f, ec);
  // Temporary files this process left (a write that failed half way removes its own; be sure).
  const std::string suffix = ".tmp" + std::to_string(::getpid());
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      fs::remove(e.path(), ec);
  }
  lock_.release_and_remove();
  for (const std::string& d : created_dirs_) fs::remove(d, ec);  // only when empty
}

std::string first_free_name(const std::string& stem, const std::string& ext) {
  std::error_code ec;
  std::string p = stem + ext;
  for (int i = 1; fs::exists(fs::symlink_status(p, ec)); ++i) p = stem + "." + std::to_string(i) + ext;
  return p;
}

}  // namespace sgpt
