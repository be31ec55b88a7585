#include "train/run_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>

#include "common/error.h"
#include "model/checkpoint.h"
#include "train/checkpoints.h"
#include "train/trainer.h"

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

using nlohmann::json;

// may_change_on_resume: from the table of config keys (src/config/keys.cpp).

namespace {
// Every leaf of a config JSON as "a.b" -> value.
void flatten(const json& j, const std::string& at, std::vector<std::pair<std::string, json>>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) flatten(it.value(), at.empty() ? it.key() : at + "." + it.key(), out);
    return;
  }
  out.emplace_back(at, j);
}
}  // namespace

json identity_config(const Config& cfg) {
  std::vector<std::pair<std::string, json>> all;
  flatten(config_to_json(cfg), "", all);
  json id = json::object();
  for (const auto& [key, value] : all)
    if (!may_change_on_resume(key)) id[key] = value;
  return id;
}

std::string check_resume_config(const Config& cfg, const std::string& dir, int64_t step, bool say) {
  const std::string sp = state_path(dir, step);
  const json meta = read_state_meta(sp);
  if (!meta.contains("config")) return meta.value("run_id", std::string());
  const json& fixed = meta.at("config");  // the keys that may not change, as the checkpoint recorded them
  std::vector<std::pair<std::string, json>> now;
  flatten(config_to_json(cfg), "", now);
  // The other keys are compared with the run's config.json (its config at the first start).
  std::map<std::string, json> before;
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / "config.json", ec)) {
    try {
      std::vector<std::pair<std::string, json>> was;
      flatten(read_json_file((fs::path(dir) / "config.json").string()), "", was);
      before.insert(was.begin(), was.end());
    } catch (const std::exception&) {  // unreadable: no note, the checkpoint's record decides
    }
  }
  for (auto it = fixed.begin(); it != fixed.end(); ++it) before[it.key()] = it.value();
  std::string changed;
  for (const auto& [key, value] : now) {
    const auto it = before.find(key);
    if (it == before.end()) continue;
    const json& old = it->second;
    if (old == value) continue;
    if (!may_change_on_resume(key))
      throw UserError("--resume: config key '" + key + "' is " + value.dump() + " but checkpoint step " +
                      std::to_string(step) + " ('" + sp + "') was trained with " + old.dump() +
                      "; it cannot change on resume (it would be another run): set it back, or start a new run "
                      "in another --out-dir (with --init-from '" + model_path(dir, step) + "' to start from these weights)");
    changed += (changed.empty() ? "" : ", ") + key + " " + old.dump() + " -> " + value.dump();
  }
  if (say && !changed.empty())
    std::fprintf(stderr, "note: resuming with config keys changed since the run's start: %s\n", changed.c_str());
  return meta.value("run_id", std::string());
}

int64_t check_run_dir(const TrainOptions& opt) {
  if (opt.out_dir.empty()) throw UserError("--out-dir must not be empty");
  std::error_code ec;
  const fs::path dir(opt.out_dir);
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw UserError("--out-dir '" + opt.out_dir + "' exists and is not a directory");
  const bool is_dir = fs::is_directory(dir, ec);
  const bool has_run = is_dir && (fs::exists(dir / "log.jsonl", ec) || fs::exists(dir / "config.json", ec) ||
                                  !checkpoint_file_steps(opt.out_dir).empty());
  if (!opt.resume) {
    if (has_run)
      throw UserError("--out-dir '" + opt.out_dir +
                      "' already holds a run (log.jsonl, config.json or checkpoints); pass --resume to continue "
                      "it (from its newest good checkpoint, or from step 0 when it has none) or choose another "
                      "directory");
    return 0;
  }
  if (!has_run)
    throw UserError("--resume: '" + opt.out_dir +
                    "' holds no run to resume (no log.jsonl, config.json or checkpoint); start it without --resume");
  const ResumePoint rp = find_resume_checkpoint(opt.out_dir);
  if (opt.rank == 0) {
    for (const std::string& r : rp.rejected) std::fprintf(stderr, "warning: %s\n", r.c_str());
    if (rp.step >= 0 && !rp.rejected.empty())
      std::fprintf(stderr,
                   "warning: resuming from the newest checkpoint that verifies, step %lld ('%s'); the newer "
                   "checkpoint files are set aside as <name>.bad\n",
                   static_cast<long long>(rp.step), model_path(opt.out_dir, rp.step).c_str());
    if (rp.step < 0)
      std::fprintf(stderr,
                   "note: '%s' holds no complete checkpoint%s: the run restarts from step 0 (log.jsonl is "
                   "appended to%s)\n",
                   opt.out_dir.c_str(), rp.rejected.empty() ? "" : " that verifies",
                   rp.rejected.empty() ? "" : "; the checkpoint files are set aside as <name>.bad");
    if (rp.unverified)
      std::fprintf(stderr,
                   "note: checkpoint step %lld carries no checksums (written by an older sophiagpt): it is "
                   "checked for size only\n",
                   static_cast<long long>(rp.step));
    std::fflush(stderr);
  }
  return std::max<int64_t>(rp.step, 0);
}

void write_run_dir(const Config& cfg, const TrainOptions& opt, int64_t ckpt) {
  if (opt.rank != 0) return;
  std::error_code ec;
  const fs::path dir(opt.out_dir);
  fs::create_directories(dir, ec);
  if (ec) throw UserError("cannot create --out-dir '" + opt.out_dir + "': " + ec.message());
  for (const std::string& name : remove_stale_temp_files(opt.out_dir))
    std::fprintf(stderr, "note: removed '%s', a temporary file of a writer that no longer runs\n",
                 (dir / name).string().c_str());
  if (opt.resume) {  // checkpoint files newer than the one resumed from failed verification
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      std::smatch m;
      const std::string name = e.path().filename().string();
      if (!std::regex_match(name, m, checkpoint_file_re()) || std::stoll(m[2]) <= ckpt) continue;
      const std::string to = first_free_name(e.path().string() + ".bad");  // never over an earlier one
      if (std::rename(e.path().string().c_str(), to.c_str()) == 0)
        std::fprintf(stderr, "note: set aside '%s' as '%s' (not used; kept for inspection)\n",
                     e.path().string().c_str(), to.c_str());
    }
  }
  std::fflush(stderr);
  const std::string text = config_to_json(cfg).dump(2) + "\n";
  // A resumed run records its config beside the original, named by the step it resumed from,
  // so no earlier file is overwritten.
  // A second resume from the same step gets config.resume_N.1.json, and so on.
  char resumed[48];
  std::snprintf(resumed, sizeof resumed, "config.resume_%08lld", static_cast<long long>(ckpt));
  const std::string path = opt.resume ? first_free_name((dir / resumed).string(), ".json") : (dir / "config.json").string();
  if (opt.start) opt.start->will_create(path);
  write_file_atomic(path, {{text.data(), text.size()}});
}

int64_t prepare_run_dir(const Config& cfg, const TrainOptions& opt) {
  const int64_t ckpt = check_run_dir(opt);
  write_run_dir(cfg, opt, ckpt);
  return ckpt;
}

}  // namespace sgpt
