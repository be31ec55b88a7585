// Kernels of the KV-cache decoder (src/cuda/decode_cuda.h), fp32.
//
// decode_attention: one block per (new query row, head), 8 warps. The row's query attends to
// positions 0..pos0 + r of the cache (rows of C floats, head h at columns h*hs..h*hs+hs-1):
//   1. scores: warp w takes positions w, w + 8, ...; its lanes split the head's channels and the
//      dot product is summed with a fixed butterfly (warp_sum); score = dot * scale, kept in
//      shared memory (one float per position). A warp scores 4 of its positions at once with
//      their butterflies interleaved (independent shuffles in flight instead of one chain per
//      position); each score's operations and their order are those of one position at a time
//      (the loop kept for the rest, and for tests: interleave_scores = false), so the bits are
//      the same;
//   2. softmax: block max, exp(score - max) (expf, not the fast __expf), block sum; p = e * (1/sum)
//      as on the CPU;
//   3. output: warp w sums p_t * v_t over its positions into a per-warp partial (lanes own
//      channels), then the partials are added in warp order. Deterministic: no atomics.
// Shared memory: (max_len + 8 * hs + 32) floats.
// Each kernel takes its first position either as a value (pos0) or, when pos0_dev is not null,
// from device memory (*pos0_dev): a CUDA graph of a decoding step then serves every position. The
// arithmetic is the same either way.
//
// decode_select_top (the top candidates of sample/sampling.h on the device): each logit becomes a
// 64-bit key, high half the float's bits mapped to an unsigned order (NaN as -inf, -0 as +0),
// low half 0xffffffff - id, so that the larger key is the earlier candidate (larger logit, then
// smaller id) and all keys differ. Stage 1: one block per chunk of kSelChunk logits sorts its
// keys (bitonic, in shared memory) and writes its k largest; stage 2: one block per row sorts
// the chunks' candidates and writes the k largest, in order. Exact: no rounding anywhere.
#include <string>

#include "common.cuh"
#include "cuda/decode_cuda.h"

namespace sgpt::cuda {
namespace {

constexpr int kAttnWarps = 8;
constexpr int kScoreGroup = 4;  // positions a warp scores at once (interleaved butterflies)

__global__ void decode_embed_kernel(float* x, const int* tokens, const float* wte, const float* wpe,
                                    int n, int pos0, const int* pos0_dev, int C) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(n) * C) return;
  if (pos0_dev) pos0 = *pos0_dev;
  const int r = static_cast<int>(i / C), c = static_cast<int>(i % C);
  x[i] = wte[size_t(tokens[r]) * C + c] + wpe[size_t(pos0 + r) * C + c];
}

__global__ void decode_store_kv_kernel(float* kcache, float* vcache, const float* qkv, int n, int pos0,
                                       const int* pos0_dev, int C) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(n) * C) return;
  if (pos0_dev) pos0 = *pos0_dev;
  const int r = static_cast<int>(i / C), c = static_cast<int>(i % C);
  const float* row = qkv + size_t(r) * 3 * C;
  kcache[size_t(pos0 + r) * C + c] = row[C + c];
  vcache[size_t(pos0 + r) * C + c] = row[2 * C + c];
}

template <bool kInterleave>
__global__ void __launch_bounds__(kAttnWarps * 32)
    decode_attention_kernel(float* out, const float* qkv, const float* kcache, const float* vcache,
                            int pos0, const int* pos0_dev, int C, int NH, float scale, int max_len) {
  extern __shared__ float smem[];
  if (pos0_dev) pos0 = *pos0_dev;
  const int r = blockIdx.x, h = blockIdx.y;
  const int hs = C / NH, len = pos0 + r + 1;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* s = smem;                          // [max_len] scores, then probabilities
  float* part = smem + max_len;             // [kAttnWarps, hs] partial outputs
  float* red = part + kAttnWarps * hs;      // [32] block reductions
  const float* q = qkv + size_t(r) * 3 * C + size_t(h) * hs;

  int t0 = warp;
  if constexpr (kInterleave) {
    // kScoreGroup positions per pass, their butterflies interleaved (each position's operations
    // exactly those of the loop below, in the same order: only the instruction order differs).
    for (; t0 + (kScoreGroup - 1) * kAttnWarps < len; t0 += kScoreGroup * kAttnWarps) {
      float d[kScoreGroup];
#pragma unroll
      for (int u = 0; u < kScoreGroup; ++u) {
        const float* k = kcache + size_t(t0 + u * kAttnWarps) * C + size_t(h) * hs;
        float a = 0.0f;
        for (int i = lane; i < hs; i += 32) a += q[i] * k[i];
        d[u] = a;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
        for (int u = 0; u < kScoreGroup; ++u) d[u] += __shfl_xor_sync(0xffffffffu, d[u], o);
      }
      if (lane == 0) {
#pragma unroll
        for (int u = 0; u < kScoreGroup; ++u) s[t0 + u * kAttnWarps] = d[u] * scale;
      }
    }
  }
  for (int t = t0; t < len; t += kAttnWarps) {
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

constexpr int kSelChunk = 2048;     // logits per stage-1 block
constexpr int kSelMaxStage2 = 4096;  // candidates one stage-2 block sorts
constexpr int kSelThreads = 1024;

__device__ __forceinline__ unsigned long long select_key(float l, int id) {
  if (isnan(l)) l = -INFINITY;
  unsigned b = __float_as_uint(l);
  if ((b & 0x7fffffffu) == 0) b = 0;  // -0 as +0: they tie, and the smaller id must win
  const unsigned o = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<unsigned long long>(o) << 32) | (0xffffffffu - static_cast<unsigned>(id));
}

// Sorts s[0..n) in decreasing order (n a power of two), all threads of the block taking part.
__device__ void bitonic_sort_desc(unsigned long long* s, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
        const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        const bool desc = (lo & size) == 0;
        const unsigned long long a = s[lo], b = s[hi];
        if ((a < b) == desc) {
          s[lo] = b;
          s[hi] = a;
        }
      }
    }
  }
  __syncthreads();
}

// grid (chunks, rows): part[row][chunk][0..k) = the k largest keys of the chunk.
__global__ void __launch_bounds__(kSelThreads)
    select_stage1_kernel(unsigned long long* part, const float* logits, int V, size_t ld, int k,
                         const int* row_pos) {
  __shared__ unsigned long long s[kSelChunk];
  const int row = blockIdx.y;
  if (row_pos && row_pos[row] < 0) return;  // an idle row: nothing to select
  const float* l = logits + size_t(row) * ld;
  const int base = blockIdx.x * kSelChunk;
  for (int i = threadIdx.x; i < kSelChunk; i += blockDim.x) {
    const int id = base + i;
    s[i] = id < V ? select_key(l[id], id) : 0ull;  // 0: below every real key
  }
  bitonic_sort_desc(s, kSelChunk);
  unsigned long long* o = part + (size_t(row) * gridDim.x + blockIdx.x) * k;
  for (int i = threadIdx.x; i < k; i += blockDim.x) o[i] = s[i];
}

// grid (rows): out[row][0..k) = the k largest of the row's chunks x k candidates.
__global__ void __launch_bounds__(kSelThreads)
    select_stage2_kernel(unsigned long long* out, const unsigned long long* part, int chunks, int k,
                         int n2, const int* row_pos) {
  __shared__ unsigned long long s[kSelMaxStage2];
  const int row = blockIdx.x;
  if (row_pos && row_pos[row] < 0) return;  // an idle row keeps what its last selection wrote
  const unsigned long long* p = part + size_t(row) * chunks * k;
  const int m = chunks * k;
  for (int i = threadIdx.x; i < n2; i += blockDim.x) s[i] = i < m ? p[i] : 0ull;
  bitonic_sort_desc(s, n2);
  for (int i = threadIdx.x; i < k; i += blockDim.x) out[size_t(row) * k + i] = s[i];
}

}  // namespace

bool select_top_supported(int V, int k) {
  if (V < 1 || k < 1 || k > kSelectMaxK || k > V) return false;
  const size_t chunks = (size_t(V) + kSelChunk - 1) / kSelChunk;
  return chunks * size_t(k) <= size_t(kSelMaxStage2);
}

size_t select_top_scratch(int V, int k, int rows) {
  const size_t chunks = (size_t(V) + kSelChunk - 1) / kSelChunk;
  return chunks * size_t(k) * size_t(rows);
}

void decode_select_top(unsigned long long* out, const float* logits, int rows, int V, size_t ld, int k,
                       unsigned long long* scratch, CUstream_st* stream, const int* row_pos) {
  if (!select_top_supported(V, k))
    throw_error("CUDA", "decode_select_top: k = " + std::to_string(k) + " over " + std::to_string(V) +
                            " logits is not supported", "decode_select_top", __FILE__, __LINE__);
  if (rows <= 0) return;
  const int chunks = static_cast<int>((size_t(V) + kSelChunk - 1) / kSelChunk);
  int n2 = 1;
  while (n2 < chunks * k) n2 *= 2;
  select_stage1_kernel<<<dim3(chunks, rows), kSelThreads, 0, stream>>>(scratch, logits, V, ld, k,
                                                                       row_pos);
  SGPT_LAUNCH_CHECK();
  select_stage2_kernel<<<rows, kSelThreads, 0, stream>>>(out, scratch, chunks, k, n2, row_pos);
  SGPT_LAUNCH_CHECK();
}

void decode_embed(float* x, const int* tokens, const float* wte, const float* wpe, int n, int pos0,
                  int C, CUstream_st* stream, const int* pos0_dev) {
  const size_t total = size_t(n) * C;
  if (total == 0) return;
  decode_embed_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(x, tokens, wte, wpe, n, pos0, pos0_dev,
                                                                C);
  SGPT_LAUNCH_CHECK();
}

void decode_store_kv(float* kcache, float* vcache, const float* qkv, int n, int pos0, int C,
                     CUstream_st* stream, const int* pos0_dev) {
  const size_t total = size_t(n) * C;
  if (total == 0) return;
  decode_store_kv_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(kcache, vcache, qkv, n, pos0,
                                                                   pos0_dev, C);
  SGPT_LAUNCH_CHECK();
}

void decode_attention(float* out, const float* qkv, const float* kcache, const float* vcache,
                      int n, int pos0, int C, int NH, float scale, int max_len,
                      CUstream_st* stream, const int* pos0_dev, bool interleave_scores) {
  if (n <= 0) return;
  const int hs = C / NH;
  const size_t smem = (size_t(max_len) + size_t(kAttnWarps) * hs + 32) * sizeof(float);
  auto kernel = interleave_scores ? decode_attention_kernel<true> : decode_attention_kernel<false>;
  if (smem > 48 * 1024) {  // beyond the default limit: opt in (fails cleanly past the device's)
    SGPT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  const dim3 grid(n, NH);  // rows in x: up to 2^31 - 1 blocks
  kernel<<<grid, kAttnWarps * 32, smem, stream>>>(out, qkv, kcache, vcache, pos0, pos0_dev, C, NH,
                                                  scale, max_len);
  SGPT_LAUNCH_CHECK();
}

}  // namespace sgpt::cuda
