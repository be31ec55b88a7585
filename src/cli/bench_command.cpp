// `sophiagpt bench <what>`: GPU benchmarks. CUDA builds only; without CUDA every bench command
// fails with a clear message.
//
//   bench optimizer   the fused optimizer kernels (kernels/optimizer.cu) on the parameter counts of
//                     GPT-2 124M / 355M / 774M, against the unfused per-tensor sequence PyTorch's
//                     eager SophiaG runs, our AdamW kernel, and the memory-bandwidth floor
//                     (bytes moved / device-to-device copy bandwidth measured in the same run).
//   bench train       (reserved: registered below by the model/training side)
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "cli/commands.h"
#include "common/error.h"

#ifdef SGPT_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/check.h"
#include "cuda/optim_cuda.h"
#include "model/gpt2.h"
#endif

namespace sgpt {

namespace {

struct OptimizerBenchOptions {
  std::vector<std::string> models = {"124M", "355M", "774M"};
  std::vector<std::string> precisions = {"fp32", "bf16", "fp16"};
  int warmup = 5;
  int reps = 30;
};

#ifdef SGPT_WITH_CUDA

using bf16 = __nv_bfloat16;

ModelConfig official_model(const std::string& name) {
  ModelConfig cfg;  // vocab 50257 padded to 50304, block 1024, bias false
  if (name == "124M") cfg.n_layer = 12, cfg.n_head = 12, cfg.n_embd = 768;
  else if (name == "355M") cfg.n_layer = 24, cfg.n_head = 16, cfg.n_embd = 1024;
  else if (name == "774M") cfg.n_layer = 36, cfg.n_head = 20, cfg.n_embd = 1280;
  else throw UserError("bench optimizer: unknown model '" + name + "' (use 124M, 355M or 774M)");
  return cfg;
}

// Raw device allocation, freed on scope exit.
class DeviceBytes {
 public:
  explicit DeviceBytes(size_t bytes) { CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(bytes, 16))); }
  ~DeviceBytes() { cudaFree(p_); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  template <class T>
  T* as() { return static_cast<T*>(p_); }
 private:
  void* p_ = nullptr;
};

// Median device time (ms) of fn over `reps` runs after `warmup` runs, each bracketed by events.
template <class Fn>
double median_ms(Fn&& fn, int warmup, int reps, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(reps));
  for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(ev[2 * i], stream));
    fn();
    CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], stream));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> t(reps);
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
    t[i] = ms;
  }
  for (auto& e : ev) CUDA_CHECK(cudaEventDestroy(e));
  std::sort(t.begin(), t.end());
  return reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
}

// Device-to-device copy bandwidth (bytes read + bytes written per second) on 2 GiB buffers.
double copy_bandwidth(const OptimizerBenchOptions& o, cudaStream_t stream) {
  const size_t bytes = size_t(2) << 30;
  DeviceBytes a(bytes), b(bytes);
  cuda::fill_uniform<float>(a.as<float>(), bytes / 4, -1.0f, 1.0f, 1, stream);
  const double ms = median_ms(
      [&] { CUDA_CHECK(cudaMemcpyAsync(b.as<char>(), a.as<char>(), bytes, cudaMemcpyDeviceToDevice, stream)); },
      o.warmup, o.reps, stream);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3);
}

struct Row {
  std::string model, prec;
  size_t n = 0;
  double sophia_bytes = 0, adamw_bytes = 0, hess_bytes = 0;
  double fused = 0, fused_metrics = 0, unfused = 0, adamw = 0, hess = 0, hess_unfused = 0;
  size_t launches_unfused = 0;
};

// One precision case: GradT gradients, ParamT working weights (none for fp32: the master is
// the working copy).
template <class GradT, class ParamT>
void bench_case(Row& row, const ModelConfig& cfg, const ParamLayout& layout, float* p, float* m,
                float* h, float* v, void* graw, void* wraw, float* tmp,
                const OptimizerBenchOptions& o, cudaStream_t stream) {
  const size_t n = layout.total;
  constexpr bool kFp32 = std::is_same_v<ParamT, float>;
  GradT* g = static_cast<GradT*>(graw);
  ParamT* w = kFp32 ? nullptr : static_cast<ParamT*>(wraw);
  cuda::fill_uniform<GradT>(g, n, -1e-2f, 1e-2f, 11, stream);
  const cuda::DecayRanges decay = cuda::DecayRanges::from_layout(layout);
  const auto spans = cuda::pytorch_param_spans(layout, cfg.n_layer);
  const SophiaConsts sc = SophiaConsts::make(6e-4, 0.965, 0.05, 480 * 1024, 0.2);
  const HessianConsts hc = HessianConsts::make(0.99);
  const AdamWConsts ac = AdamWConsts::make(6e-4, 0.9, 0.95, 1e-8, 0.1, 10);
  cuda::ReduceScratch scratch;
  uint32_t step = 0;
  const double wbytes = kFp32 ? 0.0 : sizeof(ParamT);
  row.sophia_bytes = static_cast<double>(n) * (20.0 + sizeof(GradT) + wbytes);
  row.adamw_bytes = static_cast<double>(n) * (24.0 + sizeof(GradT) + wbytes);
  row.hess_bytes = static_cast<double>(n) * (8.0 + sizeof(GradT));
  row.launches_unfused = spans.size() * (10 + (kFp32 ? 0 : 1));

  row.fused = median_ms(
      [&] {
        cuda::sophia_step<GradT, ParamT>(p, m, h, g, w, n, decay, sc, {7, ++step, 0}, nullptr,
                                         stream);
      },
      o.warmup, o.reps, stream);
  row.fused_metrics = median_ms(
      [&] {
        cuda::sophia_step<GradT, ParamT>(p, m, h, g, w, n, decay, sc, {7, ++step, 0}, &scratch,
                                         stream);
      },
      o.warmup, o.reps, stream);
  row.unfused = median_ms(
      [&] {
        cuda::sophia_step_unfused<GradT, ParamT>(p, m, h, g, w, spans, sc, {7, ++step, 0}, tmp,
                                                 stream);
      },
      o.warmup, o.reps, stream);
  row.adamw = median_ms(
      [&] { cuda::adamw_step<GradT, ParamT>(p, m, v, g, w, n, decay, ac, {7, ++step, 0}, stream); },
      o.warmup, o.reps, stream);
  row.hess = median_ms([&] { cuda::hessian_ema<GradT>(h, g, n, hc, stream); }, o.warmup, o.reps,
                       stream);
  row.hess_unfused = median_ms([&] { cuda::hessian_ema_unfused<GradT>(h, g, spans, hc, stream); },
                               o.warmup, o.reps, stream);
}

void run_optimizer_bench(const OptimizerBenchOptions& o) {
  int dev_count = 0;
  if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0)
    throw UserError("bench optimizer: no usable CUDA device");
  for (const auto& pr : o.precisions)
    if (pr != "fp32" && pr != "bf16" && pr != "fp16")
      throw UserError("bench optimizer: unknown precision '" + pr + "' (use fp32, bf16, fp16)");
  if (o.reps < 1 || o.warmup < 0) throw UserError("bench optimizer: --reps >= 1, --warmup >= 0");
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double bw = copy_bandwidth(o, stream);
  std::printf("device: %s, %d SMs, L2 %.0f MB; D2D copy bandwidth %.0f GB/s (read + write)\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6, bw / 1e9);
  std::printf("median of %d reps after %d warm-up; every buffer is far larger than L2\n",
              o.reps, o.warmup);
  std::fflush(stdout);

  std::vector<Row> rows;
  for (const auto& name : o.models) {
    const ModelConfig cfg = official_model(name);
    const ParamLayout layout = ParamLayout::make(cfg);
    const size_t n = layout.total;
    size_t max_span = 0;
    for (const auto& s : cuda::pytorch_param_spans(layout, cfg.n_layer))
      max_span = std::max(max_span, s.end - s.begin);
    DeviceBytes p(n * 4), m(n * 4), h(n * 4), v(n * 4), g(n * 4), w(n * 2), tmp(3 * max_span * 4);
    cuda::fill_uniform<float>(p.as<float>(), n, -0.05f, 0.05f, 1, stream);
    cuda::fill_uniform<float>(m.as<float>(), n, -1e-3f, 1e-3f, 2, stream);
    cuda::fill_uniform<float>(h.as<float>(), n, 0.0f, 1e-5f, 3, stream);
    cuda::fill_uniform<float>(v.as<float>(), n, 0.0f, 1e-5f, 4, stream);
    for (const auto& pr : o.precisions) {
      Row r;
      r.model = name;
      r.prec = pr;
      r.n = n;
      if (pr == "fp32")
        bench_case<float, float>(r, cfg, layout, p.as<float>(), m.as<float>(), h.as<float>(),
                                 v.as<float>(), g.as<void>(), w.as<void>(), tmp.as<float>(), o,
                                 stream);
      else if (pr == "bf16")
        bench_case<bf16, bf16>(r, cfg, layout, p.as<float>(), m.as<float>(), h.as<float>(),
                               v.as<float>(), g.as<void>(), w.as<void>(), tmp.as<float>(), o,
                               stream);
      else
        bench_case<bf16, __half>(r, cfg, layout, p.as<float>(), m.as<float>(), h.as<float>(),
                                 v.as<float>(), g.as<void>(), w.as<void>(), tmp.as<float>(), o,
                                 stream);
      std::fprintf(stderr, "  done %s %s\n", name.c_str(), pr.c_str());
      rows.push_back(r);
    }
  }
  CUDA_CHECK(cudaStreamDestroy(stream));

  // Markdown tables; times in ms, "% floor" = floor time / measured time.
  std::printf("\nSophia-G step (weights w / grads g; fp32 = fp32 master is the working copy)\n\n");
  std::printf("| model | params | w/g | B/param | floor ms | fused ms | %% floor | fused+metrics ms |"
              " unfused ms (launches) | fused speedup |\n");
  std::printf("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    const double floor_ms = r.sophia_bytes / bw * 1e3;
    std::printf("| %s | %.1fM | %s/%s | %.0f | %.3f | %.3f | %.1f%% | %.3f | %.3f (%zu) | %.1fx |\n",
                r.model.c_str(), r.n / 1e6, r.prec.c_str(), r.prec == "fp32" ? "fp32" : "bf16",
                r.sophia_bytes / r.n, floor_ms, r.fused, 100.0 * floor_ms / r.fused,
                r.fused_metrics, r.unfused, r.launches_unfused, r.unfused / r.fused);
  }
  std::printf("\nAdamW step and Hessian EMA (same buffers)\n\n");
  std::printf("| model | w/g | AdamW B/param | AdamW floor ms | AdamW ms | %% floor | Sophia/AdamW |"
              " EMA floor ms | EMA fused ms | %% floor | EMA unfused ms |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    const double af = r.adamw_bytes / bw * 1e3, hf = r.hess_bytes / bw * 1e3;
    std::printf("| %s | %s/%s | %.0f | %.3f | %.3f | %.1f%% | %.2f | %.3f | %.3f | %.1f%% | %.3f |\n",
                r.model.c_str(), r.prec.c_str(), r.prec == "fp32" ? "fp32" : "bf16",
                r.adamw_bytes / r.n, af, r.adamw, 100.0 * af / r.adamw, r.fused / r.adamw, hf,
                r.hess, 100.0 * hf / r.hess, r.hess_unfused);
  }
}

#endif  // SGPT_WITH_CUDA

[[noreturn, maybe_unused]] void no_cuda() { throw UserError("bench needs a CUDA build"); }

}  // namespace

void add_bench_commands(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "GPU benchmarks (CUDA builds only)");
  bench->require_subcommand(1);

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
#ifdef SGPT_WITH_CUDA
    run_optimizer_bench(*opt);
#else
    no_cuda();
#endif
  });

  // ---- bench train: reserved for the model/training side ----
  // Register `bench train` here (a subcommand of `bench`, guarded by SGPT_WITH_CUDA like the
  // optimizer bench, calling no_cuda() otherwise).
}

}  // namespace sgpt
