#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include <signal.h>
#include <unistd.h>

#include "common/error.h"
#include "data/loader.h"
#include "eval/hellaswag.h"
#include "eval/mfu.h"
#include "model/checkpoint.h"
#include "cpu/decode_cpu.h"
#include "cpu/sampling.h"
#include "tokenizer/utf8.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

#ifndef SGPT_COMMIT
#define SGPT_COMMIT "unknown"  // set by CMakeLists.txt from `git rev-parse --short HEAD`
#endif

namespace sgpt {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double now_s() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

std::string fmt_duration(double s) {
  char b[32];
  if (s < 60) std::snprintf(b, sizeof b, "%.0fs", s);
  else if (s < 3600) std::snprintf(b, sizeof b, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(b, sizeof b, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return b;
}

// One JSON object per line, flushed, so a crashed run keeps what it logged.
class JsonlLog {
 public:
  JsonlLog(const std::string& path, bool enabled) : path_(path) {
    if (!enabled) return;
    f_ = std::fopen(path.c_str(), "a");
    if (!f_) throw UserError("cannot open log file '" + path + "' for appending");
  }
  ~JsonlLog() { if (f_) std::fclose(f_); }
  void write(const json& j) {
    if (!f_) return;
    const std::string s = j.dump();
    // A full disk or the file-size limit is an error naming the log, not a silently short log.
    if (std::fprintf(f_, "%s\n", s.c_str()) < 0 || std::fflush(f_) != 0)
      throw UserError("cannot append to the log file '" + path_ + "': " + std::strerror(errno));
  }
 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

json model_json(const ModelConfig& m) {
  return json{{"n_layer", m.n_layer}, {"n_head", m.n_head}, {"n_embd", m.n_embd},
              {"block_size", m.block_size}, {"vocab_size", m.vocab_size}, {"bias", m.bias},
              {"scale_attn_by_inverse_layer_idx", m.scale_attn_by_inverse_layer_idx}};
}

std::vector<std::string> slot_names(const Config& cfg) {
  return cfg.optimizer.name == "sophiag" ? std::vector<std::string>{"m", "h"}
                                         : std::vector<std::string>{"m", "v"};
}

// Test hooks for the failure tests (docs/multi_gpu.md, docs/reliability.md):
// SGPT_TEST_FAULT="RANK:STEP:MODE" acts on rank RANK at step STEP. MODE: "throw" (an exception at
// the start of the step), "kill" (SIGKILL there), "term" (SIGTERM there), "int2" (SIGINT twice
// there), "nan" (the rank's loss is NaN in every step from STEP on), "corrupt" (rank 0 flips a
// byte of model_<STEP>.bin right after writing it, before it is verified).
struct TestFault {
  int rank = -1;
  long long step = -1;
  std::string mode;
};
const TestFault& test_fault() {
  static const TestFault f = [] {
    TestFault t;
    const char* spec = std::getenv("SGPT_TEST_FAULT");
    char mode[16] = {};
    if (spec && *spec && std::sscanf(spec, "%d:%lld:%15s", &t.rank, &t.step, mode) == 3) t.mode = mode;
    return t;
  }();
  return f;
}

void flip_a_byte(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-5, std::ios::end);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  f.seekp(-5, std::ios::end);
  f.write(&c, 1);
}

// The first non-finite element of v, or -1.
int64_t first_non_finite(const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return static_cast<int64_t>(i);
  return -1;
}

// Every rank gathers the state (get() is collective); a state holding a non-finite value is never
// written (all ranks hold the same gathered values, so all refuse alike). The writing rank writes
// both files, then reads them back and verifies them: only then may older checkpoints be pruned.
void save_checkpoint(const Config& cfg, Backend& be, const DataLoader& train_loader,
                     const std::string& dir, int64_t step, bool write) {
  std::vector<float> params;
  be.get("params", params);
  TrainState st;
  st.meta = json{{"step", step}, {"optimizer", cfg.optimizer.name},
                 {"n_params", be.layout().total}, {"model", model_json(cfg.model)},
                 {"seed", cfg.seed}, {"data", train_loader.state()}};
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
  write_model_file(mp, cfg.model, params);
  write_state_file(sp, st);
  if (test_fault().mode == "corrupt" && test_fault().step == step) flip_a_byte(mp);
  try {
    verify_checkpoint_file(mp);
    verify_checkpoint_file(sp);
  } catch (const UserError& e) {
    throw UserError(std::string("checkpoint step ") + std::to_string(step) + " does not verify after writing it (" +
                    e.what() + "); no earlier checkpoint was deleted");
  }
}

// Deletes all but the `keep` newest checkpoints; called only after checkpoint `protect` (the
// newest) was written and verified.
void prune_checkpoints(const std::string& dir, int keep, int64_t protect) {
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
    if (steps[i] == protect) continue;
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

}  // namespace

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

namespace {
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
      rp.step = s;
      rp.unverified = !(vm && vs);
      return rp;
    } catch (const UserError& e) {
      rp.rejected.push_back(e.what());
    }
  }
  return rp;
}

int64_t latest_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return -1;
  int64_t best = -1;
  const std::regex re("state_([0-9]{8})\\.bin");
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, re)) {
      const int64_t s = std::stoll(m[1]);
      if (s > best && fs::exists(model_path(dir, s))) best = s;
    }
  }
  return best;
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
      const std::string to = e.path().string() + ".bad";
      if (std::rename(e.path().string().c_str(), to.c_str()) == 0)
        std::fprintf(stderr, "note: set aside '%s' as '%s' (not used; kept for inspection)\n",
                     e.path().string().c_str(), to.c_str());
    }
  }
  std::fflush(stderr);
  const std::string text = config_to_json(cfg).dump(2) + "\n";
  // A resumed run records its config beside the original, named by the step it resumed from,
  // so no earlier file is overwritten.
  char resumed[48];
  std::snprintf(resumed, sizeof resumed, "config.resume_%08lld.json", static_cast<long long>(ckpt));
  const std::string name = opt.resume ? std::string(resumed) : "config.json";
  write_file_atomic((dir / name).string(), {{text.data(), text.size()}});
}

int64_t prepare_run_dir(const Config& cfg, const TrainOptions& opt) {
  const int64_t ckpt = check_run_dir(opt);
  write_run_dir(cfg, opt, ckpt);
  return ckpt;
}

namespace {
LoaderOptions loader_options(const Config& cfg, int rank, int world) {
  LoaderOptions lo;
  lo.pattern = cfg.data.train;
  lo.format = parse_token_format(cfg.data.format);
  lo.B = cfg.batch.micro_batch_size;
  lo.T = cfg.model.block_size;
  lo.rank = rank;
  lo.world = world;
  lo.seed = cfg.seed;
  lo.vocab_size = cfg.model.vocab_size;
  if (lo.pattern.empty()) throw UserError("config key 'data.train' is empty: name the training token files");
  return lo;
}
}  // namespace

namespace {
void check_hellaswag_file(const Config& cfg) {
  if (cfg.eval.hellaswag_every <= 0) return;
  std::error_code ec;
  if (!fs::is_regular_file(cfg.eval.hellaswag_file, ec))
    throw UserError("config key 'eval.hellaswag_file': '" + cfg.eval.hellaswag_file +
                    "' does not exist or is not a file (eval.hellaswag_every is " +
                    std::to_string(cfg.eval.hellaswag_every) +
                    "); docs/eval.md says where to get hellaswag_val.jsonl");
}

// The process's command line, for the machine record (Linux: /proc/self/cmdline; "" elsewhere).
std::string command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  while (!s.empty() && s.back() == '\0') s.pop_back();
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}
}  // namespace

void check_data(const Config& cfg, int world) {
  LoaderOptions lo = loader_options(cfg, 0, world);
  DataLoader train(lo);
  if (!cfg.data.val.empty() && cfg.eval.every > 0) {
    lo.pattern = cfg.data.val;
    DataLoader val(lo);
  }
  check_hellaswag_file(cfg);
}

namespace {
// The start-of-step hooks of SGPT_TEST_FAULT (see TestFault).
void inject_fault(int rank, int64_t step) {
  const TestFault& f = test_fault();
  if (f.rank != rank || f.step != step) return;
  if (f.mode == "kill") std::raise(SIGKILL);
  if (f.mode == "term") std::raise(SIGTERM);
  if (f.mode == "int2") {
    std::raise(SIGINT);
    std::raise(SIGINT);
  }
  if (f.mode == "throw") throw std::runtime_error("injected fault (SGPT_TEST_FAULT) at step " + std::to_string(step));
}

// SIGINT / SIGTERM: the first asks the loop to stop after the current step (with a checkpoint);
// a second ends the process at once, as the default action would. Installed for the duration of
// train() only.
volatile std::sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {
    static const char msg[] = "\nsophiagpt: second signal: exiting at once, without a checkpoint\n";
    [[maybe_unused]] const ssize_t n = ::write(2, msg, sizeof msg - 1);
    ::_exit(128 + sig);
  }
  g_stop_signal = sig;
  static const char msg_int[] =
      "\nsophiagpt: SIGINT: finishing the current step, then writing a checkpoint (again: exit at once)\n";
  static const char msg_term[] =
      "\nsophiagpt: SIGTERM: finishing the current step, then writing a checkpoint (again: exit at once)\n";
  const char* m = sig == SIGINT ? msg_int : msg_term;
  [[maybe_unused]] const ssize_t n = ::write(2, m, (sig == SIGINT ? sizeof msg_int : sizeof msg_term) - 1);
}

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal"; }
}  // namespace

TrainResult train(const Config& cfg, Backend& be, const TrainOptions& opt) {
  const ModelConfig& mc = cfg.model;
  const OptimizerConfig& oc = cfg.optimizer;
  const int B = cfg.batch.micro_batch_size;
  const int T = mc.block_size;
  const int accum = cfg.grad_accum_steps(opt.world);
  const bool sophia = oc.name == "sophiag";
  const int k = oc.hessian_interval;
  const int Bh = std::max(1, static_cast<int>(std::floor(oc.hessian_batch_fraction * B)));
  const bool main_rank = opt.rank == 0;
  const bool multi = opt.world > 1;
  // Each rank's micro-step gradient is scaled by 1/(accum*world): the sum over ranks is the mean.
  const float grad_scale = 1.0f / static_cast<float>(accum * opt.world);
  // The watchdog ends this rank if a phase that waits for the others never completes.
  auto phase = [&](const char* what) { if (multi) dist::Watchdog::instance().arm(what); };

  const LoaderOptions lo = loader_options(cfg, opt.rank, opt.world);
  DataLoader train_loader(lo);
  std::unique_ptr<DataLoader> val_loader;
  if (!cfg.data.val.empty() && cfg.eval.every > 0) {
    LoaderOptions vo = lo;
    vo.pattern = cfg.data.val;
    vo.shuffle = true;  // reset() replays the same batches at every eval
    val_loader = std::make_unique<DataLoader>(vo);
  }

  // Stochastic rounding of bf16 working weights keyed by the run's seed (restored with its
  // counter on resume); fp32 gradient accumulation where the config asks for it.
  be.set_rounding(cfg.seed, 0);
  be.set_grad_accum_fp32(cfg.grad_accum_fp32(opt.world));
  TrainResult res;
  int64_t start = 0;
  if (opt.resume) {
    start = opt.resume_step >= 0 ? opt.resume_step : std::max<int64_t>(find_resume_checkpoint(opt.out_dir).step, 0);
    if (start > 0) load_checkpoint(cfg, be, train_loader, opt.out_dir, start);
  }
  res.last_checkpoint = start > 0 ? start : -1;
  // Evaluation: ceil(eval.batches / world) micro-batches per rank, averaged over ranks (the same
  // sequences as one process when eval.batches is a multiple of the number of ranks).
  const int eval_batches = (cfg.eval.batches + opt.world - 1) / opt.world;
  res.start_step = start;

  JsonlLog log((fs::path(opt.out_dir) / "log.jsonl").string(), main_rank && !opt.out_dir.empty());
  std::vector<int> inp(static_cast<size_t>(B) * T), tgt(static_cast<size_t>(B) * T);
  const double tokens_per_step = static_cast<double>(cfg.batch.total_batch_tokens);
  const double bs = cfg.sophia_bs();
  const HessianConsts hc = HessianConsts::make(oc.beta2);
  const int64_t max_steps = cfg.schedule.max_steps;

  if (main_rank && !opt.quiet) {
    std::printf("model: %d layers, %d heads, %d dims, T=%d, %zu parameters | %s | micro-batch %d x %d, "
                "%d accumulation steps, %d process(es), %.0f tokens/step\n",
                mc.n_layer, mc.n_head, mc.n_embd, T, be.layout().total, oc.name.c_str(), B, T, accum,
                opt.world, tokens_per_step);
    std::fflush(stdout);
  }

  // MFU (src/eval/mfu.h): model FLOPs of the training forward + backward only (6N + 12 L C T per
  // token; the GNB pass is not counted, though its time is in the step's time), over the peak of
  // all devices (log.peak_tflops, else the GPU's datasheet peak; unknown: no MFU).
  const double flops_per_token = training_flops_per_token(mc, be.layout().total, T);
  const double peak_tflops =
      cfg.log.peak_tflops > 0 ? cfg.log.peak_tflops : detect_peak_tflops(be.device_name(), cfg.precision);
  {
    // The machine record: the first record this call writes. "step" is -1 (it precedes the
    // steps), so readers that key records by step skip it; start_step is where this call begins.
    json rec{{"type", "machine"}, {"step", -1}, {"start_step", start}};
    const json mi = be.machine_info();
    if (mi.is_object())
      for (auto it = mi.begin(); it != mi.end(); ++it)
        if (!rec.contains(it.key())) rec[it.key()] = it.value();
    if (!rec.contains("device")) rec["device"] = be.device_name();
    rec["backend"] = be.name();
    rec["precision"] = cfg.precision;
    rec["world"] = opt.world;
    rec["commit"] = SGPT_COMMIT;
    rec["command_line"] = command_line();
    rec["flops_per_token"] = flops_per_token;
    if (peak_tflops > 0) rec["peak_tflops"] = peak_tflops;
    log.write(rec);
    if (main_rank && !opt.quiet) {
      std::string m;
      for (auto it = rec.begin(); it != rec.end(); ++it)
        if (mi.contains(it.key())) m += (m.empty() ? "" : ", ") + it.key() + " " + (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
      char peak_text[64] = "not reported (unknown device peak: set log.peak_tflops)";
      if (peak_tflops > 0) std::snprintf(peak_text, sizeof peak_text, "against %g TFLOP/s per device", peak_tflops);
      std::printf("machine: %s | commit %s | %d process(es) | MFU %s\n", m.empty() ? be.name().c_str() : m.c_str(),
                  SGPT_COMMIT, opt.world, peak_text);
      std::fflush(stdout);
    }
  }

  // HellaSwag (eval.hellaswag_every, src/eval/hellaswag.h): every rank loads and checks all
  // examples (so a bad file fails alike everywhere), scores its own slice, and the counts are
  // summed over the ranks through Backend::average.
  std::vector<HellaSwagExample> hellaswag_examples;
  if (cfg.eval.hellaswag_every > 0) {
    check_hellaswag_file(cfg);
    hellaswag_examples = load_hellaswag(cfg.eval.hellaswag_file, Tokenizer::load(find_vocab_dir()));
    check_hellaswag(hellaswag_examples, mc.vocab_size, T, cfg.eval.hellaswag_file);
    std::vector<int> pi(static_cast<size_t>(B) * T, std::min(kEndOfText, mc.vocab_size - 1)), pt(pi.size(), -1);
    std::vector<float> pl(pi.size());
    try {  // a backend without per-position losses fails here, not at the first evaluation
      be.eval_losses(pi.data(), pt.data(), B, T, pl.data());
    } catch (const std::logic_error& e) {
      throw UserError("config key 'eval.hellaswag_every': the " + be.name() + " backend cannot score HellaSwag (" +
                      e.what() + "); set it to 0");
    }
  }
  auto hellaswag = [&](int64_t step) {
    if (hellaswag_examples.empty()) return;
    phase("a HellaSwag evaluation");
    const auto [lo_ex, hi_ex] = hellaswag_slice(hellaswag_examples.size(), opt.rank, opt.world);
    const HellaSwagResult r = evaluate_hellaswag(be, hellaswag_examples, lo_ex, hi_ex, B, T, cfg.eval.hellaswag_file);
    double counts[2] = {static_cast<double>(r.correct), static_cast<double>(r.total)};
    if (multi) {
      be.average(counts, 2);  // means over ranks: times world gives the sums
      for (double& c : counts) c *= opt.world;
    }
    const int64_t correct = std::llround(counts[0]), total = std::llround(counts[1]);
    const double acc = total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
    res.last_hellaswag = acc;
    log.write(json{{"type", "hellaswag"}, {"step", step}, {"hellaswag", acc}, {"correct", correct}, {"total", total}});
    if (main_rank && !opt.quiet) {
      std::printf("step %lld: hellaswag %.4f (%lld/%lld)\n", static_cast<long long>(step), acc,
                  static_cast<long long>(correct), static_cast<long long>(total));
      std::fflush(stdout);
    }
  };

  // Samples (sample.every, docs/sampling.md): the prompt is encoded on every rank (a bad prompt
  // fails alike everywhere); every rank gathers the weights (Backend::get is collective), rank 0
  // decodes with its decoder (opt.make_decoder: the GPU one on the GPU; else the CPU one).
  std::vector<int> sample_prompt;
  std::unique_ptr<Tokenizer> sample_tok;
  std::unique_ptr<Decoder> sample_decoder;
  SamplingOptions sample_opt;
  if (cfg.sample.every > 0) {
    sample_opt.temperature = cfg.sample.temperature;
    sample_opt.top_k = cfg.sample.top_k;
    sample_opt.top_p = cfg.sample.top_p;
    sample_opt.seed = cfg.seed;
    try {
      sample_tok = std::make_unique<Tokenizer>(Tokenizer::load(find_vocab_dir()));
    } catch (const UserError& e) {
      if (!cfg.sample.prompt.empty())
        throw UserError(std::string("config key 'sample.prompt' needs the GPT-2 vocabulary to encode it: ") + e.what());
      if (main_rank)
        std::fprintf(stderr, "note: samples are printed as token ids (no GPT-2 vocabulary: %s)\n", e.what());
    }
    if (sample_tok && !cfg.sample.prompt.empty()) {
      sample_prompt = sample_tok->encode(cfg.sample.prompt, /*allow_special=*/true);
      for (int id : sample_prompt)
        if (id >= mc.vocab_size)
          throw UserError("config key 'sample.prompt' encodes to token " + std::to_string(id) +
                          ", outside the model's vocabulary (model.vocab_size " + std::to_string(mc.vocab_size) + ")");
    }
    // The start token: end-of-text, or the last id of a model with a smaller vocabulary.
    if (sample_prompt.empty()) sample_prompt.push_back(std::min(kEndOfText, mc.vocab_size - 1));
  }
  auto sample = [&](int64_t step) {
    phase("a sample");
    std::vector<float> params;
    be.get("params", params);  // collective: every rank
    if (!main_rank) return;
    if (!sample_decoder) sample_decoder = opt.make_decoder ? opt.make_decoder(mc) : make_cpu_decoder(mc);
    sample_decoder->set_params(params.data());
    const double t0 = now_s();
    const std::vector<int> toks = generate(*sample_decoder, sample_prompt, cfg.sample.tokens, sample_opt);
    const double dt = now_s() - t0;
    std::string text;
    if (sample_tok) {
      text = utf8_repair(sample_tok->decode(toks));
    } else {
      for (int t : toks) text += (text.empty() ? "" : " ") + std::to_string(t);
    }
    res.samples.emplace_back(step, toks);
    log.write(json{{"type", "sample"}, {"step", step}, {"tokens", toks}, {"text", text}});
    if (!opt.quiet) {
      std::printf("--- sample at step %lld (%s, %d tokens, %.0f tokens/s) ---\n%s\n---\n",
                  static_cast<long long>(step), sample_decoder->name().c_str(), cfg.sample.tokens,
                  dt > 0 ? toks.size() / dt : 0.0, text.c_str());
      std::fflush(stdout);
    }
  };

  auto evaluate = [&](int64_t step) {
    if (!val_loader) return;
    phase("evaluation");
    val_loader->reset();
    double sum = 0;
    for (int i = 0; i < eval_batches; ++i) {
      val_loader->next(inp.data(), tgt.data());
      sum += be.eval_micro(inp.data(), tgt.data(), B, T);
    }
    double vl = sum / eval_batches;
    be.average(&vl, 1);
    res.last_val_loss = vl;
    log.write(json{{"type", "eval"}, {"step", step}, {"val_loss", vl}});
    if (main_rank && !opt.quiet) {
      std::printf("step %lld: val loss %.4f\n", static_cast<long long>(step), vl);
      std::fflush(stdout);
    }
  };

  const double t_start = now_s();
  // The ETA: the remaining steps times the mean time of the last (up to) kEtaWindow steps.
  constexpr size_t kEtaWindow = 20;
  std::vector<double> recent_dt;
  double recent_sum = 0;
  const int max_skips = oc.max_consecutive_skips;
  int64_t consecutive_skips = 0, first_skip = -1;
  const bool nan_fault = test_fault().mode == "nan" && test_fault().rank == opt.rank;
  auto newest_checkpoint_text = [&]() -> std::string {
    if (res.last_checkpoint < 0) return "there is no checkpoint";
    return "the newest checkpoint is step " + std::to_string(res.last_checkpoint) + " ('" +
           model_path(opt.out_dir, res.last_checkpoint) + "')";
  };
  StopSignals signals;
  for (int64_t step = start; step < max_steps; ++step) {
    if (cfg.eval.every > 0 && step % cfg.eval.every == 0) evaluate(step);
    if (cfg.eval.hellaswag_every > 0 && step > 0 && step % cfg.eval.hellaswag_every == 0) hellaswag(step);

    const double t0 = now_s();
    phase("a training step");
    inject_fault(opt.rank, step);
    const double lr = lr_at(step, oc.lr, oc.min_lr, cfg.schedule.warmup_iters, cfg.schedule.lr_decay_iters);
    be.zero_grad();
    double loss = 0;
    for (int micro = 0; micro < accum; ++micro) {
      train_loader.next(inp.data(), tgt.data());
      if (micro == accum - 1) be.begin_last_micro();
      loss += be.train_micro(inp.data(), tgt.data(), B, T, grad_scale);
    }
    be.reduce_grad();
    loss /= accum;
    if (nan_fault && step >= test_fault().step) loss = std::nan("");
    const double norm = std::sqrt(be.grad_sum_squares());
    if (multi) be.average(&loss, 1);  // the mean over ranks: the guard decides alike on every rank

    // Divergence guard: the loss (mean over ranks) and the gradient norm (over the whole model)
    // are the same on every rank; a non-finite one skips the update, the GNB pass included.
    const bool finite = std::isfinite(loss) && std::isfinite(norm);
    const bool gnb = finite && sophia && step % k == k - 1;
    SophiaMetrics metrics;
    double gnb_loss = 0, gnb_norm = 0;
    bool gnb_applied = false;
    if (finite) {
      consecutive_skips = 0;
      const float clip = cpu::clip_scale(norm, oc.grad_clip);
      if (clip != 1.0f) be.scale_grad(clip);
      if (sophia) {
        be.sophia_step(SophiaConsts::make(lr, oc.beta1, oc.rho, bs, oc.weight_decay), gnb ? &metrics : nullptr);
      } else {
        be.adamw_step(AdamWConsts::make(lr, oc.beta1, oc.beta2, oc.eps, oc.weight_decay, step + 1));
      }
    } else {
      if (consecutive_skips == 0) first_skip = step;
      ++consecutive_skips;
      ++res.skipped_steps;
    }

    if (gnb) {
      be.zero_grad();
      for (int micro = 0; micro < accum; ++micro) {
        train_loader.next(inp.data(), tgt.data());
        // Labels keyed by the global index of the sequence among the pass's GNB sequences: the
        // same for any number of ranks.
        const uint32_t seq0 = static_cast<uint32_t>((micro * opt.world + opt.rank) * Bh);
        if (micro == accum - 1) be.begin_last_micro();
        gnb_loss += be.gnb_micro(inp.data(), Bh, T, grad_scale, cfg.seed,
                                 static_cast<uint32_t>(step), seq0);
      }
      be.reduce_grad();
      gnb_loss /= accum;
      gnb_norm = std::sqrt(be.grad_sum_squares());
      if (multi) be.average(&gnb_loss, 1);
      // A non-finite GNB pass leaves h as it was (the step's update above stands).
      gnb_applied = std::isfinite(gnb_loss) && std::isfinite(gnb_norm);
      if (gnb_applied) {
        const float c2 = cpu::clip_scale(gnb_norm, oc.grad_clip);
        if (c2 != 1.0f) be.scale_grad(c2);
        be.hessian_ema(hc);
      }
    }
    const double dt = now_s() - t0;
    if (recent_dt.size() == kEtaWindow) {
      recent_sum -= recent_dt[static_cast<size_t>(res.steps_done) % kEtaWindow];
      recent_dt[static_cast<size_t>(res.steps_done) % kEtaWindow] = dt;
    } else {
      recent_dt.push_back(dt);
    }
    recent_sum += dt;
    const double eta_s = recent_sum / static_cast<double>(recent_dt.size()) * static_cast<double>(max_steps - step - 1);
    const double step_mfu = mfu(flops_per_token, tokens_per_step / dt, peak_tflops, opt.world);
    res.train_losses.push_back(loss);
    res.steps_done++;

    if (finite) {
      json rec{{"type", "train"}, {"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
               {"tokens_per_s", tokens_per_step / dt}, {"ms", dt * 1e3}, {"eta_s", eta_s}};
      if (step_mfu >= 0) rec["mfu"] = step_mfu;
      if (step == start) {  // memory once the optimizer state exists (rank 0's; ranks are alike)
        rec["state_mib"] = be.state_memory_mib();
        const double dev = be.device_memory_mib();
        if (dev >= 0) rec["device_mib"] = dev;
        if (main_rank && !opt.quiet)
          std::printf("memory per rank: optimizer state %.0f MiB%s\n", be.state_memory_mib(),
                      dev >= 0 ? (", device in use " + std::to_string(static_cast<long>(dev)) + " MiB").c_str() : "");
      }
      log.write(rec);
    } else {
      // NaN / inf are written as null.
      log.write(json{{"type", "skip"}, {"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                     {"consecutive", consecutive_skips}});
      if (main_rank)
        std::fprintf(stderr,
                     "warning: step %lld skipped (no update): loss %g, gradient norm %g; %lld in a row, the run "
                     "stops at optimizer.max_consecutive_skips = %d\n",
                     static_cast<long long>(step), loss, norm, static_cast<long long>(consecutive_skips), max_skips);
    }
    if (gnb) {
      json rec{{"type", "gnb"}, {"step", step}, {"win_rate", metrics.win_rate()},
               {"h_l1", metrics.h_l1}, {"h_l2", std::sqrt(metrics.h_sq)},
               {"gnb_loss", gnb_loss}, {"gnb_grad_norm", gnb_norm}};
      if (!gnb_applied) {
        rec["skipped"] = true;
        if (main_rank)
          std::fprintf(stderr, "warning: step %lld: the GNB pass is not finite (loss %g, gradient norm %g); h is "
                       "left unchanged\n", static_cast<long long>(step), gnb_loss, gnb_norm);
      }
      log.write(rec);
    }
    if (main_rank && !opt.quiet && (step % cfg.log.every == 0 || step + 1 == max_steps)) {
      char mfu_text[32] = "";
      if (step_mfu >= 0) std::snprintf(mfu_text, sizeof mfu_text, " | MFU %.1f%%", 100.0 * step_mfu);
      std::printf("step %6lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.0f ms | %.0f tok/s%s | ETA %s\n",
                  static_cast<long long>(step + 1), static_cast<long long>(max_steps), loss, lr, norm,
                  dt * 1e3, tokens_per_step / dt, mfu_text, fmt_duration(eta_s).c_str());
      std::fflush(stdout);
    }
    if (consecutive_skips >= max_skips) {
      throw UserError("training diverged: the loss or the gradient norm was not finite in " +
                      std::to_string(consecutive_skips) + " consecutive steps (steps " + std::to_string(first_skip) +
                      " to " + std::to_string(step) + "; optimizer.max_consecutive_skips = " +
                      std::to_string(max_skips) + "). No update was applied in those steps and no checkpoint was "
                      "written from them; " + newest_checkpoint_text() + ". Lower optimizer.lr (or check the data)" +
                      (res.last_checkpoint >= 0 ? ", then continue from it with --resume" : " and start again"));
    }

    // A stop asked for by a signal on any rank ends the run at this step on every rank.
    bool stop = g_stop_signal != 0;
    if (multi) {
      double flag = stop ? 1.0 : 0.0;
      be.average(&flag, 1);
      stop = flag > 0;
    }

    const int64_t done = step + 1;
    if (cfg.sample.every > 0 && done % cfg.sample.every == 0 && !stop) sample(done);
    const bool periodic = cfg.checkpoint.every > 0 && done % cfg.checkpoint.every == 0;
    bool written = false;
    if (!opt.out_dir.empty() && (periodic || done == max_steps || stop)) {
      if (!finite) {
        if (main_rank)
          std::fprintf(stderr, "warning: checkpoint step %lld not written: the step was skipped by the divergence "
                       "guard\n", static_cast<long long>(done));
      } else {
        phase("a checkpoint");
        // Every rank takes part (sharded state is gathered); rank 0 writes, verifies, then prunes.
        save_checkpoint(cfg, be, train_loader, opt.out_dir, done, main_rank);
        if (main_rank) prune_checkpoints(opt.out_dir, cfg.checkpoint.keep, done);
        res.last_checkpoint = done;
        written = true;
      }
    }
    if (stop) {
      res.stopped_by_signal = true;
      res.stop_signal = g_stop_signal;
      if (main_rank) {
        const std::string what = g_stop_signal ? signal_name(g_stop_signal) : "a signal on another rank";
        std::string where;
        if (written)
          where = "checkpoint written to '" + model_path(opt.out_dir, done) + "' and '" + state_path(opt.out_dir, done) +
                  "'; continue with --resume";
        else
          where = std::string("no checkpoint written for this step; ") + newest_checkpoint_text();
        std::fprintf(stderr, "stopped by %s after step %lld of %lld: %s (exit code %d)\n", what.c_str(),
                     static_cast<long long>(done), static_cast<long long>(max_steps), where.c_str(),
                     kExitStoppedBySignal);
        std::fflush(stderr);
      }
      break;
    }
  }
  if (cfg.eval.every > 0 && start < max_steps && !res.stopped_by_signal) evaluate(max_steps);
  if (cfg.eval.hellaswag_every > 0 && start < max_steps && !res.stopped_by_signal) hellaswag(max_steps);
  if (multi) {
    phase("the end of training");
    double barrier = 0;
    be.average(&barrier, 1);  // nobody leaves (and tears down the communicator) before the rest
    dist::Watchdog::instance().disarm();
  }
  if (main_rank && !opt.quiet && !res.stopped_by_signal) {
    std::printf("done: %lld steps in %s\n", static_cast<long long>(res.steps_done),
                fmt_duration(now_s() - t_start).c_str());
  }
  return res;
}

}  // namespace sgpt
