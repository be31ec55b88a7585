// Causal multi-head self-attention, our own fused kernels (the fallback when cuDNN is absent).
//
// Layout: inp [B, T, 3C] holds q | k | v per position, each [NH, hs] (hs = C / NH); out [B, T, C]
// in the same head-major order. For head h and query t, with s_tj = scale * q_t . k_j (j <= t):
//   lse_t = log sum_{j<=t} exp(s_tj)                    (saved, [B, NH, T] fp32)
//   P_tj  = exp(s_tj - lse_t) ;  out_t = sum_j P_tj v_j
// Backward (the probabilities are recomputed from lse, never stored):
//   D_t    = dout_t . out_t   (= sum_j P_tj (dout_t . v_j))
//   dS_tj  = P_tj (dout_t . v_j - D_t)
//   dq_t  += scale sum_j dS_tj k_j ;  dk_j += scale sum_t dS_tj q_t ;  dv_j += sum_t P_tj dout_t
// Matches cpu::attention_forward/backward (which store P instead of lse) up to rounding.
//
// Work split (all deterministic: every output element is written by one thread, sums in fixed
// order, no atomics). A block = 4 warps = a tile of 32 rows (queries for forward and dq, keys for
// dk/dv) of one (batch, head); each warp owns 8 rows. The other side is streamed through shared
// memory in tiles of 32: lane j computes the score against row j of the streamed tile (shared rows
// padded to hs+1 floats, so the 32 lanes hit 32 banks), then the warp accumulates products over
// the 32 streamed rows with lane-broadcasts (__shfl_sync); lane l owns output dims l, l+32, ...
// (R = ceil(hs/32) registers per row). Softmax in the forward is online (running max and sum per
// query, rescaled per tile). Arithmetic is fp32 for every storage type.
//
// bf16 with head size 64 (and 16-byte aligned tensors) goes to the tensor-core kernels of
// kernels/flash_attention.cu instead; these kernels stay the fp32 path and the fallback.
#include <algorithm>
#include <type_traits>

#include "common.cuh"
#include "cuda/ops_cuda.h"

namespace sgpt::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 8;
constexpr int kTile = kWarps * kRowsPerWarp;  // 32 rows of the block's own side
constexpr int kStream = 32;                   // rows of the streamed side per step

// Copies rows [r0, r0 + rows) of one head's slot (q, k or v) into shared memory as fp32,
// rows with index >= T_ as zeros. dst row stride `ld`.
template <class T>
__device__ void load_rows(float* dst, int ld, const T* base, size_t row_stride, int r0, int rows,
                          int T_, int hs) {
  for (int i = threadIdx.x; i < rows * hs; i += blockDim.x) {
    const int r = i / hs, d = i % hs;
    const int t = r0 + r;
    dst[r * ld + d] = t < T_ ? to_f(base[size_t(t) * row_stride + d]) : 0.0f;
  }
}

// grid: (ceil(T/kTile), NH, B); dynamic smem: Q [kTile][hs], K [kStream][hs+1], V [kStream][hs]
template <class T, int R, int HS>
__global__ void __launch_bounds__(kWarps * 32)
    attention_forward_kernel(T* out, float* lse, const T* inp, int T_, int C, int NH, float scale) {
  extern __shared__ float smem[];
  const int hs = HS > 0 ? HS : C / NH;  // HS > 0: head size known at compile time
  float* Qs = smem;
  float* Ks = Qs + kTile * hs;
  float* Vs = Ks + kStream * (hs + 1);
  const int b = blockIdx.z, h = blockIdx.y;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kTile;  // heavy (late) tiles first
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t C3 = size_t(3) * C;
  const T* qbase = inp + size_t(b) * T_ * C3 + size_t(h) * hs;
  load_rows(Qs, hs, qbase, C3, q0, kTile, T_, hs);

  float mrun[kRowsPerWarp], lrun[kRowsPerWarp], acc[kRowsPerWarp][R];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    mrun[i] = -INFINITY;
    lrun[i] = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) acc[i][r] = 0.0f;
  }
  const int last_query = min(T_ - 1, q0 + kTile - 1);
  for (int k0 = 0; k0 <= last_query; k0 += kStream) {
    __syncthreads();  // previous tile consumed (and Q loaded on the first pass)
    load_rows(Ks, hs + 1, qbase + C, C3, k0, kStream, T_, hs);
    load_rows(Vs, hs, qbase + 2 * C, C3, k0, kStream, T_, hs);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int qi = warp * kRowsPerWarp + i, t = q0 + qi;
      if (t >= T_) continue;  // warp-uniform
      const int j = k0 + lane;
      float s = -INFINITY;
      if (j <= t) {
        float dot = 0.0f;
        
#pragma unroll 16
        for (int d = 0; d < hs; ++d) dot += Qs[qi * hs + d] * Ks[lane * (hs + 1) + d];
        s = dot * scale;
      }
      const float mnew = fmaxf(mrun[i], warp_max(s));  // finite: key k0 <= t is always present
      const float p = j <= t ? expf(s - mnew) : 0.0f;
      const float corr = expf(mrun[i] - mnew);
      lrun[i] = lrun[i] * corr + warp_sum(p);
      mrun[i] = mnew;
#pragma unroll
      for (int r = 0; r < R; ++r) acc[i][r] *= corr;
      for (int jj = 0; jj < kStream; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int d = lane + 32 * r;
          if (d < hs) acc[i][r] += pj * Vs[jj * hs + d];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int t = q0 + warp * kRowsPerWarp + i;
    if (t >= T_) continue;
    const float inv = 1.0f / lrun[i];
    T* o = out + (size_t(b) * T_ + t) * C + size_t(h) * hs;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int d = lane + 32 * r;
      if (d < hs) o[d] = from_f<T>(acc[i][r] * inv);
    }
    if (lane == 0) lse[(size_t(b) * NH + h) * T_ + t] = mrun[i] + logf(lrun[i]);
  }
}

// D[b,h,t] = dout_t . out_t ; one warp per (b, t, h).
template <class T>
__global__ void attention_rowdot_kernel(float* D, const T* dout, const T* out, int B, int T_, int C,
                                        int NH) {
  const int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int hs = C / NH;
  if (w >= B * T_ * NH) return;
  const int h = w % NH, t = (w / NH) % T_, b = w / (NH * T_);
  const size_t off = (size_t(b) * T_ + t) * C + size_t(h) * hs;
  float s = 0.0f;
  for (int d = lane; d < hs; d += 32) s += to_f(dout[off + d]) * to_f(out[off + d]);
  s = warp_sum(s);
  if (lane == 0) D[(size_t(b) * NH + h) * T_ + t] = s;
}

// dq. grid (ceil(T/kTile), NH, B). smem: Q, dO [kTile][hs]; K, V [kStream][hs+1]
template <class T, int R, int HS>
__global__ void __launch_bounds__(kWarps * 32)
    attention_backward_dq_kernel(T* dinp, const T* dout, const T* inp, const float* lse,
                                 const float* D, int T_, int C, int NH, float scale) {
  extern __shared__ float smem[];
  const int hs = HS > 0 ? HS : C / NH;  // HS > 0: head size known at compile time
  float* Qs = smem;
  float* dOs = Qs + kTile * hs;
  float* Ks = dOs + kTile * hs;
  float* Vs = Ks + kStream * (hs + 1);
  const int b = blockIdx.z, h = blockIdx.y;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t C3 = size_t(3) * C;
  const T* qbase = inp + size_t(b) * T_ * C3 + size_t(h) * hs;
  load_rows(Qs, hs, qbase, C3, q0, kTile, T_, hs);
  load_rows(dOs, hs, dout + size_t(b) * T_ * C + size_t(h) * hs, size_t(C), q0, kTile, T_, hs);
  const float* lse_bh = lse + (size_t(b) * NH + h) * T_;
  const float* D_bh = D + (size_t(b) * NH + h) * T_;

  float acc[kRowsPerWarp][R];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[i][r] = 0.0f;

  const int last_query = min(T_ - 1, q0 + kTile - 1);
  for (int k0 = 0; k0 <= last_query; k0 += kStream) {
    __syncthreads();
    load_rows(Ks, hs + 1, qbase + C, C3, k0, kStream, T_, hs);
    load_rows(Vs, hs + 1, qbase + 2 * C, C3, k0, kStream, T_, hs);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int qi = warp * kRowsPerWarp + i, t = q0 + qi;
      if (t >= T_) continue;
      const int j = k0 + lane;
      float ds = 0.0f;
      if (j <= t) {
        float qk = 0.0f, dv = 0.0f;
        
#pragma unroll 16
        for (int d = 0; d < hs; ++d) {
          qk += Qs[qi * hs + d] * Ks[lane * (hs + 1) + d];
          dv += dOs[qi * hs + d] * Vs[lane * (hs + 1) + d];
        }
        const float p = expf(qk * scale - lse_bh[t]);
        ds = p * (dv - D_bh[t]);
      }
      for (int jj = 0; jj < kStream; ++jj) {
        const float dsj = __shfl_sync(0xffffffffu, ds, jj);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int d = lane + 32 * r;
          if (d < hs) acc[i][r] += dsj * Ks[jj * (hs + 1) + d];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int t = q0 + warp * kRowsPerWarp + i;
    if (t >= T_) continue;
    T* dq = dinp + (size_t(b) * T_ + t) * C3 + size_t(h) * hs;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int d = lane + 32 * r;
      if (d < hs) dq[d] = from_f<T>(to_f(dq[d]) + scale * acc[i][r]);
    }
  }
}

// dk, dv. grid (ceil(T/kTile), NH, B). smem: K, V [kTile][hs]; Q, dO [kStream][hs+1];
// lse, D [kStream]
template <class T, int R, int HS>
__global__ void __launch_bounds__(kWarps * 32)
    attention_backward_dkdv_kernel(T* dinp, const T* dout, const T* inp, const float* lse,
                                   const float* D, int T_, int C, int NH, float scale) {
  extern __shared__ float smem[];
  const int hs = HS > 0 ? HS : C / NH;
  float* Ks = smem;
  float* Vs = Ks + kTile * hs;
  float* Qs = Vs + kTile * hs;
  float* dOs = Qs + kStream * (hs + 1);
  float* lses = dOs + kStream * (hs + 1);
  float* Ds = lses + kStream;
  const int b = blockIdx.z, h = blockIdx.y;
  const int j0 = blockIdx.x * kTile;  // early key tiles have the most queries: launched first
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t C3 = size_t(3) * C;
  const T* qbase = inp + size_t(b) * T_ * C3 + size_t(h) * hs;
  const T* dobase = dout + size_t(b) * T_ * C + size_t(h) * hs;
  load_rows(Ks, hs, qbase + C, C3, j0, kTile, T_, hs);
  load_rows(Vs, hs, qbase + 2 * C, C3, j0, kTile, T_, hs);
  const float* lse_bh = lse + (size_t(b) * NH + h) * T_;
  const float* D_bh = D + (size_t(b) * NH + h) * T_;

  float dk[kRowsPerWarp][R], dv[kRowsPerWarp][R];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r) dk[i][r] = dv[i][r] = 0.0f;

  for (int t0 = (j0 / kStream) * kStream; t0 < T_; t0 += kStream) {
    __syncthreads();
    load_rows(Qs, hs + 1, qbase, C3, t0, kStream, T_, hs);
    load_rows(dOs, hs + 1, dobase, size_t(C), t0, kStream, T_, hs);
    if (threadIdx.x < kStream) {
      const int t = t0 + threadIdx.x;
      lses[threadIdx.x] = t < T_ ? lse_bh[t] : 0.0f;
      Ds[threadIdx.x] = t < T_ ? D_bh[t] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int ki = warp * kRowsPerWarp + i, j = j0 + ki;
      if (j >= T_) continue;
      const int t = t0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (t < T_ && t >= j) {
        float qk = 0.0f, dov = 0.0f;
        
#pragma unroll 16
        for (int d = 0; d < hs; ++d) {
          qk += Qs[lane * (hs + 1) + d] * Ks[ki * hs + d];
          dov += dOs[lane * (hs + 1) + d] * Vs[ki * hs + d];
        }
        p = expf(qk * scale - lses[lane]);
        ds = p * (dov - Ds[lane]);
      }
      for (int tt = 0; tt < kStream; ++tt) {
        const float pt = __shfl_sync(0xffffffffu, p, tt);
        const float dst = __shfl_sync(0xffffffffu, ds, tt);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int d = lane + 32 * r;
          if (d < hs) {
            dv[i][r] += pt * dOs[tt * (hs + 1) + d];
            dk[i][r] += dst * Qs[tt * (hs + 1) + d];
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int j = j0 + warp * kRowsPerWarp + i;
    if (j >= T_) continue;
    T* dkp = dinp + (size_t(b) * T_ + j) * C3 + C + size_t(h) * hs;
    T* dvp = dkp + C;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int d = lane + 32 * r;
      if (d < hs) {
        dkp[d] = from_f<T>(to_f(dkp[d]) + scale * dk[i][r]);
        dvp[d] = from_f<T>(to_f(dvp[d]) + dv[i][r]);
      }
    }
  }
}

template <class Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    SGPT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
}

void check_head_size(int C, int NH) {
  if (NH <= 0 || C % NH != 0 || C / NH > 128)
    throw_error("attention", "head size C/NH must be an integer <= 128 (C=" + std::to_string(C) +
                    ", NH=" + std::to_string(NH) + ")",
                "check_head_size", __FILE__, __LINE__);
}

template <class T, int R, int HS>
void forward_launch(T* out, float* lse, const T* inp, int B, int T_, int C, int NH, float scale,
                    cudaStream_t stream) {
  const int hs = C / NH;
  const size_t smem = sizeof(float) * (kTile * hs + kStream * (hs + 1) + kStream * hs);
  set_smem(attention_forward_kernel<T, R, HS>, smem);
  dim3 grid(ceil_div(T_, kTile), NH, B);
  attention_forward_kernel<T, R, HS><<<grid, kWarps * 32, smem, stream>>>(out, lse, inp, T_, C, NH,
                                                                      scale);
  SGPT_LAUNCH_CHECK();
}

template <class T, int R, int HS>
void backward_launch(T* dinp, const T* dout, const T* inp, const float* lse, const float* D, int B,
                     int T_, int C, int NH, float scale, cudaStream_t stream) {
  const int hs = C / NH;
  dim3 grid(ceil_div(T_, kTile), NH, B);
  const size_t smem_dq = sizeof(float) * (2 * kTile * hs + 2 * kStream * (hs + 1));
  set_smem(attention_backward_dq_kernel<T, R, HS>, smem_dq);
  attention_backward_dq_kernel<T, R, HS><<<grid, kWarps * 32, smem_dq, stream>>>(
      dinp, dout, inp, lse, D, T_, C, NH, scale);
  SGPT_LAUNCH_CHECK();
  const size_t smem_kv = sizeof(float) * (2 * kTile * hs + 2 * kStream * (hs + 1) + 2 * kStream);
  set_smem(attention_backward_dkdv_kernel<T, R, HS>, smem_kv);
  attention_backward_dkdv_kernel<T, R, HS><<<grid, kWarps * 32, smem_kv, stream>>>(
      dinp, dout, inp, lse, D, T_, C, NH, scale);
  SGPT_LAUNCH_CHECK();
}

}  // namespace

template <class T>
void attention_forward(T* out, float* lse, const T* inp, int B, int T_, int C, int NH, float scale,
                       cudaStream_t stream) {
  check_head_size(C, NH);
  if (B == 0 || T_ == 0) return;
  if constexpr (std::is_same_v<T, bf16>) {
    if (flash_attention_usable(inp, out, C, NH))
      return flash_attention_forward(out, lse, inp, B, T_, C, NH, scale, stream);
  }
  if (C / NH == 64) return forward_launch<T, 2, 64>(out, lse, inp, B, T_, C, NH, scale, stream);
  switch ((C / NH + 31) / 32) {
    case 1: forward_launch<T, 1, 0>(out, lse, inp, B, T_, C, NH, scale, stream); break;
    case 2: forward_launch<T, 2, 0>(out, lse, inp, B, T_, C, NH, scale, stream); break;
    case 3: forward_launch<T, 3, 0>(out, lse, inp, B, T_, C, NH, scale, stream); break;
    default: forward_launch<T, 4, 0>(out, lse, inp, B, T_, C, NH, scale, stream); break;
  }
}

template <class T>
void attention_backward(T* dinp, const T* dout, const T* inp, const T* out, const float* lse,
                        int B, int T_, int C, int NH, float scale, Scratch& scratch,
                        cudaStream_t stream, bool accumulate) {
  check_head_size(C, NH);
  if (B == 0 || T_ == 0) return;
  float* D = scratch.floats(size_t(B) * NH * T_);
  const size_t rows = size_t(B) * T_ * NH;
  attention_rowdot_kernel<<<ceil_div(rows, 8), 256, 0, stream>>>(D, dout, out, B, T_, C, NH);
  SGPT_LAUNCH_CHECK();
  if constexpr (std::is_same_v<T, bf16>) {
    if (flash_attention_usable(inp, dinp, C, NH) && flash_attention_usable(dout, out, C, NH))
      return flash_attention_backward(dinp, dout, inp, lse, D, B, T_, C, NH, scale, stream,
                                      accumulate);
  }
  if (!accumulate)
    SGPT_CUDA_CHECK(cudaMemsetAsync(dinp, 0, sizeof(T) * size_t(B) * T_ * 3 * C, stream));
  if (C / NH == 64)
    return backward_launch<T, 2, 64>(dinp, dout, inp, lse, D, B, T_, C, NH, scale, stream);
  switch ((C / NH + 31) / 32) {
    case 1: backward_launch<T, 1, 0>(dinp, dout, inp, lse, D, B, T_, C, NH, scale, stream); break;
    case 2: backward_launch<T, 2, 0>(dinp, dout, inp, lse, D, B, T_, C, NH, scale, stream); break;
    case 3: backward_launch<T, 3, 0>(dinp, dout, inp, lse, D, B, T_, C, NH, scale, stream); break;
    default: backward_launch<T, 4, 0>(dinp, dout, inp, lse, D, B, T_, C, NH, scale, stream); break;
  }
}

#define SGPT_INSTANTIATE(T)                                                                    \
  template void attention_forward<T>(T*, float*, const T*, int, int, int, int, float,          \
                                     cudaStream_t);                                            \
  template void attention_backward<T>(T*, const T*, const T*, const T*, const float*, int, int, \
                                      int, int, float, Scratch&, cudaStream_t, bool);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(bf16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
