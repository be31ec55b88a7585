// expf as the CPU reference evaluates it, for host and device.
//
// The GNB labels (cpu::sample_labels) are the first index where a running fp32 sum of
// exp(logit - max) passes u * total. To draw the same labels, the GPU must produce the same fp32
// exponentials as the CPU's std::exp(float), i.e. glibc's expf. glibc (2.28 and later, on x86-64
// and AArch64) uses the table-driven algorithm of ARM's optimized-routines, evaluated in double:
//   z = x * 32/ln2 ;  k = round-to-nearest(z) (via the 1.5*2^52 shift) ;  r = z - k
//   2^(k/32) = double with bits  tab[k % 32] + (k << 47)
//   exp(x) ~= 2^(k/32) * (1 + c2 r + c1 r^2 + c0 r^3), rounded once to float.
// With |r| <= 1/2 and the double arithmetic carrying 29 more bits than the float result, this is
// within 0.502 ulp; a different evaluation (CUDA's expf, 2 ulp) would change about one in three
// results by an ulp and with them the labels. The x86-64 glibc picks an FMA build on CPUs with FMA
// (every GPU host): the polynomial below uses fused multiply-adds like that build. Results differ
// from the non-FMA build only when the double result lies within 2^-53 (relative) of a float
// rounding boundary. Special cases: -inf -> 0; x < -103.97 -> 0 (underflow); NaN -> NaN;
// x > 88.72 -> inf.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "bits.cuh"
#include "common/philox.h"  // SGPT_HD
#include "cuda/ops_cuda.h"   // Scratch, cudaStream_t

namespace sgpt::cuda {

// tab[i] = bits(2^(i/32)) - (i << 47): the 32 double values 2^(i/32), i = 0..31, with the
// exponent adjustment of the algorithm folded in (reproduced from the algorithm's published data).
#define SGPT_EXP2F_TAB                                                                      \
  0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull, \
      0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull,                   \
      0x3fef1e9df51fdee1ull, 0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull,                   \
      0x3feedea64c123422ull, 0x3feece086061892dull, 0x3feebfdad5362a27ull,                   \
      0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull,                   \
      0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull,                   \
      0x3feea589994cce13ull, 0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull,                   \
      0x3feec49182a3f090ull, 0x3feed503b23e255dull, 0x3feee89f995ad3adull,                   \
      0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull,                   \
      0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull
#if defined(__CUDACC__)
static __device__ __constant__ uint64_t kExp2fTabDevice[32] = {SGPT_EXP2F_TAB};
#endif
inline constexpr uint64_t kExp2fTabHost[32] = {SGPT_EXP2F_TAB};
#undef SGPT_EXP2F_TAB

SGPT_HD uint64_t libm_expf_tab(int i) {
#if defined(__CUDA_ARCH__)
  return kExp2fTabDevice[i];
#else
  return kExp2fTabHost[i];
#endif
}

SGPT_HD double fma_d(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// Explicitly rounded double operations: the compiler must not contract them into FMAs.
SGPT_HD double mul_d(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
SGPT_HD double add_d(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// The algorithm with the table read through `tab(i)`: the constant-memory table (libm_expf_tab) or
// a copy in shared memory (TabPtr). A warp whose lanes index the table differently has its
// constant-memory reads serialized (one address per cycle); shared memory serves them together.
struct TabConst {
  SGPT_HD uint64_t operator()(int i) const { return libm_expf_tab(i); }
};
struct TabPtr {
  const uint64_t* p;
  SGPT_HD uint64_t operator()(int i) const { return p[i]; }
};

template <class Tab>
SGPT_HD float libm_expf_t(float x, Tab tab) {
  const uint32_t abstop = (f32_bits(x) >> 20) & 0x7ffu;
  if (abstop >= 0x42bu) {  // |x| >= 88 or NaN
    if (f32_bits(x) == 0xff800000u) return 0.0f;  // -inf
    if (abstop >= 0x7f8u) return x + x;                // +inf or NaN
    if (x > 0x1.62e42ep6f) return INFINITY;
    if (x < -0x1.9fe368p6f) return 0.0f;
  }
  constexpr double kN = 32.0;
  constexpr double kInvLn2N = 0x1.71547652b82fep+0 * kN;
  constexpr double kShift = 0x1.8p+52;
  constexpr double kC0 = 0x1.c6af84b912394p-5 / kN / kN / kN;
  constexpr double kC1 = 0x1.ebfce50fac4f3p-3 / kN / kN;
  constexpr double kC2 = 0x1.62e42ff0c52d6p-1 / kN;
  const double z = mul_d(kInvLn2N, static_cast<double>(x));
  double kd = add_d(z, kShift);  // rounds z to an integer (ties to even) in the low bits
  const uint64_t ki = f64_bits(kd);
  kd = add_d(kd, -kShift);
  const double r = add_d(z, -kd);
  const uint64_t t = tab(static_cast<int>(ki % 32)) + (ki << 47);
  const double s = bits_f64(t);
  const double p = fma_d(kC0, r, kC1);
  const double r2 = mul_d(r, r);
  double y = fma_d(kC2, r, 1.0);
  y = fma_d(p, r2, y);
  y = mul_d(y, s);
  return static_cast<float>(y);
}

SGPT_HD float libm_expf(float x) { return libm_expf_t(x, TabConst{}); }
// Same result, table from `tab` (32 entries equal to libm_expf_tab(0..31), e.g. in shared memory).
SGPT_HD float libm_expf(float x, const uint64_t* tab) { return libm_expf_t(x, TabPtr{tab}); }

// The CPU-order GNB sampler (kernels/classifier.cu: one thread per row, labels identical to
// cpu::sample_labels on the same values) for either T. sample_labels<float> runs it;
// sample_labels<bf16> runs a one-block-per-row sampler (exact draw from the softmax, fixed-tree
// sums: not the CPU's labels bit for bit). Exposed for tests and benchmarks.
template <class T>
void sample_labels_exact(int* targets, const T* logits, int N, int T_, int V, int Vp,
                         uint64_t seed, uint32_t step, uint32_t seq0, Scratch& scratch,
                         cudaStream_t stream);

}  // namespace sgpt::cuda
