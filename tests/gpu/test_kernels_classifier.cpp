// Fused classifier (kernels/classifier.cu) vs cpu::crossentropy_forward/backward and
// cpu::sample_labels.
// Tolerances: fp32 losses rtol 1e-5 (log of a 10^3..10^5-term sum added in another order: the
// sum's relative error is ~1e-6); dlogits rtol 1e-5, atol 1e-6 of max (CUDA's expf is within 2 ulp
// of glibc's); bf16 logits (rounded inputs, fp32 math, dlogits rounded once): rtol 1e-2.
// Labels: exact agreement is the goal (same fp32 running sum, same exp as glibc, same order);
// the expf replica itself is checked against the host's std::exp on a sweep of arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "classifier.cuh"
#include "common/philox.h"
#include "cpu/ops.h"
#include "cuda/ops_cuda.h"
#include "test_kernels_util.h"

namespace sgpt::test {
namespace {

template <class T>
void check_crossentropy(int N, int V, int Vp, float stddev) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("SGPT_TEST_SEED=" + std::to_string(seed));
  Rng rng(seed);
  auto logits = as_stored<T>(rng.normal(size_t(N) * Vp, stddev));
  auto targets = rng.ints(N, 0, V);
  targets[0] = V - 1;  // the last real column
  const float dloss = 1.0f / N;
  std::vector<float> losses(N), dlogits(logits.size());
  cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), N, V, Vp);
  cpu::crossentropy_backward(dlogits.data(), logits.data(), targets.data(), dloss, N, V, Vp);

  auto d_logits = to_device<T>(logits);
  auto d_targets = to_device_int(targets);
  DeviceBuffer<float> d_losses(N), d_mean(1);
  poison(d_losses);
  // Forward only first: logits must be left untouched.
  cuda::crossentropy_forward_backward(d_losses.get(), d_logits.get(), d_targets.get(), dloss, N, V,
                                      Vp, false, nullptr);
  const bool bf = std::is_same_v<T, bf16>;
  expect_close(to_host(d_losses), losses, Tol{bf ? 1e-4 : 1e-5, 0}, "crossentropy losses");
  expect_close(to_host(d_logits), logits, Tol{0, 0}, "logits untouched (forward only)");
  poison(d_losses);
  cuda::crossentropy_forward_backward(d_losses.get(), d_logits.get(), d_targets.get(), dloss, N, V,
                                      Vp, true, nullptr);
  expect_close(to_host(d_losses), losses, Tol{bf ? 1e-4 : 1e-5, 0}, "crossentropy losses (fused)");
  expect_close(to_host(d_logits), dlogits, bf ? Tol{1e-2, 1e-3} : Tol{1e-5, 1e-6},
               "crossentropy dlogits in place");
  cuda::mean_loss(d_mean.get(), d_losses.get(), N, nullptr);
  double mean = 0;
  for (float l : losses) mean += l;
  mean /= N;
  expect_close(to_host(d_mean), {static_cast<float>(mean)}, Tol{1e-5, 0}, "mean loss");
}

TEST(Kernels, CrossentropyFp32) {
  SGPT_SKIP_WITHOUT_GPU();
  check_crossentropy<float>(37, 1003, 1024, 3.0f);
  check_crossentropy<float>(5, 50257, 50304, 1.0f);
}
TEST(Kernels, CrossentropyBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  check_crossentropy<bf16>(37, 1003, 1024, 3.0f);
}

TEST(Kernels, LibmExpfMatchesHost) {
  // Host-side check of the replica (runs without a GPU too): every float in [-104, 1] with a
  // stride; counts the differences from the host's std::exp(float).
  size_t n = 0, diff = 0;
  auto check = [&](uint32_t bits) {
    float x;
    std::memcpy(&x, &bits, 4);
    const float a = cuda::libm_expf(x), r = std::exp(x);
    ++n;
    if (std::memcmp(&a, &r, 4) != 0) ++diff;
  };
  // Every 97th float in (-104, 0) and in [0, 1]: about 12 million arguments.
  for (uint32_t b = 0x80000001u; b < 0xC2D00000u; b += 97) check(b);
  for (uint32_t b = 0; b <= 0x3F800000u; b += 97) check(b);
  std::printf("  libm_expf vs std::exp: %zu of %zu arguments differ\n", diff, n);
  EXPECT_LE(diff, n / 100000) << "the expf replica does not match this host's libm";
}

void check_sample_labels(int B, int T_, int V, int Vp, float stddev, uint64_t gnb_seed,
                         uint32_t step, uint32_t seq0) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("SGPT_TEST_SEED=" + std::to_string(seed));
  Rng rng(seed);
  const int N = B * T_;
  auto logits = rng.normal(size_t(N) * Vp, stddev);
  std::vector<int> ref(N);
  cpu::sample_labels(ref.data(), logits.data(), N, T_, V, Vp, gnb_seed, step, seq0);
  auto d_logits = to_device<float>(logits);
  DeviceBuffer<int> d_labels(N);
  poison(d_labels);
  cuda::sample_labels(d_labels.get(), d_logits.get(), N, T_, V, Vp, gnb_seed, step, seq0, nullptr);
  SGPT_CUDA_CHECK(cudaDeviceSynchronize());
  auto labels = d_labels.download();
  int same = 0, distinct = 0;
  for (int i = 0; i < N; ++i) {
    same += labels[i] == ref[i];
    if (i > 0 && ref[i] != ref[i - 1]) ++distinct;
  }
  std::printf("  sample_labels N=%d V=%d stddev=%.1f: %d of %d labels equal the CPU's (%.4f%%)\n",
              N, V, stddev, same, N, 100.0 * same / N);
  EXPECT_EQ(same, N);
  EXPECT_GT(distinct, N / 2);  // the labels really vary (the test is not trivially passing)
}

TEST(Kernels, SampleLabelsFp32MatchCpu) {
  SGPT_SKIP_WITHOUT_GPU();
  // Near-uniform (untrained model), GPT-2 vocabulary: the hardest case for equal labels.
  check_sample_labels(4, 257, 50257, 50304, 1.0f, 1234, 7, 40);
  // Peaked distributions, small vocabulary, odd sizes.
  check_sample_labels(3, 37, 1003, 1024, 4.0f, 99, 0, 0);
}

TEST(Kernels, SampleLabelsBf16Runs) {
  SGPT_SKIP_WITHOUT_GPU();
  // bf16 logits: the labels follow the CPU's on the same (rounded) values.
  const int N = 64, V = 1003, Vp = 1024;
  Rng rng(test_seed());
  auto logits = as_stored<bf16>(rng.normal(size_t(N) * Vp, 2.0f));
  std::vector<int> ref(N);
  cpu::sample_labels(ref.data(), logits.data(), N, 16, V, Vp, 5, 3, 11);
  auto d_logits = to_device<bf16>(logits);
  DeviceBuffer<int> d_labels(N);
  poison(d_labels);
  cuda::sample_labels(d_labels.get(), d_logits.get(), N, 16, V, Vp, 5, 3, 11, nullptr);
  SGPT_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(d_labels.download(), ref);
}

}  // namespace
}  // namespace sgpt::test
