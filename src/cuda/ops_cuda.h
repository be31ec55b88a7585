// Host-callable launchers of the GPT-2 kernels in kernels/*.cu. Each is paired with the CPU
// reference function of the same name in src/cpu/ops.h and follows its conventions:
//   - row-major tensors, Linear weights [OC, C] (PyTorch layout);
//   - forward launchers overwrite their outputs;
//   - backward launchers ACCUMULATE (+=) into every gradient they write;
//   - optional tensors (biases and their gradients) may be nullptr.
// Where the GPU version differs in what it saves for backward (attention stores the log-sum-exp
// of each row instead of the probabilities; LayerNorm's mean/rstd are fp32 in every precision)
// the launcher says so. T is float (every tensor fp32; results match the CPU to rounding) or
// __nv_bfloat16 (storage in bf16, arithmetic in fp32). All launches are asynchronous on `stream`
// and checked. Plain C++ header: includable by g++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/buffer.h"

namespace sgpt::cuda {

using bf16 = __nv_bfloat16;

// ---- encoder (kernels/encoder.cu) ----
// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]; inp is a device array.
template <class T>
void encoder_forward(T* out, const int* inp, const T* wte, const T* wpe, int B, int T_, int C,
                     cudaStream_t stream);

// Positions grouped by token, built on the host from the host copy of the tokens (they are on
// the host anyway): the backward then sums each token's rows in a fixed order with no atomics.
struct TokenBuckets {
  std::vector<int> positions;  // [N]: positions n, grouped by token, ascending within a group
  std::vector<int> buckets;    // [3 * num_buckets]: (token, first index into positions, count)
  int num_buckets = 0;
  void build(const int* inp_host, int N, int vocab_rows);
};
// Device copy of TokenBuckets. `buckets` holds the bucket count first, then the triples, so the
// backward's launch depends only on the number of positions, not on the tokens: a CUDA graph of
// a training micro-step stays valid for every batch of the same shape.
struct DeviceTokenBuckets {
  DeviceBuffer<int> positions, buckets;
  int num_positions = 0;
  void upload(const TokenBuckets& tb, cudaStream_t stream);

 private:
  std::vector<int> staged_;
};
// dwte[v,:] += sum of dout[n,:] over positions n with inp[n] == v (in ascending n);
// dwpe[t,:] += sum over b of dout[b,t,:] (in ascending b). Deterministic.
template <class T>
void encoder_backward(T* dwte, T* dwpe, const T* dout, const DeviceTokenBuckets& buckets, int B,
                      int T_, int C, cudaStream_t stream);

// ---- layernorm (kernels/layernorm.cu) ----
// eps 1e-5, biased variance; mean, rstd: [N] fp32.
template <class T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, int N, int C, cudaStream_t stream);
// res = a + b (rounded to T, stored) and out = layernorm(res): exactly residual_forward followed
// by layernorm_forward (cpu::residual_forward + cpu::layernorm_forward), fused into one pass when
// C is a multiple of 16 bytes of T and at most 896 (fp32) / 1792 (bf16) channels.
template <class T>
void residual_layernorm_forward(T* res, T* out, float* mean, float* rstd, const T* a, const T* b,
                                const T* weight, const T* bias, int N, int C,
                                cudaStream_t stream);
// out = LayerNorm(inp) with the mean and rstd that layernorm_forward / residual_layernorm_forward
// saved for this same inp (activation recompute): the same bits as that forward's out (every
// path evaluates out_c = (x_c - mean) * rstd * weight_c + bias_c with the same explicitly rounded
// operations, so no FMA contraction can differ).
template <class T>
void layernorm_recompute(T* out, const T* inp, const float* mean, const float* rstd,
                         const T* weight, const T* bias, int N, int C, cudaStream_t stream);
// Deterministic: dweight/dbias are reduced over rows in a fixed two-stage order via `scratch`.
template <class T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                        const T* weight, const float* mean, const float* rstd, int N, int C,
                        Scratch& scratch, cudaStream_t stream);

// ---- matmul through cuBLASLt (kernels/matmul.cu) ----
// Owns the cuBLASLt handle, its workspace and a cache of chosen algorithms. fp32 runs with
// CUBLAS_COMPUTE_32F (TF32 off: results comparable with the fp32 CPU reference); bf16 runs with
// bf16 operands and fp32 accumulation.
class MatmulContext {
 public:
  MatmulContext();
  ~MatmulContext();
  MatmulContext(const MatmulContext&) = delete;
  MatmulContext& operator=(const MatmulContext&) = delete;
  struct Impl;
  Impl& impl() { return *impl_; }
  size_t workspace_bytes() const;  // the cuBLASLt workspace this context allocated

 private:
  std::unique_ptr<Impl> impl_;
};

// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC] (bias through the cuBLASLt epilogue).
template <class T>
void matmul_forward(MatmulContext& ctx, T* out, const T* inp, const T* weight, const T* bias,
                    int N, int C, int OC, cudaStream_t stream);
// out[N,OC] += inp[N,C] @ weight[OC,C]^T (no bias; the tangent of a Linear layer, cuda/hvp_cuda.h).
template <class T>
void matmul_forward_accumulate(MatmulContext& ctx, T* out, const T* inp, const T* weight, int N,
                               int C, int OC, cudaStream_t stream);
// dinp += dout @ weight; dweight += dout^T @ inp; dbias += column sums of dout (deterministic).
// `accumulate_dinp = false` overwrites dinp instead (used by the backend for fresh buffers).
template <class T>
void matmul_backward(MatmulContext& ctx, T* dinp, T* dweight, T* dbias, const T* dout,
                     const T* inp, const T* weight, int N, int C, int OC, Scratch& scratch,
                     cudaStream_t stream, bool accumulate_dinp = true);

// ---- FP8 lm head (kernels/fp8.cu, kernels/matmul.cu; config key lm_head_precision) ----
// amax[0] = max |x[i]| over n elements (exact: the order of a max does not matter; NaN if any).
void absmax(float* amax, const bf16* x, size_t n, cudaStream_t stream);
// q[i] = E4M3(x[i] * s) with s = 448 / amax[0] (1 where amax is 0 or not finite), rounded to
// nearest even, saturating at +-448 (kernels/fp8.cuh); descale[0] = 1 / s.
void quantize_e4m3(uint8_t* q, float* descale, const bf16* x, size_t n, const float* amax,
                   cudaStream_t stream);
// out[N,OC] = inp_descale * weight_descale * (inp[N,C] @ weight[OC,C]^T), both operands E4M3,
// fp32 accumulation, bf16 out; C a multiple of 16, operands 16-byte aligned.
void matmul_forward_fp8(MatmulContext& ctx, bf16* out, const uint8_t* inp, const uint8_t* weight,
                        const float* inp_descale, const float* weight_descale, int N, int C,
                        int OC, cudaStream_t stream);
// Whether this device's tensor cores take E4M3 (compute capability 8.9 or later).
bool fp8_matmul_usable();

// GELU fused into the cuBLASLt epilogue (bf16 only; the fp32 path keeps gelu.cu for CPU parity):
// pre[N,OC] = inp @ weight^T + bias (saved for backward), out = gelu(pre) (tanh form).
void matmul_forward_gelu(MatmulContext& ctx, bf16* out, bf16* pre, const bf16* inp,
                         const bf16* weight, const bf16* bias, int N, int C, int OC,
                         cudaStream_t stream);
// Backward of out = gelu(pre) followed by y = out @ weight^T + bias: dpre[N,C] = (dout @ weight) *
// gelu'(pre) (OVERWRITTEN), dweight += dout^T @ inp (inp = gelu(pre)), dbias += column sums of
// dout. Here C is the input width of the second linear layer (4C in GPT-2) and OC its output.
void matmul_backward_dgelu(MatmulContext& ctx, bf16* dpre, bf16* dweight, bf16* dbias,
                           const bf16* dout, const bf16* inp, const bf16* weight, const bf16* pre,
                           int N, int C, int OC, Scratch& scratch, cudaStream_t stream);

// ---- attention, our own fused kernel (kernels/attention.cu) ----
// inp: [B,T,3C] holding q,k,v; out: [B,T,C]; lse: [B,NH,T] fp32, the log-sum-exp of each
// query's scaled logits, saved for backward in place of the probabilities (which are recomputed).
template <class T>
void attention_forward(T* out, float* lse, const T* inp, int B, int T_, int C, int NH, float scale,
                       cudaStream_t stream);
// dinp [B,T,3C] += gradient w.r.t. q,k,v. `scratch` holds [B,NH,T] row dot products dout.out.
// accumulate = false overwrites dinp instead (the backend's fresh buffer: no memset, no read).
template <class T>
void attention_backward(T* dinp, const T* dout, const T* inp, const T* out, const float* lse,
                        int B, int T_, int C, int NH, float scale, Scratch& scratch,
                        cudaStream_t stream, bool accumulate = true);

// ---- attention on the tensor cores, bf16, head size 64 (kernels/flash_attention.cu) ----
// attention_forward/backward<bf16> call these when flash_attention_usable() (head size 64, C a
// multiple of 8, 16-byte aligned tensors). Same function and same saved lse as above. D: [B,NH,T]
// row dot products dout_t . out_t (computed by attention_backward before the call).
bool flash_attention_usable(const void* inp, const void* out, int C, int NH);
void flash_attention_forward(bf16* out, float* lse, const bf16* inp, int B, int T_, int C, int NH,
                             float scale, cudaStream_t stream);
void flash_attention_backward(bf16* dinp, const bf16* dout, const bf16* inp, const float* lse,
                              const float* D, int B, int T_, int C, int NH, float scale,
                              cudaStream_t stream, bool accumulate = true);

// ---- gelu, tanh form (kernels/gelu.cu) ----
template <class T>
void gelu_forward(T* out, const T* inp, size_t n, cudaStream_t stream);
template <class T>
void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n, cudaStream_t stream);

// ---- residual (kernels/residual.cu) ----
template <class T>
void residual_forward(T* out, const T* a, const T* b, size_t n, cudaStream_t stream);

// ---- classifier (kernels/classifier.cu) ----
// Fused softmax cross-entropy over the first V of Vp logits per row, without storing the
// probabilities: losses[i] = -log softmax(logits[i,:V])[targets[i]] (fp32) and, when
// write_dlogits, logits is overwritten in place by dloss * (p - onehot) (0 in padded columns).
// Pairs with cpu::crossentropy_forward + cpu::crossentropy_backward.
template <class T>
void crossentropy_forward_backward(float* losses, T* logits, const int* targets, float dloss,
                                   int N, int V, int Vp, bool write_dlogits, cudaStream_t stream);
// GNB labels: targets[i] = the smallest j < V with cdf_j > u_i * sum, cdf the running sum of
// exp(logit - max), u_i = gnb_uniform(seed, step, seq0 + i / T, i % T).
// fp32 logits: exactly cpu::sample_labels (sum in index order, exp evaluated as the CPU's expf),
// so CPU and GPU draw the same labels. bf16 logits: the same distribution and uniforms, but sums
// in a fixed parallel order with a fast exp (one block per row, ~2.9 ms for 65,536 x 50,304 on an
// H100); a label can differ from the CPU's only where u*sum falls within rounding of a CDF boundary.
template <class T>
void sample_labels(int* targets, const T* logits, int N, int T_, int V, int Vp, uint64_t seed,
                   uint32_t step, uint32_t seq0, Scratch& scratch, cudaStream_t stream);
// The same with its own temporary scratch (allocated per call; synchronizes the stream).
template <class T>
void sample_labels(int* targets, const T* logits, int N, int T_, int V, int Vp, uint64_t seed,
                   uint32_t step, uint32_t seq0, cudaStream_t stream);
// The GNB classifier in one kernel (bf16 logits with Vp a multiple of 8 and 16-byte aligned rows):
// sample_labels into targets, then, in the same kernel, losses against those labels and dlogits
// in place, as crossentropy_forward_backward(write_dlogits = true) computes them. Returns false,
// doing nothing, where it does not apply (fp32: labels in the CPU's order need the separate
// sampler); the caller then runs sample_labels and crossentropy_forward_backward.
template <class T>
bool sample_labels_crossentropy(float* losses, int* targets, T* logits, float dloss, int N,
                                int T_, int V, int Vp, uint64_t seed, uint32_t step,
                                uint32_t seq0, cudaStream_t stream);
// out[0] = mean of losses[0..N) (fixed-order reduction, deterministic).
void mean_loss(float* out, const float* losses, int N, cudaStream_t stream);

}  // namespace sgpt::cuda
