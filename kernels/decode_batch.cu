// Kernels of the batch decoder (src/cuda/decode_batch_ops.h: rows, idle rows, the epilogue).
//
// batch_linear: blocks of 8 warps; block (x, y) holds rows 8y .. 8y + 7 and its warp w computes
// columns 8x + w, 8x + w + 8 gridDim.x, ... (one column per warp unless the grid, capped at what
// the device holds at once, is smaller than OC / 8). Lane l accumulates (fmaf, in order) the
// products of its elements of the column's weight row (vectors of VEC elements at l*VEC +
// 32*VEC*j, j = 0, 1, ...) with the same elements of each input row, then the 32 lanes are summed
// with the fixed butterfly of warp_sum. VEC (4 floats / 8 bf16: 16-byte loads, or 1) depends only
// on K and the alignment of the weights and inputs, not on the rows: a row's result is the same in
// any batch. Only the schedule is tuned: a lane loads its vectors in chunks of U (4 or 8, from K),
// the next chunk's weights before the current chunk's products.
// With a LayerNorm before it (LinearPrologue, where K is a multiple of 4 and at most 896): warp w
// of a block first normalises row 8y + w into shared memory with the steps of layernorm_forward's
// vectorized path (layernorm.cuh: lane l's vectors of 4 at (l + 32 i) 4, per-lane sums in order,
// warp_sum, / K, the same for (x - mean)^2, 1 / sqrt(var / K + eps), ln_out), so the rows are the
// bits layernorm_forward writes; one block barrier, then the products read the rows from there.
// batch_attention: one block per (row, head), 8 warps. Lane l owns the head's channels 2l + 64j,
// 2l + 64j + 1 (pairs: hs even, 4-byte bf16x2 / 8-byte float2 loads) or else l + 32j.
//   1. scores: warp w takes positions w, w + 8, ..., 4 of them at once (their loads and
//      butterflies interleaved); per position, each lane sums q_c k_c over its channels in order
//      (fmaf), the lanes are added by warp_sum's butterfly, score = sum * scale;
//   2. softmax: block max, exp(score - max) (expf), block sum, p = e * (1 / sum), as
//      kernels/decode.cu;
//   3. output: warp w sums fmaf(p_t, v_t, acc) over positions w, w + 8, ... in order for each of
//      its lanes' channels (the values of its first 4 positions are loaded with the keys), and
//      the 8 partials are added in warp order.
// Every step depends on the row's own position, slot and query only. Shared memory: (max_len +
// 8 * hs + 32) floats.
// Dependent launches (decode_batch_ops.h): every kernel here first lets the next kernel on the
// stream start (griddepcontrol.launch_dependents); batch_linear then loads its first chunk of
// weights and, in lane 0, the bias of its first column, and batch_attention nothing, before
// griddepcontrol.wait, which returns once the kernel before has completed and its writes are
// visible (at once for a plain launch). Everything else comes after the wait. Both instructions
// exist from sm_90; compiled for an older architecture the kernels have neither, and the host
// launches them plainly.
#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "common.cuh"
#include "cuda/decode_batch_ops.h"
#include "cuda/ops_cuda.h"
#include "layernorm.cuh"

namespace sgpt::cuda {
namespace {

constexpr int kLinWarps = 8;
constexpr int kLinRows = 8;
// The widest rows batch_linear normalises itself (layernorm_forward's vectorized path in fp32),
// and the shared memory their 8 rows take.
constexpr int kLinLnMaxK = kLnVecMaxChunks * 32 * Vec<float>::n;
constexpr size_t kLinLnSmem = size_t(kLinRows) * kLinLnMaxK * sizeof(float);
constexpr int kBAttnWarps = 8;
constexpr int kBAttnGroup = 4;  // positions a warp scores at once
constexpr int kBAttnVPre = 4;   // positions per warp whose values are loaded with the keys
constexpr float kGeluScaleB = 0.7978845608028654f;  // sqrt(2/pi), as kernels/gelu.cu
constexpr float kGeluCubicB = 0.044715f;

// Whether this compilation has the dependent-launch instructions. The host cannot see the macro:
// it compares the PTX version of a compiled kernel with kDependentLaunchPtx
// (dependent_launch_works).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SGPT_DEPENDENT_LAUNCH 1
#endif
constexpr int kDependentLaunchPtx = 90;

// Lets the next kernel on the stream start (its blocks run up to their own wait).
__device__ __forceinline__ void let_next_start() {
#ifdef SGPT_DEPENDENT_LAUNCH
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Returns once the kernel before on the stream has completed and its writes are visible (at once
// when this kernel was launched plainly).
__device__ __forceinline__ void wait_for_previous() {
#ifdef SGPT_DEPENDENT_LAUNCH
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// VEC consecutive floats at p (16-byte loads when VEC is a multiple of 4).
template <int VEC>
__device__ __forceinline__ void load_floats(const float* p, float* v) {
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

template <class W>
__global__ void batch_embed_kernel(float* x, const int* tokens, const int* pos, const W* wte,
                                   const W* wpe, int n, int C) {
  let_next_start();
  wait_for_previous();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(n) * C) return;
  const int r = static_cast<int>(i / C), c = static_cast<int>(i % C);
  const int p = pos[r];
  x[i] = p < 0 ? 0.0f : __fadd_rn(to_f(wte[size_t(tokens[r]) * C + c]), to_f(wpe[size_t(p) * C + c]));
}

// VEC weights as stored: one 16-byte load when VEC * sizeof(W) is 16.
template <class W, int VEC>
struct alignas(VEC * sizeof(W)) WPack {
  W v[VEC];
};

// The weights of one chunk: vector u (u < U) at p + u * 32 * VEC when u * 32 * VEC < lim (lim:
// the elements left in the row from p; may be <= 0).
template <class W, int VEC, int U>
__device__ __forceinline__ void load_chunk(WPack<W, VEC> (&wv)[U], const W* p, int lim) {
#pragma unroll
  for (int u = 0; u < U; ++u)
    if (u * 32 * VEC < lim) wv[u] = *reinterpret_cast<const WPack<W, VEC>*>(p + u * 32 * VEC);
}

// Row x (C floats, 16-byte aligned, C a multiple of 4 and at most kLinLnMaxK) normalised into
// dst by one warp, with the steps of layernorm_forward's vectorized path (layernorm.cuh) in their
// order: the bits layernorm_forward<float> writes. The chunks past C take no part.
__device__ __forceinline__ void layernorm_row(float* dst, const float* x, const float* weight,
                                              const float* bias, int C, int lane) {
  constexpr int V = Vec<float>::n;
  float xv[kLnVecMaxChunks][V];
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kLnVecMaxChunks; ++i) {
    const int c0 = (lane + 32 * i) * V;
    if (c0 < C) {
      load_vec(xv[i], x + c0);
      ln_vec_sum(s, xv[i]);
    }
  }
  float m, r;
  ln_vec_finish(dst, xv, s, weight, bias, C, lane, m, r);
}

// Warp w of block (x, y) computes columns o = 8x + w, 8x + w + 8 * gridDim.x, ... for rows
// 8y .. 8y + 7. A column is read in chunks of U vectors per lane; the next chunk's weights (of the
// same column, or of the warp's next column) are loaded before the current chunk's products, so
// up to 2U loads per lane are in flight. Each lane's products, their order and the butterfly are
// those of the kernel file's header, whatever U, the grid or the rows.
// With ln_w: warp w first normalises row 8y + w into shared memory (layernorm_row; dynamic shared
// memory of min(8, n) rows of K floats), the block synchronises once, and the products read the
// rows from there; the first chunk's weights are loaded before.
// Before wait_for_previous(): the first chunk's weights and lane 0's bias of the first column
// (constants); the first column's residuals are loaded right after it, ahead of the products.
template <class W, int VEC, int U>
__global__ void __launch_bounds__(kLinWarps * 32)
    batch_linear_kernel(float* out, const float* in, const W* w, int n, int K, int OC,
                        const float* ln_w, const float* ln_b, LinearEpilogue<W> ep) {
  extern __shared__ float4 lin_shared[];
  let_next_start();
  constexpr int kStep = 32 * VEC;   // from one of a lane's vectors to its next
  constexpr int kChunk = U * kStep;  // the elements of a row one chunk covers
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int ostride = gridDim.x * kLinWarps;
  int o = blockIdx.x * kLinWarps + warp;
  const int o_first = o;
  const int r0 = blockIdx.y * kLinRows;
  const int nr = min(kLinRows, n - r0);
  const int l0 = lane * VEC;  // the lane's first element of a chunk
  WPack<W, VEC> wv[U] = {};  // vectors past the row: finite values (their products are dropped)
  if (o < OC) load_chunk<W, VEC, U>(wv, w + size_t(o) * K + l0, K - l0);
  const bool first_lane = lane == 0 && o < OC;
  const float bias_first = first_lane && ep.bias ? ep.bias[o] : 0.0f;
  wait_for_previous();
  float res_first[kLinRows];  // lane 0: the first column's residuals
#pragma unroll
  for (int r = 0; r < kLinRows; ++r)
    res_first[r] = first_lane && ep.residual && r < nr ? ep.residual[size_t(r0 + r) * OC + o] : 0.0f;
  const float* x0 = in + size_t(r0) * K + l0;
  if (ln_w) {  // the same for the whole block
    float* rows = reinterpret_cast<float*>(lin_shared);
    if (warp < nr)
      layernorm_row(rows + size_t(warp) * K, in + size_t(r0 + warp) * K, ln_w, ln_b, K, lane);
    __syncthreads();
    x0 = rows + l0;
  }
  if (o >= OC) return;  // no block-wide synchronisation below
  float acc[kLinRows];
#pragma unroll
  for (int r = 0; r < kLinRows; ++r) acc[r] = 0.0f;
  int cb = 0;  // the current chunk's first element (the same for the whole warp)
  while (true) {
    WPack<W, VEC> cur[U];
#pragma unroll
    for (int u = 0; u < U; ++u) cur[u] = wv[u];
    // The next chunk: of this column, else the first of the warp's next column.
    int ncb = cb + kChunk, no = o;
    if (ncb >= K) {
      ncb = 0;
      no += ostride;
    }
    if (no < OC) load_chunk<W, VEC, U>(wv, w + size_t(no) * K + ncb + l0, K - ncb - l0);
    // The vectors past the row (u * kStep >= lim) take no part: their input loads read the row's
    // first vector instead (no branch between the loads and the products, so the loads of a row
    // are all issued first) and their products are discarded.
    const int lim = K - cb - l0;
#pragma unroll
    for (int r = 0; r < kLinRows; ++r) {
      if (r < nr) {
        const float* xrow = x0 - l0 + size_t(r) * K;  // the row's first element
        float xv[U][VEC];
#pragma unroll
        for (int u = 0; u < U; ++u)
          load_floats<VEC>(u * kStep < lim ? xrow + cb + l0 + u * kStep : xrow, xv[u]);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const bool valid = u * kStep < lim;
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const float a = fmaf(to_f(cur[u].v[e]), xv[u][e], acc[r]);
            acc[r] = valid ? a : acc[r];
          }
        }
      }
    }
    if (ncb == 0) {  // column o is complete
#pragma unroll
      for (int r = 0; r < kLinRows; ++r) {
        if (r >= nr) break;  // nr is the same for the whole warp
        float v = warp_sum(acc[r]);
        acc[r] = 0.0f;
        if (lane != 0) continue;
        const int row = r0 + r;
        const bool first = o == o_first;
        if (ep.bias) v = __fadd_rn(v, first ? bias_first : ep.bias[o]);
        if (ep.gelu) {
          const float u = kGeluScaleB * (v + kGeluCubicB * v * v * v);
          v = 0.5f * v * (1.0f + tanhf(u));
        }
        if (ep.residual) v = __fadd_rn(first ? res_first[r] : ep.residual[size_t(row) * OC + o], v);
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
      if (no >= OC) break;
    }
    cb = ncb;
    o = no;
  }
}

// VEC consecutive elements of W at p as floats (VEC = 2: one 4-byte bf16x2 or 8-byte float2 load).
template <int VEC>
__device__ __forceinline__ void load_pair(const float* p, float* v) {
  if constexpr (VEC == 2) {
    const float2 a = *reinterpret_cast<const float2*>(p);
    v[0] = a.x;
    v[1] = a.y;
  } else {
    v[0] = p[0];
  }
}
template <int VEC>
__device__ __forceinline__ void load_pair(const __nv_bfloat16* p, float* v) {
  if constexpr (VEC == 2) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    v[0] = a.x;
    v[1] = a.y;
  } else {
    v[0] = __bfloat162float(p[0]);
  }
}

// See the file's header. VEC: the channels of one load (2: pairs; 1: one channel).
template <class W, int VEC>
__global__ void __launch_bounds__(kBAttnWarps * 32)
    batch_attention_kernel(float* out, const float* qkv, const W* kcache, const W* vcache,
                           const int* slot, const int* pos, size_t slot_stride, int C, int NH,
                           float scale, int max_len) {
  extern __shared__ float smem[];
  let_next_start();
  wait_for_previous();
  constexpr int kStep = 32 * VEC;  // from one of a lane's channel groups to its next
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
  const int l0 = lane * VEC;             // the lane's first channel
  float* s = smem;                       // [max_len] scores, then exp
  float* part = smem + max_len;          // [kBAttnWarps, hs]
  float* red = part + kBAttnWarps * hs;  // [32]
  const size_t base = size_t(slot[r]) * slot_stride + size_t(h) * hs;
  const W* kc = kcache + base;
  const W* vc = vcache + base;
  const float* q = qkv + size_t(r) * 3 * C + size_t(h) * hs;

  // The values of the warp's first kBAttnVPre positions at the lane's first channels: they do not
  // depend on the softmax, so they are loaded with the keys.
  // (Positions past len and lanes past hs read position 0, channel 0 instead, unused: no branch
  // between the loads.)
  float vpre[kBAttnVPre][VEC];
#pragma unroll
  for (int j = 0; j < kBAttnVPre; ++j) {
    const int t = warp + j * kBAttnWarps;
    load_pair<VEC>(vc + (t < len && l0 < hs ? size_t(t) * C + l0 : 0), vpre[j]);
  }

  // Scores: kBAttnGroup positions per warp at once (t0, t0 + 8, ...), their loads and butterflies
  // interleaved; a position past len is computed on position t0's keys and dropped.
  float mx = -INFINITY;
  for (int t0 = warp; t0 < len; t0 += kBAttnGroup * kBAttnWarps) {
    float d[kBAttnGroup];
#pragma unroll
    for (int u = 0; u < kBAttnGroup; ++u) d[u] = 0.0f;
    for (int i = l0; i < hs; i += kStep) {
      float qv[VEC];
      load_pair<VEC>(q + i, qv);
#pragma unroll
      for (int u = 0; u < kBAttnGroup; ++u) {
        const int t = t0 + u * kBAttnWarps < len ? t0 + u * kBAttnWarps : t0;
        float kv[VEC];
        load_pair<VEC>(kc + size_t(t) * C + i, kv);
#pragma unroll
        for (int e = 0; e < VEC; ++e) d[u] = fmaf(qv[e], kv[e], d[u]);
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
      for (int u = 0; u < kBAttnGroup; ++u) d[u] += __shfl_xor_sync(0xffffffffu, d[u], off);
    }
#pragma unroll
    for (int u = 0; u < kBAttnGroup; ++u) {
      const int t = t0 + u * kBAttnWarps;
      if (t < len) {
        const float sc = d[u] * scale;
        if (lane == 0) s[t] = sc;
        mx = fmaxf(mx, sc);
      }
    }
  }
  mx = block_max(mx, red);  // its barriers also publish the s[] writes above
  float sum = 0.0f;
  for (int t = threadIdx.x; t < len; t += blockDim.x) {
    const float e = expf(s[t] - mx);
    s[t] = e;
    sum += e;
  }
  sum = block_sum(sum, red);  // its barriers also publish the s[] writes above
  const float inv = 1.0f / sum;

  // Output: warp w sums p_t v_t over its positions w, w + 8, ... in order, per channel.
  for (int i = l0; i < hs; i += kStep) {
    float acc[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] = 0.0f;
    int t = warp;
    if (i == l0) {
#pragma unroll
      for (int j = 0; j < kBAttnVPre; ++j, t += kBAttnWarps) {
        if (t < len) {
          const float pt = s[t] * inv;
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[e] = fmaf(pt, vpre[j][e], acc[e]);
        }
      }
    }
#pragma unroll 4
    for (; t < len; t += kBAttnWarps) {
      const float pt = s[t] * inv;
      float vv[VEC];
      load_pair<VEC>(vc + size_t(t) * C + i, vv);
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = fmaf(pt, vv[e], acc[e]);
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) part[warp * hs + i + e] = acc[e];
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

// Whether the current device runs this build's kernels with the dependent-launch instructions:
// compute capability 9.0 or later, and the kernels compiled for such an architecture (not JIT-
// compiled from an older PTX, which has no griddepcontrol). Cached per device.
bool dependent_launch_works() {
  int dev = 0;
  SGPT_CUDA_CHECK(cudaGetDevice(&dev));
  static std::mutex mu;
  static std::map<int, bool> cache;
  const std::lock_guard<std::mutex> lock(mu);
  if (const auto it = cache.find(dev); it != cache.end()) return it->second;
  int major = 0;
  SGPT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  cudaFuncAttributes a{};
  SGPT_CUDA_CHECK(
      cudaFuncGetAttributes(&a, reinterpret_cast<const void*>(batch_embed_kernel<float>)));
  const bool works = major >= 9 && a.ptxVersion >= kDependentLaunchPtx;
  cache.emplace(dev, works);
  return works;
}

// kernel<<<grid, block, smem, stream>>>(args...), as a dependent launch when asked and possible.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            bool dependent, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1]{};
  if (dependent && dependent_launch_works()) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // reported here, not again by the next launch check
    SGPT_CUDA_CHECK(e);
  }
}

}  // namespace

bool batch_dependent_launch_active() { return dependent_launch_works(); }

template <class W>
void batch_embed(float* x, const int* tokens, const int* pos, const W* wte, const W* wpe, int n,
                 int C, cudaStream_t stream) {
  const size_t total = size_t(n) * C;
  if (total == 0) return;
  batch_embed_kernel<W><<<ceil_div(total, 256), 256, 0, stream>>>(x, tokens, pos, wte, wpe, n, C);
  SGPT_LAUNCH_CHECK();
}

namespace {

// Blocks of `kernel` (256 threads, `smem` bytes of dynamic shared memory) the current device
// holds at once over all its SMs; cached per device and kernel (a kernel is always asked with the
// same smem).
int resident_blocks(const void* kernel, size_t smem) {
  int dev = 0;
  SGPT_CUDA_CHECK(cudaGetDevice(&dev));
  static std::mutex mu;
  static std::map<std::pair<int, const void*>, int> cache;
  const std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(dev, kernel);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  int sms = 0, per_sm = 0;
  SGPT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  SGPT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kLinWarps * 32,
                                                                smem));
  const int blocks = std::max(1, sms * per_sm);
  cache.emplace(key, blocks);
  return blocks;
}

template <class W, int VEC, int U>
void launch_linear(float* out, const float* in, const W* w, int n, int K, int OC,
                   const float* ln_w, const float* ln_b, const LinearEpilogue<W>& ep,
                   cudaStream_t stream, bool dependent) {
  const auto kernel = batch_linear_kernel<W, VEC, U>;
  const unsigned row_blocks = ceil_div(size_t(n), kLinRows);
  // As many blocks as the device holds at once (the warps then loop over the columns), at most
  // one column per warp. Which warp computes a column does not change its arithmetic.
  const int resident = resident_blocks(reinterpret_cast<const void*>(kernel), kLinLnSmem);
  const unsigned col_blocks = std::min<unsigned>(
      ceil_div(size_t(OC), kLinWarps), std::max(1u, static_cast<unsigned>(resident) / row_blocks));
  const size_t smem = ln_w ? size_t(std::min(n, kLinRows)) * K * sizeof(float) : 0;
  launch(kernel, dim3(col_blocks, row_blocks), dim3(kLinWarps * 32), smem, stream, dependent, out, in,
         w, n, K, OC, ln_w, ln_b, ep);
}

}  // namespace

template <class W>
void batch_linear(float* out, const float* in, const W* w, int n, int K, int OC,
                  const LinearPrologue& pro, const LinearEpilogue<W>& ep, cudaStream_t stream,
                  bool dependent) {
  if (n <= 0 || OC <= 0) return;
  const float* ln_w = nullptr;
  const float* ln_b = nullptr;
  if (pro.ln_weight) {
    // Normalised in the blocks where layernorm_forward<float> would take its vectorized path
    // (whose steps the blocks repeat); otherwise by layernorm_forward, into pro.ln_out.
    constexpr int kLnV = Vec<float>::n;
    if (K % kLnV == 0 && K <= kLinLnMaxK && aligned16(in) && aligned16(pro.ln_weight) &&
        (pro.ln_bias == nullptr || aligned16(pro.ln_bias))) {
      ln_w = pro.ln_weight;
      ln_b = pro.ln_bias;
    } else {
      layernorm_forward<float>(pro.ln_out, pro.mean, pro.rstd, in, pro.ln_weight, pro.ln_bias, n,
                               K, stream);
      in = pro.ln_out;
    }
  }
  constexpr int kVec = 16 / sizeof(W);
  if (K % kVec == 0 && aligned16(w) && aligned16(in)) {
    // Chunks of 4 vectors per lane when that covers the row (K <= 128 kVec: the head and the
    // C-wide inputs of 124M in bf16; fewer registers), else 8.
    if (ceil_div(size_t(K), 32 * kVec) <= 4)
      launch_linear<W, kVec, 4>(out, in, w, n, K, OC, ln_w, ln_b, ep, stream, dependent);
    else
      launch_linear<W, kVec, 8>(out, in, w, n, K, OC, ln_w, ln_b, ep, stream, dependent);
  } else {
    launch_linear<W, 1, 8>(out, in, w, n, K, OC, ln_w, ln_b, ep, stream, dependent);
  }
}

template <class W>
void batch_attention(float* out, const float* qkv, const W* kcache, const W* vcache, const int* slot,
                     const int* pos, size_t slot_stride, int n, int C, int NH, float scale,
                     int max_len, cudaStream_t stream, bool dependent) {
  if (n <= 0) return;
  const int hs = C / NH;
  const size_t smem = (size_t(max_len) + size_t(kBAttnWarps) * hs + 32) * sizeof(float);
  const auto aligned = [](const void* ptr, size_t a) {
    return reinterpret_cast<uintptr_t>(ptr) % a == 0;
  };
  // Pairs of channels per lane when every row of a head starts at an even element (hs, C and the
  // slot stride even) and the pointers allow the 2-element loads; else one channel per load.
  const bool pairs = hs % 2 == 0 && slot_stride % 2 == 0 && aligned(kcache, 2 * sizeof(W)) &&
                     aligned(vcache, 2 * sizeof(W)) && aligned(qkv, 2 * sizeof(float));
  const auto kernel = pairs ? batch_attention_kernel<W, 2> : batch_attention_kernel<W, 1>;
  if (smem > 48 * 1024) {  // beyond the default limit: opt in (fails cleanly past the device's)
    SGPT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  launch(kernel, dim3(n, NH), dim3(kBAttnWarps * 32), smem, stream, dependent, out, qkv, kcache,
         vcache, slot, pos, slot_stride, C, NH, scale, max_len);
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
                                const LinearPrologue&, const LinearEpilogue<W>&, cudaStream_t,     \
                                bool);                                                             \
  template void batch_attention<W>(float*, const float*, const W*, const W*, const int*,           \
                                   const int*, size_t, int, int, int, float, int, cudaStream_t,    \
                                   bool);
SGPT_BATCH_INSTANTIATE(float)
SGPT_BATCH_INSTANTIATE(__nv_bfloat16)
#undef SGPT_BATCH_INSTANTIATE

}  // namespace sgpt::cuda
