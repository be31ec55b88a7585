// Timing of one GPT-2 training step on the GPU (disabled by default; run with
//   gpu_tests --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
// ). Model and batch from the environment: SGPT_BENCH_B (micro-batch, default 64), SGPT_BENCH_T
// (default 1024), SGPT_BENCH_PREC (bf16 | fp32, default bf16), SGPT_BENCH_STEPS (default 5).
// GPT-2 124M (12 layers, 12 heads, 768 channels). A step = zero_grad + train_micro +
// grad_sum_squares + Sophia step; a GNB micro-step (sampling + backward) and the hessian EMA are
// timed separately. Random tokens (the speed does not depend on them).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>

#include "cuda/attention_cudnn.h"
#include "cuda/cuda_backend.h"
#include "train/step.h"
#include "cuda/ops_cuda.h"
#include "model/gpt2.h"
#include "test_kernels_util.h"
#include "test_model.h"

namespace sgpt::test {
namespace {

int env_int(const char* name, int def) {
  const char* s = std::getenv(name);
  return s ? std::atoi(s) : def;
}

TEST(Bench, DISABLED_Gpt2TrainStep) {
  SGPT_SKIP_WITHOUT_GPU();
  const int B = env_int("SGPT_BENCH_B", 64), T = env_int("SGPT_BENCH_T", 1024);
  const int steps = env_int("SGPT_BENCH_STEPS", 5);
  const char* prec_s = std::getenv("SGPT_BENCH_PREC");
  const Precision prec =
      prec_s && std::string(prec_s) == "fp32" ? Precision::kFp32 : Precision::kBf16;
  ModelConfig cfg;  // GPT-2 124M defaults
  auto be = make_cuda_backend(cfg, B, T, prec, sgpt_test::initial_params(cfg, 1));
  Rng rng(2);
  const auto inp = rng.ints(size_t(B) * T, 0, cfg.vocab_size);
  const auto tgt = rng.ints(size_t(B) * T, 0, cfg.vocab_size);
  // The training step (train/step.h) with Sophia-G's update and no clipping; the GNB pass is
  // timed on its own below.
  StepPlan plan;
  plan.B = B;
  plan.T = T;
  plan.opt.grad_clip = 0;
  plan.bs = double(B) * T;
  std::vector<int> bi(inp.size()), bt(tgt.size());
  const NextBatch next = [&](int* i, int* t) {
    std::copy(inp.begin(), inp.end(), i);
    std::copy(tgt.begin(), tgt.end(), t);
  };
  using clock = std::chrono::steady_clock;
  int64_t nstep = 0;
  auto step = [&] { return static_cast<float>(train_step(*be, next, plan, nstep++, 6e-4, bi, bt).loss); };
  step();  // warm-up: allocations, cuBLASLt heuristics
  step();
  std::vector<double> ms;
  float loss = 0;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = clock::now();
    loss = step();  // ends synchronized (loss and norm read back)
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const auto t0 = clock::now();
  be->zero_grad();
  be->gnb_micro(inp.data(), B, T, 1.0f, 7, 1, 0);
  be->hessian_ema(HessianConsts::make(0.99));
  be->grad_sum_squares();  // synchronizes
  const double gnb_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  // The two micro-steps alone (host clock; each ends synchronized by its loss read).
  auto time_ms = [&](auto&& fn) {
    std::vector<double> t;
    for (int i = 0; i < 3; ++i) {
      const auto a = clock::now();
      fn();
      t.push_back(std::chrono::duration<double, std::milli>(clock::now() - a).count());
    }
    std::sort(t.begin(), t.end());
    return t[1];
  };
  const double train_ms = time_ms([&] { be->train_micro(inp.data(), tgt.data(), B, T, 1.0f); });
  const double gnbm_ms = time_ms([&] { be->gnb_micro(inp.data(), B, T, 1.0f, 7, 1, 0); });
  std::printf("BENCH micro-steps alone (median of 3): train_micro %.1f ms, gnb_micro %.1f ms\n",
              train_ms, gnbm_ms);
  std::printf("BENCH gpt2-124M %s B=%d T=%d: train step median %.1f ms (min %.1f, max %.1f) = "
              "%.0f tokens/s; gnb micro-step + hessian EMA %.1f ms; last loss %.4f\n",
              prec == Precision::kBf16 ? "bf16" : "fp32", B, T, med, ms.front(), ms.back(),
              double(B) * T / (med / 1000.0), gnb_ms, loss);
}

}  // namespace
}  // namespace sgpt::test

namespace sgpt::test {
namespace {

// Per-op timings at GPT-2 124M shapes (B x T rows, bf16): one layer's ops plus the head, each the
// median of 5 runs timed with CUDA events; the step estimate is 12 layers + head.
TEST(Bench, DISABLED_OpShares) {
  SGPT_SKIP_WITHOUT_GPU();
  using T = bf16;
  const int B = env_int("SGPT_BENCH_B", 64), T_ = env_int("SGPT_BENCH_T", 1024);
  // SGPT_BENCH_MODEL: 124M (default), 355M or 774M widths and depths; SGPT_BENCH_BIAS=1: the
  // linear layers with biases (llm.c's GPT-2), as `sophiagpt bench train --bias` runs them.
  const char* model_s = std::getenv("SGPT_BENCH_MODEL");
  const std::string model = model_s ? model_s : "124M";
  const int C = model == "774M" ? 1280 : model == "355M" ? 1024 : 768;
  const int NH = C / 64, L = model == "774M" ? 36 : model == "355M" ? 24 : 12;
  const int V = 50257, Vp = 50304;
  const bool with_bias = env_int("SGPT_BENCH_BIAS", 0) != 0;
  const size_t N = size_t(B) * T_;
  auto fill = [](size_t n) {
    DeviceBuffer<T> d(n);
    std::vector<T> h(std::min<size_t>(n, 1 << 20));
    Rng rng(3);
    auto v = rng.normal(h.size(), 0.5f);
    for (size_t i = 0; i < h.size(); ++i) h[i] = __float2bfloat16(v[i]);
    // the whole buffer: zeros would run faster than real data (and hide unwritten outputs)
    for (size_t o = 0; o < n; o += h.size())
      SGPT_CUDA_CHECK(cudaMemcpy(d.get() + o, h.data(), std::min(h.size(), n - o) * sizeof(T),
                                 cudaMemcpyHostToDevice));
    return d;
  };
  auto x = fill(N * C), ln = fill(N * C), qkv = fill(N * 3 * C), atty = fill(N * C);
  auto fch = fill(N * 4 * C), fchg = fill(N * 4 * C), dx = fill(N * C), dqkv = fill(N * 3 * C);
  auto dfch = fill(N * 4 * C), logits = fill(N * Vp);
  auto wqkv = fill(size_t(3) * C * C), wfc = fill(size_t(4) * C * C), wproj = fill(size_t(C) * 4 * C);
  auto wte = fill(size_t(Vp) * C), gw = fill(size_t(Vp) * C), lnw = fill(C), lnb = fill(C);
  auto bias_buf = fill(size_t(4) * C), dbias_buf = fill(size_t(4) * C);
  const T* bias = with_bias ? bias_buf.get() : nullptr;  // first OC entries serve every shape
  T* dbias = with_bias ? dbias_buf.get() : nullptr;
  DeviceBuffer<float> mean(N), rstd(N), lse(N * NH), losses(N);
  DeviceBuffer<int> targets(N);
  SGPT_CUDA_CHECK(cudaMemset(targets.get(), 0, targets.bytes()));
  cuda::MatmulContext mm;
  cuda::Scratch scratch;
  auto time = [](auto&& fn) { return double(median_ms(fn)); };
  struct Row { const char* name; double ms; int count; double flops = 0; };
  std::vector<Row> rows;
  const float sc = 0.125f;
  rows.push_back({"layernorm fwd", time([&] { cuda::layernorm_forward(ln.get(), mean.get(), rstd.get(), x.get(), lnw.get(), lnb.get(), int(N), C, nullptr); }), 1});
  rows.push_back({"layernorm bwd (x2/layer)", time([&] { cuda::layernorm_backward(dx.get(), lnw.get(), lnb.get(), x.get(), ln.get(), lnw.get(), mean.get(), rstd.get(), int(N), C, scratch, nullptr); }), 2 * L + 1});
  rows.push_back({"matmul fwd qkv", time([&] { cuda::matmul_forward(mm, qkv.get(), ln.get(), wqkv.get(), bias, int(N), C, 3 * C, nullptr); }), L});
  rows.push_back({"matmul fwd attproj", time([&] { cuda::matmul_forward(mm, x.get(), atty.get(), wqkv.get(), bias, int(N), C, C, nullptr); }), L});
  // The bf16 model runs fc with the GELU epilogue and fcproj's backward with the dGELU epilogue;
  // the plain matmuls and the separate GELU kernels are listed with count 0 for comparison.
  rows.push_back({"matmul fwd fc (plain)", time([&] { cuda::matmul_forward(mm, fch.get(), ln.get(), wfc.get(), bias, int(N), C, 4 * C, nullptr); }), 0});
  rows.push_back({"matmul fwd fc + GELU", time([&] { cuda::matmul_forward_gelu(mm, fchg.get(), fch.get(), ln.get(), wfc.get(), bias, int(N), C, 4 * C, nullptr); }), L});
  rows.push_back({"matmul fwd fcproj", time([&] { cuda::matmul_forward(mm, x.get(), fchg.get(), wproj.get(), bias, int(N), 4 * C, C, nullptr); }), L});
  rows.push_back({"matmul bwd qkv", time([&] { cuda::matmul_backward(mm, dx.get(), wqkv.get(), dbias, dqkv.get(), ln.get(), wqkv.get(), int(N), C, 3 * C, scratch, nullptr, false); }), L});
  rows.push_back({"matmul bwd attproj", time([&] { cuda::matmul_backward(mm, dx.get(), wqkv.get(), dbias, dx.get(), atty.get(), wqkv.get(), int(N), C, C, scratch, nullptr, false); }), L});
  rows.push_back({"matmul bwd fc", time([&] { cuda::matmul_backward(mm, dx.get(), wfc.get(), dbias, dfch.get(), ln.get(), wfc.get(), int(N), C, 4 * C, scratch, nullptr, false); }), L});
  rows.push_back({"matmul bwd fcproj (plain)", time([&] { cuda::matmul_backward(mm, dfch.get(), wproj.get(), dbias, dx.get(), fchg.get(), wproj.get(), int(N), 4 * C, C, scratch, nullptr, false); }), 0});
  rows.push_back({"matmul bwd fcproj + dGELU", time([&] { cuda::matmul_backward_dgelu(mm, dfch.get(), wproj.get(), dbias, dx.get(), fchg.get(), wproj.get(), fch.get(), int(N), 4 * C, C, scratch, nullptr); }), L});
  // Both attention implementations; the one the backend uses by default (cuDNN when built with
  // it) counts towards the step, the other is listed with count 0 for comparison.
  const int own_count = cuda::CudnnAttention::built() ? 0 : L;
  rows.push_back({"attention fwd (own)", time([&] { cuda::attention_forward(atty.get(), lse.get(), qkv.get(), B, T_, C, NH, sc, nullptr); }), own_count});
  rows.push_back({"attention bwd (own)", time([&] { cuda::attention_backward(dqkv.get(), dx.get(), qkv.get(), atty.get(), lse.get(), B, T_, C, NH, sc, scratch, nullptr, false); }), own_count});
  std::unique_ptr<cuda::CudnnAttention> cudnn;
  if (cuda::CudnnAttention::built()) {
    cudnn = std::make_unique<cuda::CudnnAttention>();
    rows.push_back({"attention fwd (cuDNN)", time([&] { cudnn->forward(atty.get(), lse.get(), qkv.get(), B, T_, C, NH, sc, nullptr); }), L});
    rows.push_back({"attention bwd (cuDNN)", time([&] { cudnn->backward(dqkv.get(), dx.get(), qkv.get(), atty.get(), lse.get(), B, T_, C, NH, sc, nullptr); }), L});
    std::printf("BENCH %s\n", cudnn->describe().c_str());
  }
  rows.push_back({"gelu fwd (unfused)", time([&] { cuda::gelu_forward(fchg.get(), fch.get(), N * 4 * C, nullptr); }), 0});
  rows.push_back({"gelu bwd (unfused)", time([&] { cuda::gelu_backward(dfch.get(), fch.get(), fchg.get(), N * 4 * C, nullptr); }), 0});
  // The model runs residual + LayerNorm fused (24 calls) and one plain LayerNorm (layer 0's ln1);
  // the separate kernels are listed with count 0 for comparison.
  rows.push_back({"residual fwd (unfused)", time([&] { cuda::residual_forward(x.get(), x.get(), dx.get(), N * C, nullptr); }), 0});
  rows.push_back({"residual+layernorm fwd", time([&] { cuda::residual_layernorm_forward(atty.get(), ln.get(), mean.get(), rstd.get(), x.get(), dx.get(), lnw.get(), lnb.get(), int(N), C, nullptr); }), 2 * L});
  rows.push_back({"lm head fwd", time([&] { cuda::matmul_forward(mm, logits.get(), ln.get(), wte.get(), (const T*)nullptr, int(N), C, Vp, nullptr); }), 1});
  rows.push_back({"crossentropy (loss only)", time([&] { cuda::crossentropy_forward_backward(losses.get(), logits.get(), targets.get(), 1.0f / N, int(N), V, Vp, false, nullptr); }), 0});
  // With dlogits written in place, as in training (the logits become dlogits, so each timed call
  // runs on the previous call's output: the same amount of work).
  rows.push_back({"crossentropy + dlogits", time([&] { cuda::crossentropy_forward_backward(losses.get(), logits.get(), targets.get(), 1.0f / N, int(N), V, Vp, true, nullptr); }), 1});
  {
    std::vector<int> tok(N);
    for (size_t i = 0; i < N; ++i) tok[i] = int((i * 2654435761u) % V);
    DeviceBuffer<int> d_tok(N);
    d_tok.upload(tok);
    cuda::TokenBuckets tb;
    tb.build(tok.data(), int(N), Vp);
    cuda::DeviceTokenBuckets dtb;
    dtb.upload(tb, nullptr);
    rows.push_back({"encoder fwd", time([&] { cuda::encoder_forward(x.get(), d_tok.get(), wte.get(), wte.get(), B, T_, C, nullptr); }), 1});
    rows.push_back({"encoder bwd", time([&] { cuda::encoder_backward(gw.get(), gw.get(), dx.get(), dtb, B, T_, C, nullptr); }), 1});
  }
  rows.push_back({"lm head bwd", time([&] { cuda::matmul_backward(mm, dx.get(), gw.get(), (T*)nullptr, logits.get(), ln.get(), wte.get(), int(N), C, Vp, scratch, nullptr, false); }), 1});
  rows.push_back({"GNB classifier fused (GNB only)", time([&] { cuda::sample_labels_crossentropy(losses.get(), targets.get(), logits.get(), 1.0f / N, int(N), T_, V, Vp, 1, 2, 3, nullptr); }), 0});
  rows.push_back({"sample_labels (GNB only)", time([&] { cuda::sample_labels(targets.get(), logits.get(), int(N), T_, V, Vp, 1, 2, 3, scratch, nullptr); }), 0});
  // Matmul flops (2 N K OC forward, twice that backward) for the achieved TFLOP/s column.
  const double n = double(N), c = C;
  for (Row& r : rows) {
    const std::string name = r.name;
    const double k = name.find("fcproj") != std::string::npos ? 4 * c : c;
    const double oc = name.find("qkv") != std::string::npos      ? 3 * c
                      : name.find("fcproj") != std::string::npos ? c
                      : name.find(" fc") != std::string::npos    ? 4 * c
                      : name.find("lm head") != std::string::npos ? double(Vp)
                                                                  : c;
    if (name.rfind("matmul", 0) == 0 || name.rfind("lm head", 0) == 0)
      r.flops = 2 * n * k * oc * (name.find("bwd") != std::string::npos ? 2 : 1);
  }
  double total = 0;
  for (const Row& r : rows) total += r.ms * r.count;
  std::printf("BENCH op shares, GPT-2 %s%s bf16 B=%d T=%d (per-step total of listed ops %.1f ms):\n",
              model.c_str(), with_bias ? " with biases" : "", B, T_, total);
  for (const Row& r : rows) {
    char tf[32] = "";
    if (r.flops > 0) std::snprintf(tf, sizeof tf, "  %6.1f TFLOP/s", r.flops / (r.ms * 1e-3) / 1e12);
    std::printf("BENCH   %-30s %8.3f ms x %2d = %8.1f ms  %5.1f%%%s\n", r.name, r.ms, r.count,
                r.ms * r.count, 100.0 * r.ms * r.count / total, tf);
  }
}

}  // namespace
}  // namespace sgpt::test
