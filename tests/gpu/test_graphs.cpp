// CUDA graphs of the training micro-step (Backend::set_cuda_graphs, config key `cuda_graphs`;
// src/cuda/cuda_backend.cpp, run_graphed): a run with graphs must give EXACTLY the bits of the
// same run with eager launches: every micro-step loss, every gradient, the GNB losses and
// gradients, the weights after AdamW and Sophia-G steps and the eval loss, compared with memcmp,
// in fp32 and bf16, with our attention kernels and cuDNN's, with gradient accumulation in bf16
// and in fp32, and at the activation recompute levels. Each step feeds new random tokens (so
// the encoder backward's token buckets differ from those of the captured batch) at two batch
// sizes (two graphs), and the GNB pass between steps may grow the scratch buffer the graphs
// point into. A graph that replays anything of the batch it was captured with (a bucket count,
// a grid size, a stale pointer) changes a gradient and fails here.
//
// The graphs must also be used: the backend reports its replays, and a run whose captures failed
// (graphs turned off) fails the test instead of passing by running eagerly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cuda/attention_cudnn.h"
#include "cuda/cuda_backend.h"
#include "cuda/ops_cuda.h"
#include "model/gpt2.h"
#include "test_kernels_util.h"
#include "test_model.h"

namespace sgpt::test {
namespace {

struct Trace {
  std::vector<std::pair<std::string, std::vector<float>>> items;
  std::string status;  // cuda_graphs_status() at the end
  void add(const std::string& what, std::vector<float> v) { items.emplace_back(what, std::move(v)); }
};

struct Case {
  ModelConfig cfg;
  int maxB, T, steps;
  Precision prec;
  AttentionImpl attention;
  bool acc32 = false;  // bf16: gradients accumulated in fp32
  int recompute = 0;
  bool fp8_head = false;  // lm_head_precision "fp8"
};

// `steps` optimizer steps (AdamW and Sophia-G alternately), each of three micro-steps of batch
// sizes maxB, maxB - 1 and maxB (each micro-step its own random tokens), a GNB pass on maxB - 1
// sequences after each Sophia-G step, then an eval loss.
Trace run(const Case& c, bool graphs, const std::vector<float>& params, uint64_t seed) {
  Rng rng(seed);
  auto be = make_cuda_backend(c.cfg, c.maxB, c.T, c.prec, params, c.attention);
  be->set_recompute(c.recompute);
  if (c.fp8_head) be->set_lm_head_fp8(true);
  if (c.acc32) be->set_grad_accum_fp32(true);
  be->set_cuda_graphs(graphs);
  Trace tr;
  const int V = c.cfg.vocab_size, T = c.T;
  std::vector<float> v;
  for (int s = 0; s < c.steps; ++s) {
    const std::string st = "step " + std::to_string(s) + " ";
    be->zero_grad();
    int m = 0;
    for (int B : {c.maxB, c.maxB - 1, c.maxB}) {
      const auto inp = rng.ints(size_t(B) * T, 0, V), tgt = rng.ints(size_t(B) * T, 0, V);
      tr.add(st + "loss " + std::to_string(m++) + " B=" + std::to_string(B),
             {be->train_micro(inp.data(), tgt.data(), B, T, 1.0f / 3)});
    }
    be->get("grad", v);
    tr.add(st + "grad", v);
    if (s % 2 == 0) {
      const OptimizerConfig adamw = sgpt_test::adamw_config();
      be->optimizer_step(OptimizerStep{&adamw, 1e-3, s / 2 + 1, 0}, nullptr);
    } else {
      const OptimizerConfig sophia;
      be->optimizer_step(OptimizerStep{&sophia, 1e-3, 1, 2.0 * c.maxB * T}, nullptr);
      const auto inp = rng.ints(size_t(c.maxB - 1) * T, 0, V);
      be->zero_grad();
      tr.add(st + "gnb loss", {be->gnb_micro(inp.data(), c.maxB - 1, T, 1.0f, 7, s, 0)});
      be->get("grad", v);
      tr.add(st + "gnb grad", v);
      be->hessian_ema(HessianConsts::make(0.99));
    }
    be->get("params", v);
    tr.add(st + "params", v);
  }
  const auto inp = rng.ints(size_t(c.maxB) * T, 0, V), tgt = rng.ints(size_t(c.maxB) * T, 0, V);
  tr.add("eval loss", {be->eval_micro(inp.data(), tgt.data(), c.maxB, T)});
  tr.status = be->cuda_graphs_status();
  return tr;
}

void expect_identical(const Case& c, const std::string& label) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(label + ", SGPT_TEST_SEED=" + std::to_string(seed));
  const auto params = test_params(c.cfg, seed, c.cfg.bias);
  const Trace eager = run(c, false, params, seed);
  const Trace graphed = run(c, true, params, seed);
  EXPECT_EQ(eager.status, "off") << label;
  // Two shapes (B = maxB, maxB - 1): each runs eagerly once, is captured the second time and
  // replayed after (again after a GNB pass grew the scratch): more replays than steps.
  ASSERT_EQ(graphed.status.rfind("on, ", 0), 0u) << label << ": graphs not in use: " << graphed.status;
  const size_t replays = std::stoul(graphed.status.substr(graphed.status.find("graph(s), ") + 10));
  EXPECT_GE(replays, size_t(c.steps)) << label << ": " << graphed.status;
  for (const auto& [what, vals] : eager.items) {
    double sq = 0;
    for (float x : vals) sq += double(x) * x;
    EXPECT_TRUE(std::isfinite(sq) && sq > 0) << label << ": " << what << " is zero or not finite";
  }
  ASSERT_EQ(graphed.items.size(), eager.items.size());
  for (size_t i = 0; i < eager.items.size(); ++i) {
    const size_t d = bits_differ(graphed.items[i].second, eager.items[i].second);
    EXPECT_EQ(d, 0u) << label << ": " << eager.items[i].first << ": " << d << " of "
                     << eager.items[i].second.size() << " values differ with graphs";
  }
  std::printf("  %s: %s\n", label.c_str(), graphed.status.c_str());
}

// C = 48, head size 16 (cuDNN-capable), T = 33, max_B = 3; and C = 36 (general LayerNorm paths).
TEST(Graphs, MicroStepBitIdenticalToEager) {
  SGPT_SKIP_WITHOUT_GPU();
  for (Precision prec : {Precision::kFp32, Precision::kBf16}) {
    std::vector<AttentionImpl> atts = {AttentionImpl::kOwn};
    if (prec == Precision::kBf16 && cuda::CudnnAttention::built() && cuda::CudnnAttention::supports(48, 3))
      atts.push_back(AttentionImpl::kCudnn);
    for (AttentionImpl att : atts) {
      const Case c{odd_backend_config(48, 3), 3, 33, 5, prec, att};
      expect_identical(c, std::string(precision_name(prec)) + " C=48 " + attention_label(att));
    }
  }
  expect_identical(Case{odd_backend_config(36, 3), 3, 33, 5, Precision::kBf16, AttentionImpl::kOwn},
                   "bf16 C=36 own");
}

TEST(Graphs, WithFp32AccumulationAndRecompute) {
  SGPT_SKIP_WITHOUT_GPU();
  const AttentionImpl att = cuda::CudnnAttention::built() && cuda::CudnnAttention::supports(48, 3)
                                ? AttentionImpl::kCudnn
                                : AttentionImpl::kOwn;
  Case c{odd_backend_config(48, 3), 3, 33, 4, Precision::kBf16, att, /*acc32=*/true};
  expect_identical(c, "bf16 fp32 accumulation");
  for (int r : {1, 2}) {
    c.acc32 = false;
    c.recompute = r;
    expect_identical(c, "bf16 recompute " + std::to_string(r));
  }
}

// The FP8 lm head's quantization and product (lm_head_precision "fp8") inside the graph.
TEST(Graphs, WithTheFp8LmHead) {
  SGPT_SKIP_WITHOUT_GPU();
  if (!cuda::fp8_matmul_usable()) GTEST_SKIP() << "no FP8 tensor cores (cc < 8.9)";
  Case c{odd_backend_config(48, 3), 3, 33, 4, Precision::kBf16, AttentionImpl::kOwn};
  c.fp8_head = true;
  expect_identical(c, "bf16 FP8 lm head");
}

// The 124M shapes at T = 1024, micro-batch 2, the recipe's attention: two steps.
TEST(Graphs, BitIdentical124M) {
  SGPT_SKIP_WITHOUT_GPU();
  ModelConfig cfg;
  cfg.bias = true;
  const AttentionImpl att = cuda::CudnnAttention::built() ? AttentionImpl::kCudnn : AttentionImpl::kOwn;
  expect_identical(Case{cfg, 2, 1024, 2, Precision::kBf16, att}, "124M bf16");
}

TEST(Graphs, CpuBackendIgnoresThem) {
  const ModelConfig cfg = odd_backend_config(36, 3);
  auto cpu = make_cpu_backend(cfg, 2, 8, test_params(cfg, 1, true));
  cpu->set_cuda_graphs(true);
  EXPECT_EQ(cpu->cuda_graphs_status(), "");
}

}  // namespace
}  // namespace sgpt::test
