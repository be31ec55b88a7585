// The whole training loop (src/train/trainer.cpp) on the GPU against the CPU reference.
//
// 1. fp32, 10 steps of Sophia-G with clipping and GNB passes (k = 3: passes after steps 2, 5, 8),
//    CudaBackend vs CpuBackend from the same init and data. Tolerances: per-step loss 1e-5 relative
//    (the same sums in another order, a few thousand fp32 terms), final parameters per tensor
//    ||gpu - cpu|| / ||cpu|| <= 1e-4 (gradients agree to ~1e-6; Sophia's sign/clip is
//    discontinuous, so a coordinate whose momentum is within rounding of 0 may step differently,
//    which moves it by at most lr = 1e-3 on a tensor of norm >> 1).
// 2. bf16 tracks fp32 over 200 steps on a learnable corpus: the mean of every 20-step window of the
//    bf16 loss curve within 3% of the fp32 one. Reason: bf16 stores weights, activations and
//    gradients with a 2^-8 relative rounding; the trajectories decorrelate, but a correct bf16 path
//    learns at the same rate, so windowed means agree to about the loss noise (~1-2%); a broken
//    path (e.g. a lost gradient term) would differ by far more.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "cuda/attention_cudnn.h"
#include "cuda/cuda_backend.h"
#include "data/loader.h"
#include "cpu/cpu_backend.h"
#include "train/trainer.h"
#include "test_corpus.h"
#include "test_kernels_util.h"
#include "test_model.h"
#include "test_scratch.h"

using namespace sgpt;
namespace fs = std::filesystem;

namespace {

// A learnable corpus over the model's vocabulary of 500.
std::string pattern_shard(const fs::path& path, size_t n, uint32_t seed) {
  return sgpt_test::write_pattern_shard(path, 500, n, seed, sgpt_test::kGpuRecurrence);
}

Config make_config(const std::string& train_path, int steps) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "model": {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 64, "vocab_size": 500,
              "bias": false, "scale_attn_by_inverse_layer_idx": true},
    "optimizer": {"name": "sophiag", "lr": 1e-3, "min_lr": 1e-4, "rho": 0.05, "weight_decay": 0.1,
                  "hessian_interval": 3, "grad_clip": 1.0},
    "batch": {"micro_batch_size": 4, "total_batch_tokens": 512},
    "eval": {"every": 0}, "checkpoint": {"every": 0, "keep": 1}, "seed": 7
  })");
  j["schedule"] = {{"warmup_iters", 2}, {"lr_decay_iters", steps}, {"max_steps", steps}};
  j["data"] = {{"train", train_path}};
  return sgpt_test::validated_config(j, "test");
}

TrainResult run(const Config& c, Backend& be) {
  return train(c, be, sgpt_test::quiet_run(""));  // no run directory: nothing written
}

}  // namespace

TEST(TrainGpu, Fp32TenStepsMatchCpuReference) {
  SGPT_SKIP_WITHOUT_GPU();
  const fs::path dir = sgpt_test::scratch_path("train_gpu", "fp32");
  const Config c = make_config(pattern_shard(dir / "train.bin", 100000, 1), 10);
  const std::vector<float> p0 = sgpt_test::initial_params(c.model, c.seed);
  auto cpu = make_cpu_backend(c.model, 4, 64, p0);
  auto gpu = make_cuda_backend(c.model, 4, 64, Precision::kFp32, p0);
  const TrainResult rc = run(c, *cpu), rg = run(c, *gpu);
  ASSERT_EQ(rc.train_losses.size(), 10u);
  ASSERT_EQ(rg.train_losses.size(), 10u);
  for (size_t i = 0; i < 10; ++i)
    EXPECT_NEAR(rg.train_losses[i], rc.train_losses[i], 1e-5 * std::fabs(rc.train_losses[i])) << "step " << i;
  const ParamLayout& L = cpu->layout();
  for (const std::string slot : {"params", "m", "h"}) {
    std::vector<float> a, b;
    cpu->get(slot, a);
    gpu->get(slot, b);
    for (int t = 0; t < kNumParamTensors; ++t) {
      if (L.size[t] == 0) continue;
      double num = 0, den = 0;
      for (size_t e = L.offset[t]; e < L.offset[t] + L.size[t]; ++e) {
        num += (double(a[e]) - b[e]) * (double(a[e]) - b[e]);
        den += double(a[e]) * a[e];
      }
      if (den == 0) {
        EXPECT_EQ(num, 0) << slot << " " << param_tensor_name(t);
        continue;
      }
      // m and h are smaller quantities built from gradients: the same 1e-4 bound applies.
      EXPECT_LE(std::sqrt(num / den), 1e-4) << slot << " " << param_tensor_name(t);
    }
  }
}

TEST(TrainGpu, Bf16TracksFp32Over200Steps) {
  SGPT_SKIP_WITHOUT_GPU();
  const fs::path dir = sgpt_test::scratch_path("train_gpu", "bf16");
  const Config c = make_config(pattern_shard(dir / "train.bin", 400000, 2), 200);
  const std::vector<float> p0 = sgpt_test::initial_params(c.model, c.seed);
  auto f32 = make_cuda_backend(c.model, 4, 64, Precision::kFp32, p0);
  const TrainResult a = run(c, *f32);
  ASSERT_EQ(a.train_losses.size(), 200u);
  // It must also have learned: the last window well below the first.
  double first = 0, last = 0;
  for (size_t i = 0; i < 20; ++i) { first += a.train_losses[i] / 20; last += a.train_losses[180 + i] / 20; }
  EXPECT_LT(last, 0.7 * first);
  // bf16 with each attention implementation (cuDNN's only in builds that have it).
  std::vector<AttentionImpl> atts = {AttentionImpl::kOwn};
  if (cuda::CudnnAttention::built()) atts.push_back(AttentionImpl::kCudnn);
  for (AttentionImpl att : atts) {
    const char* name = att == AttentionImpl::kCudnn ? "cudnn" : "own";
    auto b16 = make_cuda_backend(c.model, 4, 64, Precision::kBf16, p0, att);
    const TrainResult b = run(c, *b16);
    ASSERT_EQ(b.train_losses.size(), 200u);
    double worst = 0;
    for (size_t w = 0; w < 200; w += 20) {
      double ma = 0, mb = 0;
      for (size_t i = w; i < w + 20; ++i) { ma += a.train_losses[i] / 20; mb += b.train_losses[i] / 20; }
      worst = std::max(worst, std::fabs(mb - ma) / ma);
      EXPECT_LE(std::fabs(mb - ma), 0.03 * ma) << name << " attention, window starting at step " << w
                                              << ": fp32 " << ma << " bf16 " << mb;
    }
    std::printf("bf16 (%s attention) vs fp32 over 200 steps: worst 20-step window difference %.4f "
                "relative; fp32 loss %.3f -> %.3f\n", name, worst, first, last);
  }
}
