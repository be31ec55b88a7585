// `sophiagpt bench <what>`: the GPU benchmarks (entry points and options: cuda/bench.h; the
// command line: src/cli/bench_command.cpp).
//
//   bench optimizer   the fused optimizer kernels (kernels/optimizer.cu) on the parameter counts of
//                     GPT-2 124M / 355M / 774M, against the unfused per-tensor sequence PyTorch's
//                     eager SophiaG runs, our AdamW kernel, and the memory-bandwidth floor
//                     (bytes moved / device-to-device copy bandwidth measured in the same run).
//   bench train       warm steps of the training loop's sequence of backend calls (zero_grad,
//                     micro-steps, grad norm + clip, optimizer step, GNB pass every k steps) on a
//                     GPT-2 CudaBackend (124M, 355M, 774M), for AdamW and Sophia-G: tokens/s,
//                     ms/step, MFU, memory; --recompute, --memory (the byte breakdown of every
//                     device allocation), --memory-budget-gib (the largest micro-batch that fits).
#include "cuda/bench.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/error.h"
#include "eval/mfu.h"

#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <random>

#include "optim/update_rules.h"
#include "cuda/check.h"
#include "cuda/cuda_backend.h"
#include "config/config.h"
#include "cuda/optim_cuda.h"
#include "data/loader.h"
#include "model/gpt2.h"
#include "train/step.h"

namespace sgpt {

namespace {

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


// ---- bench train ----
// The training loop's sequence of backend calls (src/train/trainer.cpp), without eval, logging and
// checkpoints: zero_grad; accum x train_micro; grad_sum_squares (+ scale_grad when clipping);
// optimizer step; for Sophia-G on steps with step % k == k-1 also zero_grad, accum x gnb_micro on
// fraction*B sequences, grad_sum_squares (+ clip), hessian_ema; for Sophia-H on those steps
// zero_grad, accum x hvp_micro on fraction*B sequences (the exact Hessian-vector product),
// grad_sum_squares, hutchinson_ema. The device is synchronized after
// every step (the loop synchronizes through its loss and norm reads anyway), so per-step host
// times are exact.
class TokenSource {
 public:
  TokenSource(const TrainBenchOptions& o, int vocab) : n_(size_t(o.batch) * o.seq) {
    if (!o.data.empty()) {
      LoaderOptions lo;
      lo.pattern = o.data;
      lo.B = o.batch;
      lo.T = o.seq;
      lo.vocab_size = vocab;
      loader_ = std::make_unique<DataLoader>(lo);
      return;
    }
    std::mt19937_64 gen(1234);  // random tokens: speed does not depend on the ids
    std::uniform_int_distribution<int> d(0, vocab - 1);
    for (auto& b : bank_) {
      b.resize(n_ + 1);
      for (auto& t : b) t = d(gen);
    }
  }
  void next(int* inp, int* tgt) {
    if (loader_) return loader_->next(inp, tgt);
    const auto& b = bank_[i_++ % 4];
    std::copy(b.begin(), b.begin() + n_, inp);
    std::copy(b.begin() + 1, b.end(), tgt);
  }

 private:
  size_t n_;
  std::unique_ptr<DataLoader> loader_;
  std::vector<int> bank_[4];
  size_t i_ = 0;
};

struct TrainBenchResult {
  std::string name, attention;
  std::string optimizer;  // adamw, sophiag, sophiah, lion
  double fraction = 0;
  double mean_ms = 0, plain_ms = 0, gnb_ms = 0;  // all steps; steps without / with a GNB pass
  int steps = 0, gnb_steps = 0;
  double mem_gib = 0;   // peak device memory used minus the level before the backend existed
  double used_gib = 0;  // peak device memory used (cudaMemGetInfo total - free, the whole device)
  float last_loss = 0;
};

using MemoryItems = std::vector<std::pair<std::string, size_t>>;

size_t device_used_bytes() {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

// One configuration of the benchmark (AdamW, Lion, or Sophia-G / Sophia-H with one estimator
// batch fraction) and the times of its steps.
struct TrainBenchConfig {
  std::string name;
  std::string optimizer = "adamw";
  std::string attention = "auto";
  std::string lm_head = "bf16";  // "bf16" | "fp8" (config key lm_head_precision)
  double fraction = 1.0;
  bool hvp_fused = true;  // Sophia-H: the fused attention of the Hessian-vector product
  int64_t step = 0;  // its own step counter: a GNB pass on step % k == k-1
  double total = 0, plain = 0, gnbt = 0;
  int nplain = 0, ngnb = 0;
  float last_loss = 0;
};

// All configurations share one backend (the weights are whatever the steps make of them: timing
// does not depend on their values) and run in interleaved rounds of k steps each, so that a drift
// of the GPU's speed over the run (seen: plain steps 138.8 -> 147.7 ms across two consecutive
// sequential runs) affects every configuration alike instead of biasing the comparison.
std::vector<TrainBenchResult> run_train_configs(const TrainBenchOptions& o, const ModelConfig& mc,
                                                const std::vector<float>& init,
                                                std::vector<TrainBenchConfig>& cfgs,
                                                MemoryItems* breakdown) {
  CUDA_CHECK(cudaDeviceSynchronize());
  const size_t used0 = device_used_bytes();
  size_t used_peak = used0;
  const Precision prec = o.precision == "fp32" ? Precision::kFp32 : Precision::kBf16;
  std::unique_ptr<Backend> be;
  try {
    be = make_cuda_backend(mc, o.batch, o.seq, prec, init,
                           attention_impl_from_name(cfgs.front().attention));
    be->set_recompute(o.recompute);
    be->set_grad_accum_fp32(Config::grad_accum_fp32_for(o.grad_accum, o.accum));
    be->set_cuda_graphs(o.cuda_graphs);
    for (const auto& a : o.attentions) {
      be->set_attention(attention_impl_from_name(a));
      std::printf("attention %s: %s\n", a.c_str(), be->name().c_str());
    }
  } catch (const std::invalid_argument& e) {
    throw UserError(std::string("bench train: ") + e.what());
  }
  TokenSource src(o, mc.vocab_size);
  const int B = o.batch, T = o.seq, k = o.k;
  const double tokens = double(B) * T * o.accum;
  std::vector<int> inp(size_t(B) * T), tgt(size_t(B) * T);
  const NextBatch next = [&](int* i, int* t) { src.next(i, t); };
  // Each configuration's step plan: the recipes' hyperparameters (timing does not depend on them).
  std::vector<StepPlan> plans;
  for (const auto& c : cfgs) {
    StepPlan p;
    p.B = B;
    p.T = T;
    p.accum = o.accum;
    p.grad_scale = 1.0f / o.accum;
    p.opt.name = c.optimizer;
    p.opt.lr = c.optimizer == "lion" ? 6e-5 : 6e-4;
    const bool sophia = c.optimizer == "sophiag" || c.optimizer == "sophiah";
    p.opt.beta1 = sophia ? 0.965 : (c.optimizer == "lion" ? 0.95 : 0.9);
    p.opt.beta2 = sophia ? 0.99 : (c.optimizer == "lion" ? 0.98 : 0.95);
    p.opt.rho = c.optimizer == "sophiah" ? 0.01 : 0.04;
    p.opt.weight_decay = 0.1;
    p.opt.eps = c.optimizer == "sophiah" ? 1e-12 : 1e-8;
    p.opt.grad_clip = 1.0;
    p.bs = tokens;
    p.k = k;
    p.Bh = std::max(1, static_cast<int>(std::floor(c.fraction * B)));
    p.seed = 1337;
    if (sophia) p.estimator = make_hessian_estimator(c.optimizer == "sophiag" ? "gnb" : "hutchinson");
    plans.push_back(p);
  }
  auto step = [&](TrainBenchConfig& c, const StepPlan& plan) {
    const int64_t s = c.step++;
    const StepOutcome out = train_step(*be, next, plan, s, plan.opt.lr, inp, tgt);
    c.last_loss = static_cast<float>(out.loss);
    CUDA_CHECK(cudaDeviceSynchronize());
    used_peak = std::max(used_peak, device_used_bytes());
    return out.gnb;
  };
  using clock = std::chrono::steady_clock;
  // Warm-up: ceil(warmup / k) untimed rounds (each Sophia-G configuration runs a GNB pass in each).
  const int warm_rounds = (std::max(o.warmup, 1) + k - 1) / k;
  const int rounds = (std::max(o.steps, 1) + k - 1) / k;
  for (int r = 0; r < warm_rounds + rounds; ++r) {
    for (size_t ci = 0; ci < cfgs.size(); ++ci) {
      TrainBenchConfig& c = cfgs[ci];
      be->set_attention(attention_impl_from_name(c.attention));
      be->set_hvp_fused_attention(c.hvp_fused);
      try {
        be->set_lm_head_fp8(c.lm_head == "fp8");
      } catch (const std::invalid_argument& e) {
        throw UserError(std::string("bench train: --lm-head fp8: ") + e.what());
      }
      for (int i = 0; i < k; ++i) {
        const auto t0 = clock::now();
        const bool gnb = step(c, plans[ci]);
        const double ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
        if (r < warm_rounds) continue;
        c.total += ms;
        (gnb ? c.gnbt : c.plain) += ms;
        (gnb ? c.ngnb : c.nplain) += 1;
      }
    }
  }
  std::vector<TrainBenchResult> res;
  for (const auto& c : cfgs) {
    TrainBenchResult r;
    r.name = c.name;
    r.attention = c.attention + (c.lm_head == "fp8" ? " + FP8 head" : "");
    r.optimizer = c.optimizer;
    r.fraction = c.fraction;
    r.steps = c.nplain + c.ngnb;
    r.gnb_steps = c.ngnb;
    r.mean_ms = c.total / r.steps;
    r.plain_ms = c.nplain ? c.plain / c.nplain : 0;
    r.gnb_ms = c.ngnb ? c.gnbt / c.ngnb : 0;
    r.mem_gib = double(used_peak - used0) / double(1u << 30);
    r.used_gib = double(used_peak) / double(1u << 30);
    r.last_loss = c.last_loss;
    res.push_back(r);
  }
  if (breakdown) *breakdown = be->memory_breakdown();
  if (o.cuda_graphs) std::printf("CUDA graphs: %s\n", be->cuda_graphs_status().c_str());
  return res;
}

// The backend's device allocations, one row each, with their sum against what cudaMemGetInfo saw.
void print_memory_breakdown(const MemoryItems& items, const TrainBenchResult& r) {
  size_t sum = 0;
  for (const auto& it : items) sum += it.second;
  const double mib = 1024.0 * 1024.0;
  std::printf("\nDevice memory breakdown (every allocation of the backend, bytes as allocated, after "
              "the runs; N = micro-batch x T):\n\n| allocation | MiB |\n|---|---:|\n");
  for (const auto& it : items) std::printf("| %s | %.1f |\n", it.first.c_str(), it.second / mib);
  std::printf("| **sum** | **%.1f** (%.2f GiB) |\n", sum / mib, sum / (mib * 1024));
  std::printf("| cudaMemGetInfo: peak used minus the level before the backend | %.1f |\n",
              r.mem_gib * 1024);
  std::printf("| cudaMemGetInfo: peak used, whole device (CUDA context included) | %.1f |\n",
              r.used_gib * 1024);
}

// The largest micro-batch that fits `o.memory_budget_gib`: --micro-batch, then the sizes below it
// in a fixed ladder, largest first. Each candidate gets a fresh backend that runs an AdamW step
// and a Sophia-G step with a full-batch GNB pass (so the optimizer state m, v, h, the scratch and
// every plan exist) and fits when the device memory then in use (cudaMemGetInfo total - free,
// CUDA context included: what an 80 GiB card must hold) is within the budget. A candidate whose
// allocations fail is skipped cleanly: every buffer is freed as the backend is destroyed, a failed
// cudaMalloc leaves no error state behind (DeviceBuffer::resize clears it), and the device is
// checked to be healthy before the next candidate.
int find_micro_batch(const TrainBenchOptions& o, const ModelConfig& mc,
                     const std::vector<float>& init) {
  static const int kLadder[] = {512, 384, 256, 192, 128, 96, 64, 48, 32, 24, 16, 12, 8, 6, 4, 3,
                                2, 1};
  std::vector<int> cands = {o.batch};
  for (int b : kLadder)
    if (b < o.batch) cands.push_back(b);
  const Precision prec = o.precision == "fp32" ? Precision::kFp32 : Precision::kBf16;
  const double budget = o.memory_budget_gib * double(1u << 30);
  std::printf("largest micro-batch within %.1f GiB (recompute %d, attention %s):\n\n"
              "| micro-batch | device used GiB | verdict |\n|---:|---:|---|\n",
              o.memory_budget_gib, o.recompute, o.attentions.front().c_str());
  for (int B : cands) {
    TrainBenchOptions t = o;
    t.batch = B;
    std::string verdict;
    size_t used = 0;
    try {
      auto be = make_cuda_backend(mc, B, o.seq, prec, init,
                                  attention_impl_from_name(o.attentions.front()));
      be->set_recompute(o.recompute);
      TokenSource src(t, mc.vocab_size);
      std::vector<int> inp(size_t(B) * o.seq), tgt(size_t(B) * o.seq);
      src.next(inp.data(), tgt.data());
      be->zero_grad();
      be->train_micro(inp.data(), tgt.data(), B, o.seq, 1.0f);
      OptimizerConfig adamw, sophiag;
      adamw.name = "adamw";
      be->optimizer_step(OptimizerStep{&adamw, 6e-4, 1, double(B) * o.seq}, nullptr);
      be->optimizer_step(OptimizerStep{&sophiag, 6e-4, 1, double(B) * o.seq}, nullptr);
      be->zero_grad();
      be->gnb_micro(inp.data(), B, o.seq, 1.0f, 1337, 0, 0);
      be->hessian_ema(HessianConsts::make(0.99));
      CUDA_CHECK(cudaDeviceSynchronize());
      used = device_used_bytes();
    } catch (const std::invalid_argument& e) {
      throw UserError(std::string("bench train: ") + e.what());
    } catch (const std::exception& e) {
      const std::string what = e.what();
      verdict = "does not fit: " + what.substr(0, what.find('\n'));
    }
    cudaGetLastError();  // a failed allocation's error, if a library left one behind
    if (cudaDeviceSynchronize() != cudaSuccess)
      throw UserError("bench train: the device is in an error state after micro-batch " +
                      std::to_string(B) + ": " + cudaGetErrorString(cudaGetLastError()));
    const bool fits = verdict.empty() && static_cast<double>(used) <= budget;
    if (verdict.empty()) verdict = fits ? "fits" : "over budget";
    char u[32] = "-";
    if (used) std::snprintf(u, sizeof u, "%.2f", used / double(1u << 30));
    std::printf("| %d | %s | %s |\n", B, u, verdict.c_str());
    std::fflush(stdout);
    if (fits) {
      std::printf("\n");
      return B;
    }
  }
  throw UserError("bench train: no micro-batch fits in " + std::to_string(o.memory_budget_gib) +
                  " GiB");
}

void run_train_bench(const TrainBenchOptions& opts) {
  TrainBenchOptions o = opts;
  ModelConfig mc = official_model(o.model);
  mc.bias = o.bias;
  if (o.seq > mc.block_size) throw UserError("bench train: --seq exceeds the block size 1024");
  if (o.precision != "bf16" && o.precision != "fp32")
    throw UserError("bench train: --precision must be bf16 or fp32");
  const ParamLayout layout = ParamLayout::make(mc);
  std::vector<float> init(layout.total);
  init_params(init.data(), mc, layout, 1);
  if (o.recompute < 0 || o.recompute > 2)
    throw UserError("bench train: --recompute must be 0, 1 or 2");
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  if (o.memory_budget_gib > 0) o.batch = find_micro_batch(o, mc, init);
  // MFU peak: --peak-tflops, else the datasheet dense peak of this GPU (0: unknown, no MFU).
  const double peak =
      o.peak_tflops > 0 ? o.peak_tflops : detect_peak_tflops(prop.name, o.precision);
  // Model flops per trained token, 6 N + 12 L C T: src/eval/mfu.h (shared with the training log).
  const double N = double(layout.total);
  const double flops_tok = training_flops_per_token(mc, layout.total, o.seq);
  const double tokens = double(o.batch) * o.seq * o.accum;
  std::printf("bench train: GPT-2 %s%s (%.1fM params), %s, micro-batch %d x %d, %d micro-step(s) = "
              "%.0f tokens/step, %s tokens, recompute %d, CUDA graphs %s, on %s (%d SMs, %.1f GiB)\n",
              o.model.c_str(), o.bias ? " with biases" : " without biases", N / 1e6,
              o.precision.c_str(), o.batch, o.seq, o.accum, tokens,
              o.data.empty() ? "random" : o.data.c_str(), o.recompute, o.cuda_graphs ? "on" : "off", prop.name,
              prop.multiProcessorCount, prop.totalGlobalMem / double(1u << 30));
  if (peak > 0)
    std::printf("MFU = (6N + 12 L C T) x tokens / step time / %.0f TFLOP/s (%s); GNB passes and "
                "recomputed activations are not counted as model flops\n\n",
                peak, o.peak_tflops > 0 ? "given peak" : "dense datasheet peak of this GPU");
  else
    std::printf("MFU: peak of this GPU unknown (give --peak-tflops)\n\n");
  std::vector<TrainBenchConfig> cfgs;
  for (const auto& head : o.lm_heads)
    if (head != "bf16" && head != "fp8")
      throw UserError("bench train: unknown --lm-head '" + head + "' (bf16, fp8)");
  // Every (lm head, attention) pair runs every optimizer configuration.
  for (const auto& head : o.lm_heads)
  for (const auto& a : o.attentions) {
    if (a != "auto" && a != "own" && a != "cudnn")
      throw UserError("bench train: unknown --attention '" + a + "' (auto, own, cudnn)");
    for (const auto& opt : o.optimizers) {
      if (opt == "adamw" || opt == "lion") {
        TrainBenchConfig c;
        c.name = opt;
        c.optimizer = opt;
        c.attention = a;
        c.lm_head = head;
        cfgs.push_back(c);
      } else if (opt == "sophiag" || opt == "sophiah") {
        const std::vector<std::string> hvps =
            opt == "sophiah" ? o.hvp_attentions : std::vector<std::string>{"fused"};
        for (double f : o.fractions)
          for (const auto& hv : hvps) {
            if (hv != "fused" && hv != "materialized")
              throw UserError("bench train: unknown --hvp-attention '" + hv + "' (fused, materialized)");
            TrainBenchConfig c;
            char b[96];
            std::snprintf(b, sizeof b, "%s k=%d frac=%.2g%s", opt.c_str(), o.k, f,
                          hvps.size() > 1 ? (" hvp " + hv).c_str() : "");
            c.name = b;
            c.attention = a;
            c.lm_head = head;
            c.optimizer = opt;
            c.fraction = f;
            c.hvp_fused = hv == "fused";
            cfgs.push_back(c);
          }
      } else {
        throw UserError("bench train: unknown optimizer '" + opt + "' (adamw, sophiag, sophiah, lion)");
      }
    }
  }
  if (cfgs.empty()) throw UserError("bench train: no configuration to run");
  MemoryItems breakdown;
  const std::vector<TrainBenchResult> res = run_train_configs(o, mc, init, cfgs, &breakdown);
  for (const auto& r : res)
    std::printf("  done %-22s [%s] %.2f ms/step (loss %.3f)\n", r.name.c_str(),
                r.attention.c_str(), r.mean_ms, r.last_loss);
  std::printf("\n| optimizer | attention | steps (GNB) | ms/step mean | plain step ms | GNB step ms |"
              " tokens/s | MFU | GPU memory GiB | device used GiB | vs AdamW | Sophia bound |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : res) {
    const double tps = tokens / (r.mean_ms / 1e3);
    char mfu[32] = "-";
    if (peak > 0) std::snprintf(mfu, sizeof mfu, "%.1f%%", 100.0 * flops_tok * tps / (peak * 1e12));
    double adamw_ms = 0;  // the AdamW configuration with the same attention
    for (const auto& a : res)
      if (a.optimizer == "adamw" && a.attention == r.attention) adamw_ms = a.mean_ms;
    char vs[32] = "-", bound[48] = "-";
    if (r.optimizer != "adamw" && adamw_ms > 0) std::snprintf(vs, sizeof vs, "%.3fx", r.mean_ms / adamw_ms);
    if (r.optimizer == "sophiag" && adamw_ms > 0) {
      const double b = adamw_ms * (1.0 + r.fraction / o.k) * 1.01;
      std::snprintf(bound, sizeof bound, "%.2f ms %s", b, r.mean_ms <= b ? "met" : "MISSED");
    }
    char gnb[32] = "-";
    if (r.gnb_steps) std::snprintf(gnb, sizeof gnb, "%.2f", r.gnb_ms);
    std::printf("| %s | %s | %d (%d) | %.2f | %.2f | %s | %.0f | %s | %.2f | %.2f | %s | %s |\n",
                r.name.c_str(), r.attention.c_str(), r.steps, r.gnb_steps, r.mean_ms, r.plain_ms,
                gnb, tps, mfu, r.mem_gib, r.used_gib, vs, bound);
  }
  std::printf("\nGNB = the step's Hessian estimator pass (Sophia-G: GNB, Sophia-H: Hutchinson; "
              "Sophia-H's exact Hessian-vector product costs several times a GNB pass, so it has no "
              "bound). Sophia bound (Sophia-G) = AdamW ms/step x (1 + fraction/k) x 1.01. GPU memory = peak of "
              "(total - free) from cudaMemGetInfo after each step, minus the level before the "
              "backend was created (weights, master, grads, optimizer state, activations, "
              "scratch, cuBLASLt workspace; one backend serves every configuration, so its optimizer "
              "state holds m, v and h); device used = the same peak without subtracting (CUDA "
              "context included). Configurations run interleaved, k steps each per round.\n");
  if (o.memory && !res.empty()) print_memory_breakdown(breakdown, res.front());
}

}  // namespace

void bench_optimizer(const OptimizerBenchOptions& o) { run_optimizer_bench(o); }

void bench_train(const TrainBenchOptions& o) { run_train_bench(o); }

}  // namespace sgpt
