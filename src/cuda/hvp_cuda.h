// Exact Hessian-vector products of the GPT-2 loss on the GPU (Sophia-H, docs/design.md section 3):
// forward mode over the reverse pass, the GPU counterpart of cpu::HessianVectorProduct
// (src/cpu/hvp.h), which runs the CPU model on dual numbers. Here the dual parts are explicit
// tensors: the forward computes every activation a and its tangent ȧ (the derivative along u of
// a, at the parameters p), the backward every backward signal d and its tangent ḋ; the tangents of
// the parameter gradients are H u. Exact up to rounding (no step size, no finite difference).
//
// The model is Gpt2Cuda's / cpu::Gpt2's (tied head, LayerNorm eps 1e-5, tanh GELU, causal
// attention with sgpt::attention_scale, optional biases), composed from the launchers of
// cuda/ops_cuda.h (primal) and cuda/tangent_cuda.h (tangents):
//   Linear y = x W^T + b      ẏ = ẋ W^T + x U^T + u_b          (U, u_b: u's slices of W, b)
//                             dx = dy W ; ḋx = ḋy W + dy U ; ḋW = ḋy^T x + dy^T ẋ ; ḋb = colsum ḋy
//   encoder, residual adds    linear: the same op on the tangents
//   LayerNorm, GELU, cross-entropy: kernels/tangent.cu
//   attention (per batch and head, materialized in fp32, the products through cuBLAS):
//     S = scale Q K^T (causal), P = softmax(S), Y = P V
//     Ṡ = scale (Q̇ K^T + Q K̇^T), Ṗ = P (Ṡ - rowsum(P Ṡ)), Ẏ = Ṗ V + P V̇
//     dV = P^T dY, dP = dY V^T, dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK = scale dS^T Q
//     ḋV = Ṗ^T dY + P^T ḋY, ḋP = ḋY V^T + dY V̇^T, ḋS (kernels/tangent.cu),
//     ḋQ = scale (ḋS K + dS K̇), ḋK = scale (ḋS^T Q + dS^T Q̇)
//   P and Ṗ are recomputed in the backward from the saved qkv and its tangent (no T x T tensor
//   is kept per layer).
//   Fused (HvpAttention::kAuto with T = bf16 and head size 64, the GPT-2 models): the same
//   formulas in flash-attention kernels on the tensor cores (kernels/flash_tangent.cu), which
//   keep no T x T matrix in memory, save each layer's log-sum-exp and c = rowsum(P Ṡ) in the
//   forward and recompute P, Ṗ from them in the backward; P, Ṗ, dS and ḋS enter the second
//   products as bf16 operands (fp32 accumulation).
// The primal parameter gradients are never formed (only their tangents are wanted).
//
// Memory, N = max_B * T rows: the primal and tangent activations of every layer (2 x 16C per
// row per layer: ln1, qkv, atty, res2, ln2, fch, gelu, the residual stream) and of the final
// LayerNorm, the logits and their tangent ([N, Vp] each, overwritten in place by dlogits and its
// tangent: the only two buffers of that size), backward signals and tangents (2 x 10C per row),
// the attention's fp32 head-major copies (14 x C per row) and four fp32 [max_B, NH, T, T] matrices
// (fused: instead 2 fp32 values per layer, head and row, and 2 per head and row of scratch).
// Cost per call: about 8/3 of the matmul flops of a training step's forward + backward on the same
// batch (each Linear runs 3 products forward and 5 backward instead of 1 and 2), plus the
// materialized attention (O(T^2) memory and work per head, recomputed in the backward). Sophia-H
// runs it on a few sequences every k steps.
//
// T = float (every tensor fp32; the result matches the CPU's double product to fp32 rounding) or
// __nv_bfloat16 (weights, activations, tangents and hu stored in bf16, arithmetic in fp32, the
// attention's matrices in fp32).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "cuda/buffer.h"
#include "cuda/ops_cuda.h"
#include "model/gpt2.h"

namespace sgpt::cuda {

// The attention's path: kAuto takes the fused kernels where they apply (bf16, head size 64) and
// the materialized fp32 products elsewhere; kMaterialized always the latter (tests, benchmarks).
enum class HvpAttention { kAuto, kMaterialized };

template <class T>
class HvpCuda {
 public:
  // Buffers for up to max_B sequences of T_ tokens (allocated here); all work on `stream`.
  HvpCuda(const ModelConfig& cfg, int max_B, int T_, cudaStream_t stream,
          HvpAttention attention = HvpAttention::kAuto);
  ~HvpCuda();
  HvpCuda(const HvpCuda&) = delete;
  HvpCuda& operator=(const HvpCuda&) = delete;

  // hu[i] += scale * (H u)[i] for every parameter i, H the Hessian of the mean cross-entropy of
  // the B x T_ batch (inp_host, tgt_host: host token ids) at params. params, u, hu: device arrays
  // of ParamLayout::total elements. Returns the mean loss (synchronizes the stream).
  float accumulate(const T* params, const T* u, const int* inp_host, const int* tgt_host, int B,
                   float scale, T* hu);

  size_t device_bytes() const { return bytes_; }  // what the constructor allocated
  bool fused_attention() const { return fused_; }  // the attention runs kernels/flash_tangent.cu

 private:
  template <class P>
  P* tensor(P* base, int i, int l = 0) const {
    if (layout_.size[i] == 0) return nullptr;
    const bool global = i == kWte || i == kWpe || i == kLnfw || i == kLnfb;
    return base + layout_.layer_offset(i, l, global ? 1 : cfg_.n_layer);
  }
  // Layer l's block of a per-layer activation of `width` values per row.
  T* act(const DeviceBuffer<T>& b, int l, size_t width) const {
    return b.get() + static_cast<size_t>(l) * N_ * width;
  }
  float* stat(const DeviceBuffer<float>& b, int l) const {
    return b.get() + static_cast<size_t>(l) * N_;
  }
  template <class P>
  void alloc(DeviceBuffer<P>& b, size_t n);
  // Row-major batched fp32 GEMM: C = alpha op(A) op(B) + beta C for `batch` matrices.
  void bgemm(bool ta, bool tb, int M, int Nc, int K, float alpha, const float* A, int lda,
             long long sA, const float* B, int ldb, long long sB, float beta, float* C, int ldc,
             long long sC, int batch);
  void linear_forward(T* y, T* y_t, const T* x, const T* x_t, const T* W, const T* b,
                      const T* uW, const T* ub, int N, int C, int OC);
  void linear_backward(T* dx, T* dx_t, T* huW, T* hub, const T* dy, const T* dy_t, const T* x,
                       const T* x_t, const T* W, const T* uW, int N, int C, int OC);
  // P, Ṗ of layer l's qkv (and q, k, v and their tangents in head-major fp32).
  void attention_probs(const T* qkv, const T* qkv_t, int B, float scale);
  // Layer l's attention (l selects the fused path's saved row statistics).
  void attention_forward(T* y, T* y_t, const T* qkv, const T* qkv_t, int B, int l, float scale);
  void attention_backward(T* dqkv, T* dqkv_t, const T* dy, const T* dy_t, const T* y,
                          const T* y_t, const T* qkv, const T* qkv_t, int B, int l, float scale);

  ModelConfig cfg_;
  ParamLayout layout_;
  int max_B_, T_;
  bool fused_ = false;
  size_t N_;  // max_B * T rows
  cudaStream_t stream_;
  cublasHandle_t blas_ = nullptr;
  size_t bytes_ = 0;
  MatmulContext matmul_;
  Scratch scratch_;
  TokenBuckets buckets_host_;
  DeviceTokenBuckets buckets_;
  DeviceBuffer<int> inp_, targets_;
  // Activations (per layer: [L, N, width]) and their tangents (suffix t).
  DeviceBuffer<T> x_, xt_;  // residual stream entering layer l (l = L: after the last layer)
  DeviceBuffer<T> ln1_, ln1t_, qkv_, qkvt_, atty_, attyt_, res2_, res2t_, ln2_, ln2t_, fch_,
      fcht_, gelu_, gelut_;
  DeviceBuffer<T> proj_, projt_, lnf_, lnft_, logits_, logitst_;
  DeviceBuffer<float> ln1_mean_, ln1_rstd_, ln2_mean_, ln2_rstd_, lnf_mean_, lnf_rstd_;
  // Backward signals and tangents.
  DeviceBuffer<T> dres_, dres_t_, dln_, dln_t_, dgelu_, dgelu_t_, dfch_, dfch_t_, datty_,
      datty_t_, dqkv_, dqkv_t_;
  // Attention, fp32: q, k, v and tangents [B,NH,T,hs]; dy and tangent; dq, dk, dv and tangents
  // (the forward's y and tangent use dq, dk); the T x T matrices.
  DeviceBuffer<float> hq_, hk_, hv_, hqt_, hkt_, hvt_, hdy_, hdyt_, hdq_, hdk_, hdv_, hdqt_, hdkt_,
      hdvt_, P_, Pt_, dP_, dPt_;
  // Fused attention: per layer lse and c [L, max_B, NH, T]; D and Ḋ scratch [max_B, NH, T].
  DeviceBuffer<float> flse_, fc_, fD_, fDt_;
  DeviceBuffer<float> rowstats_, losses_, mean_loss_;
};

extern template class HvpCuda<float>;
extern template class HvpCuda<bf16>;

}  // namespace sgpt::cuda
