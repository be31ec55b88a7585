// The arithmetic of the LayerNorm forward (kernels/layernorm.cu), shared with the kernels that
// normalise rows themselves (the batch decoder's Linear, kernels/decode_batch.cu), so that every
// user forms the same bits: 16-byte vectors, the per-row statistics of the vectorized forward, and
// ln_out.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common.cuh"

namespace sgpt::cuda {

constexpr float kLnEps = 1e-5f;

// One output of the forward, out_c = (x_c - mean) * rstd * weight_c (+ bias_c), with explicitly
// rounded operations (no FMA contraction, in any kernel that uses it): every forward path and
// layernorm_recompute go through it, so a recompute from the saved mean/rstd gives the same bits.
__device__ __forceinline__ float ln_out(float x, float m, float r, float w, const float* b) {
  const float y = __fmul_rn(__fmul_rn(__fsub_rn(x, m), r), w);
  return b ? __fadd_rn(y, *b) : y;
}

// ---- 16-byte vectors ----
template <class T>
struct Vec;  // 16 bytes of T
template <>
struct alignas(16) Vec<float> {  // alignas: one 16-byte load/store, not four 4-byte ones
  static constexpr int n = 4;
  float v[4];
};
template <>
struct alignas(16) Vec<__nv_bfloat16> {
  static constexpr int n = 8;
  __nv_bfloat16 v[8];
};
template <class T>
__device__ __forceinline__ void load_vec(float* dst, const T* src) {
  Vec<T> x = *reinterpret_cast<const Vec<T>*>(src);
#pragma unroll
  for (int i = 0; i < Vec<T>::n; ++i) dst[i] = to_f(x.v[i]);
}
template <class T>
__device__ __forceinline__ void store_vec(T* dst, const float* src) {
  Vec<T> x;
#pragma unroll
  for (int i = 0; i < Vec<T>::n; ++i) x.v[i] = from_f<T>(src[i]);
  *reinterpret_cast<Vec<T>*>(dst) = x;
}

// ---- the vectorized forward: one warp per row ----
// Lane l holds the row's vectors l, l + 32, ...: values x[(l + 32 i) V + j], j < V, for the i with
// (l + 32 i) V < C, in registers. The forward runs when C is a multiple of V, C <= kLnVecMaxChunks
// * 32 * V and the tensors are 16-byte aligned. Its steps, in this order (every user calls them
// the same way, so the bits are the same):
//   s = 0; for each of the lane's vectors in order: ln_vec_sum(s, x)     m = ln_mean(s, C)
//   v = 0; for each of the lane's vectors in order: ln_vec_sumsq(v, x, m) r = ln_rstd(v, C)
//   each vector's outputs: ln_vec_out(y, x, m, r, weight, bias, c0) (c0: its first channel)
// ln_vec_finish runs every step after the first loop, so a user writes only its loads.
constexpr int kLnVecMaxChunks = 7;

template <int V>
__device__ __forceinline__ void ln_vec_sum(float& s, const float (&x)[V]) {
#pragma unroll
  for (int j = 0; j < V; ++j) s += x[j];
}
__device__ __forceinline__ float ln_mean(float s, int C) { return warp_sum(s) / C; }
template <int V>
__device__ __forceinline__ void ln_vec_sumsq(float& v, const float (&x)[V], float m) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const float d = x[j] - m;
    v += d * d;
  }
}
__device__ __forceinline__ float ln_rstd(float v, int C) {
  return 1.0f / sqrtf(warp_sum(v) / C + kLnEps);
}
// bias may be null (no bias).
template <class T, int V>
__device__ __forceinline__ void ln_vec_out(float (&y)[V], const float (&x)[V], float m, float r,
                                           const T* weight, const T* bias, int c0) {
  float wv[V], bv[V];
  load_vec(wv, weight + c0);
  if (bias) load_vec(bv, bias + c0);
#pragma unroll
  for (int j = 0; j < V; ++j) y[j] = ln_out(x[j], m, r, wv[j], bias ? &bv[j] : nullptr);
}

// The steps after the loads, for a row whose vectors the lane holds in xv (those with
// (lane + 32 i) V < C) and whose per-lane sum s the caller formed while loading them: m, the
// second pass, r, and each held vector's outputs stored at out + c0.
template <int NCH, int V, class O, class P>
__device__ __forceinline__ void ln_vec_finish(O* out, const float (&xv)[NCH][V], float s,
                                              const P* weight, const P* bias, int C, int lane,
                                              float& m, float& r) {
  m = ln_mean(s, C);
  float v = 0.0f;
#pragma unroll
  for (int i = 0; i < NCH; ++i) {
    const int c0 = (lane + 32 * i) * V;
    if (c0 < C) ln_vec_sumsq(v, xv[i], m);
  }
  r = ln_rstd(v, C);
#pragma unroll
  for (int i = 0; i < NCH; ++i) {
    const int c0 = (lane + 32 * i) * V;
    if (c0 < C) {
      float y[V];
      ln_vec_out(y, xv[i], m, r, weight, bias, c0);
      store_vec(out + c0, y);
    }
  }
}

}  // namespace sgpt::cuda
