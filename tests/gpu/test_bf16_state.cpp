// bf16 training state on the GPU:
//
// 1. Resume is bit-identical in bf16: 12 steps straight vs 6 steps, a checkpoint, a fresh backend
//    resumed to 12, for Sophia-G (GNB passes on both sides of the cut) and AdamW, with bf16 and
//    fp32 gradient accumulation. Losses of steps 6-11 and the fp32 master, m, h/v and the bf16
//    working weights equal bit for bit. Control: the same checkpoint with the working weights and
//    the rounding counter removed from its state file (the weights are then rounded to nearest
//    from the master and the rounding stream restarts, as before they were saved) must end with
//    different bits.
// 2. fp32 gradient accumulation: the accumulated gradient equals, bit for bit, the fp32 sum (in
//    micro-step order) of the bf16 gradients of the single micro-steps computed with bf16
//    accumulation from a zeroed buffer. Expected values come from the bf16 path alone (one
//    micro-step each: no accumulation there) and a host-side fp32 sum.
// 3. The rounding seed follows the run's `seed`: two runs that differ only in `seed` through the
//    rounding (same init, same data) produce different working weights after a step.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "cuda/cuda_backend.h"
#include "data/loader.h"
#include "model/checkpoint.h"
#include "train/trainer.h"
#include "test_corpus.h"
#include "test_kernels_util.h"
#include "test_model.h"
#include "test_scratch.h"

using namespace sgpt;
using sgpt::test::same_bits;
namespace fs = std::filesystem;

namespace {

// A learnable corpus over the model's vocabulary of 301.
std::string pattern_shard(const fs::path& path, size_t n, uint32_t seed) {
  return sgpt_test::write_pattern_shard(path, 301, n, seed, sgpt_test::kGpuRecurrence);
}

// Odd sizes: C = 72 (3 heads of 24), V = 301 (padded to 320), T = 48; 2 micro-steps per step.
Config make_config(const std::string& train_path, const std::string& opt, const std::string& accum) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "model": {"n_layer": 2, "n_head": 3, "n_embd": 72, "block_size": 48, "vocab_size": 301,
              "bias": true, "scale_attn_by_inverse_layer_idx": true},
    "optimizer": {"lr": 2e-3, "min_lr": 1e-4, "rho": 0.05, "weight_decay": 0.1,
                  "hessian_interval": 4, "grad_clip": 1.0},
    "batch": {"micro_batch_size": 3, "total_batch_tokens": 288},
    "schedule": {"warmup_iters": 3, "lr_decay_iters": 12, "max_steps": 12},
    "eval": {"every": 0}, "checkpoint": {"every": 0, "keep": 2}, "seed": 11, "precision": "bf16"
  })");
  j["optimizer"]["name"] = opt;
  j["grad_accum_precision"] = accum;
  j["data"] = {{"train", train_path}};
  return sgpt_test::validated_config(j, "test");
}

std::unique_ptr<Backend> fresh(const Config& c) { return sgpt_test::fresh_cuda_backend(c, Precision::kBf16); }

int64_t prepare(const Config& c, const TrainOptions& o) {
  const int64_t step = check_run_dir(o);
  write_run_dir(c, o, step);
  return step;
}

}  // namespace

TEST(Bf16State, ResumeIsBitIdentical) {
  SGPT_SKIP_WITHOUT_GPU();
  const fs::path dir = sgpt_test::scratch_path("bf16", "resume");
  const std::string tr = pattern_shard(dir / "data" / "train.bin", 60000, 5);
  for (const std::string optname : {"sophiag", "adamw"}) {
    for (const std::string accum : {"bf16", "fp32"}) {
      const std::string tag = optname + "_" + accum;
      const Config c = make_config(tr, optname, accum);
      auto a = fresh(c);
      TrainOptions oa = sgpt_test::quiet_run(dir / ("straight_" + tag));
      prepare(c, oa);
      const TrainResult ra = train(c, *a, oa);
      ASSERT_EQ(ra.train_losses.size(), 12u);

      Config half = c;
      half.schedule.max_steps = 6;
      TrainOptions ob = sgpt_test::quiet_run(dir / ("cut_" + tag));
      {
        auto b1 = fresh(half);
        prepare(half, ob);
        train(half, *b1, ob);
      }
      // Control: the same checkpoint without the working weights and the rounding counter (what
      // checkpoints held before they were saved): the resumed run must then differ, or this test
      // could not tell a broken restore from a working one.
      const std::string ctrl = (dir / ("control_" + tag)).string();
      fs::copy(ob.out_dir, ctrl, fs::copy_options::recursive);
      {
        TrainState st = read_state_file(state_path(ctrl, 6));
        for (size_t i = 0; i < st.slot_names.size(); ++i)
          if (st.slot_names[i] == "working") {
            st.slot_names.erase(st.slot_names.begin() + static_cast<std::ptrdiff_t>(i));
            st.slots.erase(st.slots.begin() + static_cast<std::ptrdiff_t>(i));
            break;
          }
        ASSERT_TRUE(st.meta.contains("rounding_counter")) << tag;
        st.meta.erase("rounding_counter");
        write_state_file(state_path(ctrl, 6), st);
      }
      auto b2 = fresh(c);  // a new process starts from a fresh init, then loads
      ob.resume = true;
      ASSERT_EQ(prepare(c, ob), 6);
      const TrainResult rb = train(c, *b2, ob);
      ASSERT_EQ(rb.train_losses.size(), 6u);
      for (size_t i = 0; i < 6; ++i)
        EXPECT_EQ(rb.train_losses[i], ra.train_losses[6 + i]) << tag << " step " << 6 + i;
      for (const std::string slot : {"params", "working", "m", optname == "sophiag" ? "h" : "v"}) {
        std::vector<float> x, y;
        a->get(slot, x);
        b2->get(slot, y);
        EXPECT_TRUE(same_bits(x, y)) << tag << " slot " << slot;
      }
      auto b3 = fresh(c);
      TrainOptions oc = ob;
      oc.out_dir = ctrl;
      ASSERT_EQ(prepare(c, oc), 6);
      train(c, *b3, oc);
      std::vector<float> x, y;
      a->get("working", x);
      b3->get("working", y);
      EXPECT_FALSE(same_bits(x, y)) << tag << ": resuming without the saved working weights and "
                                    << "counter gave the same bits (the comparison above proves nothing)";
    }
  }
}

TEST(Bf16State, Fp32AccumulationIsTheFp32SumOfMicroStepGradients) {
  SGPT_SKIP_WITHOUT_GPU();
  const fs::path dir = sgpt_test::scratch_path("bf16", "accum");
  const Config c = make_config(pattern_shard(dir / "train.bin", 20000, 6), "sophiag", "fp32");
  const int B = c.batch.micro_batch_size, T = c.model.block_size;
  constexpr int kMicro = 7;
  std::mt19937 rng(3);
  std::vector<std::vector<int>> inp(kMicro), tgt(kMicro);
  for (int k = 0; k < kMicro; ++k) {
    inp[k].resize(static_cast<size_t>(B) * T);
    tgt[k].resize(inp[k].size());
    for (size_t i = 0; i < inp[k].size(); ++i) {
      inp[k][i] = static_cast<int>(rng() % 301);
      tgt[k][i] = static_cast<int>(rng() % 301);
    }
  }
  const float scale = 1.0f / kMicro;
  // Expected: each micro-step's bf16 gradient alone (bf16 accumulation from zero: no sum), widened
  // and added on the host in fp32, in micro-step order.
  auto ref = fresh(c);
  ref->set_grad_accum_fp32(false);
  std::vector<float> expect;
  for (int k = 0; k < kMicro; ++k) {
    ref->zero_grad();
    ref->train_micro(inp[k].data(), tgt[k].data(), B, T, scale);
    std::vector<float> g;
    ref->get("grad", g);
    if (expect.empty()) expect.assign(g.size(), 0.0f);
    for (size_t i = 0; i < g.size(); ++i) expect[i] = expect[i] + g[i];
  }
  // The same micro-steps accumulated by the backend in fp32 (and once more after a zero_grad).
  auto acc = fresh(c);
  acc->set_grad_accum_fp32(true);
  ASSERT_TRUE(acc->grad_accum_fp32());
  for (int rep = 0; rep < 2; ++rep) {
    acc->zero_grad();
    for (int k = 0; k < kMicro; ++k) acc->train_micro(inp[k].data(), tgt[k].data(), B, T, scale);
    std::vector<float> got;
    acc->get("grad", got);
    ASSERT_EQ(got.size(), expect.size());
    size_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &expect[i], sizeof(float)) != 0;
    EXPECT_EQ(differ, 0u) << "of " << got.size() << " elements (repetition " << rep << ")";
  }
  // And bf16 accumulation of the same micro-steps is NOT that sum (else this test could not tell
  // the two modes apart).
  ref->zero_grad();
  for (int k = 0; k < kMicro; ++k) ref->train_micro(inp[k].data(), tgt[k].data(), B, T, scale);
  std::vector<float> b16;
  ref->get("grad", b16);
  EXPECT_FALSE(same_bits(b16, expect));
}

TEST(Bf16State, RoundingFollowsTheSeed) {
  SGPT_SKIP_WITHOUT_GPU();
  const fs::path dir = sgpt_test::scratch_path("bf16", "seed");
  const Config c = make_config(pattern_shard(dir / "train.bin", 20000, 7), "adamw", "bf16");
  std::vector<std::vector<float>> w;
  for (uint64_t seed : {11ull, 11ull, 12ull}) {
    auto be = fresh(c);  // the same init for all three
    be->set_rounding(seed, 0);
    std::vector<float> g(be->layout().total);
    for (size_t i = 0; i < g.size(); ++i) g[i] = 1e-3f * static_cast<float>((i * 2654435761u) % 1000) / 1000.0f;
    be->set("grad", g);
    const OptimizerConfig adamw = sgpt_test::adamw_config();
    be->optimizer_step(OptimizerStep{&adamw, 1e-3, 1, 0}, nullptr);
    w.emplace_back();
    be->get("working", w.back());
  }
  EXPECT_TRUE(same_bits(w[0], w[1]));
  EXPECT_FALSE(same_bits(w[0], w[2]));
}
