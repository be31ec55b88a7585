// Classifier: fused softmax cross-entropy (forward + backward in place) and GNB label sampling.
//
// logits: [N, Vp] row-major; only the first V columns are real tokens (Vp - V padded columns).
// Cross-entropy, per row i, with M = max_{j<V} l_j and S = sum_{j<V} exp(l_j - M):
//   losses[i] = log(S) - (l_target - M)                                       (fp32)
//   dlogits[i,j] = dloss * (exp(l_j - M) / S - [j == target])   for j < V      (in place of logits)
//   dlogits[i,j] = 0                                            for V <= j < Vp
// One block per row: pass 1 reads the row once with an online max/sum (each thread keeps its own
// running max and rescales its sum), the block combines the per-thread pairs; pass 2 re-reads the
// row and overwrites it with dlogits. The probabilities are never stored.
//
// GNB labels (sample_labels), per row i with u_i = gnb_uniform(seed, step, seq0 + i/T, i%T):
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
  crossentropy_kernel<<<N, kCeThreads, 0, stream>>>(losses, logits, targets, dloss, V, Vp,
                                                    write_dlogits);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void sample_labels(int* targets, const T* logits, int N, int T_, int V, int Vp, uint64_t seed,
                   uint32_t step, uint32_t seq0, Scratch& scratch, cudaStream_t stream) {
  if (N == 0 || V == 0) return;
  const size_t nb = ceil_div(V, kSlBoundary);
  float* bounds = scratch.floats(size_t(N) * nb);
  sample_labels_kernel<<<ceil_div(N, kSlWarps * 32), kSlWarps * 32, 0, stream>>>(
      targets, bounds, logits, N, T_, V, Vp, seed, step, seq0);
  SGPT_LAUNCH_CHECK();
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
  template void sample_labels<T>(int*, const T*, int, int, int, int, uint64_t, uint32_t,      \
                                 uint32_t, Scratch&, cudaStream_t);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(bf16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
