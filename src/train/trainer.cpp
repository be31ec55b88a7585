#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "common/error.h"
#include "data/loader.h"
#include "model/checkpoint.h"

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
  JsonlLog(const std::string& path, bool enabled) {
    if (!enabled) return;
    f_ = std::fopen(path.c_str(), "a");
    if (!f_) throw UserError("cannot open log file '" + path + "' for appending");
  }
  ~JsonlLog() { if (f_) std::fclose(f_); }
  void write(const json& j) {
    if (!f_) return;
    const std::string s = j.dump();
    std::fprintf(f_, "%s\n", s.c_str());
    std::fflush(f_);
  }
 private:
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

void save_checkpoint(const Config& cfg, Backend& be, const DataLoader& train_loader,
                     const std::string& dir, int64_t step, bool write) {
  std::vector<float> params;
  be.get("params", params);
  if (write) write_model_file(model_path(dir, step), cfg.model, params);
  TrainState st;
  st.meta = json{{"step", step}, {"optimizer", cfg.optimizer.name},
                 {"n_params", be.layout().total}, {"model", model_json(cfg.model)},
                 {"seed", cfg.seed}, {"data", train_loader.state()}};
  st.slot_names = slot_names(cfg);
  for (const auto& s : st.slot_names) {
    st.slots.emplace_back();
    be.get(s, st.slots.back());
  }
  if (write) write_state_file(state_path(dir, step), st);
}

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
  if (st.slot_names != slot_names(cfg)) mismatch("its optimizer slots differ");
  be.set("params", read_model_file(model_path(dir, step), cfg.model));
  for (size_t i = 0; i < st.slots.size(); ++i) be.set(st.slot_names[i], st.slots[i]);
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
  const int64_t ckpt = latest_checkpoint(opt.out_dir);
  const bool has_run = fs::exists(dir / "log.jsonl", ec) || ckpt >= 0;
  if (opt.resume) {
    if (ckpt < 0)
      throw UserError("--resume: no checkpoint (model_*.bin + state_*.bin) in '" + opt.out_dir + "'");
  } else if (has_run) {
    throw UserError("--out-dir '" + opt.out_dir +
                    "' already holds a run (log.jsonl or checkpoints); pass --resume to continue it "
                    "or choose another directory");
  }
  return opt.resume ? ckpt : 0;
}

void write_run_dir(const Config& cfg, const TrainOptions& opt, int64_t ckpt) {
  if (opt.rank != 0) return;
  std::error_code ec;
  const fs::path dir(opt.out_dir);
  fs::create_directories(dir, ec);
  if (ec) throw UserError("cannot create --out-dir '" + opt.out_dir + "': " + ec.message());
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

void check_data(const Config& cfg, int world) {
  LoaderOptions lo = loader_options(cfg, 0, world);
  DataLoader train(lo);
  if (!cfg.data.val.empty() && cfg.eval.every > 0) {
    lo.pattern = cfg.data.val;
    DataLoader val(lo);
  }
}

namespace {
// Test hook for the failure tests of data parallelism (docs/multi_gpu.md):
// SGPT_TEST_FAULT="RANK:STEP:throw" makes rank RANK throw at the start of step STEP,
// "RANK:STEP:kill" makes it kill itself with SIGKILL there.
void inject_fault(int rank, int64_t step) {
  static const char* spec = std::getenv("SGPT_TEST_FAULT");
  if (!spec || !*spec) return;
  int r = -1;
  long long s = -1;
  char mode[16] = {};
  if (std::sscanf(spec, "%d:%lld:%15s", &r, &s, mode) != 3 || r != rank || s != step) return;
  if (std::string(mode) == "kill") std::raise(SIGKILL);
  throw std::runtime_error("injected fault (SGPT_TEST_FAULT) at step " + std::to_string(step));
}
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

  TrainResult res;
  int64_t start = 0;
  if (opt.resume) {
    start = latest_checkpoint(opt.out_dir);
    load_checkpoint(cfg, be, train_loader, opt.out_dir, start);
  }
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
  double ema_step_s = -1;
  for (int64_t step = start; step < max_steps; ++step) {
    if (cfg.eval.every > 0 && step % cfg.eval.every == 0) evaluate(step);

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
    const double norm = std::sqrt(be.grad_sum_squares());
    const float clip = cpu::clip_scale(norm, oc.grad_clip);
    if (clip != 1.0f) be.scale_grad(clip);

    const bool gnb = sophia && step % k == k - 1;
    SophiaMetrics metrics;
    if (sophia) {
      be.sophia_step(SophiaConsts::make(lr, oc.beta1, oc.rho, bs, oc.weight_decay), gnb ? &metrics : nullptr);
    } else {
      be.adamw_step(AdamWConsts::make(lr, oc.beta1, oc.beta2, oc.eps, oc.weight_decay, step + 1));
    }

    double gnb_loss = 0, gnb_norm = 0;
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
      const float c2 = cpu::clip_scale(gnb_norm, oc.grad_clip);
      if (c2 != 1.0f) be.scale_grad(c2);
      be.hessian_ema(hc);
    }
    if (multi) {  // the logged losses are means over all ranks
      double v[2] = {loss, gnb_loss};
      be.average(v, 2);
      loss = v[0];
      gnb_loss = v[1];
    }
    const double dt = now_s() - t0;
    ema_step_s = ema_step_s < 0 ? dt : 0.9 * ema_step_s + 0.1 * dt;
    res.train_losses.push_back(loss);
    res.steps_done++;

    json rec{{"type", "train"}, {"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
             {"tokens_per_s", tokens_per_step / dt}, {"ms", dt * 1e3}};
    if (step == start) {  // memory once the optimizer state exists (rank 0's; ranks are alike)
      rec["state_mib"] = be.state_memory_mib();
      const double dev = be.device_memory_mib();
      if (dev >= 0) rec["device_mib"] = dev;
      if (main_rank && !opt.quiet)
        std::printf("memory per rank: optimizer state %.0f MiB%s\n", be.state_memory_mib(),
                    dev >= 0 ? (", device in use " + std::to_string(static_cast<long>(dev)) + " MiB").c_str() : "");
    }
    log.write(rec);
    if (gnb) {
      log.write(json{{"type", "gnb"}, {"step", step}, {"win_rate", metrics.win_rate()},
                     {"h_l1", metrics.h_l1}, {"h_l2", std::sqrt(metrics.h_sq)},
                     {"gnb_loss", gnb_loss}, {"gnb_grad_norm", gnb_norm}});
    }
    if (main_rank && !opt.quiet && (step % cfg.log.every == 0 || step + 1 == max_steps)) {
      const double eta = ema_step_s * static_cast<double>(max_steps - step - 1);
      std::printf("step %6lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.0f ms | %.0f tok/s | ETA %s\n",
                  static_cast<long long>(step + 1), static_cast<long long>(max_steps), loss, lr, norm,
                  dt * 1e3, tokens_per_step / dt, fmt_duration(eta).c_str());
      std::fflush(stdout);
    }
    if (!std::isfinite(loss)) throw std::runtime_error("training diverged: the loss is not finite at step " +
                                                       std::to_string(step));

    const int64_t done = step + 1;
    const bool periodic = cfg.checkpoint.every > 0 && done % cfg.checkpoint.every == 0;
    if (!opt.out_dir.empty() && (periodic || done == max_steps)) {
      phase("a checkpoint");
      // Every rank takes part (sharded state is gathered); rank 0 writes.
      save_checkpoint(cfg, be, train_loader, opt.out_dir, done, main_rank);
      if (main_rank) prune_checkpoints(opt.out_dir, cfg.checkpoint.keep, done);
    }
  }
  if (cfg.eval.every > 0 && start < max_steps) evaluate(max_steps);
  if (multi) {
    phase("the end of training");
    double barrier = 0;
    be.average(&barrier, 1);  // nobody leaves (and tears down the communicator) before the rest
    dist::Watchdog::instance().disarm();
  }
  if (main_rank && !opt.quiet) {
    std::printf("done: %lld steps in %s\n", static_cast<long long>(res.steps_done),
                fmt_duration(now_s() - t_start).c_str());
  }
  return res;
}

}  // namespace sgpt
