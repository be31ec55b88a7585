// Kernels of the KV-cache decoder (src/cuda/decode_cuda.h), fp32.
//
// decode_attention: one block per (new query row, head), 8 warps. The row's query attends to
// positions 0..pos0 + r of the cache (rows of C floats, head h at columns h*hs..h*hs+hs-1):
//   1. scores: warp w takes positions w, w + 8, ...; its lanes split the head's channels and the
//      dot product is summed with a fixed butterfly (warp_sum); score = dot * scale, kept in
//      shared memory (one float per position);
//   2. softmax: block max, exp(score - max) (expf, not the fast __expf), block sum; p = e * (1/sum)
//      as on the CPU;
//   3. output: warp w sums p_t * v_t over its positions into a per-warp partial (lanes own
//      channels), then the partials are added in warp order. Deterministic: no atomics.
// Shared memory: (max_len + 8 * hs + 32) floats.
#include "common.cuh"
#include "cuda/decode_cuda.h"

namespace sgpt::cuda {
namespace {

constexpr int kAttnWarps = 8;

__global__ void decode_embed_kernel(float* x, const int* tokens, const float* wte, const float* wpe,
                                    int n, int pos0, int C) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(n) * C) return;
  const int r = static_cast<int>(i / C), c = static_cast<int>(i % C);
  x[i] = wte[size_t(tokens[r]) * C + c] + wpe[size_t(pos0 + r) * C + c];
}

__global__ void decode_store_kv_kernel(float* kcache, float* vcache, const float* qkv, int n, int pos0,
                                       int C) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(n) * C) return;
  const int r = static_cast<int>(i / C), c = static_cast<int>(i % C);
  const float* row = qkv + size_t(r) * 3 * C;
  kcache[size_t(pos0 + r) * C + c] = row[C + c];
  vcache[size_t(pos0 + r) * C + c] = row[2 * C + c];
}

__global__ void __launch_bounds__(kAttnWarps * 32)
    decode_attention_kernel(float* out, const float* qkv, const float* kcache, const float* vcache,
                            int pos0, int C, int NH, float scale, int max_len) {
  extern __shared__ float smem[];
  const int r = blockIdx.x, h = blockIdx.y;
  const int hs = C / NH, len = pos0 + r + 1;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* s = smem;                          // [max_len] scores, then probabilities
  float* part = smem + max_len;             // [kAttnWarps, hs] partial outputs
  float* red = part + kAttnWarps * hs;      // [32] block reductions
  const float* q = qkv + size_t(r) * 3 * C + size_t(h) * hs;

  for (int t = warp; t < len; t += kAttnWarps) {
    const float* k = kcache + size_t(t) * C + size_t(h) * hs;
    float d = 0.0f;
    for (int i = lane; i < hs; i += 32) d += q[i] * k[i];
    d = warp_sum(d);
    if (lane == 0) s[t] = d * scale;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int t = threadIdx.x; t < len; t += blockDim.x) mx = fmaxf(mx, s[t]);
  mx = block_max(mx, red);
  float sum = 0.0f;
  for (int t = threadIdx.x; t < len; t += blockDim.x) {
    const float e = expf(s[t] - mx);
    s[t] = e;
    sum += e;
  }
  sum = block_sum(sum, red);  // its barriers also publish the s[] writes above
  const float inv = 1.0f / sum;

  for (int i = lane; i < hs; i += 32) {
    float acc = 0.0f;
    for (int t = warp; t < len; t += kAttnWarps)
      acc += (s[t] * inv) * vcache[size_t(t) * C + size_t(h) * hs + i];
    part[warp * hs + i] = acc;
  }
  __syncthreads();
  float* o = out + size_t(r) * C + size_t(h) * hs;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w) a += part[w * hs + i];
    o[i] = a;
  }
}

}  // namespace

void decode_embed(float* x, const int* tokens, const float* wte, const float* wpe, int n, int pos0,
                  int C, CUstream_st* stream) {
  const size_t total = size_t(n) * C;
  if (total == 0) return;
  decode_embed_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(x, tokens, wte, wpe, n, pos0, C);
  SGPT_LAUNCH_CHECK();
}

void decode_store_kv(float* kcache, float* vcache, const float* qkv, int n, int pos0, int C,
                     CUstream_st* stream) {
  const size_t total = size_t(n) * C;
  if (total == 0) return;
  decode_store_kv_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(kcache, vcache, qkv, n, pos0, C);
  SGPT_LAUNCH_CHECK();
}

void decode_attention(float* out, const float* qkv, const float* kcache, const float* vcache,
                      int n, int pos0, int C, int NH, float scale, int max_len,
                      CUstream_st* stream) {
  if (n <= 0) return;
  const int hs = C / NH;
  const size_t smem = (size_t(max_len) + size_t(kAttnWarps) * hs + 32) * sizeof(float);
  if (smem > 48 * 1024) {  // beyond the default limit: opt in (fails cleanly past the device's)
    SGPT_CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  const dim3 grid(n, NH);  // rows in x: up to 2^31 - 1 blocks
  decode_attention_kernel<<<grid, kAttnWarps * 32, smem, stream>>>(out, qkv, kcache, vcache, pos0,
                                                                   C, NH, scale, max_len);
  SGPT_LAUNCH_CHECK();
}

}  // namespace sgpt::cuda
