// Lion on the GPU (kernels/lion.cu) against its CPU reference (cpu::lion_update, src/optim/
// lion.h), through the cuda::Optimizer the backend uses. Tolerance: none. Both sides do the same
// fp32 operations in the same order, each explicitly rounded, so p and m are equal bit for bit;
// bf16 working weights are the stochastic rounding of the updated master with the backend's key
// (checked against cuda::stochastic_round of the CPU's master). Odd sizes, a shard that starts
// at an odd global index (unaligned, scalar path) and decay ranges that cut through chunks.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/cuda_backend.h"
#include "cuda/optimizer.h"
#include "optim/lion.h"
#include "test_kernels_util.h"
#include "test_model.h"
#include "cpu/cpu_backend.h"

using namespace sgpt;
using bf16 = __nv_bfloat16;
using sgpt::cuda::DeviceBuffer;
using sgpt::test::first_difference;
using sgpt::test::same_bits;

namespace {

// Runs Lion on n elements with global base `base`: fp32 gradient; weights none (fp32) or bf16.
void check(size_t n, size_t base, bool bf16_weights, uint64_t seed) {
  SCOPED_TRACE("n=" + std::to_string(n) + " base=" + std::to_string(base) +
               (bf16_weights ? " bf16 weights" : " fp32"));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> p(n), m(n), g(n);
  for (size_t i = 0; i < n; ++i) p[i] = nd(rng), m[i] = 1e-3f * nd(rng), g[i] = 1e-3f * nd(rng);
  if (n > 10) g[3] = 0.0f, m[3] = 0.0f;  // sign(0): no step

  cuda::DecayRanges decay;  // one range cutting through chunks, in global indices
  decay.add(base + n / 3, base + n / 3 + n / 2 + 1);
  OptimizerConfig oc;
  oc.name = "lion";
  oc.beta1 = 0.95;
  oc.beta2 = 0.98;
  oc.weight_decay = 0.3;
  const OptimizerStep step{&oc, 3e-4, 5, 0};

  DeviceBuffer<float> dp, dm, dg;
  dp.upload(p), dm.upload(m), dg.upload(g);
  DeviceBuffer<bf16> dw(n);
  cuda::UpdateTarget t;
  t.master = dp.get();
  t.weights = bf16_weights ? static_cast<void*>(dw.get()) : nullptr;
  t.weights_type = bf16_weights ? cuda::Storage::kBf16 : cuda::Storage::kF32;
  t.grad = dg.get();
  t.n = n;
  t.decay = decay;
  t.key = cuda::RoundingKey{seed, 9, base};
  float* state[1] = {dm.get()};
  cuda::make_optimizer("lion")->update(step, state, t, nullptr);

  const LionConsts c = LionConsts::make(3e-4, 0.95, 0.98, 0.3);
  for (size_t i = 0; i < n; ++i)
    cpu::lion_update(&p[i], &m[i], &g[i], 1, c, decay.contains(base + i));
  const std::vector<float> gp = dp.download(), gm = dm.download();
  EXPECT_TRUE(same_bits(gp, p)) << "p differs first at " << first_difference(gp, p);
  EXPECT_TRUE(same_bits(gm, m)) << "m differs first at " << first_difference(gm, m);
  if (bf16_weights) {
    DeviceBuffer<float> want_master;
    want_master.upload(p);
    DeviceBuffer<bf16> want(n);
    cuda::stochastic_round(want_master.get(), want.get(), n, t.key, nullptr);
    const auto a = dw.download(), b = want.download();
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), n * sizeof(bf16))) << "bf16 working weights";
  }
}

}  // namespace

TEST(GpuLion, BitExactWithCpuOddSizesShardsAndWeights) {
  SGPT_SKIP_WITHOUT_GPU();
  for (size_t n : {size_t(1), size_t(31), size_t(1000003)})
    for (size_t base : {size_t(0), size_t(13)})
      for (bool w : {false, true}) check(n, base, w, 1000 + n + base);
}

TEST(GpuLion, BackendStepsMatchCpuBackendBitwise) {
  SGPT_SKIP_WITHOUT_GPU();
  const ModelConfig cfg = sgpt_test::model_config(2, 2, 32, 16, 50, 64, /*bias=*/true);
  const ParamLayout L = ParamLayout::make(cfg);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> params(L.total);
  for (float& x : params) x = nd(rng);
  auto cpu = make_cpu_backend(cfg, 2, 16, params);
  auto gpu = make_cuda_backend(cfg, 2, 16, Precision::kFp32, params);
  OptimizerConfig oc;
  oc.name = "lion";
  oc.beta1 = 0.95;
  oc.beta2 = 0.98;
  oc.weight_decay = 0.2;
  for (int s = 0; s < 3; ++s) {
    std::vector<float> g(L.total);
    for (float& x : g) x = 1e-3f * nd(rng);
    cpu->set("grad", g);
    gpu->set("grad", g);
    cpu->optimizer_step(OptimizerStep{&oc, 1e-3, s + 1, 0}, nullptr);
    gpu->optimizer_step(OptimizerStep{&oc, 1e-3, s + 1, 0}, nullptr);
  }
  for (const char* slot : {"params", "m"}) {
    std::vector<float> a, b;
    cpu->get(slot, a);
    gpu->get(slot, b);
    EXPECT_TRUE(same_bits(a, b)) << slot << " differs first at " << first_difference(a, b);
  }
}
