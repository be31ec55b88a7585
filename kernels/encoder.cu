// Token + position embedding.
//
// Forward:  out[b,t,c] = wte[inp[b,t], c] + wpe[t, c]           out: [B,T,C], wte: [Vp,C], wpe: [maxT,C]
// Backward: dwte[v,c] += sum_{n : inp[n] == v} dout[n,c]         (n = b*T + t, ascending n)
//           dwpe[t,c] += sum_b dout[b,t,c]                       (ascending b)
//
// The backward is deterministic and uses no atomics: the host groups positions by token
// (TokenBuckets, a counting sort over the host copy of the tokens), then one thread per
// (token, channel) adds that token's rows in ascending position order, starting from the current
// gradient value - the same order as the CPU reference loop, so fp32 results match it exactly.
// Threads of a block cover consecutive channels, so every global access is coalesced. The
// blocks step over the buckets (their count is read on the device), so the launch's shape
// depends only on the number of positions and a CUDA graph holding it serves every batch; which
// block takes a bucket does not change its sum.
#include <algorithm>

#include "common.cuh"
#include "cuda/ops_cuda.h"

namespace sgpt::cuda {

// Blocks of the wte backward along the buckets (each steps over buckets b, b + this, ...): enough
// to fill any current GPU several times over.
constexpr int kEncoderBackwardBlocks = 4096;

template <class T>
__global__ void encoder_forward_kernel(T* out, const int* inp, const T* wte, const T* wpe, int T_,
                                       int C, size_t total) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const size_t n = i / C;
  const int c = static_cast<int>(i % C);
  const int t = static_cast<int>(n % T_);
  const int tok = inp[n];
  out[i] = from_f<T>(to_f(wte[size_t(tok) * C + c]) + to_f(wpe[size_t(t) * C + c]));
}

// grid: (any, ceil(C / blockDim.x)); buckets: the count, then (token, first, count) triples.
template <class T>
__global__ void encoder_backward_wte_kernel(T* dwte, const T* dout, const int* positions,
                                            const int* buckets, int C) {
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int nb = buckets[0];
  for (int b = blockIdx.x; b < nb; b += gridDim.x) {
    const int* bk = buckets + 1 + 3 * size_t(b);
    const int tok = bk[0], first = bk[1], count = bk[2];
    T* dst = dwte + size_t(tok) * C + c;
    float acc = to_f(*dst);
    for (int i = first; i < first + count; ++i) acc += to_f(dout[size_t(positions[i]) * C + c]);
    *dst = from_f<T>(acc);
  }
}

// one thread per (t, c)
template <class T>
__global__ void encoder_backward_wpe_kernel(T* dwpe, const T* dout, int B, int T_, int C) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= size_t(T_) * C) return;
  float acc = to_f(dwpe[i]);
  for (int b = 0; b < B; ++b) acc += to_f(dout[size_t(b) * T_ * C + i]);
  dwpe[i] = from_f<T>(acc);
}

template <class T>
void encoder_forward(T* out, const int* inp, const T* wte, const T* wpe, int B, int T_, int C,
                     cudaStream_t stream) {
  const size_t total = size_t(B) * T_ * C;
  if (total == 0) return;
  encoder_forward_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(out, inp, wte, wpe, T_, C,
                                                                   total);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void encoder_backward(T* dwte, T* dwpe, const T* dout, const DeviceTokenBuckets& buckets, int B,
                      int T_, int C, cudaStream_t stream) {
  if (buckets.num_positions > 0) {  // at most one bucket per position
    const int threads = C < 256 ? ((C + 31) / 32) * 32 : 256;
    dim3 grid(std::min(buckets.num_positions, kEncoderBackwardBlocks), ceil_div(C, threads));
    encoder_backward_wte_kernel<<<grid, threads, 0, stream>>>(dwte, dout, buckets.positions.get(),
                                                              buckets.buckets.get(), C);
    SGPT_LAUNCH_CHECK();
  }
  const size_t tc = size_t(T_) * C;
  if (tc > 0) {
    encoder_backward_wpe_kernel<<<ceil_div(tc, 256), 256, 0, stream>>>(dwpe, dout, B, T_, C);
    SGPT_LAUNCH_CHECK();
  }
}

#define SGPT_INSTANTIATE(T)                                                                   \
  template void encoder_forward<T>(T*, const int*, const T*, const T*, int, int, int,         \
                                   cudaStream_t);                                             \
  template void encoder_backward<T>(T*, T*, const T*, const DeviceTokenBuckets&, int, int, int, \
                                    cudaStream_t);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(bf16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
