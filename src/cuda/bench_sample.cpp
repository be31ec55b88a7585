// `sophiagpt bench sample`: decoding speed (tokens/s) on the GPU from random weights (options:
// cuda/bench.h). Rows, per model:
//   eager, host logits   the GPU decoder without graphs drawing from all logits on the host: the
//                        sampling path before graphs (cuda/decode_cuda.h), though with today's
//                        kernels (the fused residual + LayerNorm and the interleaved attention
//                        scores make it somewhat faster than a build from before them);
//   graphs               the GPU decoder (the default of `sample`): steps replayed from a CUDA
//                        graph, the top candidates selected on the device;
//   batch fp32|bf16 xN   the batch decoder (cuda/decode_batch.h) with N sequences; ", dependent"
//                        when its launches overlap (programmatic dependent launch, where the GPU
//                        and the build allow it, unless --plain-launches).
// Each sequence: a random prompt of --prompt tokens, then --tokens tokens (top-k --top-k, seed i
// for sequence i); the time covers the whole generation, prefill included, as `sample` reports it.
// tokens/s = sequences x --tokens / time, the median of --reps runs after an untimed one.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "common/error.h"
#include "cuda/bench.h"
#include "cuda/check.h"
#include "cuda/cuda_backend.h"
#include "cuda/decode_batch.h"
#include "cuda/decode_batch_ops.h"
#include "cuda/decode_cuda.h"
#include "model/gpt2.h"
#include "sample/batch.h"
#include "sample/decoder.h"
#include "sample/sampling.h"

namespace sgpt {
namespace {

ModelConfig sample_bench_model(const std::string& name) {
  ModelConfig c;  // vocab 50257 padded to 50304, block 1024
  if (name == "124M") {
    c.n_layer = 12, c.n_head = 12, c.n_embd = 768;
  } else if (name == "demo") {  // configs/demo_gpu.json
    c.n_layer = 6, c.n_head = 6, c.n_embd = 384, c.block_size = 512;
  } else {
    throw UserError("bench sample: unknown model '" + name + "' (use 124M or demo)");
  }
  return c;
}

double seconds_of(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median seconds of `reps` runs after one untimed run.
double median_seconds(const std::function<void()>& fn, int reps) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(seconds_of(fn));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void print_row(const std::string& model, const std::string& path, int seqs, int tokens, double s,
               double base_tps) {
  const double tps = seqs * double(tokens) / s;
  std::printf("%-6s %-28s %5d %10.1f %12.0f %10.3f", model.c_str(), path.c_str(), seqs, s * 1e3, tps,
              1e3 * s / tokens);
  if (base_tps > 0) std::printf(" %9.1fx", tps / base_tps);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

void bench_sample(const SampleBenchOptions& o) {
  std::string why;
  if (!cuda_usable(&why)) throw UserError("bench sample: no usable GPU: " + why);
  if (o.tokens < 1 || o.prompt < 1 || o.reps < 1 || o.top_k < 0)
    throw UserError("bench sample: --tokens, --prompt and --reps must be >= 1, --top-k >= 0");
  for (int b : o.batches)
    if (b < 1) throw UserError("bench sample: every --batches value must be >= 1, got " + std::to_string(b));
  for (const std::string& p : o.precisions)
    if (p != "fp32" && p != "bf16") throw UserError("bench sample: --precisions takes fp32 and bf16, got '" + p + "'");
  cudaDeviceProp prop{};
  int dev = 0;
  SGPT_CUDA_CHECK(cudaGetDevice(&dev));
  SGPT_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("bench sample: %d tokens per sequence after a %d-token random prompt, top-k %d, random weights, "
              "median of %d runs, on %s\n",
              o.tokens, o.prompt, o.top_k, o.reps, prop.name);
  std::printf("%-6s %-28s %5s %10s %12s %10s %10s\n", "model", "path", "seqs", "ms", "tokens/s", "ms/step",
              "vs eager");
  for (const std::string& name : o.models) {
    const ModelConfig c = sample_bench_model(name);
    const ParamLayout layout = ParamLayout::make(c);
    std::vector<float> params(layout.total);
    init_params(params.data(), c, layout, 1);
    const int max_batch = *std::max_element(o.batches.begin(), o.batches.end());
    std::mt19937 rng(7);
    std::vector<std::vector<int>> prompts(max_batch);
    for (auto& p : prompts)
      for (int i = 0; i < o.prompt; ++i) p.push_back(static_cast<int>(rng() % c.vocab_size));
    SamplingOptions so;
    so.top_k = o.top_k;
    so.seed = 0;
    double base_tps = 0;
    if (o.baseline) {  // the path before graphs: eager steps, every logit to the host
      auto d = make_cuda_decoder(c, CudaDecoderOptions{.graphs = false});
      d->set_params(params.data());
      const double s = median_seconds(
          [&] {
            d->reset();
            const float* l = d->prefill(prompts[0]);
            for (int i = 0; i < o.tokens; ++i) {
              const int t = sample_token(l, c.vocab_size, so, static_cast<uint32_t>(i));
              if (i + 1 < o.tokens) l = d->step(t);
            }
          },
          o.reps);
      base_tps = o.tokens / s;
      print_row(name, "eager, host logits", 1, o.tokens, s, 0);
    }
    {
      auto d = make_cuda_decoder(c, CudaDecoderOptions{.graphs = true});
      d->set_params(params.data());
      const double s = median_seconds([&] { generate(*d, prompts[0], o.tokens, so); }, o.reps);
      print_row(name, "graphs", 1, o.tokens, s, base_tps);
    }
    for (const std::string& prec : o.precisions) {
      for (int b : o.batches) {
        auto d = make_cuda_batch_decoder(
            c, b, CudaBatchOptions{.bf16 = prec == "bf16", .dependent_launches = o.dependent_launches});
        d->set_params(params.data());
        const std::vector<std::vector<int>> group(prompts.begin(), prompts.begin() + b);
        std::vector<uint64_t> seeds(b);
        for (int i = 0; i < b; ++i) seeds[i] = static_cast<uint64_t>(i);
        const double s = median_seconds([&] { generate_batch(*d, group, o.tokens, so, seeds); }, o.reps);
        const bool dep = o.dependent_launches && cuda::batch_dependent_launch_active();
        print_row(name, "batch " + prec + " x" + std::to_string(b) + (dep ? ", dependent" : ""), b,
                  o.tokens, s, base_tps);
      }
    }
  }
}

}  // namespace sgpt
