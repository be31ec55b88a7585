// Host-callable launchers of the tangent kernels (kernels/tangent.cu): the forward-mode
// derivatives of the GPT-2 ops along a direction u, used by the exact Hessian-vector product
// (cuda/hvp_cuda.h). Every tensor x has a tangent x_t (written ẋ in the comments), its directional
// derivative along u; a parameter's tangent is u's slice of that tensor. The math of each kernel
// is at the top of kernels/tangent.cu. Conventions as cuda/ops_cuda.h: row-major tensors; forward
// launchers overwrite their outputs; backward launchers ACCUMULATE (+=) into every gradient and
// gradient tangent they write (zero them first where a fresh value is wanted); optional tensors
// (biases and their tangents) may be nullptr. T is float or __nv_bfloat16 (storage; arithmetic in
// fp32). The attention helpers work on fp32 head-major copies ([B, NH, T, hs]) and fp32 T x T
// matrices (the product with them runs through cuBLAS, in hvp_cuda.cpp). All launches are
// asynchronous on `stream` and checked. Plain C++ header: includable by g++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

#include "cuda/buffer.h"
#include "cuda/ops_cuda.h"

namespace sgpt::cuda {

// ---- LayerNorm (eps 1e-5), with the mean and rstd the primal layernorm_forward saved ----
// out_t = LayerNorm tangent: with xh = (x - mean)*rstd,
//   xh_t = rstd * (x_t - mean_c(x_t) - xh * mean_c(xh * x_t)),
//   out_t = xh_t * weight + xh * weight_t (+ bias_t).
template <class T>
void layernorm_forward_tangent(T* out_t, const T* inp, const T* inp_t, const float* mean,
                               const float* rstd, const T* weight, const T* weight_t,
                               const T* bias_t, int N, int C, cudaStream_t stream);
// The primal input gradient and the tangents of the backward (see kernels/tangent.cu):
//   dinp += rstd * (g - mean(g) - xh * mean(g*xh)), g = weight * dout;
//   dinp_t += its tangent; dweight_t += sum_n (dout_t*xh + dout*xh_t); dbias_t += sum_n dout_t
// (the last two deterministic: fixed-order two-stage column sums through `scratch`). rowstats:
// device scratch of 2N floats owned by the caller. The primal dweight/dbias are not computed (the
// Hessian-vector product needs only their tangents).
template <class T>
void layernorm_backward_tangent(T* dinp, T* dinp_t, T* dweight_t, T* dbias_t, const T* dout,
                                const T* dout_t, const T* inp, const T* inp_t, const T* weight,
                                const T* weight_t, const float* mean, const float* rstd,
                                float* rowstats, int N, int C, Scratch& scratch,
                                cudaStream_t stream);

// ---- GELU, tanh form (the constants of kernels/gelu.cu) ----
// out_t = gelu'(x) * x_t.
template <class T>
void gelu_forward_tangent(T* out_t, const T* inp, const T* inp_t, size_t n, cudaStream_t stream);
// dinp += gelu'(x) * dout ; dinp_t += gelu''(x) * x_t * dout + gelu'(x) * dout_t.
template <class T>
void gelu_backward_tangent(T* dinp, T* dinp_t, const T* inp, const T* inp_t, const T* dout,
                           const T* dout_t, size_t n, cudaStream_t stream);

// ---- cross-entropy over the first V of Vp logits per row, in place ----
// losses[i] = -log p_i[target_i] (fp32); logits is overwritten by dloss * (p - onehot) and
// logits_t by its tangent dloss * p * (z_t - <p, z_t>) (z_t = the logits' tangent); both 0 in the
// padded columns.
template <class T>
void crossentropy_tangent(float* losses, T* logits, T* logits_t, const int* targets, float dloss,
                          int N, int V, int Vp, cudaStream_t stream);

// ---- attention helpers (fp32, B*NH matrices of T x T, head-major [B, NH, T, hs] tensors) ----
// q, k, v [B,NH,T,hs] fp32 from qkv [B,T,3C] (q | k | v, head h at columns h*hs of each).
template <class T>
void split_qkv(float* q, float* k, float* v, const T* qkv, int B, int T_, int C, int NH,
               cudaStream_t stream);
// y [B,NH,T,hs] fp32 from x [B,T,C].
template <class T>
void split_heads(float* y, const T* x, int B, int T_, int C, int NH, cudaStream_t stream);
// out [B,T,C] = y [B,NH,T,hs] (overwritten, rounded to T).
template <class T>
void merge_heads(T* out, const float* y, int B, int T_, int C, int NH, cudaStream_t stream);
// qkv [B,T,3C] = (q | k | v) from [B,NH,T,hs] each (overwritten, rounded to T).
template <class T>
void merge_qkv(T* qkv, const float* q, const float* k, const float* v, int B, int T_, int C,
               int NH, cudaStream_t stream);
// Row t of each of the `mats` T x T matrices in place: the causal softmax of s[0..t], 0 beyond.
void causal_softmax(float* s, int mats, int T_, cudaStream_t stream);
// In place of s_t (the logits' tangent): p_t = p * (s_t - sum_{j<=t} p_j s_t,j), 0 beyond t.
void softmax_tangent(float* s_t, const float* p, int mats, int T_, cudaStream_t stream);
// Softmax backward and its tangent, in place: on entry dp and dp_t hold dL/dp and its tangent; on
// exit ds = p * (dp - r), ds_t = p_t * (dp - r) + p * (dp_t - r_t), r = sum_{j<=t} p_j dp_j,
// r_t = sum_{j<=t} (p_t,j dp_j + p_j dp_t,j); both 0 beyond t.
void softmax_backward_tangent(float* dp, float* dp_t, const float* p, const float* p_t, int mats,
                              int T_, cudaStream_t stream);

// ---- attention tangents on the tensor cores, bf16, head size 64 (kernels/flash_tangent.cu) ----
// The fused counterpart of the materialized helpers above for HvpCuda<bf16>: no T x T matrix.
// Usable when the head size is 64 and C a multiple of 8 (tensors 16-byte aligned, as every
// per-layer slice of HvpCuda's buffers is).
bool flash_tangent_usable(int C, int NH);
// y, ẏ [B,T,C] (overwritten) from qkv and its tangent [B,T,3C]; lse (natural log) and c = the row
// sums of P Ṡ, [B,NH,T] fp32 each, saved for the backward.
void flash_tangent_forward(bf16* out, bf16* out_t, float* lse, float* cst, const bf16* inp,
                           const bf16* inp_t, int B, int T_, int C, int NH, float scale,
                           cudaStream_t stream);
// dqkv and its tangent [B,T,3C] (overwritten) from dy, ḋy [B,T,C], the forward's y, ẏ, qkv, q̇kv,
// lse and c. D, Dt: [B,NH,T] fp32 scratch (the row dot products, computed here).
void flash_tangent_backward(bf16* dinp, bf16* dinp_t, const bf16* dout, const bf16* dout_t,
                            const bf16* out, const bf16* out_t, const bf16* inp,
                            const bf16* inp_t, const float* lse, const float* cst, float* D,
                            float* Dt, int B, int T_, int C, int NH, float scale,
                            cudaStream_t stream);

}  // namespace sgpt::cuda
