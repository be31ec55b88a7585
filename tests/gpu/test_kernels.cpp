// Each elementwise / normalisation / linear kernel vs the CPU reference of the same name
// (src/cpu/ops.h), on fresh random inputs of sizes that are not multiples of any block size.
// Backward kernels accumulate into random existing gradients (checking the += convention);
// forward outputs are poisoned with NaN before the launch (checking that every element is
// written).
//
// Tolerances (|gpu - ref| <= rtol |ref| + atol max|ref|, see test_kernels_util.h):
//   fp32 encoder, residual: exact (one fp32 add per element, in the CPU's order; the encoder
//        backward adds the rows of each token in ascending position order like the CPU loop).
//   fp32 gelu: rtol 1e-5, atol 1e-6: CUDA's tanhf and glibc's differ by an ulp or two, amplified
//        where 1 + tanh(u) cancels (x << 0); the absolute term covers that.
//   fp32 layernorm: rtol 1e-5/atol 1e-6 forward; backward rtol 1e-4/atol 1e-5 (sums over C and,
//        for dweight/dbias, over N rows, in another order than the CPU: ~sqrt(len) ulps, and
//        cancellation in dnorm - mean(dnorm) - norm * mean(dnorm norm)).
//   fp32 matmul: rtol 1e-4, atol 1e-5 (dot products of length up to ~300 in cuBLAS's order; with
//        TF32 the error would be ~1e-3 and fail: this is how the test checks that TF32 is off).
//   bf16 (inputs rounded to bf16; reference in fp32 on the rounded inputs): the kernels compute in
//        fp32 and round each output once (unit roundoff 2^-8 = 3.9e-3): rtol 4e-3 where the output
//        is one rounding of an exactly computed value; rtol 1e-2, atol 4e-3 for the reduction
//        kernels: besides the final rounding and fp32 order differences, an accumulating output
//        (dinp += ..., cuBLASLt with beta = 1 on a bf16 buffer) is rounded at the scale of its
//        addends, which under cancellation exceed the result, so the absolute term is one bf16
//        rounding (2^-8) of the largest magnitude (seen: 1.1e-3 x max|ref| with atol 1e-3).
#include <gtest/gtest.h>

#include "cpu/ops.h"
#include "cuda/ops_cuda.h"
#include "test_kernels_util.h"

namespace sgpt::test {
namespace {

template <class T>
constexpr bool kBf16 = std::is_same_v<T, bf16>;
constexpr Tol kBf16Tol{1e-2, 4e-3};  // bf16 reduction kernels, see above

template <class T>
void check_encoder(int B, int T_, int C, int V) {
  SeededRng rng;
  const int N = B * T_;
  auto wte = as_stored<T>(rng.normal(size_t(V) * C));
  auto wpe = as_stored<T>(rng.normal(size_t(T_) * C));
  auto inp = rng.ints(N, 0, std::max(2, V / 8));  // few distinct tokens: most repeat
  std::vector<float> out_ref(size_t(N) * C);
  cpu::encoder_forward(out_ref.data(), inp.data(), wte.data(), wpe.data(), B, T_, C);

  auto d_wte = to_device<T>(wte), d_wpe = to_device<T>(wpe);
  auto d_inp = to_device_int(inp);
  DeviceBuffer<T> d_out(out_ref.size());
  poison(d_out);
  cuda::encoder_forward(d_out.get(), d_inp.get(), d_wte.get(), d_wpe.get(), B, T_, C, nullptr);
  const Tol exact_or_rounded = kBf16<T> ? Tol{4e-3, 0} : Tol{0, 0};
  expect_close(to_host(d_out), out_ref, exact_or_rounded, "encoder_forward");

  auto dout = as_stored<T>(rng.normal(size_t(N) * C));
  auto dwte = as_stored<T>(rng.normal(size_t(V) * C));
  auto dwpe = as_stored<T>(rng.normal(size_t(T_) * C));
  auto d_dout = to_device<T>(dout), d_dwte = to_device<T>(dwte), d_dwpe = to_device<T>(dwpe);
  cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), inp.data(), B, T_, C);
  cuda::TokenBuckets tb;
  tb.build(inp.data(), N, V);
  cuda::DeviceTokenBuckets dtb;
  dtb.upload(tb, nullptr);
  cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), dtb, B, T_, C, nullptr);
  expect_close(to_host(d_dwte), dwte, exact_or_rounded, "encoder_backward dwte");
  expect_close(to_host(d_dwpe), dwpe, exact_or_rounded, "encoder_backward dwpe");
}

TEST(Kernels, EncoderFp32) {
  SGPT_SKIP_WITHOUT_GPU();
  check_encoder<float>(3, 37, 72, 101);
  check_encoder<float>(2, 5, 300, 7);  // C above one block of channels
}
TEST(Kernels, EncoderBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  check_encoder<bf16>(3, 37, 72, 101);
}

template <class T>
void check_layernorm(int N, int C, bool with_bias) {
  SeededRng rng;
  auto inp = as_stored<T>(rng.normal(size_t(N) * C, 2.0f, 0.5f));
  auto w = as_stored<T>(rng.normal(C, 0.3f, 1.0f));
  auto b = as_stored<T>(rng.normal(C, 0.3f));
  std::vector<float> out(size_t(N) * C), mean(N), rstd(N);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(),
                         with_bias ? b.data() : nullptr, N, C);
  auto d_inp = to_device<T>(inp), d_w = to_device<T>(w), d_b = to_device<T>(b);
  DeviceBuffer<T> d_out(out.size());
  DeviceBuffer<float> d_mean(N), d_rstd(N);
  poison(d_out);
  poison(d_mean);
  poison(d_rstd);
  cuda::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_w.get(),
                          with_bias ? d_b.get() : nullptr, N, C, nullptr);
  const Tol fwd = kBf16<T> ? kBf16Tol : Tol{1e-5, 1e-6};
  const Tol stats{1e-5, 1e-6};  // fp32 in both precisions, from the same (rounded) inputs
  expect_close(to_host(d_out), out, fwd, "layernorm_forward out");
  expect_close(to_host(d_mean), mean, Tol{1e-5, 1e-6}, "layernorm_forward mean");
  expect_close(to_host(d_rstd), rstd, stats, "layernorm_forward rstd");

  auto dout = as_stored<T>(rng.normal(size_t(N) * C));
  auto dinp = as_stored<T>(rng.normal(size_t(N) * C));
  auto dw = as_stored<T>(rng.normal(C));
  auto db = as_stored<T>(rng.normal(C));
  const auto dinp0 = dinp, dw0 = dw, db0 = db;  // the accumulated-into starting values
  cpu::layernorm_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(),
                          inp.data(), w.data(), mean.data(), rstd.data(), N, C);
  const Tol bwd = kBf16<T> ? kBf16Tol : Tol{1e-4, 1e-5};
  auto d_dout = to_device<T>(dout), d_dinp = to_device<T>(dinp0), d_dw = to_device<T>(dw0),
       d_db = to_device<T>(db0);
  cuda::Scratch scratch;
  cuda::layernorm_backward(d_dinp.get(), d_dw.get(), with_bias ? d_db.get() : nullptr,
                           d_dout.get(), d_inp.get(), d_w.get(), d_mean.get(), d_rstd.get(), N, C,
                           scratch, nullptr);
  expect_close(to_host(d_dinp), dinp, bwd, "layernorm_backward dinp");
  expect_close(to_host(d_dw), dw, bwd, "layernorm_backward dweight");
  expect_close(to_host(d_db), db, bwd, "layernorm_backward dbias");
  // Deterministic: the same inputs again give the same bits.
  auto e_dinp = to_device<T>(dinp0), e_dw = to_device<T>(dw0), e_db = to_device<T>(db0);
  cuda::layernorm_backward(e_dinp.get(), e_dw.get(), with_bias ? e_db.get() : nullptr,
                           d_dout.get(), d_inp.get(), d_w.get(), d_mean.get(), d_rstd.get(), N, C,
                           scratch, nullptr);
  EXPECT_TRUE(to_host(e_dinp) == to_host(d_dinp) && to_host(e_dw) == to_host(d_dw) &&
              to_host(e_db) == to_host(d_db))
      << "layernorm_backward: a second run gave different bits";
}

TEST(Kernels, LayernormFp32) {
  SGPT_SKIP_WITHOUT_GPU();
  check_layernorm<float>(111, 72, true);    // vectorized forward and backward (C % 4 == 0)
  check_layernorm<float>(1000, 33, false);  // general backward (C not a multiple of 4)
  check_layernorm<float>(5, 770, true);     // general
  check_layernorm<float>(4099, 512, true);  // vectorized, 4 vectors per lane, 17 row chunks
  check_layernorm<float>(70, 1024, false);  // general (wider than the vectorized path)
  check_layernorm<float>(50, 640, true);    // vectorized, 5 vectors per lane
  check_layernorm<float>(33, 896, false);   // vectorized, 7 vectors per lane (the widest)
}
TEST(Kernels, LayernormBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  check_layernorm<bf16>(111, 72, true);     // vectorized, lanes partly idle
  check_layernorm<bf16>(5, 770, false);     // general (C not a multiple of 8)
  check_layernorm<bf16>(2050, 768, true);   // vectorized, GPT-2 124M width
  check_layernorm<bf16>(70001, 64, false);  // 256 row chunks (the cap), the last one shorter
  check_layernorm<bf16>(300, 1024, false);  // vectorized, 4 vectors per lane
  check_layernorm<bf16>(517, 1280, true);   // vectorized, 5 vectors per lane (GPT-2 774M width)
  check_layernorm<bf16>(33, 1600, false);   // vectorized, 7 vectors, the last partly idle (1.5B)
  check_layernorm<bf16>(9, 2048, true);     // general (wider than the vectorized path)
}

template <class T>
void check_matmul(int N, int C, int OC, bool with_bias) {
  SeededRng rng(" N=" + std::to_string(N) + " C=" + std::to_string(C) + " OC=" + std::to_string(OC));
  auto inp = as_stored<T>(rng.normal(size_t(N) * C));
  auto w = as_stored<T>(rng.normal(size_t(OC) * C, 0.1f));
  auto b = as_stored<T>(rng.normal(OC));
  std::vector<float> out(size_t(N) * OC);
  cpu::matmul_forward(out.data(), inp.data(), w.data(), with_bias ? b.data() : nullptr, N, C, OC);
  auto d_inp = to_device<T>(inp), d_w = to_device<T>(w), d_b = to_device<T>(b);
  DeviceBuffer<T> d_out(out.size());
  poison(d_out);
  cuda::MatmulContext ctx;
  cuda::matmul_forward(ctx, d_out.get(), d_inp.get(), d_w.get(), with_bias ? d_b.get() : nullptr,
                       N, C, OC, nullptr);
  const Tol tol = kBf16<T> ? kBf16Tol : Tol{1e-4, 1e-5};
  expect_close(to_host(d_out), out, tol, "matmul_forward");

  auto dout = as_stored<T>(rng.normal(size_t(N) * OC));
  auto dinp = as_stored<T>(rng.normal(size_t(N) * C));
  auto dw = as_stored<T>(rng.normal(size_t(OC) * C));
  auto db = as_stored<T>(rng.normal(OC));
  auto d_dout = to_device<T>(dout), d_dinp = to_device<T>(dinp), d_dw = to_device<T>(dw),
       d_db = to_device<T>(db);
  cpu::matmul_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(),
                       inp.data(), w.data(), N, C, OC);
  cuda::Scratch scratch;
  cuda::matmul_backward(ctx, d_dinp.get(), d_dw.get(), with_bias ? d_db.get() : nullptr,
                        d_dout.get(), d_inp.get(), d_w.get(), N, C, OC, scratch, nullptr);
  expect_close(to_host(d_dinp), dinp, tol, "matmul_backward dinp");
  expect_close(to_host(d_dw), dw, tol, "matmul_backward dweight");
  expect_close(to_host(d_db), db, tol, "matmul_backward dbias");

  // Overwrite mode (the backend's fresh buffers): dinp = dout @ weight, whatever was there.
  std::vector<float> dinp0(size_t(N) * C, 0.0f), dw_unused(size_t(OC) * C, 0.0f);
  cpu::matmul_backward(dinp0.data(), dw_unused.data(), static_cast<float*>(nullptr), dout.data(),
                       inp.data(), w.data(), N, C, OC);
  poison(d_dinp);
  cuda::matmul_backward(ctx, d_dinp.get(), static_cast<T*>(nullptr), static_cast<T*>(nullptr),
                        d_dout.get(), d_inp.get(), d_w.get(), N, C, OC, scratch, nullptr,
                        /*accumulate_dinp=*/false);
  expect_close(to_host(d_dinp), dinp0, tol, "matmul_backward dinp (overwrite)");
}

TEST(Kernels, MatmulFp32) {
  SGPT_SKIP_WITHOUT_GPU();
  check_matmul<float>(111, 72, 101, true);
  check_matmul<float>(37, 300, 129, false);
  check_matmul<float>(64, 64, 192, true);
}
TEST(Kernels, MatmulBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  check_matmul<bf16>(111, 72, 101, true);
  check_matmul<bf16>(64, 64, 192, false);
}

// GELU fused into the cuBLASLt epilogues (bf16 only): forward pre = inp @ w^T + b, out = gelu(pre)
// against cpu::matmul_forward + cpu::gelu_forward; backward dpre = (dout @ w2) * gelu'(pre),
// dw2 += dout^T @ gelu(pre), db2 += sum dout against cpu::matmul_backward + cpu::gelu_backward.
// Each output is one rounding of an fp32 result (cuBLASLt applies GELU / its derivative to the
// fp32 accumulator), so the bf16 tolerance of the matmul applies; OC is a multiple of 8 (the
// auxiliary matrix's leading dimension, as in GPT-2's 4C).
void check_matmul_gelu(int N, int C, int OC, int OC2, bool with_bias) {
  SeededRng rng(" N=" + std::to_string(N) + " C=" + std::to_string(C) + " OC=" + std::to_string(OC));
  auto inp = as_stored<bf16>(rng.normal(size_t(N) * C));
  auto w = as_stored<bf16>(rng.normal(size_t(OC) * C, 0.2f));
  auto b = as_stored<bf16>(rng.normal(OC));
  std::vector<float> pre(size_t(N) * OC), out(size_t(N) * OC);
  cpu::matmul_forward(pre.data(), inp.data(), w.data(), with_bias ? b.data() : nullptr, N, C, OC);
  cpu::gelu_forward(out.data(), pre.data(), out.size());
  auto d_inp = to_device<bf16>(inp), d_w = to_device<bf16>(w), d_b = to_device<bf16>(b);
  DeviceBuffer<bf16> d_pre(pre.size()), d_out(out.size());
  poison(d_pre);
  poison(d_out);
  cuda::MatmulContext ctx;
  cuda::matmul_forward_gelu(ctx, d_out.get(), d_pre.get(), d_inp.get(), d_w.get(),
                            with_bias ? d_b.get() : nullptr, N, C, OC, nullptr);
  expect_close(to_host(d_pre), pre, kBf16Tol, "matmul_forward_gelu pre");
  expect_close(to_host(d_out), out, kBf16Tol, "matmul_forward_gelu out");

  // Backward through a second linear layer y = gelu(pre) @ w2^T + b2, from the stored pre.
  auto pre_s = to_host(d_pre);
  std::vector<float> act(pre_s.size());
  cpu::gelu_forward(act.data(), pre_s.data(), act.size());
  act = as_stored<bf16>(act);
  auto w2 = as_stored<bf16>(rng.normal(size_t(OC2) * OC, 0.1f));
  auto dout = as_stored<bf16>(rng.normal(size_t(N) * OC2));
  auto dw2 = as_stored<bf16>(rng.normal(size_t(OC2) * OC));
  auto db2 = as_stored<bf16>(rng.normal(OC2));
  auto d_act = to_device<bf16>(act), d_w2 = to_device<bf16>(w2), d_dout = to_device<bf16>(dout),
       d_dw2 = to_device<bf16>(dw2), d_db2 = to_device<bf16>(db2);
  std::vector<float> dact(act.size(), 0.0f), dpre(act.size(), 0.0f);
  cpu::matmul_backward(dact.data(), dw2.data(), with_bias ? db2.data() : nullptr, dout.data(),
                       act.data(), w2.data(), N, OC, OC2);
  cpu::gelu_backward(dpre.data(), pre_s.data(), dact.data(), dpre.size());
  DeviceBuffer<bf16> d_dpre(dpre.size());
  poison(d_dpre);  // overwritten
  cuda::Scratch scratch;
  cuda::matmul_backward_dgelu(ctx, d_dpre.get(), d_dw2.get(), with_bias ? d_db2.get() : nullptr,
                              d_dout.get(), d_act.get(), d_w2.get(), d_pre.get(), N, OC, OC2,
                              scratch, nullptr);
  expect_close(to_host(d_dpre), dpre, kBf16Tol, "matmul_backward_dgelu dpre");
  expect_close(to_host(d_dw2), dw2, kBf16Tol, "matmul_backward_dgelu dweight");
  expect_close(to_host(d_db2), db2, kBf16Tol, "matmul_backward_dgelu dbias");
}

TEST(Kernels, MatmulGeluBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  check_matmul_gelu(111, 72, 136, 40, true);
  check_matmul_gelu(64, 64, 256, 64, false);
}

// Fused residual + LayerNorm forward vs cpu::residual_forward, the sum stored in T, then
// cpu::layernorm_forward. res is exact in both precisions (the same fp32 add of the same two
// values, then the same round-to-nearest to T); out/mean/rstd with the LayerNorm tolerances.
template <class T>
void check_residual_layernorm(int N, int C, bool with_bias) {
  SeededRng rng(" N=" + std::to_string(N) + " C=" + std::to_string(C));
  const size_t n = size_t(N) * C;
  auto a = as_stored<T>(rng.normal(n, 2.0f, 0.5f)), b = as_stored<T>(rng.normal(n, 1.0f));
  auto w = as_stored<T>(rng.normal(C, 0.3f, 1.0f));
  auto bias = as_stored<T>(rng.normal(C, 0.3f));
  std::vector<float> res(n), out(n), mean(N), rstd(N);
  cpu::residual_forward(res.data(), a.data(), b.data(), n);
  res = as_stored<T>(res);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), res.data(), w.data(),
                         with_bias ? bias.data() : nullptr, N, C);
  auto d_a = to_device<T>(a), d_b = to_device<T>(b), d_w = to_device<T>(w),
       d_bias = to_device<T>(bias);
  DeviceBuffer<T> d_res(n), d_out(n);
  DeviceBuffer<float> d_mean(N), d_rstd(N);
  poison(d_res);
  poison(d_out);
  poison(d_mean);
  poison(d_rstd);
  cuda::residual_layernorm_forward(d_res.get(), d_out.get(), d_mean.get(), d_rstd.get(), d_a.get(),
                                   d_b.get(), d_w.get(), with_bias ? d_bias.get() : nullptr, N, C,
                                   nullptr);
  expect_close(to_host(d_res), res, Tol{0, 0}, "residual_layernorm_forward res");
  expect_close(to_host(d_out), out, kBf16<T> ? kBf16Tol : Tol{1e-5, 1e-6},
               "residual_layernorm_forward out");
  expect_close(to_host(d_mean), mean, Tol{1e-5, 1e-6}, "residual_layernorm_forward mean");
  expect_close(to_host(d_rstd), rstd, Tol{1e-5, 1e-6}, "residual_layernorm_forward rstd");
}

TEST(Kernels, ResidualLayernormFp32) {
  SGPT_SKIP_WITHOUT_GPU();
  check_residual_layernorm<float>(111, 72, true);   // fused: 18 vectors, lanes partly idle
  check_residual_layernorm<float>(4099, 512, false);  // fused, 4 vectors per lane
  check_residual_layernorm<float>(5, 770, true);    // C not a multiple of 4: two kernels
  check_residual_layernorm<float>(70, 1024, true);  // wider than the fused path: two kernels
  check_residual_layernorm<float>(33, 896, false);  // fused, 7 vectors per lane (the widest)
}
TEST(Kernels, ResidualLayernormBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  check_residual_layernorm<bf16>(2050, 768, true);  // GPT-2 124M width, 3 vectors per lane
  check_residual_layernorm<bf16>(7, 72, false);     // 9 vectors: most lanes idle
  check_residual_layernorm<bf16>(300, 1024, true);  // 4 vectors per lane
  check_residual_layernorm<bf16>(5, 770, true);     // C not a multiple of 8: two kernels
  check_residual_layernorm<bf16>(517, 1280, true);  // 5 vectors per lane (GPT-2 774M width)
  check_residual_layernorm<bf16>(33, 1600, false);  // 7 vectors, the last partly idle
  check_residual_layernorm<bf16>(9, 2048, true);    // wider than the fused path: two kernels
}

template <class T>
void check_gelu_residual(size_t n) {
  SeededRng rng;
  auto x = as_stored<T>(rng.normal(n, 2.5f));
  std::vector<float> y(n);
  cpu::gelu_forward(y.data(), x.data(), n);
  auto d_x = to_device<T>(x);
  DeviceBuffer<T> d_y(n);
  poison(d_y);
  cuda::gelu_forward(d_y.get(), d_x.get(), n, nullptr);
  const Tol tol = kBf16<T> ? Tol{4e-3, 1e-5} : Tol{1e-5, 1e-6};
  expect_close(to_host(d_y), y, tol, "gelu_forward");

  auto dout = as_stored<T>(rng.normal(n));
  auto dinp = as_stored<T>(rng.normal(n));
  auto d_dout = to_device<T>(dout), d_dinp = to_device<T>(dinp);
  cpu::gelu_backward(dinp.data(), x.data(), dout.data(), n);
  cuda::gelu_backward(d_dinp.get(), d_x.get(), d_dout.get(), n, nullptr);
  expect_close(to_host(d_dinp), dinp, tol, "gelu_backward");

  auto a = as_stored<T>(rng.normal(n)), b = as_stored<T>(rng.normal(n));
  std::vector<float> r(n);
  cpu::residual_forward(r.data(), a.data(), b.data(), n);
  auto d_a = to_device<T>(a), d_b = to_device<T>(b);
  DeviceBuffer<T> d_r(n);
  poison(d_r);
  cuda::residual_forward(d_r.get(), d_a.get(), d_b.get(), n, nullptr);
  expect_close(to_host(d_r), r, kBf16<T> ? Tol{4e-3, 0} : Tol{0, 0}, "residual_forward");
}

TEST(Kernels, GeluResidualFp32) {
  SGPT_SKIP_WITHOUT_GPU();
  check_gelu_residual<float>(100003);
  check_gelu_residual<float>(7);
}
TEST(Kernels, GeluResidualBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  check_gelu_residual<bf16>(100003);
}

}  // namespace
}  // namespace sgpt::test
