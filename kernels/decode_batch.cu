// Kernels of the batch decoder (src/cuda/decode_batch_ops.h: rows, idle rows, the epilogue).
//
// batch_linear: block of 8 warps, warp w of block (x, y) computes output column 8x + w for rows
// 8y .. 8y + 7. Lane l accumulates (fmaf, in order) the products of its elements of the
// column's weight row (vectors of VEC elements at l*VEC + 32*VEC*j, j = 0, 1, ...) with the
// same elements of each input row, then the 32 lanes are summed with the fixed butterfly of
// warp_sum. VEC (4 floats / 8 bf16: 16-byte loads, or 1) depends only on K and the alignment of
// the weights and inputs, not on the rows: a row's result is the same in any batch.
// batch_attention: one block per (row, head), 8 warps; thread i scores positions i, i + 256, ...
// (a whole dot product each, in order), block max, exp, block sum (as kernels/decode.cu), then
// warp w sums p_t v_t over positions w, w + 8, ... for its lanes' channels and the 8 partials
// are added in warp order. Shared memory: (max_len + 8 * hs + hs + 32) floats.
#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "cuda/decode_batch_ops.h"

namespace sgpt::cuda {
namespace {

constexpr int kLinWarps = 8;
constexpr int kLinRows = 8;
constexpr int kBAttnWarps = 8;
constexpr float kGeluScaleB = 0.7978845608028654f;  // sqrt(2/pi), as kernels/gelu.cu
constexpr float kGeluCubicB = 0.044715f;

// VEC consecutive elements at p as floats.
template <int VEC>
__device__ __forceinline__ void load_vec(const float* p, float* v) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int j = 0; j < VEC; j += 4) {
      const float4 a = *reinterpret_cast<const float4*>(p + j);
      v[j] = a.x;
      v[j + 1] = a.y;
      v[j + 2] = a.z;
      v[j + 3] = a.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) v[e] = p[e];
  }
}
template <int VEC>
__device__ __forceinline__ void load_vec(const __nv_bfloat16* p, float* v) {
  if constexpr (VEC == 8) {
    const uint4 a = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat16* h = reinterpret_cast<const __nv_bfloat16*>(&a);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __bfloat162float(h[e]);
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) v[e] = __bfloat162float(p[e]);
  }
}

template <class W>
__global__ void batch_embed_kernel(float* x, const int* tokens, const int* pos, const W* wte,
                                   const W* wpe, int n, int C) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(n) * C) return;
  const int r = static_cast<int>(i / C), c = static_cast<int>(i % C);
  const int p = pos[r];
  x[i] = p < 0 ? 0.0f : __fadd_rn(to_f(wte[size_t(tokens[r]) * C + c]), to_f(wpe[size_t(p) * C + c]));
}

template <class W, int VEC>
__global__ void __launch_bounds__(kLinWarps * 32)
    batch_linear_kernel(float* out, const float* in, const W* w, int n, int K, int OC,
                        LinearEpilogue<W> ep) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int o = blockIdx.x * kLinWarps + warp;
  const int r0 = blockIdx.y * kLinRows;
  if (o >= OC) return;  // no block-wide synchronisation below
  const int nr = min(kLinRows, n - r0);
  const W* wr = w + size_t(o) * K;
  const float* x0 = in + size_t(r0) * K;
  float acc[kLinRows];
#pragma unroll
  for (int r = 0; r < kLinRows; ++r) acc[r] = 0.0f;
#pragma unroll 2
  for (int i0 = lane * VEC; i0 < K; i0 += 32 * VEC) {
    float wv[VEC];
    load_vec<VEC>(wr + i0, wv);
#pragma unroll
    for (int r = 0; r < kLinRows; ++r) {
      if (r < nr) {
        float xv[VEC];
        load_vec<VEC>(x0 + size_t(r) * K + i0, xv);
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[r] = fmaf(wv[e], xv[e], acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kLinRows; ++r) {
    if (r >= nr) break;  // nr is the same for the whole warp
    float v = warp_sum(acc[r]);
    if (lane != 0) continue;
    const int row = r0 + r;
    if (ep.bias) v = __fadd_rn(v, ep.bias[o]);
    if (ep.gelu) {
      const float u = kGeluScaleB * (v + kGeluCubicB * v * v * v);
      v = 0.5f * v * (1.0f + tanhf(u));
    }
    if (ep.residual) v = __fadd_rn(ep.residual[size_t(row) * OC + o], v);
    out[size_t(row) * OC + o] = v;
    if (ep.kcache && o >= ep.C) {
      const int p = ep.pos[row];
      if (p >= 0) {
        const bool is_k = o < 2 * ep.C;
        W* cache = is_k ? ep.kcache : ep.vcache;
        const int c = is_k ? o - ep.C : o - 2 * ep.C;
        cache[size_t(ep.slot[row]) * ep.slot_stride + size_t(p) * ep.C + c] = from_f<W>(v);
      }
    }
  }
}

template <class W>
__global__ void __launch_bounds__(kBAttnWarps * 32)
    batch_attention_kernel(float* out, const float* qkv, const W* kcache, const W* vcache,
                           const int* slot, const int* pos, size_t slot_stride, int C, int NH,
                           float scale, int max_len) {
  extern __shared__ float smem[];
  const int r = blockIdx.x, h = blockIdx.y;
  const int hs = C / NH;
  float* o = out + size_t(r) * C + size_t(h) * hs;
  const int p = pos[r];
  if (p < 0) {  // idle row (uniform over the block)
    for (int i = threadIdx.x; i < hs; i += blockDim.x) o[i] = 0.0f;
    return;
  }
  const int len = p + 1;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* s = smem;                      // [max_len] scores, then exp
  float* part = smem + max_len;         // [kBAttnWarps, hs]
  float* qs = part + kBAttnWarps * hs;  // [hs]
  float* red = qs + hs;                 // [32]
  const size_t base = size_t(slot[r]) * slot_stride + size_t(h) * hs;
  const W* kc = kcache + base;
  const W* vc = vcache + base;
  const float* q = qkv + size_t(r) * 3 * C + size_t(h) * hs;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) qs[i] = q[i];
  __syncthreads();

  float mx = -INFINITY;
  for (int t = threadIdx.x; t < len; t += blockDim.x) {
    const W* k = kc + size_t(t) * C;
    float d = 0.0f;
    for (int i = 0; i < hs; ++i) d = fmaf(qs[i], to_f(k[i]), d);
    const float sc = d * scale;
    s[t] = sc;
    mx = fmaxf(mx, sc);
  }
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
    for (int t = warp; t < len; t += kBAttnWarps)
      acc = fmaf(s[t] * inv, to_f(vc[size_t(t) * C + i]), acc);
    part[warp * hs + i] = acc;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < hs; i += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < kBAttnWarps; ++w) a += part[w * hs + i];
    o[i] = a;
  }
}

__global__ void to_bf16_kernel(__nv_bfloat16* dst, const float* src, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

template <class W>
void batch_embed(float* x, const int* tokens, const int* pos, const W* wte, const W* wpe, int n,
                 int C, cudaStream_t stream) {
  const size_t total = size_t(n) * C;
  if (total == 0) return;
  batch_embed_kernel<W><<<ceil_div(total, 256), 256, 0, stream>>>(x, tokens, pos, wte, wpe, n, C);
  SGPT_LAUNCH_CHECK();
}

template <class W>
void batch_linear(float* out, const float* in, const W* w, int n, int K, int OC,
                  const LinearEpilogue<W>& ep, cudaStream_t stream) {
  if (n <= 0 || OC <= 0) return;
  constexpr int kVec = 16 / sizeof(W);
  const dim3 grid(ceil_div(size_t(OC), kLinWarps), ceil_div(size_t(n), kLinRows));
  if (K % kVec == 0 && aligned16(w) && aligned16(in))
    batch_linear_kernel<W, kVec><<<grid, kLinWarps * 32, 0, stream>>>(out, in, w, n, K, OC, ep);
  else
    batch_linear_kernel<W, 1><<<grid, kLinWarps * 32, 0, stream>>>(out, in, w, n, K, OC, ep);
  SGPT_LAUNCH_CHECK();
}

template <class W>
void batch_attention(float* out, const float* qkv, const W* kcache, const W* vcache, const int* slot,
                     const int* pos, size_t slot_stride, int n, int C, int NH, float scale,
                     int max_len, cudaStream_t stream) {
  if (n <= 0) return;
  const int hs = C / NH;
  const size_t smem = (size_t(max_len) + size_t(kBAttnWarps) * hs + hs + 32) * sizeof(float);
  if (smem > 48 * 1024) {  // beyond the default limit: opt in (fails cleanly past the device's)
    SGPT_CUDA_CHECK(cudaFuncSetAttribute(batch_attention_kernel<W>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  const dim3 grid(n, NH);
  batch_attention_kernel<W><<<grid, kBAttnWarps * 32, smem, stream>>>(
      out, qkv, kcache, vcache, slot, pos, slot_stride, C, NH, scale, max_len);
  SGPT_LAUNCH_CHECK();
}

void batch_to_bf16(__nv_bfloat16* dst, const float* src, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<size_t>(ceil_div(n, 256), 65535));
  to_bf16_kernel<<<blocks, 256, 0, stream>>>(dst, src, n);
  SGPT_LAUNCH_CHECK();
}

#define SGPT_BATCH_INSTANTIATE(W)                                                                  \
  template void batch_embed<W>(float*, const int*, const int*, const W*, const W*, int, int,       \
                               cudaStream_t);                                                      \
  template void batch_linear<W>(float*, const float*, const W*, int, int, int,                     \
                                const LinearEpilogue<W>&, cudaStream_t);                           \
  template void batch_attention<W>(float*, const float*, const W*, const W*, const int*,           \
                                   const int*, size_t, int, int, int, float, int, cudaStream_t);
SGPT_BATCH_INSTANTIATE(float)
SGPT_BATCH_INSTANTIATE(__nv_bfloat16)
#undef SGPT_BATCH_INSTANTIATE

}  // namespace sgpt::cuda
