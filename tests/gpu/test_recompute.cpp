// Activation recompute (Backend::set_recompute, config key `recompute`; src/cuda/gpt2_cuda.h):
// levels 1 (GELU outputs recomputed in the backward) and 2 (also the LayerNorm outputs) must give
// EXACTLY the bits of level 0: every micro-step loss, every gradient, the GNB losses and
// gradients, the weights after AdamW and Sophia-G steps and the final eval loss are compared with
// memcmp, in fp32 and bf16, with our attention kernels and cuDNN's, with the bf16 GELU epilogue
// and without it (SGPT_GELU_FUSION=0), on a small model of odd sizes (every size odd or not a
// multiple of the vector widths, so the general kernel paths run too) and on one 124M-shaped
// micro-step. Any recompute that differs from the forward in one bit of one element of one layer
// (the wrong layer's input, a missing bias, an FMA the forward did not do, a matmul algorithm
// picked for another pointer alignment) changes a gradient of that layer and fails here.
//
// The memory side: each level must hold strictly less device memory than the one before, and at
// 124M shapes exactly the per-layer buffers it drops (the arena of the logits is unchanged).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/attention_cudnn.h"
#include "cuda/cuda_backend.h"
#include "model/gpt2.h"
#include "test_kernels_util.h"
#include "cpu/cpu_backend.h"
#include "test_model.h"

namespace sgpt::test {
namespace {

// With biases, non-zero biases and LayerNorm parameters: every term of every recompute matters.
std::vector<float> init(const ModelConfig& cfg, uint64_t seed) { return test_params(cfg, seed, cfg.bias); }

// Everything a run produces, in order.
struct Trace {
  std::vector<std::pair<std::string, std::vector<float>>> items;  // (what, values)
  size_t memory = 0;                                              // sum of memory_breakdown()
  std::vector<std::pair<std::string, size_t>> breakdown;
  void add(const std::string& what, std::vector<float> v) { items.emplace_back(what, std::move(v)); }
};

struct Case {
  ModelConfig cfg;
  int maxB, T, steps;
  Precision prec;
  AttentionImpl attention;
};

// `steps` optimizer steps (AdamW and Sophia-G alternately), each of two accumulated micro-steps
// of batch sizes maxB and maxB - 1 (a second cuDNN plan and workspace), a GNB pass on maxB - 1
// sequences after each Sophia-G step, then an eval loss. One micro-step when steps == 0.
Trace run(const Case& c, int recompute, const std::vector<float>& params, uint64_t seed) {
  Rng rng(seed);
  auto be = make_cuda_backend(c.cfg, c.maxB, c.T, c.prec, params, c.attention);
  be->set_recompute(recompute);
  Trace tr;
  const int V = c.cfg.vocab_size, T = c.T;
  auto batch = [&](int B) {
    return std::pair{rng.ints(size_t(B) * T, 0, V), rng.ints(size_t(B) * T, 0, V)};
  };
  std::vector<float> v;
  if (c.steps == 0) {
    const auto [inp, tgt] = batch(c.maxB);
    be->zero_grad();
    tr.add("loss", {be->train_micro(inp.data(), tgt.data(), c.maxB, T, 1.0f)});
    be->get("grad", v);
    tr.add("grad", v);
    be->zero_grad();
    tr.add("gnb loss", {be->gnb_micro(inp.data(), c.maxB, T, 1.0f, 99, 0, 0)});
    be->get("grad", v);
    tr.add("gnb grad", v);
  }
  for (int s = 0; s < c.steps; ++s) {
    const std::string st = "step " + std::to_string(s) + " ";
    be->zero_grad();
    for (int B : {c.maxB, c.maxB - 1}) {
      const auto [inp, tgt] = batch(B);
      tr.add(st + "loss B=" + std::to_string(B),
             {be->train_micro(inp.data(), tgt.data(), B, T, 0.5f)});
    }
    be->get("grad", v);
    tr.add(st + "grad", v);
    if (s % 2 == 0) {
      const OptimizerConfig adamw = sgpt_test::adamw_config();
      be->optimizer_step(OptimizerStep{&adamw, 1e-3, s / 2 + 1, 0}, nullptr);
    } else {
      const OptimizerConfig sophia;  // beta1 0.965, rho 0.05, weight decay 0.2
      be->optimizer_step(OptimizerStep{&sophia, 1e-3, 1, 2.0 * c.maxB * T}, nullptr);
      const auto [inp, tgt] = batch(c.maxB - 1);
      be->zero_grad();
      tr.add(st + "gnb loss", {be->gnb_micro(inp.data(), c.maxB - 1, T, 1.0f, 7, s, 0)});
      be->get("grad", v);
      tr.add(st + "gnb grad", v);
      be->hessian_ema(HessianConsts::make(0.99));
    }
    be->get("params", v);
    tr.add(st + "params", v);
  }
  if (c.steps > 0) {
    const auto [inp, tgt] = batch(c.maxB);
    tr.add("eval loss", {be->eval_micro(inp.data(), tgt.data(), c.maxB, T)});
  }
  tr.breakdown = be->memory_breakdown();
  for (const auto& [what, bytes] : tr.breakdown) tr.memory += bytes;
  return tr;
}

// Runs levels 0, 1, 2 and compares every item bit for bit; returns the three traces.
std::vector<Trace> expect_identical(const Case& c, const std::string& label) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(label + ", SGPT_TEST_SEED=" + std::to_string(seed));
  const auto params = init(c.cfg, seed);
  std::vector<Trace> t;
  for (int r = 0; r <= 2; ++r) t.push_back(run(c, r, params, seed));
  // The comparison has something to compare: finite losses, non-zero gradients.
  for (const auto& [what, vals] : t[0].items) {
    double sq = 0;
    for (float x : vals) sq += double(x) * x;
    EXPECT_TRUE(std::isfinite(sq) && sq > 0) << label << ": " << what << " is zero or not finite";
  }
  for (int r = 1; r <= 2; ++r) {
    EXPECT_EQ(t[r].items.size(), t[0].items.size());
    if (t[r].items.size() != t[0].items.size()) continue;
    for (size_t i = 0; i < t[0].items.size(); ++i) {
      const size_t d = bits_differ(t[r].items[i].second, t[0].items[i].second);
      EXPECT_EQ(d, 0u) << label << ", recompute " << r << " vs 0: " << t[0].items[i].first << ": "
                       << d << " of " << t[0].items[i].second.size() << " values differ";
    }
    EXPECT_LT(t[r].memory, t[r - 1].memory) << label << ": recompute " << r << " holds no less";
  }
  std::printf("  %s: memory held %.2f / %.2f / %.2f MiB (recompute 0 / 1 / 2)\n", label.c_str(),
              t[0].memory / 1048576.0, t[1].memory / 1048576.0, t[2].memory / 1048576.0);
  return t;
}

std::vector<AttentionImpl> attentions(Precision prec) {
  std::vector<AttentionImpl> a = {AttentionImpl::kOwn};
  if (prec == Precision::kBf16 && cuda::CudnnAttention::built()) a.push_back(AttentionImpl::kCudnn);
  return a;
}

// Sets SGPT_GELU_FUSION for its lifetime (read when a backend is built), restoring the old value.
class ScopedFusion {
 public:
  explicit ScopedFusion(bool on) {
    if (const char* v = std::getenv("SGPT_GELU_FUSION")) old_ = v, had_ = true;
    setenv("SGPT_GELU_FUSION", on ? "1" : "0", 1);
  }
  ~ScopedFusion() {
    if (had_) setenv("SGPT_GELU_FUSION", old_.c_str(), 1);
    else unsetenv("SGPT_GELU_FUSION");
  }

 private:
  std::string old_;
  bool had_ = false;
};

// C = 36, head size 12: not a multiple of the bf16 vector width (general LayerNorm kernels in
// bf16), no cuDNN. C = 48, head size 16: cuDNN-capable. T = 33, max_B = 3: odd row counts.
TEST(Recompute, BitIdenticalOddSizes) {
  SGPT_SKIP_WITHOUT_GPU();
  for (Precision prec : {Precision::kFp32, Precision::kBf16}) {
    for (bool fusion : {true, false}) {
      if (prec == Precision::kFp32 && !fusion) continue;  // fp32 never fuses
      ScopedFusion f(fusion);
      for (const auto& [C, NH] : {std::pair{36, 3}, std::pair{48, 3}}) {
        for (AttentionImpl att : attentions(prec)) {
          if (att == AttentionImpl::kCudnn && !cuda::CudnnAttention::supports(C, NH)) continue;
          const Case c{odd_backend_config(C, NH), 3, 33, 4, prec, att};
          expect_identical(c, std::string(precision_name(prec)) + (fusion ? "" : " unfused") + " C=" +
                                  std::to_string(C) + " " + attention_label(att) + " attention");
        }
      }
    }
  }
}

// One micro-step (and a GNB pass) of the 124M shapes at T = 1024, micro-batch 2; the memory each
// level frees is exactly its per-layer buffers.
TEST(Recompute, BitIdentical124MMicroStep) {
  SGPT_SKIP_WITHOUT_GPU();
  ModelConfig cfg;  // GPT-2 124M: 12 layers, 12 heads, 768 wide, vocab 50257 padded to 50304
  cfg.bias = true;
  const int B = 2, T = 1024;
  for (Precision prec : {Precision::kFp32, Precision::kBf16}) {
    const AttentionImpl att = attentions(prec).back();  // cuDNN in bf16 where built
    const Case c{cfg, B, T, 0, prec, att};
    const auto t = expect_identical(c, std::string("124M ") + precision_name(prec) + " " + attention_label(att));
    // Level 1 drops fch_gelu [L, N, 4C] (and, with the bf16 GELU epilogue, fch too); level 2 also
    // ln1 and ln2 [L, N, C]. Their one-layer buffers live in the arena, which the logits
    // [N, 50304] dominate here, so the totals differ by exactly those buffers.
    const char* fuse = std::getenv("SGPT_GELU_FUSION");
    const bool fused = prec == Precision::kBf16 && !(fuse && std::strcmp(fuse, "0") == 0);
    const size_t es = prec == Precision::kFp32 ? 4 : 2;
    const size_t layer = size_t(B) * T * cfg.n_embd * es;  // [N, C] bytes (a multiple of 256)
    const size_t L = cfg.n_layer;
    EXPECT_EQ(t[0].memory - t[1].memory, L * 4 * layer * (fused ? 2 : 1));
    EXPECT_EQ(t[1].memory - t[2].memory, L * 2 * layer);
    for (const auto& [what, bytes] : t[2].breakdown) std::printf("    %10.1f MiB  %s\n", bytes / 1048576.0, what.c_str());
  }
}

TEST(Recompute, LevelOutOfRangeIsAnError) {
  SGPT_SKIP_WITHOUT_GPU();
  const ModelConfig cfg = odd_backend_config(36, 3);
  auto be = make_cuda_backend(cfg, 2, 8, Precision::kFp32, init(cfg, 1));
  EXPECT_THROW(be->set_recompute(3), std::invalid_argument);
  EXPECT_THROW(be->set_recompute(-1), std::invalid_argument);
  auto cpu = make_cpu_backend(cfg, 2, 8, init(cfg, 1));
  EXPECT_THROW(cpu->set_recompute(3), std::invalid_argument);
  EXPECT_NO_THROW(cpu->set_recompute(2));  // ignored on the CPU
}

}  // namespace
}  // namespace sgpt::test
