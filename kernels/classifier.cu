// Classifier: fused softmax cross-entropy (forward + backward in place) and GNB label sampling.
//
// logits: [N, Vp] row-major; only the first V columns are real tokens (Vp - V padded columns).
// Cross-entropy, per row i, with M = max_{j<V} l_j and S = sum_{j<V} exp(l_j - M):
//   losses[i] = log(S) - (l_target - M)                                       (fp32)
//   dlogits[i,j] = dloss * (exp(l_j - M) / S - [j == target])   for j < V      (in place of logits)
//   dlogits[i,j] = 0                                            for V <= j < Vp
// One block per row: pass 1 reads the row once with an online max/sum (each thread keeps its own
// running max and rescales its sum), the block combines the per-thread pairs; pass 2 re-reads the
// row and overwrites it with dlogits. The probabilities are never stored. fp32 logits: scalar
// loads and CUDA's accurate expf (parity with the CPU reference). bf16 logits (16-byte aligned rows,
// Vp a multiple of 8): 16-byte loads and stores of 8 values, 4 in flight per thread, the max and
// rescale once per 8 values, exp as FFMA + ex2.approx (~1e-6 relative, far below bf16's 2^-9), and
// 2 blocks of 512 threads per SM so that the ~260 rows in flight (26 MB) stay in L2 between the
// two passes: DRAM sees one read and one write of the logits.
//
// GNB labels (sample_labels; fp32 logits here, bf16 logits: sample_labels_bf16_kernel below, an
// exact softmax draw with parallel sums instead of the CPU's order), per row i with
// u_i = gnb_uniform(seed, step, seq0 + i/T, i%T):
//   target[i] = smallest j < V with cdf_j > u_i * S,  cdf_j = e_0 + ... + e_j,  e_j = exp(l_j - M)
// evaluated exactly as cpu::sample_labels does: fp32, exp as glibc's expf (classifier.cuh), and
// the sums added strictly in index order (a parallel sum would round differently and, for the
// near-uniform distributions of an untrained model, change about a third of the labels). One
// thread per row (the sum is a chain of dependent adds; a warp serves 32 rows at once): pass 1,
// the row maxima (a warp reads each of its rows coalesced); pass 2, the warp stages [32 rows x 64
// columns] tiles in shared memory (coalesced loads) and each lane walks its own row adding
// e_j in index order, saving the running sum after every 256 columns in scratch ([N][V/256]
// fp32); pass 3, a binary search over those saved sums (they never decrease) finds the 256-column
// block where the sum first exceeds u*S, and the lane re-walks only that block from the previous
// saved sum, so the crossing index is that of the CPU's single walk. If rounding makes every
// cdf_j <= u*S the label is the last j with e_j > 0 (the CPU's fallback).
#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "classifier.cuh"
#include "common.cuh"
#include "common/philox.h"
#include "cuda/ops_cuda.h"

namespace sgpt::cuda {

constexpr int kCeThreads = 512;

template <class T>
__global__ void __launch_bounds__(kCeThreads)
    crossentropy_kernel(float* losses, T* logits, const int* targets, float dloss, int V, int Vp,
                        bool write_dlogits) {
  __shared__ float red[kCeThreads / 32];
  T* row = logits + size_t(blockIdx.x) * Vp;
  float m = -INFINITY, s = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const float x = to_f(row[j]);
    if (x > m) {
      s = s * expf(m - x) + 1.0f;
      m = x;
    } else {
      s += expf(x - m);
    }
  }
  const float M = block_max(m, red);
  const float S = block_sum(m == -INFINITY ? 0.0f : s * expf(m - M), red);
  const int tgt = targets[blockIdx.x];
  if (threadIdx.x == 0) losses[blockIdx.x] = logf(S) - (to_f(row[tgt]) - M);
  if (!write_dlogits) return;
  __syncthreads();  // row[tgt] is read above before anyone overwrites it
  const float inv = 1.0f / S;
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
    float d = 0.0f;
    if (j < V) {
      const float p = expf(to_f(row[j]) - M) * inv;
      d = dloss * (p - (j == tgt ? 1.0f : 0.0f));
    }
    row[j] = from_f<T>(d);
  }
}

// sample_labels: one THREAD per row (the sequential sums are chains of dependent adds, so one
// row per lane keeps all 32 lanes busy), a warp = 32 consecutive rows. grid: ceil(N / 128);
// block 128 (4 warps); smem: the exp table + a [32][kSlCols + 1] fp32 tile per warp.
constexpr int kSlWarps = 4;
constexpr int kSlCols = 64;        // columns per tile
constexpr int kSlBoundary = 256;   // columns between saved running sums (a multiple of kSlCols)

template <class T>
__global__ void __launch_bounds__(kSlWarps * 32)
    sample_labels_kernel(int* targets, float* bounds, const T* logits, int N, int T_, int V,
                         int Vp, uint64_t seed, uint32_t step, uint32_t seq0) {
  // The exp table in shared memory: the lanes index it with different entries, which constant
  // memory would serialize (measured 2.6x slower on real logits).
  __shared__ uint64_t tab[32];
  __shared__ float tile[kSlWarps][32][kSlCols + 1];  // +1: lane r reads row r in its own bank
  if (threadIdx.x < 32) tab[threadIdx.x] = libm_expf_tab(threadIdx.x);
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = (blockIdx.x * kSlWarps + warp) * 32;
  if (row0 >= N) return;  // warp-uniform
  const int rows = min(32, N - row0);
  const int row = row0 + lane;
  const bool active = lane < rows;
  const int nb = (V + kSlBoundary - 1) / kSlBoundary;
  float(*tl)[kSlCols + 1] = tile[warp];

  // Pass 1: the max of each row (exact in any order): the warp reads row r coalesced, 8
  // independent loads in flight per lane (few warps per SM: latency must be overlapped here).
  float M = -INFINITY;
  for (int r = 0; r < rows; ++r) {
    const T* l = logits + size_t(row0 + r) * Vp;
    float m[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) m[k] = -INFINITY;
    int j = lane;
    for (; j + 7 * 32 < V; j += 8 * 32) {
      float x[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) x[k] = to_f(l[j + 32 * k]);
#pragma unroll
      for (int k = 0; k < 8; ++k) m[k] = fmaxf(m[k], x[k]);
    }
    for (; j < V; j += 32) m[0] = fmaxf(m[0], to_f(l[j]));
#pragma unroll
    for (int k = 1; k < 8; ++k) m[0] = fmaxf(m[0], m[k]);
    const float mr = warp_max(m[0]);
    if (lane == r) M = mr;
  }
  // Pass 2: total S = e_0 + e_1 + ... in index order, each lane walking its own row through
  // shared-memory tiles; the running sum after every kSlBoundary columns goes to `bounds`.
  // (Computing a tile's exponentials by all lanes in parallel before the walk measured 1.9x
  // slower: 28.5 ms against 15.2 ms per 64x1024 micro-batch.)
  float total = 0.0f;
  int last_nonzero = 0;
  for (int c0 = 0; c0 < V; c0 += kSlCols) {
    const int cols = min(kSlCols, V - c0);
    __syncwarp();
#pragma unroll 16
    for (int i = lane; i < 32 * kSlCols; i += 32) {
      const int r = i / kSlCols, j = i % kSlCols;
      if (r < rows && j < cols) tl[r][j] = to_f(logits[size_t(row0 + r) * Vp + c0 + j]);
    }
    __syncwarp();
    if (active) {
#pragma unroll 8
      for (int j = 0; j < cols; ++j) {
        const float e = libm_expf(__fsub_rn(tl[lane][j], M), tab);
        total = __fadd_rn(total, e);
        if (e > 0.0f) last_nonzero = c0 + j;
      }
      const int end = c0 + cols;
      if (end % kSlBoundary == 0 || end == V)
        bounds[size_t(row) * nb + (end - 1) / kSlBoundary] = total;
    }
  }
  if (!active) return;
  // Pass 3: the first boundary block whose running sum exceeds u*S (the sums never decrease:
  // binary search), then walk that block again from the previous boundary's sum.
  const float u = gnb_uniform(seed, step, seq0 + uint32_t(row / T_), uint32_t(row % T_));
  const float threshold = __fmul_rn(u, total);
  const float* bd = bounds + size_t(row) * nb;
  int lo = 0, hi = nb;  // first b in [lo, hi) with bd[b] > threshold, or nb
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (bd[mid] > threshold) hi = mid;
    else lo = mid + 1;
  }
  int label = last_nonzero;  // the CPU's fallback when no running sum exceeds u*S
  if (lo < nb) {
    float cdf = lo > 0 ? bd[lo - 1] : 0.0f;
    const T* l = logits + size_t(row) * Vp;
    const int j1 = min(V, (lo + 1) * kSlBoundary);
    for (int j = lo * kSlBoundary; j < j1; ++j) {
      cdf = __fadd_rn(cdf, libm_expf(__fsub_rn(to_f(l[j]), M), tab));
      if (cdf > threshold) {
        label = j;
        break;
      }
    }
  }
  targets[row] = label;
}

// sample_labels for bf16 logits: one BLOCK per row, one pass over the row in memory. Exact
// CPU-order equality is not kept here (only the fp32 path promises the CPU's labels); the label
// is still an exact draw from softmax(logits[:V]) with the same uniform u, up to fp32 rounding:
//   the smallest j with c_j > u * S, c_j = e_0 + ... + e_j, e_j = exp(l_j - M), S = c_{V-1},
// where the sums are added by a fixed tree (deterministic: same inputs, same bits; the one smem
// atomic is a min, whose result does not depend on the order).
// The row's real columns are cut into 8-column vectors (16-byte loads when Vp % 8 == 0) and the
// vectors into one contiguous segment per warp; a warp reads its segment coalesced (round r:
// lane l takes vector r*32 + l). Pass 1 keeps a per-thread online (max, sum), combined per warp
// (xor butterfly: every lane gets identical bits) into the segment's (max, sum). Every thread then
// derives M, each segment's sum W_w in the M frame and the running sums C_w (added in segment
// order) alike. The first segment with C_w > u*S holds the label. Pass 2: the block re-reads that
// segment (a quarter of the row, mostly from L2) in rounds of 128 vectors: per-vector sums of
// exp(l - M), an inclusive block scan (warp scans, warp totals added in warp order) on top of
// C_{w-1}, the first vector whose end value exceeds u*S, and that vector's thread walks its 8
// columns from the previous end value. Each search starts from a value <= u*S; where rounding
// (sums computed two ways) leaves no crossing inside, the label is the last column with e_j > 0 of
// that range (as the CPU's fallback when no running sum exceeds u*S, used here for the row too).
// Measured on an H100 (65,536 x 50,304 logits): 128 threads per block (8 rows per SM) 2.87 ms,
// 256: 2.97, 512: 3.55, against 16.1 ms for the CPU-order kernel; one block-wide pass-2 walk per
// thread chunk instead of rounds measured no faster (2.99 / 3.10 ms).
constexpr int kSbThreads = 128;  // 8 blocks (rows) per SM at <= 64 registers
constexpr int kSbUnroll = 4;     // vectors (16 B each) in flight per thread in pass 1

// Columns j0..j0+7 of `row` as floats; columns >= V read as -inf.
template <bool kVec>
__device__ __forceinline__ void sb_load8(float (&x)[8], const bf16* row, int j0, int V) {
  if constexpr (kVec) {
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(row + j0));  // j0 + 8 <= Vp
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      x[2 * k] = __uint_as_float(w[k] << 16);
      x[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (j0 + k >= V) x[k] = -INFINITY;
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = j0 + k < V ? to_f(row[j0 + k]) : -INFINITY;
  }
}

// exp(x - m) as one FFMA + ex2.approx: error within ~2 ulp of ex2 plus the FFMA's rounding of
// (x - m) * log2(e), |x - m| * 2^-24 relative: ~1e-6 at the largest gaps that matter, far below
// what a sampled label can resolve. (CUDA's accurate expf cost 12% more kernel time: 3.32 ms
// against 2.97 ms at 256 threads per block.)
__device__ __forceinline__ float sb_exp(float x, float m) {
  return exp2f(__fmaf_rn(x, 1.4426950408889634f, -m * 1.4426950408889634f));
}

// One thread's online (max m, sum s of exp(l - m)) over vectors v0, v0 + step, ... < v1 of a bf16
// row (8 columns each; columns >= V count as -inf), kSbUnroll loads in flight. Shared by the
// sampler (a warp's segment, step 32) and the cross-entropy (the whole row, step = block size).
template <bool kVec>
__device__ __forceinline__ void sb_online_max_sum(const bf16* row, int V, int v0, int v1,
                                                  int step, float& m, float& s) {
  m = -INFINITY;
  s = 0.0f;
  for (int v = v0; v < v1; v += step * kSbUnroll) {
    float x[kSbUnroll][8];
#pragma unroll
    for (int k = 0; k < kSbUnroll; ++k) {
      if (v + step * k < v1) {
        sb_load8<kVec>(x[k], row, (v + step * k) * 8, V);
      } else {
#pragma unroll
        for (int c = 0; c < 8; ++c) x[k][c] = -INFINITY;
      }
    }
#pragma unroll
    for (int k = 0; k < kSbUnroll; ++k) {
      float vm = x[k][0];
#pragma unroll
      for (int c = 1; c < 8; ++c) vm = fmaxf(vm, x[k][c]);
      if (vm > m) {
        s *= sb_exp(m, vm);  // m = -inf: s is 0 and stays 0
        m = vm;
      }
      if (m > -INFINITY) {
#pragma unroll
        for (int c = 0; c < 8; ++c) s += sb_exp(x[k][c], m);  // -inf columns add 0
      }
    }
  }
}

// The label of one row (the whole block works on it): writes it to *label_out (shared; valid
// after the next __syncthreads) and returns the row's M and S = sum_j exp(l_j - M) in every
// thread. Called once per kernel (it has shared arrays of its own).
template <bool kVec>
__device__ __forceinline__ void sb_sample_row(const bf16* row, int V, int row_i, int T_,
                                              uint64_t seed, uint32_t step, uint32_t seq0,
                                              int* label_out, float& M_out, float& S_out) {
  constexpr int NT = kSbThreads, NW = NT / 32;
  __shared__ float seg_max[NW], seg_sum[NW], wtot[NW];
  __shared__ float s_u;
  __shared__ int s_found, s_last;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int nvec = (V + 7) / 8;
  const int seg = (nvec + NW - 1) / NW;
  if (threadIdx.x == 0) {
    s_u = gnb_uniform(seed, step, seq0 + uint32_t(row_i / T_), uint32_t(row_i % T_));
    s_found = INT_MAX;
    s_last = -1;
  }

  // Pass 1: online (max, sum of exp(l - max)) per thread over its vectors of its warp's segment.
  {
    const int v0 = min(nvec, warp * seg), v1 = min(nvec, v0 + seg);
    float m, s;
    sb_online_max_sum<kVec>(row, V, v0 + lane, v1, 32, m, s);
    const float mw = warp_max(m);
    const float sw = warp_sum(m > -INFINITY ? s * sb_exp(m, mw) : 0.0f);
    if (lane == 0) {
      seg_max[warp] = mw;
      seg_sum[warp] = sw;
    }
  }
  __syncthreads();
  // Every thread derives the same M, S, threshold and first crossing segment from shared memory.
  float M = -INFINITY;
#pragma unroll
  for (int w = 0; w < NW; ++w) M = fmaxf(M, seg_max[w]);
  float W[NW], C = 0.0f;
#pragma unroll
  for (int w = 0; w < NW; ++w) {
    W[w] = seg_max[w] > -INFINITY ? seg_sum[w] * sb_exp(seg_max[w], M) : 0.0f;
    C = __fadd_rn(C, W[w]);
  }
  M_out = M;
  S_out = C;
  const float threshold = __fmul_rn(s_u, C);
  int wstar = -1;
  float base = 0.0f;  // C_{wstar - 1}
  C = 0.0f;
#pragma unroll
  for (int w = 0; w < NW; ++w) {
    const float Cn = __fadd_rn(C, W[w]);
    if (wstar < 0 && Cn > threshold) {
      wstar = w;
      base = C;
    }
    C = Cn;
  }

  if (wstar < 0) {  // block-uniform: u*S rounded up to S; the last column with e_j > 0
    int last = -1;
    for (int j = threadIdx.x; j < V; j += NT)
      if (sb_exp(to_f(row[j]), M) > 0.0f) last = j;
    for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
    if (lane == 0) atomicMax(&s_last, last);
    __syncthreads();
    if (threadIdx.x == 0) *label_out = max(s_last, 0);
    return;
  }
  // Pass 2, the whole block on segment wstar, vectors [a, b), NT vectors per round (13 rounds
  // for the GPT-2 vocabulary): per-vector sums of exp(l - M), an inclusive scan over the block
  // (warp scans, then the warp totals added in warp order), end value of vector v =
  // base + (P_warp + inc_lane); the first vector whose end value exceeds u*S (smem atomicMin:
  // the minimum does not depend on the order) walks its 8 columns from the previous end value.
  const int a = min(nvec, wstar * seg), b = min(nvec, a + seg);
  int last = -1;  // last column of this thread's vectors with e_j > 0 (the segment fallback)
  for (int r0 = a; r0 < b; r0 += NT) {  // block-uniform trip count
    const int v = r0 + threadIdx.x;
    float x[8], e[8], vs = 0.0f;
    if (v < b) {
      sb_load8<kVec>(x, row, v * 8, V);
    } else {
#pragma unroll
      for (int c = 0; c < 8; ++c) x[c] = -INFINITY;
    }
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      e[c] = sb_exp(x[c], M);
      vs = __fadd_rn(vs, e[c]);
      if (e[c] > 0.0f) last = v * 8 + c;
    }
    float inc = vs;  // inclusive scan over the lanes (fixed Kogge-Stone order)
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const float y = __shfl_up_sync(0xffffffffu, inc, d);
      if (lane >= d) inc = __fadd_rn(y, inc);
    }
    if (lane == 31) wtot[warp] = inc;
    __syncthreads();
    float P = 0.0f, Pw = 0.0f;
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      if (w == warp) Pw = P;
      P = __fadd_rn(P, wtot[w]);
    }
    const float inc_prev = __shfl_up_sync(0xffffffffu, inc, 1);
    const float end = __fadd_rn(base, __fadd_rn(Pw, inc));
    // the previous vector's end value (that of the last thread of the previous warp or round
    // for lane 0: the same additions)
    const float prev = __fadd_rn(base, lane > 0 ? __fadd_rn(Pw, inc_prev) : Pw);
    if (v < b && end > threshold) atomicMin(&s_found, v);
    __syncthreads();
    const int f = s_found;
    if (f != INT_MAX) {  // block-uniform
      if (v == f) {
        float c = prev;  // <= threshold: no earlier end value exceeded it
        int label = -1, lnz = -1;
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          c = __fadd_rn(c, e[k]);
          if (e[k] > 0.0f) lnz = v * 8 + k;
          if (label < 0 && c > threshold) label = v * 8 + k;
        }
        // (no crossing by rounding: the vector's last column with e > 0)
        *label_out = label >= 0 ? label : lnz >= 0 ? lnz : min(v * 8 + 7, V - 1);
      }
      return;
    }
    base = __fadd_rn(base, P);
    __syncthreads();  // wtot is rewritten in the next round
  }
  // No vector's end value exceeded u*S (rounding): the segment's last column with e_j > 0.
  for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
  if (lane == 0) atomicMax(&s_last, last);
  __syncthreads();
  if (threadIdx.x == 0) *label_out = s_last >= 0 ? s_last : min(b * 8, V) - 1;
}

// dlogits for columns j0 .. j0+7 of a bf16 row (16-byte aligned, j0 + 8 <= Vp), in place:
// dloss * (exp(l_j - M) / S - [j == tgt]) for j < V, 0 in the padded columns.
__device__ __forceinline__ void ce_write_dlogits8(bf16* row, int j0, int V, float M, float inv,
                                                  float dloss, int tgt) {
  float d[8];
  if (j0 < V) {
    float x[8];
    sb_load8<true>(x, row, j0, V);
#pragma unroll
    for (int c = 0; c < 8; ++c)
      d[c] = j0 + c < V ? dloss * (sb_exp(x[c], M) * inv - (j0 + c == tgt ? 1.0f : 0.0f)) : 0.0f;
  } else {
#pragma unroll
    for (int c = 0; c < 8; ++c) d[c] = 0.0f;
  }
  uint4 q;
  uint32_t* w = reinterpret_cast<uint32_t*>(&q);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(d[2 * k], d[2 * k + 1]);
    w[k] = *reinterpret_cast<const uint32_t*>(&h);
  }
  *reinterpret_cast<uint4*>(row + j0) = q;
}

// GNB labels for bf16 logits, one block per row. kCe: the same kernel then computes the loss
// against the sampled label and overwrites the row with dlogits (the cross-entropy of
// crossentropy_bf16_kernel with this label; needs kVec): one kernel for the whole GNB classifier.
template <bool kVec, bool kCe>
__global__ void __launch_bounds__(kSbThreads, 1024 / kSbThreads)
    sample_labels_bf16_kernel(int* targets, bf16* logits, int T_, int V, int Vp, uint64_t seed,
                              uint32_t step, uint32_t seq0, float* losses, float dloss) {
  static_assert(kVec || !kCe, "the fused cross-entropy needs 16-byte rows");
  __shared__ int s_label;
  const int row_i = blockIdx.x;
  bf16* row = logits + size_t(row_i) * Vp;
  float M, S;
  sb_sample_row<kVec>(row, V, row_i, T_, seed, step, seq0, &s_label, M, S);
  __syncthreads();
  const int label = s_label;
  if (threadIdx.x == 0) targets[row_i] = label;
  if constexpr (kCe) {
    if (threadIdx.x == 0) losses[row_i] = logf(S) - (to_f(row[label]) - M);
    __syncthreads();  // row[label] is read above before anyone overwrites it
    const float inv = 1.0f / S;
    for (int v = threadIdx.x; v < Vp / 8; v += kSbThreads)
      ce_write_dlogits8(row, v * 8, V, M, inv, dloss, label);
  }
}

// bf16 cross-entropy, vectorized (see the top of the file).
constexpr int kCeVecThreads = 512;

__global__ void __launch_bounds__(kCeVecThreads, 2)
    crossentropy_bf16_kernel(float* losses, bf16* logits, const int* targets, float dloss, int V,
                             int Vp, bool write_dlogits) {
  __shared__ float red[kCeVecThreads / 32];
  bf16* row = logits + size_t(blockIdx.x) * Vp;
  const int nvec = (V + 7) / 8;  // vectors holding real columns (the last may be partly padded)
  float m, s;
  sb_online_max_sum<true>(row, V, threadIdx.x, nvec, kCeVecThreads, m, s);
  const float M = block_max(m, red);
  const float S = block_sum(m == -INFINITY ? 0.0f : s * sb_exp(m, M), red);
  const int tgt = targets[blockIdx.x];
  if (threadIdx.x == 0) losses[blockIdx.x] = logf(S) - (to_f(row[tgt]) - M);
  if (!write_dlogits) return;
  __syncthreads();  // row[tgt] is read above before anyone overwrites it
  const float inv = 1.0f / S;
  for (int v = threadIdx.x; v < Vp / 8; v += kCeVecThreads)
    ce_write_dlogits8(row, v * 8, V, M, inv, dloss, tgt);
}

// One block; per-thread partial sums in double in a fixed order, then a fixed-order tree.
__global__ void mean_loss_kernel(float* out, const float* losses, int N) {
  __shared__ double red[1024];
  double s = 0.0;
  for (int i = threadIdx.x; i < N; i += blockDim.x) s += losses[i];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) red[threadIdx.x] += red[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = static_cast<float>(red[0] / N);
}

template <class T>
void crossentropy_forward_backward(float* losses, T* logits, const int* targets, float dloss,
                                   int N, int V, int Vp, bool write_dlogits, cudaStream_t stream) {
  if (N == 0) return;
  if constexpr (std::is_same_v<T, bf16>) {
    if (Vp % 8 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0) {
      crossentropy_bf16_kernel<<<N, kCeVecThreads, 0, stream>>>(losses, logits, targets, dloss, V,
                                                                Vp, write_dlogits);
      SGPT_LAUNCH_CHECK();
      return;
    }
  }
  crossentropy_kernel<<<N, kCeThreads, 0, stream>>>(losses, logits, targets, dloss, V, Vp,
                                                    write_dlogits);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void sample_labels_exact(int* targets, const T* logits, int N, int T_, int V, int Vp,
                         uint64_t seed, uint32_t step, uint32_t seq0, Scratch& scratch,
                         cudaStream_t stream) {
  if (N == 0 || V == 0) return;
  const size_t nb = ceil_div(V, kSlBoundary);
  float* bounds = scratch.floats(size_t(N) * nb);
  sample_labels_kernel<<<ceil_div(N, kSlWarps * 32), kSlWarps * 32, 0, stream>>>(
      targets, bounds, logits, N, T_, V, Vp, seed, step, seq0);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void sample_labels(int* targets, const T* logits, int N, int T_, int V, int Vp, uint64_t seed,
                   uint32_t step, uint32_t seq0, Scratch& scratch, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, bf16>) {
    if (N == 0 || V == 0) return;
    bf16* l = const_cast<bf16*>(logits);  // kCe = false: read only
    if (Vp % 8 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0)
      sample_labels_bf16_kernel<true, false><<<N, kSbThreads, 0, stream>>>(
          targets, l, T_, V, Vp, seed, step, seq0, nullptr, 0.0f);
    else
      sample_labels_bf16_kernel<false, false><<<N, kSbThreads, 0, stream>>>(
          targets, l, T_, V, Vp, seed, step, seq0, nullptr, 0.0f);
    SGPT_LAUNCH_CHECK();
  } else {
    sample_labels_exact(targets, logits, N, T_, V, Vp, seed, step, seq0, scratch, stream);
  }
}

template <class T>
bool sample_labels_crossentropy(float* losses, int* targets, T* logits, float dloss, int N,
                                int T_, int V, int Vp, uint64_t seed, uint32_t step,
                                uint32_t seq0, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, bf16>) {
    if (Vp % 8 != 0 || reinterpret_cast<uintptr_t>(logits) % 16 != 0) return false;
    if (N == 0 || V == 0) return true;
    sample_labels_bf16_kernel<true, true><<<N, kSbThreads, 0, stream>>>(
        targets, logits, T_, V, Vp, seed, step, seq0, losses, dloss);
    SGPT_LAUNCH_CHECK();
    return true;
  } else {
    return false;  // fp32: the CPU-order sampler, then the cross-entropy kernel
  }
}

template <class T>
void sample_labels(int* targets, const T* logits, int N, int T_, int V, int Vp, uint64_t seed,
                   uint32_t step, uint32_t seq0, cudaStream_t stream) {
  Scratch scratch;
  sample_labels(targets, logits, N, T_, V, Vp, seed, step, seq0, scratch, stream);
  SGPT_CUDA_CHECK(cudaStreamSynchronize(stream));  // the scratch dies here
}

void mean_loss(float* out, const float* losses, int N, cudaStream_t stream) {
  mean_loss_kernel<<<1, 1024, 0, stream>>>(out, losses, N);
  SGPT_LAUNCH_CHECK();
}

#define SGPT_INSTANTIATE(T)                                                                    \
  template void crossentropy_forward_backward<T>(float*, T*, const int*, float, int, int, int, \
                                                 bool, cudaStream_t);                          \
  template void sample_labels<T>(int*, const T*, int, int, int, int, uint64_t, uint32_t,      \
                                 uint32_t, cudaStream_t);                                      \
  template bool sample_labels_crossentropy<T>(float*, int*, T*, float, int, int, int, int,     \
                                              uint64_t, uint32_t, uint32_t, cudaStream_t);     \
  template void sample_labels<T>(int*, const T*, int, int, int, int, uint64_t, uint32_t,      \
                                 uint32_t, Scratch&, cudaStream_t);                          \
  template void sample_labels_exact<T>(int*, const T*, int, int, int, int, uint64_t, uint32_t, \
                                       uint32_t, Scratch&, cudaStream_t);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(bf16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
