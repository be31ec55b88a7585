// LayerNorm over the channel dimension (eps 1e-5, biased variance), rows of C contiguous values.
//
// Forward, for each row n of inp [N, C]:
//   mean = sum_c x_c / C ;  var = sum_c (x_c - mean)^2 / C ;  rstd = 1 / sqrt(var + 1e-5)
//   out_c = (x_c - mean) * rstd * weight_c + bias_c          mean, rstd: [N] fp32 (saved)
// Backward, with norm_c = (x_c - mean) * rstd and dnorm_c = weight_c * dout_c:
//   dinp_c    += rstd * (dnorm_c - mean_c'(dnorm) - norm_c * mean_c'(dnorm * norm))
//   dweight_c += sum_n dout_nc * norm_nc ;   dbias_c += sum_n dout_nc
//
// Forward, vectorized path (C a multiple of the 16-byte vector width V = 16 / sizeof(T), at most
// 7 * 32 * V channels, 16-byte aligned rows): one warp per row; the row is loaded once into
// registers with 16-byte loads (lane l holds vectors l, l + 32, ...), mean and variance are two
// passes over the registers. General path (other C): one warp per row, two strided passes (the row
// is re-read from L1/L2).
// Fused residual + LayerNorm forward (residual_layernorm_forward): res = a + b, rounded once to T
// and stored, and LayerNorm of that stored value: exactly residual_forward followed by
// layernorm_forward (cpu::residual_forward + cpu::layernorm_forward), with one read of a and b
// instead of a write and a re-read of res (vectorized path; other C run the two kernels).
// The output is formed by ln_out (explicitly rounded operations) in every forward path and in
// layernorm_recompute (activation recompute from the saved mean/rstd), so both give the same bits.
// ln_out and the steps of the vectorized forward live in layernorm.cuh, shared with the batch
// decoder's Linear (kernels/decode_batch.cu), which normalises its input rows the same way.
// Backward, vectorized path (C a multiple of the 16-byte vector width V = 16 / sizeof(T) and
// C <= 7 * 32 * V: 1792 channels in bf16, 896 in fp32), two kernels and a final sum:
//   dinp: one warp per row; inp, dout and dinp of the row are loaded as 16-byte vectors (lane l
//   holds vectors l, l + 32, ...) before any arithmetic, the two row sums reduced with shuffles.
//   dweight/dbias: a column reduction; thread (x, y) of a (32, 8) block owns one vector of
//   channels and rows y, y + 8, ... of a chunk of rows, the 8 row lanes are added in y order into
//   one partial row pair [2][C] per (chunk, tile) in `scratch`; a last kernel adds the chunks of
//   each channel in chunk order. No atomics: deterministic; the chunks depend on N only.
//   This reads inp and dout twice. It replaced a one-pass kernel that kept the dweight/dbias sums
//   in registers (158-254 per thread, one block per SM), which ran at 18-39% of its bandwidth
//   floor; this path is 1.3x (C = 768) to 2.5x (C = 1280) faster (docs/notebook/benchmarks.md).
// Backward, general path (other C): dinp one warp per row (two strided passes); dweight/dbias a
// two-stage column reduction (stage 1: per (32-channel tile, chunk of rows) partial sums in
// `scratch`, stage 2: the chunks of each channel in chunk order).
#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "cuda/ops_cuda.h"
#include "layernorm.cuh"

namespace sgpt::cuda {

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
    const float b = bias ? to_f(bias[c]) : 0.0f;
    o[c] = from_f<T>(ln_out(to_f(x[c]), m, r, to_f(weight[c]), bias ? &b : nullptr));
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

constexpr int kLnBwdWarps = 8;
constexpr int kLnFwdWarps = 8;

// grid: ceil(N / 8); block: 256 (a warp per row). kResidual: x = round_T(a + b), stored in res.
template <class T, int NCH, bool kResidual>
__global__ void __launch_bounds__(kLnFwdWarps * 32)
    layernorm_forward_vec_kernel(T* out, float* mean, float* rstd, T* res, const T* a,
                                 const T* b, const T* weight, const T* bias, int N, int C) {
  constexpr int V = Vec<T>::n;
  const int row = blockIdx.x * kLnFwdWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const size_t base = size_t(row) * C;
  float xv[NCH][V];
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < NCH; ++i) {
    const int c0 = (lane + 32 * i) * V;
    if (c0 < C) {
      load_vec(xv[i], a + base + c0);
      if constexpr (kResidual) {
        float bv[V];
        load_vec(bv, b + base + c0);
#pragma unroll
        for (int j = 0; j < V; ++j) xv[i][j] = to_f(from_f<T>(xv[i][j] + bv[j]));
        store_vec(res + base + c0, xv[i]);
      }
      ln_vec_sum(s, xv[i]);
    }
  }
  float m, r;
  ln_vec_finish(out + base, xv, s, weight, bias, C, lane, m, r);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// Launches the vectorized forward when C and the pointers allow it; false otherwise.
template <class T, bool kResidual>
bool layernorm_forward_vec(T* out, float* mean, float* rstd, T* res, const T* a, const T* b,
                           const T* weight, const T* bias, int N, int C, cudaStream_t stream) {
  constexpr int V = Vec<T>::n;
  const auto aligned = [](const void* p) {
    return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0;
  };
  if (C % V != 0 || !aligned(out) || !aligned(res) || !aligned(a) || !aligned(b) ||
      !aligned(weight) || !aligned(bias))
    return false;
  const unsigned grid = ceil_div(N, kLnFwdWarps);
  switch (ceil_div(C, 32 * V)) {
#define SGPT_LN_FWD_CASE(K)                                                                    \
  case K:                                                                                      \
    layernorm_forward_vec_kernel<T, K, kResidual><<<grid, kLnFwdWarps * 32, 0, stream>>>(      \
        out, mean, rstd, res, a, b, weight, bias, N, C);                                       \
    break;
    SGPT_LN_FWD_CASE(1)
    SGPT_LN_FWD_CASE(2)
    SGPT_LN_FWD_CASE(3)
    SGPT_LN_FWD_CASE(4)
    SGPT_LN_FWD_CASE(5)
    SGPT_LN_FWD_CASE(6)
    SGPT_LN_FWD_CASE(7)
#undef SGPT_LN_FWD_CASE
    default: return false;  // wider rows: the general path
  }
  static_assert(kLnVecMaxChunks == 7, "one case per chunk count above");
  SGPT_LAUNCH_CHECK();
  return true;
}

// Stage 2 of the vectorized backward. block (32, 8), grid ceil(C/32): thread (x, y) sums chunks
// y, y + 8, ... of channel blockIdx.x * 32 + x; the 8 partial sums are added in y order.
template <class T>
__global__ void layernorm_backward_params_reduce(T* dweight, T* dbias, const float* partial,
                                                 int chunks, int C) {
  __shared__ float sw[8][33], sb[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float w = 0.0f, b = 0.0f;
  if (c < C)
    for (int k = threadIdx.y; k < chunks; k += 8) {
      w += partial[(size_t(k) * 2) * C + c];
      b += partial[(size_t(k) * 2 + 1) * C + c];
    }
  sw[threadIdx.y][threadIdx.x] = w;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    w = 0.0f, b = 0.0f;
    for (int i = 0; i < 8; ++i) {
      w += sw[i][threadIdx.x];
      b += sb[i][threadIdx.x];
    }
    dweight[c] = from_f<T>(to_f(dweight[c]) + w);
    if (dbias) dbias[c] = from_f<T>(to_f(dbias[c]) + b);
  }
}

// ---- vectorized backward (see the top of the file) ----
// dinp: grid ceil(N / 8), block 256 (a warp per row). The row's inp, dout and dinp are loaded as
// packed 16-byte vectors before any arithmetic (one memory wait per row).
// Two blocks per SM up to 5 vectors per lane (bf16 at 5: 128 registers with 48 bytes of spill
// stores instead of 146 registers and one block; ptxas, sm_90).
template <class T, int NCH>
__global__ void __launch_bounds__(kLnBwdWarps * 32, NCH <= 5 ? 2 : 1)
    layernorm_backward_dinp_vec_kernel(T* dinp, const T* dout, const T* inp, const T* weight,
                                       const float* mean, const float* rstd, int N, int C) {
  constexpr int V = Vec<T>::n;
  const int row = blockIdx.x * kLnBwdWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const size_t base = size_t(row) * C;
  Vec<T> xr[NCH], dyr[NCH], dxr[NCH];
#pragma unroll
  for (int i = 0; i < NCH; ++i) {
    const int c0 = (lane + 32 * i) * V;
    if (c0 < C) {
      xr[i] = *reinterpret_cast<const Vec<T>*>(inp + base + c0);
      dyr[i] = *reinterpret_cast<const Vec<T>*>(dout + base + c0);
      dxr[i] = *reinterpret_cast<const Vec<T>*>(dinp + base + c0);
    }
  }
  const float m = mean[row], r = rstd[row];
  float a = 0.0f, b = 0.0f;
#pragma unroll
  for (int i = 0; i < NCH; ++i) {
    const int c0 = (lane + 32 * i) * V;
    if (c0 < C) {
      float wv[V];
      load_vec(wv, weight + c0);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float norm = (to_f(xr[i].v[j]) - m) * r;
        const float dnorm = wv[j] * to_f(dyr[i].v[j]);
        a += dnorm;
        b += dnorm * norm;
      }
    }
  }
  const float dnorm_mean = warp_sum(a) / C, dnorm_norm_mean = warp_sum(b) / C;
#pragma unroll
  for (int i = 0; i < NCH; ++i) {
    const int c0 = (lane + 32 * i) * V;
    if (c0 < C) {
      float wv[V], dxv[V];
      load_vec(wv, weight + c0);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float norm = (to_f(xr[i].v[j]) - m) * r;
        const float dnorm = wv[j] * to_f(dyr[i].v[j]);
        dxv[j] = to_f(dxr[i].v[j]) + (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r;
      }
      store_vec(dinp + base + c0, dxv);
    }
  }
}

// dweight/dbias stage 1: block (32, 8), grid (ceil(C / (32 V)), chunks). Thread (x, y) owns the V
// channels of vector x of its block's tile and rows y, y + 8, ... of the chunk (16-byte loads; a
// warp reads 32 consecutive vectors of one row); the 8 row lanes are then added in y order.
// partial: [chunks][2][C], summed over the chunks in order by layernorm_backward_params_reduce.
template <class T>
__global__ void __launch_bounds__(256)
    layernorm_backward_params_vec_partial(float* partial, const T* dout, const T* inp,
                                          const float* mean, const float* rstd, int N, int C,
                                          int rows_per_chunk) {
  constexpr int V = Vec<T>::n;
  __shared__ float sw[8][32 * V], sb[8][32 * V];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c0 = (blockIdx.x * 32 + tx) * V;
  const int r0 = blockIdx.y * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  float aw[V], ab[V];
#pragma unroll
  for (int j = 0; j < V; ++j) aw[j] = ab[j] = 0.0f;
  if (c0 < C) {
#pragma unroll 4
    for (int row = r0 + ty; row < r1; row += 8) {
      float xv[V], dyv[V];
      load_vec(xv, inp + size_t(row) * C + c0);
      load_vec(dyv, dout + size_t(row) * C + c0);
      const float m = mean[row], r = rstd[row];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        aw[j] += dyv[j] * ((xv[j] - m) * r);
        ab[j] += dyv[j];
      }
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) {
    sw[ty][tx * V + j] = aw[j];
    sb[ty][tx * V + j] = ab[j];
  }
  __syncthreads();
  // 256 threads, 32 V channels in the tile: each thread finishes V / 8 (bf16: 1) or, for fp32
  // (V = 4), threads 0..127 one channel each.
  for (int k = ty * 32 + tx; k < 32 * V; k += 256) {
    const int c = blockIdx.x * 32 * V + k;
    if (c >= C) continue;
    float w = 0.0f, b = 0.0f;
    for (int i = 0; i < 8; ++i) {
      w += sw[i][k];
      b += sb[i][k];
    }
    partial[(size_t(blockIdx.y) * 2) * C + c] = w;
    partial[(size_t(blockIdx.y) * 2 + 1) * C + c] = b;
  }
}

template <class T, int NCH>
void layernorm_backward_vec(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                              const T* weight, const float* mean, const float* rstd, int N, int C,
                              Scratch& scratch, cudaStream_t stream) {
  constexpr int V = Vec<T>::n;
  layernorm_backward_dinp_vec_kernel<T, NCH><<<ceil_div(N, kLnBwdWarps), kLnBwdWarps * 32, 0,
                                               stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
  SGPT_LAUNCH_CHECK();
  // ~256 rows per chunk (32 per thread), at most 256 chunks: depends on N only (determinism).
  const int chunks = static_cast<int>(std::min<size_t>(256, ceil_div(N, 256)));
  const int rows_per_chunk = static_cast<int>(ceil_div(N, chunks));
  float* partial = scratch.floats(size_t(chunks) * 2 * C);
  layernorm_backward_params_vec_partial<T><<<dim3(ceil_div(C, 32 * V), chunks), dim3(32, 8), 0,
                                             stream>>>(partial, dout, inp, mean, rstd, N, C,
                                                       rows_per_chunk);
  SGPT_LAUNCH_CHECK();
  layernorm_backward_params_reduce<<<ceil_div(C, 32), dim3(32, 8), 0, stream>>>(dweight, dbias,
                                                                               partial, chunks, C);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, int N, int C, cudaStream_t stream) {
  if (N == 0) return;
  if (layernorm_forward_vec<T, false>(out, mean, rstd, nullptr, inp, nullptr, weight, bias, N, C,
                                      stream))
    return;
  constexpr int kWarps = 8;
  layernorm_forward_kernel<<<ceil_div(N, kWarps), kWarps * 32, 0, stream>>>(out, mean, rstd, inp,
                                                                           weight, bias, N, C);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void residual_layernorm_forward(T* res, T* out, float* mean, float* rstd, const T* a, const T* b,
                                const T* weight, const T* bias, int N, int C,
                                cudaStream_t stream) {
  if (N == 0) return;
  if (layernorm_forward_vec<T, true>(out, mean, rstd, res, a, b, weight, bias, N, C, stream))
    return;
  residual_forward(res, a, b, size_t(N) * C, stream);
  layernorm_forward(out, mean, rstd, res, weight, bias, N, C, stream);
}

// Activation recompute: out from inp and the saved mean/rstd, one thread per 16-byte vector of a
// row (C a multiple of V, 16-byte aligned tensors) or per element otherwise; grid-stride.
template <class T, bool kVec>
__global__ void layernorm_recompute_kernel(T* out, const T* inp, const float* mean,
                                           const float* rstd, const T* weight, const T* bias,
                                           int N, int C) {
  constexpr int V = kVec ? Vec<T>::n : 1;
  const size_t per_row = size_t(C) / V, n = size_t(N) * per_row;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const size_t row = i / per_row;
    const int c0 = static_cast<int>(i - row * per_row) * V;
    const float m = mean[row], r = rstd[row];
    float x[V], w[V], b[V], y[V];
    if constexpr (kVec) {
      load_vec(x, inp + row * C + c0);
      load_vec(w, weight + c0);
      if (bias) load_vec(b, bias + c0);
    } else {
      x[0] = to_f(inp[row * C + c0]);
      w[0] = to_f(weight[c0]);
      if (bias) b[0] = to_f(bias[c0]);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) y[j] = ln_out(x[j], m, r, w[j], bias ? &b[j] : nullptr);
    if constexpr (kVec) store_vec(out + row * C + c0, y);
    else out[row * C + c0] = from_f<T>(y[0]);
  }
}

template <class T>
void layernorm_recompute(T* out, const T* inp, const float* mean, const float* rstd,
                         const T* weight, const T* bias, int N, int C, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int V = Vec<T>::n;
  const auto aligned = [](const void* p) {
    return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0;
  };
  const bool vec = C % V == 0 && aligned(out) && aligned(inp) && aligned(weight) && aligned(bias);
  const size_t n = size_t(N) * C / (vec ? V : 1);
  const unsigned grid = std::max(1u, std::min(ceil_div(n, 256), 65535u * 4));
  if (vec)
    layernorm_recompute_kernel<T, true><<<grid, 256, 0, stream>>>(out, inp, mean, rstd, weight,
                                                                  bias, N, C);
  else
    layernorm_recompute_kernel<T, false><<<grid, 256, 0, stream>>>(out, inp, mean, rstd, weight,
                                                                   bias, N, C);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                        const T* weight, const float* mean, const float* rstd, int N, int C,
                        Scratch& scratch, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int V = Vec<T>::n;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (C % V == 0 && aligned(dinp) && aligned(dout) && aligned(inp) && aligned(weight)) {
    switch (ceil_div(C, 32 * V)) {
#define SGPT_LN_BWD_CASE(K)                                                                    \
  case K:                                                                                      \
    return layernorm_backward_vec<T, K>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, \
                                        C, scratch, stream);
      SGPT_LN_BWD_CASE(1)
      SGPT_LN_BWD_CASE(2)
      SGPT_LN_BWD_CASE(3)
      SGPT_LN_BWD_CASE(4)
      SGPT_LN_BWD_CASE(5)
      SGPT_LN_BWD_CASE(6)
      SGPT_LN_BWD_CASE(7)
#undef SGPT_LN_BWD_CASE
      default: break;  // wider rows: the general path
    }
  }
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
  template void residual_layernorm_forward<T>(T*, T*, float*, float*, const T*, const T*,       \
                                              const T*, const T*, int, int, cudaStream_t);     \
  template void layernorm_recompute<T>(T*, const T*, const float*, const float*, const T*,      \
                                       const T*, int, int, cudaStream_t);                      \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const float*,  \
                                      const float*, int, int, Scratch&, cudaStream_t);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(bf16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
