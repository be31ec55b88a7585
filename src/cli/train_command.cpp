// `sophiagpt train`: resolve the config, pick the device, build the backend, run the loop.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/error.h"
#include "config/config.h"
#include "model/checkpoint.h"
#include "train/cpu_backend.h"
#include "train/trainer.h"
#ifdef SGPT_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace sgpt {
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

bool gpu_usable(std::string* why) {
#ifdef SGPT_WITH_CUDA
  return cuda_usable(why);
#else
  *why = "this build has no CUDA backend (nvcc was not found when it was built)";
  return false;
#endif
}

void run_train(const TrainArgs& a) {
  std::vector<std::string> sets = a.sets;
  if (!a.device.empty()) sets.push_back("device=\"" + a.device + "\"");
  Config cfg = load_config(a.config, sets);

  std::string why;
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

  TrainOptions opt;
  opt.out_dir = a.out_dir;
  opt.resume = a.resume;
  opt.quiet = a.quiet;
  prepare_run_dir(cfg, opt);

  const ParamLayout layout = ParamLayout::make(cfg.model);
  std::vector<float> params(layout.total);
  if (!a.init_from.empty()) params = read_model_file(a.init_from, cfg.model);
  else init_params(params.data(), cfg.model, layout, cfg.seed);

  std::unique_ptr<Backend> be;
  if (use_gpu) {
#ifdef SGPT_WITH_CUDA
    be = make_cuda_backend(cfg.model, cfg.batch.micro_batch_size, cfg.model.block_size,
                           cfg.precision == "bf16" ? Precision::kBf16 : Precision::kFp32, params);
#endif
  } else {
    be = make_cpu_backend(cfg.model, cfg.batch.micro_batch_size, cfg.model.block_size, params);
  }
  if (!a.quiet) std::printf("device: %s, precision %s, run directory %s\n", be->name().c_str(),
                            cfg.precision.c_str(), a.out_dir.c_str());
  train(cfg, *be, opt);
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* t = app.add_subcommand("train", "Pretrain GPT-2 with Sophia-G or AdamW");
  t->add_option("-c,--config", args->config, "JSON config file (docs/config.md); defaults apply to absent keys")
      ->check(CLI::ExistingFile);
  t->add_option("-s,--set", args->sets, "Override a config key: key.path=value (repeatable)");
  t->add_option("-o,--out-dir", args->out_dir, "Run directory (config.json, log.jsonl, checkpoints)")->capture_default_str();
  t->add_option("-d,--device", args->device, "cpu | cuda | auto (overrides the config's \"device\")")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  t->add_option("--init-from", args->init_from, "Start from this llm.c model file instead of a fresh init")
      ->check(CLI::ExistingFile);
  t->add_flag("--resume", args->resume, "Continue from the newest checkpoint in --out-dir");
  t->add_flag("-q,--quiet", args->quiet, "No progress lines");
  t->callback([args] { run_train(*args); });
}

}  // namespace sgpt
