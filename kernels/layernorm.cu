// LayerNorm over the channel dimension (eps 1e-5, biased variance), rows of C contiguous values.
//
// Forward, for each row n of inp [N, C]:
//   mean = sum_c x_c / C ;  var = sum_c (x_c - mean)^2 / C ;  rstd = 1 / sqrt(var + 1e-5)
//   out_c = (x_c - mean) * rstd * weight_c + bias_c          mean, rstd: [N] fp32 (saved)
// Backward, with norm_c = (x_c - mean) * rstd and dnorm_c = weight_c * dout_c:
//   dinp_c    += rstd * (dnorm_c - mean_c'(dnorm) - norm_c * mean_c'(dnorm * norm))
//   dweight_c += sum_n dout_nc * norm_nc ;   dbias_c += sum_n dout_nc
//
// Forward and dinp: one warp per row (two passes over the row in registers-free strided loops;
// the row is re-read from L1/L2). dweight/dbias: a deterministic two-stage column reduction with no
// atomics: stage 1 gives each (32-channel tile, chunk of rows) block partial sums in `scratch`
// ([chunks][2][C] fp32), stage 2 adds the chunks of each channel in chunk order.
#include <algorithm>

#include "common.cuh"
#include "cuda/ops_cuda.h"

namespace sgpt::cuda {

constexpr float kLnEps = 1e-5f;

template <class T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* inp,
                                         const T* weight, const T* bias, int N, int C) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* x = inp + size_t(row) * C;
  float s = 0.0f;
  for (int c = lane; c < C; c += 32) s += to_f(x[c]);
  const float m = warp_sum(s) / C;
  float v = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float d = to_f(x[c]) - m;
    v += d * d;
  }
  const float r = 1.0f / sqrtf(warp_sum(v) / C + kLnEps);
  T* o = out + size_t(row) * C;
  for (int c = lane; c < C; c += 32) {
    float y = (to_f(x[c]) - m) * r * to_f(weight[c]);
    if (bias) y += to_f(bias[c]);
    o[c] = from_f<T>(y);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

template <class T>
__global__ void layernorm_backward_dinp_kernel(T* dinp, const T* dout, const T* inp,
                                               const T* weight, const float* mean,
                                               const float* rstd, int N, int C) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* x = inp + size_t(row) * C;
  const T* dy = dout + size_t(row) * C;
  const float m = mean[row], r = rstd[row];
  float a = 0.0f, b = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float norm = (to_f(x[c]) - m) * r;
    const float dnorm = to_f(weight[c]) * to_f(dy[c]);
    a += dnorm;
    b += dnorm * norm;
  }
  const float dnorm_mean = warp_sum(a) / C, dnorm_norm_mean = warp_sum(b) / C;
  T* dx = dinp + size_t(row) * C;
  for (int c = lane; c < C; c += 32) {
    const float norm = (to_f(x[c]) - m) * r;
    const float dnorm = to_f(weight[c]) * to_f(dy[c]);
    const float g = (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r;
    dx[c] = from_f<T>(to_f(dx[c]) + g);
  }
}

// Stage 1. block (32, 8), grid (ceil(C/32), chunks). partial: [chunks][2][C].
template <class T>
__global__ void layernorm_backward_params_partial(float* partial, const T* dout, const T* inp,
                                                  const float* mean, const float* rstd, int N,
                                                  int C, int rows_per_chunk) {
  __shared__ float sw[8][33], sb[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * rows_per_chunk;
  const int r1 = min(N, r0 + rows_per_chunk);
  float aw = 0.0f, ab = 0.0f;
  if (c < C) {
    for (int r = r0 + threadIdx.y; r < r1; r += 8) {
      const float dy = to_f(dout[size_t(r) * C + c]);
      const float norm = (to_f(inp[size_t(r) * C + c]) - mean[r]) * rstd[r];
      aw += dy * norm;
      ab += dy;
    }
  }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float w = 0.0f, b = 0.0f;
    for (int i = 0; i < 8; ++i) {
      w += sw[i][threadIdx.x];
      b += sb[i][threadIdx.x];
    }
    partial[(size_t(blockIdx.y) * 2) * C + c] = w;
    partial[(size_t(blockIdx.y) * 2 + 1) * C + c] = b;
  }
}

// Stage 2. one thread per channel.
template <class T>
__global__ void layernorm_backward_params_final(T* dweight, T* dbias, const float* partial,
                                                int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float w = 0.0f, b = 0.0f;
  for (int k = 0; k < chunks; ++k) {
    w += partial[(size_t(k) * 2) * C + c];
    b += partial[(size_t(k) * 2 + 1) * C + c];
  }
  dweight[c] = from_f<T>(to_f(dweight[c]) + w);
  if (dbias) dbias[c] = from_f<T>(to_f(dbias[c]) + b);
}

template <class T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, int N, int C, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int kWarps = 8;
  layernorm_forward_kernel<<<ceil_div(N, kWarps), kWarps * 32, 0, stream>>>(out, mean, rstd, inp,
                                                                           weight, bias, N, C);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                        const T* weight, const float* mean, const float* rstd, int N, int C,
                        Scratch& scratch, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int kWarps = 8;
  layernorm_backward_dinp_kernel<<<ceil_div(N, kWarps), kWarps * 32, 0, stream>>>(
      dinp, dout, inp, weight, mean, rstd, N, C);
  SGPT_LAUNCH_CHECK();
  // About 32 rows per thread row-lane at most 128 chunks: enough blocks to fill the GPU.
  const int chunks = static_cast<int>(std::min<size_t>(128, ceil_div(N, 64)));
  const int rows_per_chunk = static_cast<int>(ceil_div(N, chunks));
  float* partial = scratch.floats(size_t(chunks) * 2 * C);
  layernorm_backward_params_partial<<<dim3(ceil_div(C, 32), chunks), dim3(32, 8), 0, stream>>>(
      partial, dout, inp, mean, rstd, N, C, rows_per_chunk);
  SGPT_LAUNCH_CHECK();
  layernorm_backward_params_final<<<ceil_div(C, 256), 256, 0, stream>>>(dweight, dbias, partial,
                                                                        chunks, C);
  SGPT_LAUNCH_CHECK();
}

#define SGPT_INSTANTIATE(T)                                                                    \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int, int, \
                                     cudaStream_t);                                            \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const float*,  \
                                      const float*, int, int, Scratch&, cudaStream_t);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(bf16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
