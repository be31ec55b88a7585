// Tangent kernels of the GPT-2 ops (forward mode along a direction u), for the exact
// Hessian-vector product on the GPU (src/cuda/hvp_cuda.cpp; declarations in cuda/tangent_cuda.h).
// A dot (ẋ, written x_t in code) is the directional derivative along u; every formula below is
// the derivative of the primal op's formula (src/cpu/ops.cpp) by the product rule. Arithmetic in
// fp32 whatever the storage type; every reduction is in a fixed order (warp butterflies, block
// trees, chunked column sums added in chunk order): no atomics, the same inputs give the same bits.
//
// LayerNorm, per row, with s = rstd, xh_c = (x_c - mean) s (mean, rstd as the primal forward
// saved them):
//   forward    a = mean_c(ẋ), b = mean_c(xh ẋ)
//              ẋh_c = s (ẋ_c - a - xh_c b)            (ṡ = -s^2 b, the mean's tangent is a)
//              ẏ_c = ẋh_c w_c + xh_c u_w,c (+ u_b,c)
//   backward   g = w dy, ġ = u_w dy + w ḋy ; A = mean(g), B = mean(g xh) ;
//              Ȧ = mean(ġ), Ḃ = mean(ġ xh + g ẋh)
//              dx_c  += s (g_c - A - xh_c B)
//              ḋx_c  += ṡ (g_c - A - xh_c B) + s (ġ_c - Ȧ - ẋh_c B - xh_c Ḃ)
//              ḋw_c  += sum_n (ḋy_c xh_c + dy_c ẋh_c) ;  ḋb_c += sum_n ḋy_c
//   One warp per row for the row terms (a, b saved per row in `rowstats` for the column sums);
//   the column sums in two stages (per (32-column tile, chunk of rows) partials, then the chunks
//   of each column in order), as matmul_backward's dbias.
// GELU, tanh form: y = 0.5 x (1 + th), th = tanh(v), v = k0 (x + k1 x^3), sech2 = 1 - th^2,
//   v' = k0 (1 + 3 k1 x^2), v'' = 6 k0 k1 x,
//   gelu'  = 0.5 (1 + th) + 0.5 x sech2 v'
//   gelu'' = sech2 (v' + 0.5 x (v'' - 2 th v'^2))
//   forward ẏ = gelu'(x) ẋ ; backward dx += gelu'(x) dy, ḋx += gelu''(x) ẋ dy + gelu'(x) ḋy.
// Cross-entropy over the first V columns, p = softmax(z[:V]), ż the logits' tangent:
//   loss = log S - (z_target - M) ; dz_j = dloss (p_j - [j = target]) ;
//   ḋz_j = dloss ṗ_j = dloss p_j (ż_j - <p, ż>) ; both 0 in the padded columns.
//   One block per row, in place (each element read, then written, by the same thread).
// Attention (per batch and head, T x T matrices in fp32; the products are cuBLAS GEMMs in
// hvp_cuda.cpp): P = causal softmax(S) row by row; its tangent Ṗ = P (Ṡ - rowsum(P Ṡ)); the
// softmax backward dS = P (dP - r), r = rowsum(P dP), and its tangent
// ḋS = Ṗ (dP - r) + P (ḋP - ṙ), ṙ = rowsum(Ṗ dP + P ḋP). Rows sum over j <= t only; entries above
// the diagonal are written 0. One warp per row.
#include <algorithm>

#include "common.cuh"
#include "cuda/tangent_cuda.h"

namespace sgpt::cuda {

namespace {

constexpr float kGeluK0 = 0.7978845608028654f;  // sqrt(2/pi), as kernels/gelu.cu
constexpr float kGeluK1 = 0.044715f;

unsigned grid_for(size_t n, int threads) {
  return std::max(1u, std::min(ceil_div(n, threads), 65535u * 4));
}

// ------------------------------------------------------------------------------ LayerNorm

template <class T>
__global__ void ln_forward_tangent_kernel(T* out_t, const T* inp, const T* inp_t,
                                          const float* mean, const float* rstd, const T* weight,
                                          const T* weight_t, const T* bias_t, int N, int C) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* x = inp + size_t(row) * C;
  const T* xt = inp_t + size_t(row) * C;
  const float m = mean[row], s = rstd[row];
  float sa = 0.0f, sb = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float xtc = to_f(xt[c]);
    sa += xtc;
    sb += (to_f(x[c]) - m) * s * xtc;
  }
  const float a = warp_sum(sa) / C, b = warp_sum(sb) / C;
  T* o = out_t + size_t(row) * C;
  for (int c = lane; c < C; c += 32) {
    const float xh = (to_f(x[c]) - m) * s;
    const float xht = s * (to_f(xt[c]) - a - xh * b);
    float y = xht * to_f(weight[c]) + xh * to_f(weight_t[c]);
    if (bias_t) y += to_f(bias_t[c]);
    o[c] = from_f<T>(y);
  }
}

template <class T>
__global__ void ln_backward_tangent_rows_kernel(T* dinp, T* dinp_t, const T* dout,
                                                const T* dout_t, const T* inp, const T* inp_t,
                                                const T* weight, const T* weight_t,
                                                const float* mean, const float* rstd,
                                                float* rowstats, int N, int C) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const size_t off = size_t(row) * C;
  const T *x = inp + off, *xt = inp_t + off, *dy = dout + off, *dyt = dout_t + off;
  const float m = mean[row], s = rstd[row];
  // a = mean(ẋ), b = mean(xh ẋ)
  float sa = 0.0f, sb = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float xtc = to_f(xt[c]);
    sa += xtc;
    sb += (to_f(x[c]) - m) * s * xtc;
  }
  const float a = warp_sum(sa) / C, b = warp_sum(sb) / C;
  if (lane == 0) {
    rowstats[2 * size_t(row)] = a;
    rowstats[2 * size_t(row) + 1] = b;
  }
  const float st = -s * s * b;  // ṡ
  // A = mean(g), B = mean(g xh), Ȧ = mean(ġ), Ḃ = mean(ġ xh + g ẋh)
  float sA = 0.0f, sB = 0.0f, sAt = 0.0f, sBt = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float xh = (to_f(x[c]) - m) * s;
    const float xht = s * (to_f(xt[c]) - a - xh * b);
    const float w = to_f(weight[c]), d = to_f(dy[c]);
    const float g = w * d;
    const float gt = to_f(weight_t[c]) * d + w * to_f(dyt[c]);
    sA += g;
    sB += g * xh;
    sAt += gt;
    sBt += gt * xh + g * xht;
  }
  const float A = warp_sum(sA) / C, B = warp_sum(sB) / C;
  const float At = warp_sum(sAt) / C, Bt = warp_sum(sBt) / C;
  T *dx = dinp + off, *dxt = dinp_t + off;
  for (int c = lane; c < C; c += 32) {
    const float xh = (to_f(x[c]) - m) * s;
    const float xht = s * (to_f(xt[c]) - a - xh * b);
    const float w = to_f(weight[c]), d = to_f(dy[c]);
    const float g = w * d;
    const float gt = to_f(weight_t[c]) * d + w * to_f(dyt[c]);
    const float core = g - A - xh * B;
    dx[c] = from_f<T>(to_f(dx[c]) + s * core);
    dxt[c] = from_f<T>(to_f(dxt[c]) + st * core + s * (gt - At - xht * B - xh * Bt));
  }
}

// Stage 1 of the parameter tangents: block (32, 8), grid (ceil(C/32), chunks);
// partial [chunks][2][C]: (sum ḋy xh + dy ẋh, sum ḋy) over the chunk's rows.
template <class T>
__global__ void ln_backward_tangent_cols_kernel(float* partial, const T* dout, const T* dout_t,
                                                const T* inp, const T* inp_t, const float* mean,
                                                const float* rstd, const float* rowstats, int N,
                                                int C, int rows_per_chunk) {
  __shared__ float sw[8][33], sb[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  float aw = 0.0f, ab = 0.0f;
  if (c < C)
    for (int r = r0 + threadIdx.y; r < r1; r += 8) {
      const size_t i = size_t(r) * C + c;
      const float m = mean[r], s = rstd[r];
      const float a = rowstats[2 * size_t(r)], b = rowstats[2 * size_t(r) + 1];
      const float xh = (to_f(inp[i]) - m) * s;
      const float xht = s * (to_f(inp_t[i]) - a - xh * b);
      const float dyt = to_f(dout_t[i]);
      aw += dyt * xh + to_f(dout[i]) * xht;
      ab += dyt;
    }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float tw = 0.0f, tb = 0.0f;
    for (int k = 0; k < 8; ++k) {
      tw += sw[k][threadIdx.x];
      tb += sb[k][threadIdx.x];
    }
    partial[(size_t(blockIdx.y) * 2) * C + c] = tw;
    partial[(size_t(blockIdx.y) * 2 + 1) * C + c] = tb;
  }
}

// Stage 2: dweight_t[c] += sum over chunks in order (dbias_t likewise, when non-null).
template <class T>
__global__ void ln_backward_tangent_final_kernel(T* dweight_t, T* dbias_t, const float* partial,
                                                 int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float tw = 0.0f, tb = 0.0f;
  for (int k = 0; k < chunks; ++k) {
    tw += partial[(size_t(k) * 2) * C + c];
    tb += partial[(size_t(k) * 2 + 1) * C + c];
  }
  dweight_t[c] = from_f<T>(to_f(dweight_t[c]) + tw);
  if (dbias_t) dbias_t[c] = from_f<T>(to_f(dbias_t[c]) + tb);
}

// ------------------------------------------------------------------------------ GELU

__device__ __forceinline__ void gelu_derivatives(float x, float& d1, float& d2) {
  const float v = kGeluK0 * (x + kGeluK1 * x * x * x);
  const float th = tanhf(v);
  const float sech2 = 1.0f - th * th;
  const float v1 = kGeluK0 * (1.0f + 3.0f * kGeluK1 * x * x);
  const float v2 = 6.0f * kGeluK0 * kGeluK1 * x;
  d1 = 0.5f * (1.0f + th) + x * 0.5f * sech2 * v1;
  d2 = sech2 * (v1 + 0.5f * x * (v2 - 2.0f * th * v1 * v1));
}

template <class T>
__global__ void gelu_forward_tangent_kernel(T* out_t, const T* inp, const T* inp_t, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    float d1, d2;
    gelu_derivatives(to_f(inp[i]), d1, d2);
    out_t[i] = from_f<T>(d1 * to_f(inp_t[i]));
  }
}

template <class T>
__global__ void gelu_backward_tangent_kernel(T* dinp, T* dinp_t, const T* inp, const T* inp_t,
                                             const T* dout, const T* dout_t, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    float d1, d2;
    gelu_derivatives(to_f(inp[i]), d1, d2);
    const float dy = to_f(dout[i]);
    dinp[i] = from_f<T>(to_f(dinp[i]) + d1 * dy);
    dinp_t[i] = from_f<T>(to_f(dinp_t[i]) + d2 * to_f(inp_t[i]) * dy + d1 * to_f(dout_t[i]));
  }
}

// ------------------------------------------------------------------------------ cross-entropy

constexpr int kCeTangentThreads = 256;

template <class T>
__global__ void __launch_bounds__(kCeTangentThreads)
    crossentropy_tangent_kernel(float* losses, T* logits, T* logits_t, const int* targets,
                                float dloss, int V, int Vp) {
  __shared__ float red[kCeTangentThreads / 32];
  T* z = logits + size_t(blockIdx.x) * Vp;
  T* zt = logits_t + size_t(blockIdx.x) * Vp;
  const int tgt = targets[blockIdx.x];
  const float z_tgt = to_f(z[tgt]);  // read before any thread overwrites the row
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, to_f(z[j]));
  mx = block_max(mx, red);
  float se = 0.0f, sez = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const float e = expf(to_f(z[j]) - mx);
    se += e;
    sez += e * to_f(zt[j]);
  }
  const float S = block_sum(se, red);
  const float dot = block_sum(sez, red) / S;  // <p, ż>
  __syncthreads();  // every thread has read the row before it is overwritten
  const float inv = 1.0f / S;
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
    if (j < V) {
      const float p = expf(to_f(z[j]) - mx) * inv;
      const float ztj = to_f(zt[j]);
      z[j] = from_f<T>(dloss * (p - (j == tgt ? 1.0f : 0.0f)));
      zt[j] = from_f<T>(dloss * (p * (ztj - dot)));
    } else {
      z[j] = from_f<T>(0.0f);
      zt[j] = from_f<T>(0.0f);
    }
  }
  if (threadIdx.x == 0) losses[blockIdx.x] = logf(S) - (z_tgt - mx);
}

// ------------------------------------------------------------------------------ attention helpers

// Element i of a [B,NH,T,hs] tensor -> offset of the same value in a [B,T,width] tensor whose
// head h starts at column h*hs (plus the caller's column offset).
__device__ __forceinline__ size_t head_to_row_major(size_t i, int T_, int NH, int hs,
                                                    size_t width) {
  const int d = static_cast<int>(i % hs);
  size_t r = i / hs;
  const int t = static_cast<int>(r % T_);
  r /= T_;
  const int h = static_cast<int>(r % NH);
  const size_t b = r / NH;
  return (b * T_ + t) * width + size_t(h) * hs + d;
}

template <class T>
__global__ void split_qkv_kernel(float* q, float* k, float* v, const T* qkv, int T_, int C,
                                 int NH, size_t n) {
  const int hs = C / NH;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const size_t o = head_to_row_major(i, T_, NH, hs, 3 * size_t(C));
    q[i] = to_f(qkv[o]);
    k[i] = to_f(qkv[o + C]);
    v[i] = to_f(qkv[o + 2 * size_t(C)]);
  }
}

template <class T>
__global__ void split_heads_kernel(float* y, const T* x, int T_, int C, int NH, size_t n) {
  const int hs = C / NH;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    y[i] = to_f(x[head_to_row_major(i, T_, NH, hs, C)]);
}

template <class T>
__global__ void merge_heads_kernel(T* out, const float* y, int T_, int C, int NH, size_t n) {
  const int hs = C / NH;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    out[head_to_row_major(i, T_, NH, hs, C)] = from_f<T>(y[i]);
}

template <class T>
__global__ void merge_qkv_kernel(T* qkv, const float* q, const float* k, const float* v, int T_,
                                 int C, int NH, size_t n) {
  const int hs = C / NH;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const size_t o = head_to_row_major(i, T_, NH, hs, 3 * size_t(C));
    qkv[o] = from_f<T>(q[i]);
    qkv[o + C] = from_f<T>(k[i]);
    qkv[o + 2 * size_t(C)] = from_f<T>(v[i]);
  }
}

// One warp per row of the stacked [mats * T, T] matrices; row r is query t = r % T.
__global__ void causal_softmax_kernel(float* s, size_t rows, int T_) {
  const size_t row = blockIdx.x * size_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T_);
  float* x = s + row * T_;
  float mx = -INFINITY;
  for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, x[j]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int j = lane; j <= t; j += 32) sum += expf(x[j] - mx);
  const float inv = 1.0f / warp_sum(sum);
  for (int j = lane; j < T_; j += 32) x[j] = j <= t ? expf(x[j] - mx) * inv : 0.0f;
}

__global__ void softmax_tangent_kernel(float* s_t, const float* p, size_t rows, int T_) {
  const size_t row = blockIdx.x * size_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T_);
  float* xt = s_t + row * T_;
  const float* pr = p + row * T_;
  float dot = 0.0f;
  for (int j = lane; j <= t; j += 32) dot += pr[j] * xt[j];
  dot = warp_sum(dot);
  for (int j = lane; j < T_; j += 32) xt[j] = j <= t ? pr[j] * (xt[j] - dot) : 0.0f;
}

__global__ void softmax_backward_tangent_kernel(float* dp, float* dp_t, const float* p,
                                                const float* p_t, size_t rows, int T_) {
  const size_t row = blockIdx.x * size_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T_);
  float *d = dp + row * T_, *dt = dp_t + row * T_;
  const float *pr = p + row * T_, *prt = p_t + row * T_;
  float r = 0.0f, rt = 0.0f;
  for (int j = lane; j <= t; j += 32) {
    r += pr[j] * d[j];
    rt += prt[j] * d[j] + pr[j] * dt[j];
  }
  r = warp_sum(r);
  rt = warp_sum(rt);
  for (int j = lane; j < T_; j += 32) {
    if (j <= t) {
      const float dj = d[j], dtj = dt[j];
      d[j] = pr[j] * (dj - r);
      dt[j] = prt[j] * (dj - r) + pr[j] * (dtj - rt);
    } else {
      d[j] = 0.0f;
      dt[j] = 0.0f;
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------ launchers

template <class T>
void layernorm_forward_tangent(T* out_t, const T* inp, const T* inp_t, const float* mean,
                               const float* rstd, const T* weight, const T* weight_t,
                               const T* bias_t, int N, int C, cudaStream_t stream) {
  if (N == 0) return;
  ln_forward_tangent_kernel<<<ceil_div(N, 8), 256, 0, stream>>>(out_t, inp, inp_t, mean, rstd,
                                                                weight, weight_t, bias_t, N, C);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void layernorm_backward_tangent(T* dinp, T* dinp_t, T* dweight_t, T* dbias_t, const T* dout,
                                const T* dout_t, const T* inp, const T* inp_t, const T* weight,
                                const T* weight_t, const float* mean, const float* rstd,
                                float* rowstats, int N, int C, Scratch& scratch,
                                cudaStream_t stream) {
  if (N == 0) return;
  ln_backward_tangent_rows_kernel<<<ceil_div(N, 8), 256, 0, stream>>>(
      dinp, dinp_t, dout, dout_t, inp, inp_t, weight, weight_t, mean, rstd, rowstats, N, C);
  SGPT_LAUNCH_CHECK();
  const int chunks = static_cast<int>(std::min<size_t>(128, ceil_div(N, 64)));
  const int rows_per_chunk = static_cast<int>(ceil_div(N, chunks));
  float* partial = scratch.floats(size_t(chunks) * 2 * C);
  ln_backward_tangent_cols_kernel<<<dim3(ceil_div(C, 32), chunks), dim3(32, 8), 0, stream>>>(
      partial, dout, dout_t, inp, inp_t, mean, rstd, rowstats, N, C, rows_per_chunk);
  SGPT_LAUNCH_CHECK();
  ln_backward_tangent_final_kernel<<<ceil_div(C, 256), 256, 0, stream>>>(dweight_t, dbias_t,
                                                                         partial, chunks, C);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void gelu_forward_tangent(T* out_t, const T* inp, const T* inp_t, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_forward_tangent_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out_t, inp, inp_t, n);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void gelu_backward_tangent(T* dinp, T* dinp_t, const T* inp, const T* inp_t, const T* dout,
                           const T* dout_t, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_backward_tangent_kernel<<<grid_for(n, 256), 256, 0, stream>>>(dinp, dinp_t, inp, inp_t,
                                                                     dout, dout_t, n);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void crossentropy_tangent(float* losses, T* logits, T* logits_t, const int* targets, float dloss,
                          int N, int V, int Vp, cudaStream_t stream) {
  if (N == 0) return;
  crossentropy_tangent_kernel<<<N, kCeTangentThreads, 0, stream>>>(losses, logits, logits_t,
                                                                   targets, dloss, V, Vp);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void split_qkv(float* q, float* k, float* v, const T* qkv, int B, int T_, int C, int NH,
               cudaStream_t stream) {
  const size_t n = size_t(B) * T_ * C;
  if (n == 0) return;
  split_qkv_kernel<<<grid_for(n, 256), 256, 0, stream>>>(q, k, v, qkv, T_, C, NH, n);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void split_heads(float* y, const T* x, int B, int T_, int C, int NH, cudaStream_t stream) {
  const size_t n = size_t(B) * T_ * C;
  if (n == 0) return;
  split_heads_kernel<<<grid_for(n, 256), 256, 0, stream>>>(y, x, T_, C, NH, n);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void merge_heads(T* out, const float* y, int B, int T_, int C, int NH, cudaStream_t stream) {
  const size_t n = size_t(B) * T_ * C;
  if (n == 0) return;
  merge_heads_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, y, T_, C, NH, n);
  SGPT_LAUNCH_CHECK();
}

template <class T>
void merge_qkv(T* qkv, const float* q, const float* k, const float* v, int B, int T_, int C,
               int NH, cudaStream_t stream) {
  const size_t n = size_t(B) * T_ * C;
  if (n == 0) return;
  merge_qkv_kernel<<<grid_for(n, 256), 256, 0, stream>>>(qkv, q, k, v, T_, C, NH, n);
  SGPT_LAUNCH_CHECK();
}

void causal_softmax(float* s, int mats, int T_, cudaStream_t stream) {
  const size_t rows = size_t(mats) * T_;
  if (rows == 0) return;
  causal_softmax_kernel<<<ceil_div(rows, 8), 256, 0, stream>>>(s, rows, T_);
  SGPT_LAUNCH_CHECK();
}

void softmax_tangent(float* s_t, const float* p, int mats, int T_, cudaStream_t stream) {
  const size_t rows = size_t(mats) * T_;
  if (rows == 0) return;
  softmax_tangent_kernel<<<ceil_div(rows, 8), 256, 0, stream>>>(s_t, p, rows, T_);
  SGPT_LAUNCH_CHECK();
}

void softmax_backward_tangent(float* dp, float* dp_t, const float* p, const float* p_t, int mats,
                              int T_, cudaStream_t stream) {
  const size_t rows = size_t(mats) * T_;
  if (rows == 0) return;
  softmax_backward_tangent_kernel<<<ceil_div(rows, 8), 256, 0, stream>>>(dp, dp_t, p, p_t, rows,
                                                                         T_);
  SGPT_LAUNCH_CHECK();
}

#define SGPT_INSTANTIATE(T)                                                                      \
  template void layernorm_forward_tangent<T>(T*, const T*, const T*, const float*, const float*, \
                                             const T*, const T*, const T*, int, int,             \
                                             cudaStream_t);                                      \
  template void layernorm_backward_tangent<T>(T*, T*, T*, T*, const T*, const T*, const T*,      \
                                              const T*, const T*, const T*, const float*,        \
                                              const float*, float*, int, int, Scratch&,          \
                                              cudaStream_t);                                     \
  template void gelu_forward_tangent<T>(T*, const T*, const T*, size_t, cudaStream_t);           \
  template void gelu_backward_tangent<T>(T*, T*, const T*, const T*, const T*, const T*, size_t, \
                                         cudaStream_t);                                          \
  template void crossentropy_tangent<T>(float*, T*, T*, const int*, float, int, int, int,        \
                                        cudaStream_t);                                           \
  template void split_qkv<T>(float*, float*, float*, const T*, int, int, int, int, cudaStream_t); \
  template void split_heads<T>(float*, const T*, int, int, int, int, cudaStream_t);              \
  template void merge_heads<T>(T*, const float*, int, int, int, int, cudaStream_t);              \
  template void merge_qkv<T>(T*, const float*, const float*, const float*, int, int, int, int,   \
                             cudaStream_t);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(__nv_bfloat16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
