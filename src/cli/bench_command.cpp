// `sophiagpt bench <what>`: the command line of the GPU benchmarks (bench optimizer, bench train:
// src/cuda/bench.cpp, which describes them). CUDA builds only; without CUDA every bench command
// fails with a clear message.
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/error.h"
#include "cuda/bench.h"
#include "device/factory.h"

namespace sgpt {

namespace {

[[noreturn]] void no_cuda() {
  throw UserError("bench needs a CUDA build: this build has no CUDA backend (nvcc was not found when it was "
                  "built; docs/gpu.md)");
}

}  // namespace

void add_bench_commands(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "GPU benchmarks (CUDA builds only)");
  if (cuda_built()) {
    bench->require_subcommand(1);
  } else {
    // Without CUDA every form of `bench` says so (exit 2), also without a subcommand.
    bench->require_subcommand(0, 1);
    bench->callback([] { no_cuda(); });
  }

  // ---- bench optimizer ----
  auto opt = std::make_shared<OptimizerBenchOptions>();
  CLI::App* optimizer = bench->add_subcommand(
      "optimizer",
      "Fused Sophia-G / Hessian EMA / AdamW kernels vs the unfused per-tensor sequence and the "
      "memory-bandwidth floor, on the GPT-2 124M/355M/774M parameter counts");
  optimizer->add_option("--models", opt->models, "Models among 124M, 355M, 774M")
      ->delimiter(',')
      ->capture_default_str();
  optimizer->add_option("--precisions", opt->precisions,
                        "Working-weight precisions among fp32, bf16, fp16 (bf16 grads for the "
                        "16-bit cases)")
      ->delimiter(',')
      ->capture_default_str();
  optimizer->add_option("--warmup", opt->warmup, "Untimed runs before timing")->capture_default_str();
  optimizer->add_option("--reps", opt->reps, "Timed runs (the median is reported)")
      ->capture_default_str();
  optimizer->callback([opt] {
    if (!cuda_built()) no_cuda();
    bench_optimizer(*opt);
  });

  // ---- bench train ----
  auto tr = std::make_shared<TrainBenchOptions>();
  CLI::App* train = bench->add_subcommand(
      "train",
      "Warm training steps of GPT-2 on the GPU (the training loop's backend calls) for AdamW, "
      "Sophia-G, Sophia-H and Lion: tokens/s, ms/step, MFU, GPU memory");
  train->add_option("--model", tr->model, "124M, 355M or 774M")->capture_default_str();
  train->add_option("--precision", tr->precision, "bf16 or fp32")->capture_default_str();
  train->add_option("--batch,--micro-batch", tr->batch,
                    "Micro-batch sequences (with --memory-budget-gib: the largest tried)")
      ->capture_default_str();
  train->add_option("--seq", tr->seq, "Sequence length T")->capture_default_str();
  train->add_option("--accum", tr->accum, "Micro-steps per optimizer step")->capture_default_str();
  train->add_option("--grad-accum", tr->grad_accum,
                    "Gradient accumulation over micro-steps in bf16: fp32 | bf16 | auto (fp32 when --accum > 1)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}))
      ->capture_default_str();
  train->add_option("--k", tr->k, "Sophia-G / Sophia-H hessian interval")->capture_default_str();
  train->add_option("--fractions", tr->fractions,
                    "Hessian estimator batch fractions (Sophia-G: GNB, Sophia-H: Hutchinson; "
                    "Sophia-H's exact product keeps every layer's activations and tangents for its "
                    "sequences, and with --hvp-attention materialized the attention's T x T "
                    "matrices: use small fractions, the recipes take 1 of 8)")
      ->delimiter(',')
      ->capture_default_str();
  train->add_option("--attention", tr->attentions,
                    "Attention implementations among auto, own, cudnn (each runs every optimizer "
                    "configuration; all interleaved)")
      ->delimiter(',')
      ->capture_default_str();
  train->add_option("--lm-head", tr->lm_heads,
                    "lm head precisions among bf16 and fp8 (config key `lm_head_precision`; each "
                    "runs every optimizer configuration; all interleaved)")
      ->delimiter(',')
      ->check(CLI::IsMember({"bf16", "fp8"}))
      ->capture_default_str();
  train->add_option("--hvp-attention", tr->hvp_attentions,
                    "Sophia-H's Hessian-vector product attention among fused (tensor-core "
                    "kernels, bf16 with head size 64) and materialized (fp32 T x T products); "
                    "each gives its own Sophia-H rows")
      ->delimiter(',')
      ->check(CLI::IsMember({"fused", "materialized"}))
      ->capture_default_str();
  train->add_option("--optimizers", tr->optimizers, "adamw, sophiag, sophiah, lion")
      ->delimiter(',')
      ->capture_default_str();
  train->add_option("--steps", tr->steps, "Timed steps per configuration (rounded up to a "
                                          "multiple of k)")
      ->capture_default_str();
  train->add_option("--warmup", tr->warmup, "Untimed steps per configuration (rounded up to a multiple of --k)")->capture_default_str();
  train->add_option("--peak-tflops", tr->peak_tflops,
                    "Peak TFLOP/s for MFU (default 0: the dense datasheet peak of the GPU, from "
                    "its name: H100 SXM / H200 bf16 989)")
      ->capture_default_str();
  train->add_option("--recompute", tr->recompute,
                    "Activation recompute: 0 none, 1 GELU outputs, 2 also LayerNorm outputs "
                    "(config key `recompute`)")
      ->capture_default_str();
  train->add_flag("--cuda-graphs", tr->cuda_graphs,
                  "Replay each micro-step from a CUDA graph (config key `cuda_graphs`)");
  train->add_flag("--memory", tr->memory,
                  "Print the byte breakdown of every device allocation of the backend");
  train->add_option("--memory-budget-gib", tr->memory_budget_gib,
                    "First find the largest micro-batch (--micro-batch, then smaller ones) whose "
                    "device memory fits this many GiB, then benchmark at it");
  train->add_flag("--bias", tr->bias,
                  "Model with linear and LayerNorm biases (llm.c's GPT-2); default without (the "
                  "official Sophia recipes)");
  train->add_option("--data", tr->data, "Glob of llm.c token shards (default: random tokens)");
  train->callback([tr] {
    if (!cuda_built()) no_cuda();
    if (tr->batch < 1 || tr->seq < 1 || tr->accum < 1 || tr->k < 1 || tr->warmup < 1)
      throw UserError("bench train: --batch, --seq, --accum, --k and --warmup must be >= 1");
    bench_train(*tr);
  });

  // ---- bench sample ----
  auto sa = std::make_shared<SampleBenchOptions>();
  CLI::App* sample = bench->add_subcommand(
      "sample",
      "Decoding speed from random weights (docs/sampling.md): the GPU decoder before graphs "
      "(eager, host logits), with graphs, and the batch decoder in fp32/bf16 at several batch "
      "sizes: tokens/s");
  sample->add_option("--models", sa->models, "Models among 124M, demo (configs/demo_gpu.json: 6 x 384)")
      ->delimiter(',')
      ->capture_default_str();
  sample->add_option("--batches", sa->batches, "Batch sizes of the batch decoder")
      ->delimiter(',')
      ->capture_default_str();
  sample->add_option("--precisions", sa->precisions, "Batch decoder precisions among fp32, bf16")
      ->delimiter(',')
      ->capture_default_str();
  sample->add_option("--tokens", sa->tokens, "Tokens generated per sequence")->capture_default_str();
  sample->add_option("--prompt", sa->prompt, "Random prompt tokens per sequence")->capture_default_str();
  sample->add_option("--top-k", sa->top_k, "Top-k cut of the sampling (0: none, every logit to the host)")
      ->capture_default_str();
  sample->add_option("--reps", sa->reps, "Timed runs per row (the median is reported)")->capture_default_str();
  sample->add_flag("!--no-baseline", sa->baseline, "Skip the eager row (the path before graphs)");
  sample->add_flag("!--plain-launches", sa->dependent_launches,
                   "The batch decoder without programmatic dependent launches (by default, on "
                   "Hopper and later, each kernel starts loading its weights while the one before "
                   "still runs)");
  sample->callback([sa] {
    if (!cuda_built()) no_cuda();
    bench_sample(*sa);
  });
}

}  // namespace sgpt
