// Launchers of kernels/decode_batch.cu, the kernels of the batch decoder (cuda/decode_batch.h).
//
// Every kernel computes each row with arithmetic that does not depend on the other rows or on
// their number (no cross-row reduction, no algorithm chosen by shape), so a sequence's logits are
// the same alone or in any batch. Weights and the KV cache are stored as W (float or bf16);
// activations and every accumulation are fp32.
//
// Rows. A call runs n rows; row r holds token tokens[r] of sequence slot[r] at position pos[r]
// (device arrays). A row with pos[r] < 0 is idle: it stores nothing in a cache and its
// attention output is zero (its other outputs are meaningless and unused).
// The caches: kcache/vcache point at layer l of slot 0 ([block_size, C] rows); slot s's layer l
// starts slot_stride elements further per slot.
// All launches are asynchronous on `stream` and checked. Includable by g++ (cuda_bf16.h only).
//
// Dependent launches (`dependent`, Hopper's programmatic dependent launch): batch_linear and
// batch_attention may start while the kernel before them on the stream still runs. Their blocks
// first read only what no kernel writes (a Linear's first weights and bias), then wait until the
// kernel before them has completed and its writes are visible, and only then read activations,
// caches or rows and write anything; every kernel here lets the next one start as soon as all its
// blocks run. So the results are the same bits as with plain launches; the overlap hides the
// launch and the weights' memory latency behind the kernel before. Only the batch decoder's
// launch sequence asks for it, when CudaBatchOptions::dependent_launches is set (each launch there
// follows a kernel of this file, or one launched plainly, which the wait also covers). Where the
// device or the compiled kernels cannot (below compute capability 9.0, or kernels compiled for an
// older architecture and JIT-compiled from its PTX), launches are plain;
// batch_dependent_launch_active() says which. Every block of these kernels reaches the wait
// before it may return: an early return above it would let the next kernel run ahead.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace sgpt::cuda {

// x[r, :] = wte[tokens[r], :] + wpe[pos[r], :] (fp32 sum), 0 for an idle row.
template <class W>
void batch_embed(float* x, const int* tokens, const int* pos, const W* wte, const W* wpe, int n,
                 int C, cudaStream_t stream);

// What a Linear layer does after its dot products (out[r, o] = dot(in[r, :], w[o, :]) in fp32,
// per lane in a fixed order then a fixed warp butterfly):
//   v = dot + bias[o] (when bias), v = gelu(v) (tanh form, as kernels/gelu.cu) when gelu,
//   v = residual[r, o] + v when residual; out[r, o] = v;
//   with kcache: columns C..2C-1 of a row that is not idle also go to kcache (column o - C) and
//   columns 2C..3C-1 to vcache, at row pos[r] of slot slot[r] (rounded to W).
template <class W>
struct LinearEpilogue {
  const float* bias = nullptr;
  bool gelu = false;
  const float* residual = nullptr;  // [n, OC]; may not alias out
  W* kcache = nullptr;
  W* vcache = nullptr;
  const int* slot = nullptr;
  const int* pos = nullptr;
  size_t slot_stride = 0;
  int C = 0;
};

// What a Linear layer does to its input rows before the dot products: with ln_weight, the
// product reads LayerNorm(in[r, :]) (over K channels, eps 1e-5, ln_bias optional) instead of
// in[r, :], the bits layernorm_forward<float> writes. The Linear's blocks normalise their rows
// themselves where layernorm_forward would take its vectorized path (K a multiple of 4, K <= 896,
// in and the LayerNorm parameters 16-byte aligned), with the same steps; otherwise
// layernorm_forward runs first, into ln_out [n, K] (mean, rstd: [n]), and the product reads that.
struct LinearPrologue {
  const float* ln_weight = nullptr;
  const float* ln_bias = nullptr;
  float* ln_out = nullptr;  // 16-byte aligned
  float* mean = nullptr;
  float* rstd = nullptr;
};

// out[n, OC] = pro(in)[n, K] @ w[OC, K]^T, then the epilogue. One warp per output column (a
// warp loops over several when the grid, capped at what the device holds at once, has fewer),
// up to 8 rows per block.
template <class W>
void batch_linear(float* out, const float* in, const W* w, int n, int K, int OC,
                  const LinearPrologue& pro, const LinearEpilogue<W>& ep, cudaStream_t stream,
                  bool dependent = false);

// out[r, h*hs:(h+1)*hs] = softmax_{t <= pos[r]}(scale * q . k_t) @ v_t, q from qkv[r, 0:C], keys
// and values from slot slot[r]'s cache (already holding row pos[r]). max_len bounds pos[r] + 1.
template <class W>
void batch_attention(float* out, const float* qkv, const W* kcache, const W* vcache, const int* slot,
                     const int* pos, size_t slot_stride, int n, int C, int NH, float scale,
                     int max_len, cudaStream_t stream, bool dependent = false);

// Whether `dependent` launches overlap on the current device with this build's kernels (else
// they are plain launches).
bool batch_dependent_launch_active();

// dst[i] = bf16(src[i]) (round to nearest even), i < n.
void batch_to_bf16(__nv_bfloat16* dst, const float* src, size_t n, cudaStream_t stream);

}  // namespace sgpt::cuda
