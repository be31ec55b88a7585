// CPU reference of every GPT-2 op: the ground truth that each CUDA kernel is tested against.
//
// Conventions (the same for every op, and for the CUDA kernel of the same name):
//   - Row-major tensors. N = B*T rows of activations; C channels; OC output channels.
//   - Linear weights use PyTorch's layout [OC, C]: out = inp @ weight^T + bias.
//   - Forward functions overwrite their outputs.
//   - Backward functions ACCUMULATE (+=) into every gradient they write (dinp, dweight, dbias),
//     as llm.c does, so a residual stream can sum the gradients of its branches. Callers zero
//     gradient buffers when needed.
//   - Optional tensors (bias, dbias, LayerNorm bias) may be nullptr.
//   - Templated on the float type: float is the reference; double is used by the finite-difference
//     gradient tests.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sgpt::cpu {

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
template <class F>
void encoder_forward(F* out, const int* inp, const F* wte, const F* wpe, int B, int T, int C);
template <class F>
void encoder_backward(F* dwte, F* dwpe, const F* dout, const int* inp, int B, int T, int C);

// LayerNorm over the last dimension, eps 1e-5, biased variance. mean/rstd: [N] saved for backward.
template <class F>
void layernorm_forward(F* out, F* mean, F* rstd, const F* inp, const F* weight, const F* bias,
                       int N, int C);
template <class F>
void layernorm_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp,
                        const F* weight, const F* mean, const F* rstd, int N, int C);

// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC]
template <class F>
void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC);
template <class F>
void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                     int N, int C, int OC);

// Causal multi-head self-attention. inp: [B,T,3C] holding q,k,v (each [NH, hs], hs = C/NH);
// out: [B,T,C]; att: [B,NH,T,T] softmax probabilities (saved for backward; entries above the
// diagonal are 0). Logits are q.k * scale, scale = 1/sqrt(hs), further divided by (layer+1)
// when scale_attn_by_inverse_layer_idx is set (the caller passes the final scale).
template <class F>
void attention_forward(F* out, F* att, const F* inp, int B, int T, int C, int NH, F scale);
template <class F>
void attention_backward(F* dinp, const F* dout, const F* inp, const F* att, int B, int T, int C,
                        int NH, F scale);

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
template <class F>
void gelu_forward(F* out, const F* inp, size_t n);
template <class F>
void gelu_backward(F* dinp, const F* inp, const F* dout, size_t n);

// out = a + b
template <class F>
void residual_forward(F* out, const F* a, const F* b, size_t n);

// Softmax cross-entropy over the first V of Vp logits per row. logits: [N, Vp].
// losses[i] = -log softmax(logits[i, :V])[targets[i]].
// Backward writes (overwrites) dlogits[i, j] = dloss * (p_ij - [j == targets[i]]) for j < V and 0
// for V <= j < Vp (padded columns). dlogits may alias logits.
template <class F>
void crossentropy_forward(F* losses, const F* logits, const int* targets, int N, int V, int Vp);
template <class F>
void crossentropy_backward(F* dlogits, const F* logits, const int* targets, F dloss, int N, int V,
                           int Vp);

// GNB label sampling: target[i] = the smallest j < V with cdf_j > u_i * sum, where cdf is the
// running sum of exp(logits[i,j] - max) in index order and u_i = gnb_uniform(seed, step,
// seq0 + i / T, i % T) (src/common/philox.h). Rows are N = B*T positions of sequences seq0...
template <class F>
void sample_labels(int* targets, const F* logits, int N, int T, int V, int Vp, uint64_t seed,
                   uint32_t step, uint32_t seq0);

}  // namespace sgpt::cpu
