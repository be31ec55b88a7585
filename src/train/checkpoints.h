// A run's checkpoints (docs/reliability.md): model_<step>.bin (llm.c's format, checksummed) and
// state_<step>.bin (optimizer slots, data position, and what binds the pair: step, model checksum,
// run id, the config keys that may not change), written atomically and verified after writing;
// the one rule for "the newest checkpoint" (find_resume_checkpoint), used by --resume and by every
// reader (eval, sample, export, logits).
#pragma once
#include <cstdint>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "data/loader.h"
#include "backend/backend.h"

namespace sgpt {

// The checkpoint --resume uses: the newest step whose two files both pass verify_checkpoint_file
// (-1: none). `rejected` lists each newer checkpoint and why it was passed over; `unverified` is
// set when the chosen one carries no checksums (written before they existed).
struct ResumePoint {
  int64_t step = -1;
  std::vector<std::string> rejected;
  bool unverified = false;
};
ResumePoint find_resume_checkpoint(const std::string& dir);
std::string model_path(const std::string& dir, int64_t step);
std::string state_path(const std::string& dir, int64_t step);

// "model_<8 digits>.bin" / "state_<8 digits>.bin" (the kind in group 1, the step in group 2), and
// the steps of every such file in dir, newest first (complete pairs or not).
const std::regex& checkpoint_file_re();
std::vector<int64_t> checkpoint_file_steps(const std::string& dir);

// The model shape as a state file records it, and the optimizer slots of cfg's optimizer.
nlohmann::json model_json(const ModelConfig& m);
std::vector<std::string> slot_names(const Config& cfg);

// Every rank gathers the state (collective); one holding a non-finite value is refused (UserError)
// on every rank. With `write` (rank 0), writes both files, then reads them back and verifies them.
void save_checkpoint(const Config& cfg, Backend& be, const DataLoader& train_loader, const std::string& dir,
                     int64_t step, bool write, const std::string& run_id);
// Deletes all but the `keep` newest checkpoints; only after checkpoint `protect` was verified.
void prune_checkpoints(const std::string& dir, int keep, int64_t protect, int64_t also_keep = -1);
// Loads checkpoint `step` of dir into the backend and the loader (UserError when it does not fit).
void load_checkpoint(const Config& cfg, Backend& be, DataLoader& train_loader, const std::string& dir, int64_t step);

}  // namespace sgpt
