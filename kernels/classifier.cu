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
// near-uniform distributions of an untrained model, change about a third of the labels). One warp
// per row: the lanes load and exponentiate 32 consecutive logits at once (coalesced), then every
// lane adds the 32 values in lane order through shuffles, so all lanes hold the same sequential
// running sum. Pass A: total S; pass B: walk again until cdf_j > u*S. If rounding makes every
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

// One warp per row.
template <class T>
__global__ void sample_labels_kernel(int* targets, const T* logits, int N, int T_, int V, int Vp,
                                     uint64_t seed, uint32_t step, uint32_t seq0) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* l = logits + size_t(row) * Vp;
  float m = -INFINITY;
  for (int j = lane; j < V; j += 32) m = fmaxf(m, to_f(l[j]));
  const float M = warp_max(m);  // the max is exact in any order
  // Pass A: total, added in index order.
  float total = 0.0f;
  for (int base = 0; base < V; base += 32) {
    const int j = base + lane;
    const float e = j < V ? libm_expf(__fsub_rn(to_f(l[j]), M)) : 0.0f;
    const int cnt = min(32, V - base);
    for (int k = 0; k < cnt; ++k) total = __fadd_rn(total, __shfl_sync(0xffffffffu, e, k));
  }
  const float u = gnb_uniform(seed, step, seq0 + uint32_t(row / T_), uint32_t(row % T_));
  const float threshold = __fmul_rn(u, total);
  // Pass B: walk the same running sum.
  float cdf = 0.0f;
  int label = -1, last_nonzero = 0;
  for (int base = 0; base < V && label < 0; base += 32) {
    const int j = base + lane;
    const float e = j < V ? libm_expf(__fsub_rn(to_f(l[j]), M)) : 0.0f;
    const int cnt = min(32, V - base);
    for (int k = 0; k < cnt; ++k) {
      const float ek = __shfl_sync(0xffffffffu, e, k);
      cdf = __fadd_rn(cdf, ek);
      if (ek > 0.0f) last_nonzero = base + k;
      if (cdf > threshold) {
        label = base + k;
        break;  // uniform across the warp: every lane holds the same cdf
      }
    }
  }
  if (lane == 0) targets[row] = label >= 0 ? label : last_nonzero;
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
                   uint32_t step, uint32_t seq0, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int kWarps = 4;
  sample_labels_kernel<<<ceil_div(N, kWarps), kWarps * 32, 0, stream>>>(targets, logits, N, T_, V,
                                                                       Vp, seed, step, seq0);
  SGPT_LAUNCH_CHECK();
}

void mean_loss(float* out, const float* losses, int N, cudaStream_t stream) {
  mean_loss_kernel<<<1, 1024, 0, stream>>>(out, losses, N);
  SGPT_LAUNCH_CHECK();
}

#define SGPT_INSTANTIATE(T)                                                                    \
  template void crossentropy_forward_backward<T>(float*, T*, const int*, float, int, int, int, \
                                                 bool, cudaStream_t);                          \
  template void sample_labels<T>(int*, const T*, int, int, int, int, uint64_t, uint32_t,      \
                                 uint32_t, cudaStream_t);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(bf16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
