// `sophiagpt train`: resolve the config, pick the device, build the backend, run the loop.
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/model_args.h"
#include "cli/seed_arg.h"
#include "common/error.h"
#include "common/paths.h"
#include "config/config.h"
#include "model/checkpoint.h"
#include "common/philox.h"
#include "cpu/gpt2_cpu.h"
#include "sample/sampling.h"
#include "data/loader.h"
#include "device/factory.h"
#include "eval/hellaswag.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"
#include "train/trainer.h"
#include "dist/comm.h"
#include "dist/launch.h"

namespace sgpt {
using nlohmann::json;
namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string out_dir = "runs/train";
  std::string device;  // overrides config "device" when given
  std::string init_from;
  bool resume = false;
  bool quiet = false;
};

// Resolves cfg.device to the GPU (true) or the CPU (false); adjusts cfg.precision on a fallback.
// `local_rank` picks the GPU (one per process on a node) before anything else touches CUDA.
bool choose_gpu(Config& cfg, int local_rank = 0) {
  std::string why;
  if (cfg.device != "cpu") select_gpu(local_rank);
  bool use_gpu = false;
  if (cfg.device == "cuda") {
    if (!gpu_usable(&why)) throw UserError("device 'cuda' was asked for but no GPU is usable: " + why);
    use_gpu = true;
  } else if (cfg.device == "auto") {
    use_gpu = gpu_usable(&why);
    if (!use_gpu) std::printf("note: no usable GPU (%s); training on the CPU\n", why.c_str());
  }
  if (!use_gpu && cfg.precision != "fp32") {
    if (cfg.device == "cpu")
      throw UserError("config key 'precision' is \"" + cfg.precision + "\" but the CPU backend is fp32 only");
    std::printf("note: precision %s needs the GPU; using fp32 on the CPU\n", cfg.precision.c_str());
    cfg.precision = "fp32";
  }
  if (!use_gpu && cfg.lm_head_precision != "bf16") {
    std::printf("note: lm_head_precision %s needs the GPU; the CPU's lm head is fp32\n",
                cfg.lm_head_precision.c_str());
    cfg.lm_head_precision = "bf16";
  }
  return use_gpu;
}

// MPI stays initialised for the whole process once a run started by mpirun loaded it (also when
// NCCL carries the training): MPI_Finalize runs at exit, and a rank that dies without it makes
// mpirun stop the others at once.
std::unique_ptr<dist::Comm>& mpi_holder() {
  static std::unique_ptr<dist::Comm> mpi;
  return mpi;
}

// The communicator of a launch of several processes: MPI on the CPU; NCCL on GPUs, its unique id
// handed over by MPI (started by mpirun, plugin loadable, dist.init not set) or by the TCP / file
// rendezvous of dist.init. Every rank waits here for the others (watchdog: dist.timeout_s).
std::unique_ptr<dist::Comm> make_comm(const Config& cfg, const dist::LaunchInfo& li, bool use_gpu) {
  if (li.world == 1) return dist::make_local_comm();
  dist::Watchdog::instance().configure(li.rank, cfg.dist.timeout_s);
  dist::Guarded guard("joining the other ranks");
  std::string why = "not started by an MPI launcher";
  if (li.by_mpi() && (cfg.dist.init.empty() || !use_gpu)) mpi_holder() = dist::make_mpi_comm(&why);
  dist::Comm* mpi = mpi_holder().get();
  if (mpi && (mpi->rank() != li.rank || mpi->world() != li.world))
    throw UserError("MPI says rank " + std::to_string(mpi->rank()) + " of " + std::to_string(mpi->world()) +
                    ", the launcher's environment (" + li.launcher + ") rank " + std::to_string(li.rank) +
                    " of " + std::to_string(li.world));
  if (!use_gpu) {
    if (!mpi)
      throw UserError("data parallel training on the CPU runs over MPI: launch it with mpirun (" + why + ")");
    return std::move(mpi_holder());
  }
  if (!nccl_built())
    throw UserError("this build has no NCCL, so it trains on one GPU only (" + std::to_string(li.world) +
                    " processes were launched); rebuild where CMake finds NCCL");
  std::vector<uint8_t> id;
  if (li.rank == 0) id = nccl_unique_id();
  if (mpi) {
    id.resize(128);  // sizeof(ncclUniqueId)
    mpi->broadcast(id.data(), id.size(), 0);
  } else {
    const std::string init = dist::resolve_init(cfg.dist.init);
    if (li.by_mpi() && cfg.dist.init.empty() && li.rank == 0)
      std::printf("note: MPI unavailable (%s); the NCCL id goes over %s (dist.init)\n", why.c_str(), init.c_str());
    dist::rendezvous(init, li.rank, li.world, id, cfg.dist.timeout_s);
  }
  return make_nccl_comm(li.rank, li.world, id);
}

// What every rank of a launch must agree on: the resolved config, the program, the run directory
// and how it starts.
json launch_settings(const Config& cfg, const TrainArgs& a) {
  return json{{"config", config_to_json(cfg)}, {"commit", program_commit()}, {"out_dir", a.out_dir},
              {"resume", a.resume}, {"init_from", a.init_from}};
}

// The first key (a path such as "config.optimizer.lr") whose value differs between a and b, or "".
std::string first_difference(const json& a, const json& b, const std::string& at = "") {
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string key = at.empty() ? it.key() : at + "." + it.key();
      if (!b.contains(it.key())) return key;
      if (std::string d = first_difference(it.value(), b.at(it.key()), key); !d.empty()) return d;
    }
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key())) return at.empty() ? it.key() : at + "." + it.key();
    return "";
  }
  return a == b ? "" : (at.empty() ? std::string("(the whole value)") : at);
}

const json* at_path(const json& j, const std::string& path) {
  const json* p = &j;
  size_t from = 0;
  while (from <= path.size()) {
    const size_t dot = path.find('.', from);
    const std::string part = path.substr(from, dot == std::string::npos ? std::string::npos : dot - from);
    if (!p->is_object() || !p->contains(part)) return nullptr;
    p = &p->at(part);
    if (dot == std::string::npos) break;
    from = dot + 1;
  }
  return p;
}

// Every rank sends its launch settings to all (one broadcast per rank, in rank order); all ranks
// then find the same first difference from rank 0's and fail alike, naming it.
void check_ranks_agree(dist::Comm& comm, const json& mine) {
  const std::string text = mine.dump();
  std::vector<std::string> all(static_cast<size_t>(comm.world()));
  for (int r = 0; r < comm.world(); ++r) {
    uint64_t n = r == comm.rank() ? text.size() : 0;
    comm.broadcast(&n, sizeof n, r);
    std::string buf = r == comm.rank() ? text : std::string(n, '\0');
    if (n > 0) comm.broadcast(buf.data(), n, r);
    all[static_cast<size_t>(r)] = std::move(buf);
  }
  const json zero = json::parse(all[0]);
  for (int r = 1; r < comm.world(); ++r) {
    const json other = json::parse(all[static_cast<size_t>(r)]);
    const std::string key = first_difference(zero, other);
    if (key.empty()) continue;
    const json* v0 = at_path(zero, key);
    const json* vr = at_path(other, key);
    throw UserError("the ranks were started with different settings: '" + key + "' is " +
                    (vr ? vr->dump() : std::string("absent")) + " on rank " + std::to_string(r) + " but " +
                    (v0 ? v0->dump() : std::string("absent")) + " on rank 0; start every rank with the same "
                    "config, --set values, --out-dir and program build");
  }
}

// Host memory: the trainer's parameter copies and, on the CPU, the backend's buffers (parameters,
// gradients, two optimizer slots, the activations of one micro-batch), checked against what the
// machine has available before anything is allocated.
void check_host_memory(const Config& cfg, bool use_gpu) {
  const ParamLayout layout = ParamLayout::make(cfg.model);
  const double P = static_cast<double>(layout.total);
  const double N = static_cast<double>(cfg.batch.micro_batch_size) * cfg.model.block_size;
  const double L = cfg.model.n_layer, C = cfg.model.n_embd, NH = cfg.model.n_head, T = cfg.model.block_size;
  const double Vp = cfg.model.padded_vocab_size;
  double floats = 2 * P;  // the initial parameters and the copy the backend is built from
  const double activations = N * (L * (16 * C + NH * T + 4) + 16 * C + Vp + 3);
  if (!use_gpu) floats += 4 * P + activations;
  // Sophia-H on the CPU: the model on dual numbers (two floats each) for its Hessian-vector
  // products: dual parameters and gradients, the probe, and the activations twice over.
  if (!use_gpu && cfg.optimizer.name == "sophiah") floats += 5 * P + 2 * activations;
  const double need = 4 * floats;
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kib = -1, value;
  std::string unit;
  while (f >> key >> value >> unit)
    if (key == "MemAvailable:") kib = value;
  if (kib < 0) return;  // not Linux: nothing to compare with
  const double have = kib * 1024;
  if (need <= have) return;
  char msg[512];
  std::snprintf(msg, sizeof msg,
                "this run needs about %.1f GiB of host memory (%zu parameters%s) but the machine has %.1f GiB "
                "available: lower batch.micro_batch_size or the model size%s",
                need / (1 << 30), layout.total,
                use_gpu ? "" : ", their gradients and optimizer state, and the activations of one micro-batch",
                have / (1 << 30), use_gpu ? "" : ", or train on a GPU");
  throw OutOfMemory(msg);
}

// A run's identity: a 64-bit FNV-1a hash of the config keys that may not change on resume (model,
// optimizer, seed, training data), in 16 hex digits. Derived, not drawn, so that a resumed run's
// files equal an uninterrupted run's byte for byte.
std::string new_run_id(const Config& cfg) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char c : identity_config(cfg).dump()) h = (h ^ c) * 1099511628211ull;
  char b[20];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
  return b;
}

void run_train(const TrainArgs& a) {
  // A closed stdout pipe (`| head`, a dying `| tee`) must not kill a run: writes fail instead.
  std::signal(SIGPIPE, SIG_IGN);
  const dist::LaunchInfo li = dist::detect_launch();
  if (a.resume && !a.init_from.empty())
    throw UserError("--init-from starts a new run from a model file and --resume continues the run in --out-dir: "
                    "pass one of them");
  if (!a.init_from.empty()) check_input_file(a.init_from, "--init-from");
  std::vector<std::string> sets = a.sets;
  if (!a.device.empty()) sets.push_back("device=\"" + a.device + "\"");
  Config cfg = load_config(a.config, sets, li.world);
  const bool use_gpu = choose_gpu(cfg, li.local_rank);

  TrainOptions opt;
  opt.out_dir = a.out_dir;
  opt.resume = a.resume;
  opt.quiet = a.quiet || li.rank != 0;
  opt.rank = li.rank;
  opt.world = li.world;
  // Samples during training (sample.every) decode on the GPU when training runs there.
  if (use_gpu) opt.make_decoder = [](const ModelConfig& m) { return make_decoder(m, /*use_gpu=*/true); };
  // Rank 0 locks the run directory for the whole run (created if needed) before looking into it;
  // a start that fails before its first step leaves the folder as it found it.
  std::unique_ptr<RunDirStart> start;
  if (li.rank == 0) {
    start = std::make_unique<RunDirStart>(a.out_dir, "train");
    opt.start = start.get();
  }
  // Every input is checked on every rank before the ranks meet, so all report the same error.
  const int64_t ckpt = check_run_dir(opt);
  opt.resume_step = ckpt;
  opt.run_id = ckpt > 0 ? check_resume_config(cfg, opt.out_dir, ckpt, li.rank == 0) : "";
  if (opt.run_id.empty()) opt.run_id = new_run_id(cfg);
  check_data(cfg, li.world);
  check_host_memory(cfg, use_gpu);

  std::unique_ptr<dist::Comm> comm = make_comm(cfg, li, use_gpu);
  std::unique_ptr<Backend> be;  // outlives the try block: the catch aborts the communicator first
  TrainResult result;
  try {
    if (li.world > 1) {
      dist::Watchdog::instance().arm("starting the run");
      check_ranks_agree(*comm, launch_settings(cfg, a));
      // One identity for the run: rank 0's.
      std::vector<char> id(16, 0);
      if (li.rank == 0) std::copy(opt.run_id.begin(), opt.run_id.begin() + std::min<size_t>(16, opt.run_id.size()), id.begin());
      comm->broadcast(id.data(), id.size(), 0);
      opt.run_id.assign(id.begin(), id.end());
    }
    const ParamLayout layout = ParamLayout::make(cfg.model);
    std::vector<float> params(layout.total);
    if (!a.init_from.empty()) params = read_model_file(a.init_from, cfg.model);
    else init_params(params.data(), cfg.model, layout, cfg.seed);

    DistOptions dist;
    dist.comm = li.world > 1 ? comm.get() : nullptr;
    dist.zero = cfg.dist.zero == 1;
    try {
      be = make_backend(cfg, use_gpu, cfg.batch.micro_batch_size, params, dist);
    } catch (const std::bad_alloc&) {
      throw OutOfMemory("out of host memory while allocating the model's buffers: lower batch.micro_batch_size or "
                        "the model size");
    }
    // An optimizer this backend does not implement (Backend::cannot_run; every backend runs every
    // optimizer today) is refused before the run directory is written.
    if (const std::string why = be->cannot_run(cfg.optimizer.name); !why.empty()) throw UserError(why);
    // The run directory is written only once the model fits; every rank checked it before.
    write_run_dir(cfg, opt, ckpt);
    comm->barrier();
    if (!opt.quiet) {
      std::printf("device: %s, precision %s, run directory %s\n", be->name().c_str(), cfg.precision.c_str(),
                  a.out_dir.c_str());
      if (li.world > 1)
        std::printf("data parallel: %d processes (%s launch), communicator %s, ZeRO-1 %s\n", li.world,
                    li.launcher.c_str(), comm->name().c_str(), dist.zero ? "on" : "off");
    }
    result = train(cfg, *be, opt);
    if (start) start->commit();  // also a resume with no step left to run
  } catch (const std::exception& e) {
    if (start) start->rollback();  // a start that failed before its first step: nothing kept
    if (li.world == 1) throw;
    // Name the rank, and make the others stop now rather than at their watchdog's timeout.
    const bool user = dynamic_cast<const UserError*>(&e) != nullptr;
    const std::string msg = "rank " + std::to_string(li.rank) + ": " + e.what();
    // Under MPI (also when NCCL carries the training) MPI_Abort stops every rank at once; leaving
    // through MPI_Finalize instead would wait for the others, which wait for this rank.
    if (dist::Comm* mpi = mpi_holder() ? mpi_holder().get() : comm->name() == "mpi" ? comm.get() : nullptr) {
      std::fprintf(stderr, "%s: %s\n", user ? "error" : "internal error", msg.c_str());
      std::fflush(stderr);
      if (comm.get() != mpi) comm->abort(user ? 2 : 3);
      mpi->abort(user ? 2 : 3);  // does not return
    }
    comm->abort(user ? 2 : 3);
    if (user) throw UserError(msg);
    throw std::runtime_error(msg);
  }
  // Every rank stopped at the same step and the checkpoint is written: a distinct exit code.
  if (result.stopped_by_signal) throw ExitRequest(kExitStoppedBySignal);
}

}  // namespace

// ModelArgs, add_model_options and load_trained: declared in cli/model_args.h (export uses them too).
void add_model_options(CLI::App* c, ModelArgs& m) {
  c->add_option("-r,--run", m.run, "Run directory: its config.json and its newest checkpoint that verifies");
  c->add_option_function<int64_t>(
      "--step", [&m](const int64_t& v) { m.step = v; },
      "With --run: the checkpoint step to use (default: the newest whose files verify)");
  // Missing files are reported by the readers (exit code 2, like every bad input).
  c->add_option("-c,--config", m.config, "Config file (instead of --run)");
  c->add_option("-m,--model", m.model, "llm.c model file (instead of --run's checkpoint)");
  c->add_option("-s,--set", m.sets, "Override a config key: key.path=value (repeatable)");
}

namespace {
// The checkpoint of --run to load: --step's (which must be complete and verify) or the newest that
// verifies, by the rule of --resume (find_resume_checkpoint).
int64_t run_checkpoint(const ModelArgs& m) {
  namespace fs = std::filesystem;
  if (m.step) {
    const int64_t s = *m.step;
    const std::string mp = model_path(m.run, s), sp = state_path(m.run, s);
    std::error_code ec;
    const bool has_m = fs::exists(mp, ec), has_s = fs::exists(sp, ec);
    if (!has_m && !has_s) throw UserError("--run '" + m.run + "' has no checkpoint for step " + std::to_string(s));
    if (!has_m || !has_s)
      throw UserError("--step " + std::to_string(s) + ": checkpoint step " + std::to_string(s) + " of --run '" + m.run +
                      "' is incomplete: '" + (has_m ? sp : mp) + "' is missing");
    try {
      verify_checkpoint_file(mp);
      verify_checkpoint_file(sp);
    } catch (const UserError& e) {
      throw UserError("--step " + std::to_string(s) + ": checkpoint step " + std::to_string(s) + " is damaged: " +
                      e.what());
    }
    return s;
  }
  const ResumePoint rp = find_resume_checkpoint(m.run);
  for (const std::string& r : rp.rejected) std::fprintf(stderr, "warning: %s\n", r.c_str());
  if (rp.step < 0) {
    if (rp.rejected.empty())
      throw UserError("--run '" + m.run + "' holds no checkpoint (model_*.bin and state_*.bin)");
    throw UserError("--run '" + m.run + "' has no checkpoint that verifies (the damaged ones are named above)");
  }
  if (!rp.rejected.empty())
    std::fprintf(stderr, "warning: using the newest checkpoint that verifies, step %lld ('%s')\n",
                 static_cast<long long>(rp.step), model_path(m.run, rp.step).c_str());
  std::fflush(stderr);
  return rp.step;
}
}  // namespace

std::pair<Config, std::vector<float>> load_trained(const ModelArgs& m, std::string* source) {
  namespace fs = std::filesystem;
  if (m.step && *m.step < 0)
    throw UserError("--step must be >= 0 (a checkpoint's step; leave it out for the newest), got " +
                    std::to_string(*m.step));
  if (m.step && (m.run.empty() || !m.model.empty()))
    throw UserError("--step picks a checkpoint of --run; it needs --run and cannot go with --model");
  std::string config = m.config, model = m.model;
  std::string what = model;
  if (!m.run.empty()) {
    if (!fs::is_directory(m.run)) throw UserError("--run '" + m.run + "' is not a directory");
    if (config.empty()) config = (fs::path(m.run) / "config.json").string();
    if (model.empty()) {
      const int64_t step = run_checkpoint(m);
      model = model_path(m.run, step);
      what = "step " + std::to_string(step) + " of " + m.run;
    }
  }
  if (config.empty() || model.empty()) throw UserError("name a run directory (--run) or both --config and --model");
  Config cfg = load_config(config, m.sets);
  std::vector<float> params = read_model_file(model, cfg.model);
  if (source) *source = what;
  return {cfg, std::move(params)};
}

namespace {

struct SampleArgs {
  ModelArgs m;
  std::string prompt = "\n";
  std::string vocab;
  std::string device = "auto";
  int tokens = 100;
  double temperature = 1.0;
  int top_k = 40;
  double top_p = 1.0;
  std::string seed = "1";  // parsed by parse_seed: CLI11 would wrap "-1" to 2^64 - 1
  int batch = 1;                  // sequences decoded together
  std::string prompt_file;        // one prompt per line (empty lines skipped)
  std::string precision = "fp32"; // weights and KV cache of the batch decoder: fp32 | bf16
  bool prompt_given = false;      // --prompt was on the command line
};

// The flags of `sample` that choose the batch decoder, checked before anything is loaded:
// UserError naming the flag for a bad value.
void check_sample_batch_args(const SampleArgs& a) {
  if (a.batch < 1)
    throw UserError("--batch must be >= 1 (the number of sequences decoded together), not " + std::to_string(a.batch));
  if (a.precision != "fp32" && a.precision != "bf16")
    throw UserError("--precision must be fp32 or bf16, not '" + a.precision + "'");
  if (!a.prompt_file.empty() && a.prompt_given)
    throw UserError("--prompt and --prompt-file exclude each other: give the prompts in the file");
}

// The prompts of --prompt-file: one per line (without its newline), empty lines skipped.
std::vector<std::string> read_prompt_file(const std::string& path) {
  check_input_file(path, "--prompt-file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("--prompt-file " + path + ": cannot be read");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  if (f.bad()) throw UserError("--prompt-file " + path + ": read error");
  if (out.empty()) throw UserError("--prompt-file " + path + " holds no prompt (one per line, empty lines skipped)");
  return out;
}

// `sample --batch N`, `--prompt-file` or `--precision bf16`: the batch decoder (sample/batch.h).
// The prompts (the file's, else N copies of --prompt) are decoded in groups of `--batch`; prompt
// i (0-based) draws with seed + i. Each sample is printed when its group is done.
void run_sample_batch(const SampleArgs& a, const Config& cfg, const std::vector<float>& params, const Tokenizer& tok,
                      const SamplingOptions& so, bool use_gpu) {
  const std::vector<std::string> texts =
      a.prompt_file.empty() ? std::vector<std::string>(static_cast<size_t>(a.batch), a.prompt) : read_prompt_file(a.prompt_file);
  std::vector<std::vector<int>> ids(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    ids[i] = tok.encode(texts[i], /*allow_special=*/true);
    if (ids[i].empty()) ids[i].push_back(kEndOfText);
    for (int id : ids[i])
      if (id >= cfg.model.vocab_size)
        throw UserError((a.prompt_file.empty() ? std::string("--prompt") : "--prompt-file prompt " + std::to_string(i)) +
                        " encodes to token " + std::to_string(id) + ", outside the model's vocabulary");
  }
  const int P = static_cast<int>(texts.size()), slots = std::min(a.batch, P);
  std::unique_ptr<BatchDecoder> dec = make_batch_decoder(cfg.model, slots, use_gpu, a.precision == "bf16");
  dec->set_params(params.data());
  const auto t0 = std::chrono::steady_clock::now();
  int slides = 0;
  for (int first = 0; first < P; first += slots) {
    const int m = std::min(slots, P - first);
    std::vector<std::vector<int>> group(ids.begin() + first, ids.begin() + first + m);
    std::vector<uint64_t> seeds(m);
    for (int i = 0; i < m; ++i) seeds[i] = so.seed + static_cast<uint64_t>(first + i);
    const std::vector<std::vector<int>> out = generate_batch(*dec, group, a.tokens, so, seeds);
    for (int i = 0; i < m; ++i) {
      slides += dec->slides(i);
      std::printf("--- sample %d (seed %llu) ---\n", first + i, static_cast<unsigned long long>(seeds[i]));
      const std::string text = texts[first + i] + tok.decode(out[i]);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fputs("\n", stdout);
    }
    std::fflush(stdout);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const long long total = static_cast<long long>(a.tokens) * P;
  std::fprintf(stderr, "%lld tokens in %.3f s: %.1f tokens/s (%s; %d prompt(s) in batches of %d, %d slide(s))\n", total, s,
               s > 0 ? total / s : 0.0, dec->name().c_str(), P, slots, slides);
}


// Autoregressive sampling with the KV-cache decoder (docs/sampling.md): on the GPU when one is
// usable (--device auto), else on the CPU; the tokens are drawn on the host by sample/sampling.h.
void run_sample(const SampleArgs& a) {
  check_sample_batch_args(a);
  auto [cfg, params] = load_trained(a.m);
  if (a.tokens < 1) throw UserError("--tokens must be >= 1 (the number of tokens to generate), not " + std::to_string(a.tokens));
  SamplingOptions so;
  so.temperature = a.temperature;
  so.top_k = a.top_k;
  so.top_p = a.top_p;
  so.seed = parse_seed(a.seed, "--seed");
  validate_sampling_options(so, "--");
  const Tokenizer tok = Tokenizer::load(find_vocab_dir(a.vocab));
  const bool batched = a.batch > 1 || !a.prompt_file.empty() || a.precision == "bf16";
  std::vector<int> ids;
  if (!batched) {
    ids = tok.encode(a.prompt, /*allow_special=*/true);
    if (ids.empty()) ids.push_back(kEndOfText);
    for (int id : ids)
      if (id >= cfg.model.vocab_size)
        throw UserError("--prompt encodes to token " + std::to_string(id) + ", outside the model's vocabulary");
  }
  // The decoders are fp32 whatever precision the model was trained in (the batch decoder: bf16 on
  // request).
  bool use_gpu = false;
  if (a.device != "cpu") {
    select_gpu(0);
    std::string why;
    use_gpu = gpu_usable(&why);
    if (!use_gpu && a.device == "cuda") throw UserError("--device cuda was asked for but no GPU is usable: " + why);
    if (!use_gpu) std::fprintf(stderr, "note: no usable GPU (%s); sampling on the CPU\n", why.c_str());
  }
  if (!use_gpu && a.precision == "bf16")
    throw UserError("--precision bf16 needs the GPU (the CPU decoder is fp32 only)");
  if (batched) return run_sample_batch(a, cfg, params, tok, so, use_gpu);
  std::unique_ptr<Decoder> dec = make_decoder(cfg.model, use_gpu);
  dec->set_params(params.data());
  std::fputs(a.prompt.c_str(), stdout);
  const auto t0 = std::chrono::steady_clock::now();
  generate(*dec, ids, a.tokens, so, [&](int t) {
    const std::string piece = tok.decode(std::span<const int>(&t, 1));
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fputs("\n", stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "%d tokens in %.3f s: %.1f tokens/s (%s; prompt of %zu tokens, %d slide(s))\n", a.tokens, s,
               s > 0 ? a.tokens / s : 0.0, dec->name().c_str(), ids.size(), dec->slides());
}

struct EvalArgs {
  ModelArgs m;
  std::string device = "auto";
  std::optional<int> batches;  // absent: the config's eval.batches
  std::string hellaswag;  // HellaSwag JSONL: score it instead of the validation loss
  int64_t limit = 0;      // with hellaswag: the first N examples only (0: all)
  std::string vocab;
};

// HellaSwag accuracy (llm.c's acc_norm; src/eval/hellaswag.h, docs/eval.md) of a trained model.
void run_hellaswag_eval(const EvalArgs& a, const Config& cfg, bool use_gpu, const std::vector<float>& params) {
  if (a.limit < 0) throw UserError("--limit must be >= 0 (0: every example)");
  const auto t0 = std::chrono::steady_clock::now();
  const Tokenizer tok = Tokenizer::load(find_vocab_dir(a.vocab));
  const std::vector<HellaSwagExample> ex = load_hellaswag(a.hellaswag, tok, a.limit);
  const int B = cfg.batch.micro_batch_size, T = cfg.model.block_size;
  check_hellaswag(ex, cfg.model.vocab_size, T, a.hellaswag);
  auto be = make_backend(cfg, use_gpu, B, params);
  HellaSwagResult r;
  try {
    r = evaluate_hellaswag(*be, ex, 0, ex.size(), B, T, a.hellaswag);
  } catch (const std::logic_error& e) {  // a backend without per-position losses
    throw UserError("the " + be->name() + " backend cannot score HellaSwag (" + e.what() + "); try --device cpu");
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("hellaswag: acc_norm %.4f = %lld/%lld examples (%s, batches of %d x %d, %.1f s)\n", r.accuracy(),
              static_cast<long long>(r.correct), static_cast<long long>(r.total), be->name().c_str(), B, T, s);
  if (r.truncated > 0)
    std::printf("note: %lld example(s) did not fit in block_size %d: their context was cut from the left\n",
                static_cast<long long>(r.truncated), T);
}

// Validation loss of a trained model over the config's data.val (or --set data.val=...).
void run_eval(const EvalArgs& a) {
  if (a.batches && *a.batches < 1)
    throw UserError("--batches must be >= 1 (leave it out for the config's eval.batches), got " +
                    std::to_string(*a.batches));
  auto [cfg, params] = load_trained(a.m);
  cfg.device = a.device;
  const bool use_gpu = choose_gpu(cfg);
  if (!a.hellaswag.empty()) return run_hellaswag_eval(a, cfg, use_gpu, params);
  if (cfg.data.val.empty()) throw UserError("config key 'data.val' is empty: nothing to evaluate on");
  // The batches the run's own evaluations used: at a checkpoint's step this is the logged val loss.
  const LoaderOptions lo = val_loader_options(cfg, 0, 1);
  DataLoader val(lo);
  auto be = make_backend(cfg, use_gpu, lo.B, params);
  const int n = a.batches ? *a.batches : cfg.eval.batches;
  std::vector<int> inp(static_cast<size_t>(lo.B) * lo.T), tgt(inp.size());
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    val.next(inp.data(), tgt.data());
    sum += be->eval_micro(inp.data(), tgt.data(), lo.B, lo.T);
  }
  std::printf("val loss %.6f over %d batches of %d x %d tokens (%s)\n", sum / n, n, lo.B, lo.T, be->name().c_str());
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* t = app.add_subcommand("train", "Pretrain GPT-2 with Sophia-G or AdamW");
  t->add_option("-c,--config", args->config, "JSON config file (docs/config.md); defaults apply to absent keys");
  t->add_option("-s,--set", args->sets, "Override a config key: key.path=value (repeatable)");
  t->add_option("-o,--out-dir", args->out_dir, "Run directory (config.json, log.jsonl, checkpoints)")->capture_default_str();
  t->add_option("-d,--device", args->device, "cpu | cuda | auto (overrides the config's \"device\")")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  t->add_option("--init-from", args->init_from, "Start from this llm.c model file instead of a fresh init");
  t->add_flag("--resume", args->resume,
              "Continue from the newest checkpoint in --out-dir that verifies (step 0 when it has none)");
  t->add_flag("-q,--quiet", args->quiet, "No progress lines");
  t->callback([args] { run_train(*args); });

  auto sargs = std::make_shared<SampleArgs>();
  CLI::App* s = app.add_subcommand("sample", "Generate text from a trained model (KV cache; GPU when usable)");
  add_model_options(s, sargs->m);
  s->add_option("-p,--prompt", sargs->prompt, "Text to continue");
  s->add_option("-n,--tokens", sargs->tokens, "Tokens to generate")->capture_default_str();
  s->add_option("--temperature", sargs->temperature, "Softmax temperature")->capture_default_str();
  s->add_option("--top-k", sargs->top_k, "Sample among the k most likely tokens (0: all)")->capture_default_str();
  s->add_option("--top-p", sargs->top_p, "Nucleus: the fewest most likely tokens holding this much probability (1: all)")
      ->capture_default_str();
  s->add_option("--seed", sargs->seed, "Sampling seed, 0 to 2^64 - 1")->capture_default_str();
  s->add_option("-d,--device", sargs->device, "cpu | cuda | auto (default: the GPU when one is usable)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  s->add_option("--vocab", sargs->vocab, "Folder holding encoder.json and vocab.bpe (default: data/cache/gpt2)");
  s->add_option("--batch", sargs->batch,
                "Sequences decoded together by the batch decoder (> 1: N samples of --prompt, seeds seed..seed+N-1; "
                "with --prompt-file: prompts per group)")
      ->capture_default_str();
  s->add_option("--prompt-file", sargs->prompt_file,
                "One prompt per line (empty lines skipped), decoded by the batch decoder; prompt i uses seed + i");
  s->add_option("--precision", sargs->precision,
                "fp32 | bf16: weights and KV cache of the batch decoder (bf16: GPU only)")
      ->capture_default_str();
  s->callback([sargs, s] {
    sargs->prompt_given = s->get_option("--prompt")->count() > 0;
    run_sample(*sargs);
  });

  auto eargs = std::make_shared<EvalArgs>();
  CLI::App* e = app.add_subcommand("eval", "Validation loss (or HellaSwag accuracy) of a trained model");
  add_model_options(e, eargs->m);
  e->add_option("-d,--device", eargs->device, "cpu | cuda | auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  e->add_option_function<int>(
      "--batches", [ea = eargs.get()](const int& v) { ea->batches = v; },
      "Micro-batches to average, >= 1 (default: the config's eval.batches)");
  e->add_option("--hellaswag", eargs->hellaswag,
                "HellaSwag JSONL (hellaswag_val.jsonl, docs/eval.md): report its accuracy instead of the validation loss");
  e->add_option("--limit", eargs->limit, "With --hellaswag: the first N examples only (default: all)");
  e->add_option("--vocab", eargs->vocab, "With --hellaswag: folder holding encoder.json and vocab.bpe (default: data/cache/gpt2)");
  e->callback([eargs] { run_eval(*eargs); });

  // `info`: what this build and machine can do (scripts/demo.sh asks it whether a GPU is usable).
  auto gpu_only = std::make_shared<bool>(false);
  CLI::App* info = app.add_subcommand("info", "Whether this build has CUDA and a GPU is usable");
  info->add_flag("--gpu-usable", *gpu_only, "Only the answer, as the exit code: 0 when a GPU is usable, 1 when not");
  info->callback([gpu_only] {
    std::string why;
    const bool usable = gpu_usable(&why);
    if (*gpu_only) throw ExitRequest(usable ? 0 : 1);
    std::printf("cuda build: %s\n", cuda_built() ? "yes" : "no");
    std::printf("gpu: %s\n", usable ? "usable" : ("not usable (" + why + ")").c_str());
  });
}

}  // namespace sgpt
