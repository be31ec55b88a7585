#include "train/checkpoints.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "common/error.h"
#include "model/checkpoint.h"
#include "optim/optimizer.h"
#include "train/train_hooks.h"
#include "train/trainer.h"

namespace sgpt {
namespace fs = std::filesystem;
using nlohmann::json;

json model_json(const ModelConfig& m) {
  return json{{"n_layer", m.n_layer}, {"n_head", m.n_head}, {"n_embd", m.n_embd},
              {"block_size", m.block_size}, {"vocab_size", m.vocab_size}, {"bias", m.bias},
              {"scale_attn_by_inverse_layer_idx", m.scale_attn_by_inverse_layer_idx}};
}

std::vector<std::string> slot_names(const Config& cfg) {
  return optimizer_kind(cfg.optimizer.name).slots;
}

namespace {
// The first non-finite element of v, or -1.
int64_t first_non_finite(const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return static_cast<int64_t>(i);
  return -1;
}
}  // namespace

// Every rank gathers the state (get() is collective); a state holding a non-finite value is never
// written (all ranks hold the same gathered values, so all refuse alike). The writing rank writes
// both files, then reads them back and verifies them: only then may older checkpoints be pruned.
void save_checkpoint(const Config& cfg, Backend& be, const DataLoader& train_loader,
                     const std::string& dir, int64_t step, bool write, const std::string& run_id) {
  std::vector<float> params;
  be.get("params", params);
  TrainState st;
  st.meta = json{{"step", step}, {"optimizer", cfg.optimizer.name},
                 {"n_params", be.layout().total}, {"model", model_json(cfg.model)},
                 {"seed", cfg.seed}, {"data", train_loader.state()},
                 {"run_id", run_id}, {"config", identity_config(cfg)}};
  st.slot_names = slot_names(cfg);
  if (be.has_working_weights()) {  // bf16: the working weights and the rounding counter too
    st.slot_names.push_back("working");
    st.meta["rounding_counter"] = be.rounding_counter();
  }
  for (const auto& s : st.slot_names) {
    st.slots.emplace_back();
    be.get(s, st.slots.back());
  }
  auto refuse = [&](const std::string& what, int64_t at) {
    throw UserError("training diverged: the " + what + " holds a non-finite value (element " + std::to_string(at) +
                    ") after step " + std::to_string(step) + "; checkpoint step " + std::to_string(step) +
                    " was not written and no earlier checkpoint was deleted");
  };
  if (const int64_t at = first_non_finite(params); at >= 0) refuse("weights", at);
  for (size_t i = 0; i < st.slots.size(); ++i)
    if (const int64_t at = first_non_finite(st.slots[i]); at >= 0) refuse("optimizer state '" + st.slot_names[i] + "'", at);
  if (!write) return;
  const std::string mp = model_path(dir, step), sp = state_path(dir, step);
  // The state file binds itself to its model file: the model file's checksum, the step and the
  // run (find_resume_checkpoint refuses a pair that does not belong together).
  st.meta["model_crc"] = write_model_file(mp, cfg.model, params);
  write_state_file(sp, st);
  train_hooks().checkpoint_written(mp, step);
  try {
    verify_checkpoint_file(mp);
    verify_checkpoint_file(sp);
  } catch (const UserError& e) {
    throw UserError(std::string("checkpoint step ") + std::to_string(step) + " does not verify after writing it (" +
                    e.what() + "); no earlier checkpoint was deleted");
  }
}

// Deletes all but the `keep` newest checkpoints and `also_keep` (-1: none); called only after
// checkpoint `protect` (the newest) was written and verified.
void prune_checkpoints(const std::string& dir, int keep, int64_t protect, int64_t also_keep) {
  std::vector<int64_t> steps;
  const std::regex re("state_([0-9]{8})\\.bin");
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, re)) steps.push_back(std::stoll(m[1]));
  }
  std::sort(steps.begin(), steps.end());
  const int64_t n = static_cast<int64_t>(steps.size());
  for (int64_t i = 0; i + keep < n; ++i) {
    if (steps[i] == protect || steps[i] == also_keep) continue;
    std::error_code ec;
    fs::remove(state_path(dir, steps[i]), ec);
    fs::remove(model_path(dir, steps[i]), ec);
  }
}

void load_checkpoint(const Config& cfg, Backend& be, DataLoader& train_loader,
                     const std::string& dir, int64_t step) {
  const std::string sp = state_path(dir, step);
  TrainState st = read_state_file(sp);
  auto mismatch = [&](const std::string& what) {
    throw UserError("training-state file '" + sp + "' does not match the config: " + what);
  };
  if (st.meta.value("optimizer", "") != cfg.optimizer.name)
    mismatch("it was written by optimizer '" + st.meta.value("optimizer", "") + "', the config says '" +
             cfg.optimizer.name + "'");
  if (st.meta.value("n_params", uint64_t{0}) != be.layout().total)
    mismatch("it holds " + std::to_string(st.meta.value("n_params", uint64_t{0})) +
             " parameters, the model has " + std::to_string(be.layout().total));
  if (st.meta.value("model", json{}) != model_json(cfg.model)) mismatch("the model shape differs");
  if (st.meta.value("step", int64_t{-1}) != step) mismatch("its step differs from its file name");
  std::vector<std::string> names = st.slot_names;
  const auto w = std::find(names.begin(), names.end(), "working");
  const bool has_working = w != names.end();
  if (has_working) names.erase(w);
  if (names != slot_names(cfg)) mismatch("its optimizer slots differ");
  be.set("params", read_model_file(model_path(dir, step), cfg.model));
  for (size_t i = 0; i < st.slots.size(); ++i) {
    if (st.slot_names[i] == "working") {
      // Saved by a bf16 run: restored where this run has bf16 working weights too (else the
      // fp32 master alone is the model).
      if (be.has_working_weights()) be.set("working", st.slots[i]);
      continue;
    }
    be.set(st.slot_names[i], st.slots[i]);
  }
  if (be.has_working_weights()) {
    if (has_working && st.meta.contains("rounding_counter"))
      be.set_rounding(cfg.seed, st.meta.at("rounding_counter").get<uint32_t>());
    else
      std::fprintf(stderr, "warning: '%s' holds no bf16 working weights (written by an fp32 run or an older "
                   "version): they are rounded to nearest from the fp32 master, so the continuation is not "
                   "bit-identical to an uninterrupted bf16 run\n", sp.c_str());
  }
  try {
    train_loader.restore(st.meta.at("data"));
  } catch (const json::exception& e) {
    mismatch(std::string("bad data position: ") + e.what());
  }
}

std::string model_path(const std::string& dir, int64_t step) {
  char b[40];
  std::snprintf(b, sizeof b, "model_%08lld.bin", static_cast<long long>(step));
  return (fs::path(dir) / b).string();
}
std::string state_path(const std::string& dir, int64_t step) {
  char b[40];
  std::snprintf(b, sizeof b, "state_%08lld.bin", static_cast<long long>(step));
  return (fs::path(dir) / b).string();
}

const std::regex& checkpoint_file_re() {
  static const std::regex re("(model|state)_([0-9]{8})\\.bin");
  return re;
}
// Steps of every model_*.bin and state_*.bin in dir (complete or not).
std::vector<int64_t> checkpoint_file_steps(const std::string& dir) {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, checkpoint_file_re())) steps.push_back(std::stoll(m[2]));
  }
  std::sort(steps.begin(), steps.end(), std::greater<>());
  steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
  return steps;
}

namespace {
// The two files of a checkpoint belong together: the state file records its step and the checksum
// of the model file written with it (files written before that record only the step).
void check_checkpoint_pair(const std::string& mp, const std::string& sp, int64_t step) {
  const json meta = read_state_meta(sp);
  if (meta.value("step", int64_t{-1}) != step)
    throw UserError("checkpoint step " + std::to_string(step) + ": '" + sp + "' records step " +
                    std::to_string(meta.value("step", int64_t{-1})) + ", not the step of its name");
  if (!meta.contains("model_crc")) return;
  const int64_t crc = read_model_crc(mp);
  if (crc != meta.at("model_crc").get<int64_t>())
    throw UserError("checkpoint step " + std::to_string(step) + ": '" + mp +
                    "' is not the model file that '" + sp + "' was written with (model checksum " +
                    std::to_string(crc) + ", the state file records " + std::to_string(meta.at("model_crc").get<int64_t>()) +
                    "): a file of another step or run");
}
}  // namespace

ResumePoint find_resume_checkpoint(const std::string& dir) {
  ResumePoint rp;
  for (const int64_t s : checkpoint_file_steps(dir)) {
    const std::string mp = model_path(dir, s), sp = state_path(dir, s);
    std::error_code ec;
    const bool has_m = fs::exists(mp, ec), has_s = fs::exists(sp, ec);
    if (!has_m || !has_s) {
      rp.rejected.push_back("checkpoint step " + std::to_string(s) + " is incomplete: '" + (has_m ? sp : mp) +
                            "' is missing");
      continue;
    }
    try {
      bool vm = false, vs = false;
      verify_checkpoint_file(mp, &vm);
      verify_checkpoint_file(sp, &vs);
      check_checkpoint_pair(mp, sp, s);
      rp.step = s;
      rp.unverified = !(vm && vs);
      return rp;
    } catch (const UserError& e) {
      rp.rejected.push_back(e.what());
    }
  }
  return rp;
}

}  // namespace sgpt
