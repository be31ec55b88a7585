// Forward-mode tangents of causal self-attention on the tensor cores (bf16 storage, head size 64),
// for Sophia-H's Hessian-vector product (src/cuda/hvp_cuda.cpp): the forward and backward of
// kernels/flash_attention.cu, each carrying the derivative along the probe direction, without a
// T x T matrix in memory. The materialized fp32 path of hvp_cuda.cpp computes the same function
// (and stays the path for fp32 and other head sizes).
//
// Layout: qkv and its tangent [B, T, 3C] (q | k | v per position, each [NH, 64]); y and its
// tangent [B, T, C]; the row statistics lse and c [B, NH, T] fp32; dqkv and its tangent
// [B, T, 3C] (overwritten). Per head, query i, key j <= i, with the scale s of
// sgpt::attention_scale folded in (S = s Q K^T):
//   P_ij = exp(S_ij - lse_i)            Ṡ_ij = s (Q̇_i . K_j + Q_i . K̇_j)
//   c_i = sum_j P_ij Ṡ_ij               Ṗ_ij = P_ij (Ṡ_ij - c_i)
//   Y_i = sum_j P_ij V_j                Ẏ_i = sum_j P_ij (Ṡ_ij V_j + V̇_j) - c_i Y_i
// Backward, with dY and its tangent ḋY:
//   D_i = dY_i . Y_i                    Ḋ_i = ḋY_i . Y_i + dY_i . Ẏ_i   (the row sums of P dP, and
//                                                                      of Ṗ dP + P ḋP)
//   dP_ij = dY_i . V_j                  ḋP_ij = ḋY_i . V_j + dY_i . V̇_j
//   dS_ij = P_ij (dP_ij - D_i)          ḋS_ij = Ṗ_ij (dP_ij - D_i) + P_ij (ḋP_ij - Ḋ_i)
//   dV_j = sum_i P_ij dY_i              ḋV_j = sum_i (Ṗ_ij dY_i + P_ij ḋY_i)
//   dQ_i = s sum_j dS_ij K_j            ḋQ_i = s sum_j (ḋS_ij K_j + dS_ij K̇_j)
//   dK_j = s sum_i dS_ij Q_i            ḋK_j = s sum_i (ḋS_ij Q_i + dS_ij Q̇_i)
//
// Kernels (4 warps; 64-row tiles, 16 rows per warp; the helpers of kernels/flash_common.cuh):
//   forward: a block = 64 queries of one (b, h); streams the key tiles up to its diagonal with
//     K, K̇, V, V̇ double-buffered; S and Ṡ by 3 products per 16 x 8 tile, online softmax (running
//     max m, sums l of P and a of P Ṡ, rescaled together), then O += P V and Ȯ += (P Ṡ) V + P V̇
//     with P and P Ṡ rounded to bf16 as mma operands; l is summed in fp32 from the unrounded P
//     (as FlashAttention-2), a from the rounded P Ṡ that Ȯ uses. At the end Y = O / l, c = a / l,
//     Ẏ = Ȯ / l - c Y (fp32, then bf16). Summing a from the unrounded values instead left the
//     rounding of P Ṡ uncancelled in Ẏ: with one key (every sequence's first position) Ẏ = V̇
//     exactly, and it came out 1% of max|Ẏ| off.
//   rowdot: D and Ḋ, one warp per (b, t, h).
//   dK/dV: a block = 64 keys; streams query tiles from its diagonal on (Q, Q̇, dO, ḋO
//     double-buffered); per 16-query chunk it recomputes S^T, Ṡ^T, dP^T, ḋP^T (6 products), forms
//     P, Ṗ, dS, ḋS in registers and accumulates dV, ḋV, dK, ḋK (6 products).
//   dQ: a block = 64 queries; streams key tiles up to its diagonal (K, K̇, V, V̇ double-buffered);
//     per 16-key chunk the same 6 recomputed products, then dQ, ḋQ (3 products).
// Deterministic: every output element is accumulated by one thread in a fixed order. The A
// operands of the resident tiles are reloaded from shared memory per chunk (ldmatrix) rather than
// held in registers: the four fp32 accumulators of the dK/dV kernel already take 128 registers.
#include <cstdint>

#include "cuda/tangent_cuda.h"
#include "flash_common.cuh"

namespace sgpt::cuda {

namespace {

using namespace flash;

// A operand (16 rows x 16 dims, k-step ks) of rows [row0, row0 + 16) of a padded tile.
__device__ __forceinline__ void load_a_frag(uint32_t (&a)[4], const bf16* tile, int row0,
                                            int ks) {
  const int lane = threadIdx.x % 32;
  const int r = row0 + (lane % 8) + ((lane / 8) & 1) * 8;
  ldsm_x4(a, tile + r * kLd + ks * 16 + (lane / 16) * 8);
}

__device__ __forceinline__ void zero4(float (&x)[4]) { x[0] = x[1] = x[2] = x[3] = 0.0f; }

// A operand of m16k16 from two 16 x 8 accumulator tiles (keys or queries 0..7 and 8..15).
__device__ __forceinline__ void pack_a(uint32_t (&a)[4], const float (&x)[2][4]) {
  a[0] = pack_bf16(x[0][0], x[0][1]);
  a[1] = pack_bf16(x[0][2], x[0][3]);
  a[2] = pack_bf16(x[1][0], x[1][1]);
  a[3] = pack_bf16(x[1][2], x[1][3]);
}

// ---------------------------------------------------------------------------------------------
// Forward. grid (ceil(T/64), NH, B), heavy (late) query tiles first.
// smem: Q, Q̇ + 2 x (K, K̇, V, V̇).
__global__ void __launch_bounds__(kThreads)
    flash_tangent_forward_kernel(bf16* out, bf16* out_t, float* lse, float* cst, const bf16* inp,
                                 const bf16* inp_t, int T_, int C, int NH, float scale) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* Qts = Qs + kTileElems;
  bf16* KV = Qts + kTileElems;  // [2][K, K̇, V, V̇]
  const int b = blockIdx.z, h = blockIdx.y;
  const int qt = gridDim.x - 1 - blockIdx.x, q0 = qt * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const size_t C3 = size_t(3) * C;
  const size_t head = size_t(b) * T_ * C3 + size_t(h) * kHs;
  const bf16 *qbase = inp + head, *qtbase = inp_t + head;
  const float sl2 = scale * kLog2e;

  auto load_kv = [&](int kt, int buf) {
    bf16* dst = KV + buf * 4 * kTileElems;
    load_tile(dst, qbase + C, C3, kt * kRows, T_);
    load_tile(dst + kTileElems, qtbase + C, C3, kt * kRows, T_);
    load_tile(dst + 2 * kTileElems, qbase + 2 * C, C3, kt * kRows, T_);
    load_tile(dst + 3 * kTileElems, qtbase + 2 * C, C3, kt * kRows, T_);
  };
  load_tile(Qs, qbase, C3, q0, T_);
  load_tile(Qts, qtbase, C3, q0, T_);
  load_kv(0, 0);
  cp_async_commit();

  uint32_t qa[4][4], qta[4][4];
  float o[8][4], ot[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) zero4(o[i]), zero4(ot[i]);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, a[2] = {0.0f, 0.0f};
  const int row_a = q0 + warp * 16 + g, row_b = row_a + 8;

  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt & 1;
    if (kt < qt) {
      load_kv(kt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
      load_a_frags(qa, Qs, warp * 16);
      load_a_frags(qta, Qts, warp * 16);
    }
    const bf16* K = KV + buf * 4 * kTileElems;
    const bf16* Kt = K + kTileElems;
    const bf16* V = K + 2 * kTileElems;
    const bf16* Vt = K + 3 * kTileElems;

    // S = Q K^T, Ṡ/s = Q̇ K^T + Q K̇^T for this warp's 16 rows x 64 keys
    float s[8][4], st[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      zero4(s[nt]), zero4(st[nt]);
      uint32_t kb[4][2], ktb[4][2];
      load_b_rows(kb, K, nt * 8);
      load_b_rows(ktb, Kt, nt * 8);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        mma16816(s[nt], qa[ks], kb[ks][0], kb[ks][1]);
        mma16816(st[nt], qta[ks], kb[ks][0], kb[ks][1]);
        mma16816(st[nt], qa[ks], ktb[ks][0], ktb[ks][1]);
      }
    }
    const int k0 = kt * kRows;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + nt * 8 + 2 * c + (e & 1);
        const int row = e < 2 ? row_a : row_b;
        s[nt][e] = (kt == qt && key > row) ? -INFINITY : s[nt][e] * sl2;
        st[nt][e] *= scale;  // Ṡ; masked entries get P = 0 below
      }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    }
    const float corr0 = exp2f(m[0] - mx[0]), corr1 = exp2f(m[1] - mx[1]);
    m[0] = mx[0], m[1] = mx[1];
    l[0] *= corr0, l[1] *= corr1;
    a[0] *= corr0, a[1] *= corr1;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      o[nt][0] *= corr0, o[nt][1] *= corr0, o[nt][2] *= corr1, o[nt][3] *= corr1;
      ot[nt][0] *= corr0, ot[nt][1] *= corr0, ot[nt][2] *= corr1, ot[nt][3] *= corr1;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[nt][e] - mx[e < 2 ? 0 : 1]);
        s[nt][e] = p;
        // P Ṡ, rounded here to the bf16 value the product below uses, so that a (and c = a / l)
        // sums exactly the weights that enter Ȯ: then Ẏ = Ȯ / l - c Y cancels to the rounding
        // of the terms' deviations from Y (one key: exactly V̇), not to that of the terms.
        st[nt][e] = __bfloat162float(__float2bfloat16(st[nt][e] * p));
      }
      l[0] += s[nt][0] + s[nt][1];
      l[1] += s[nt][2] + s[nt][3];
      a[0] += st[nt][0] + st[nt][1];
      a[1] += st[nt][2] + st[nt][3];
    }
    // O += P V ; Ȯ += (P Ṡ) V + P V̇
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      uint32_t pa[4], psa[4];
      pa[0] = pack_bf16(s[2 * ks][0], s[2 * ks][1]);
      pa[1] = pack_bf16(s[2 * ks][2], s[2 * ks][3]);
      pa[2] = pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
      pa[3] = pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
      psa[0] = pack_bf16(st[2 * ks][0], st[2 * ks][1]);
      psa[1] = pack_bf16(st[2 * ks][2], st[2 * ks][3]);
      psa[2] = pack_bf16(st[2 * ks + 1][0], st[2 * ks + 1][1]);
      psa[3] = pack_bf16(st[2 * ks + 1][2], st[2 * ks + 1][3]);
      uint32_t vb[8][2];
      load_b_cols(vb, V, ks * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        mma16816(o[nt], pa, vb[nt][0], vb[nt][1]);
        mma16816(ot[nt], psa, vb[nt][0], vb[nt][1]);
      }
      load_b_cols(vb, Vt, ks * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(ot[nt], pa, vb[nt][0], vb[nt][1]);
    }
    __syncthreads();  // this buffer is refilled by the next iteration's loads
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    a[i] += __shfl_xor_sync(0xffffffffu, a[i], 1);
    a[i] += __shfl_xor_sync(0xffffffffu, a[i], 2);
  }
  const float inv[2] = {1.0f / l[0], 1.0f / l[1]};
  const float cc[2] = {a[0] * inv[0], a[1] * inv[1]};
  const size_t obase = size_t(b) * T_ * C + size_t(h) * kHs;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = half ? row_b : row_a;
    if (row >= T_) continue;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const size_t at = obase + size_t(row) * C + nt * 8 + 2 * c;
      const float y0 = o[nt][2 * half] * inv[half], y1 = o[nt][2 * half + 1] * inv[half];
      *reinterpret_cast<__nv_bfloat162*>(out + at) = __floats2bfloat162_rn(y0, y1);
      *reinterpret_cast<__nv_bfloat162*>(out_t + at) =
          __floats2bfloat162_rn(ot[nt][2 * half] * inv[half] - cc[half] * y0,
                                ot[nt][2 * half + 1] * inv[half] - cc[half] * y1);
    }
    if (c == 0) {
      const size_t at = (size_t(b) * NH + h) * T_ + row;
      lse[at] = (m[half] + log2f(l[half])) * kLn2;
      cst[at] = cc[half];
    }
  }
}

// D = dY . Y and Ḋ = ḋY . Y + dY . Ẏ per (b, h, t); one warp per (b, t, h), 2 dims per lane.
__global__ void flash_tangent_rowdot_kernel(float* D, float* Dt, const bf16* dy, const bf16* dy_t,
                                            const bf16* y, const bf16* y_t, int BT, int T_, int C,
                                            int NH) {
  const int w = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (w >= BT * NH) return;
  const int bt = w / NH, h = w % NH;
  const size_t at = size_t(bt) * C + size_t(h) * kHs + 2 * lane;
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dy + at));
  const float2 at_ = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dy_t + at));
  const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(y + at));
  const float2 vt = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(y_t + at));
  float d = a.x * v.x + a.y * v.y;
  float dt = at_.x * v.x + at_.y * v.y + a.x * vt.x + a.y * vt.y;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    d += __shfl_xor_sync(0xffffffffu, d, off);
    dt += __shfl_xor_sync(0xffffffffu, dt, off);
  }
  if (lane == 0) {
    const int b = bt / T_, t = bt % T_;
    const size_t o = (size_t(b) * NH + h) * T_ + t;
    D[o] = d;
    Dt[o] = dt;
  }
}

// The per-position inputs of the backward: P, Ṗ, dS, ḋS from the recomputed products and the
// row statistics (lse in base 2, c, D, Ḋ) of the position's query. Written in place of the
// products: s -> P, st -> Ṗ, dp -> dS, dpt -> ḋS.
__device__ __forceinline__ void backward_entry(float& s, float& st, float& dp, float& dpt,
                                               float sl2, float scale, float L2, float cq,
                                               float Dq, float Dtq, bool masked) {
  const float p = masked ? 0.0f : exp2f(s * sl2 - L2);
  const float pt = p * (st * scale - cq);
  const float g = dp - Dq;
  s = p;
  st = pt;
  dp = p * g;
  dpt = pt * g + p * (dpt - Dtq);
}

// ---------------------------------------------------------------------------------------------
// dK, dV and tangents. grid (ceil(T/64), NH, B), key tile = blockIdx.x.
// smem: K, K̇, V, V̇ + 2 x (Q, Q̇, dO, ḋO) + 2 x (lse2, c, D, Ḋ) [64] fp32.
__global__ void __launch_bounds__(kThreads)
    flash_tangent_dkdv_kernel(bf16* dinp, bf16* dinp_t, const bf16* dout, const bf16* dout_t,
                              const bf16* inp, const bf16* inp_t, const float* lse,
                              const float* cst, const float* D, const float* Dt, int T_, int C,
                              int NH, float scale) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* Kts = Ks + kTileElems;
  bf16* Vs = Kts + kTileElems;
  bf16* Vts = Vs + kTileElems;
  bf16* QO = Vts + kTileElems;  // [2][Q, Q̇, dO, ḋO]
  float* stats = reinterpret_cast<float*>(QO + 8 * kTileElems);  // [2][4][64]
  const int b = blockIdx.z, h = blockIdx.y;
  const int kt = blockIdx.x, k0 = kt * kRows;
  const int nqt = (T_ + kRows - 1) / kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const size_t C3 = size_t(3) * C;
  const size_t head = size_t(b) * T_ * C3 + size_t(h) * kHs;
  const size_t ohead = size_t(b) * T_ * C + size_t(h) * kHs;
  const bf16 *qbase = inp + head, *qtbase = inp_t + head;
  const bf16 *obase = dout + ohead, *otbase = dout_t + ohead;
  const size_t bh = (size_t(b) * NH + h) * T_;
  const float sl2 = scale * kLog2e;

  auto load_q_side = [&](int qt, int buf) {
    bf16* dst = QO + buf * 4 * kTileElems;
    load_tile(dst, qbase, C3, qt * kRows, T_);
    load_tile(dst + kTileElems, qtbase, C3, qt * kRows, T_);
    load_tile(dst + 2 * kTileElems, obase, size_t(C), qt * kRows, T_);
    load_tile(dst + 3 * kTileElems, otbase, size_t(C), qt * kRows, T_);
    if (threadIdx.x < kRows) {
      const int t = qt * kRows + threadIdx.x;
      const bool in = t < T_;
      float* st = stats + buf * 4 * kRows + threadIdx.x;
      // rows beyond T: lse = +inf makes P = Ṗ = 0 there (their zero-filled tiles give finite
      // products)
      st[0] = in ? lse[bh + t] * kLog2e : INFINITY;
      st[kRows] = in ? cst[bh + t] : 0.0f;
      st[2 * kRows] = in ? D[bh + t] : 0.0f;
      st[3 * kRows] = in ? Dt[bh + t] : 0.0f;
    }
  };

  load_tile(Ks, qbase + C, C3, k0, T_);
  load_tile(Kts, qtbase + C, C3, k0, T_);
  load_tile(Vs, qbase + 2 * C, C3, k0, T_);
  load_tile(Vts, qtbase + 2 * C, C3, k0, T_);
  load_q_side(kt, 0);
  cp_async_commit();

  float dk[8][4], dkt[8][4], dv[8][4], dvt[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) zero4(dk[i]), zero4(dkt[i]), zero4(dv[i]), zero4(dvt[i]);
  const int key_a = k0 + warp * 16 + g, key_b = key_a + 8;

  for (int qt = kt; qt < nqt; ++qt) {
    const int buf = (qt - kt) & 1;
    if (qt + 1 < nqt) {
      load_q_side(qt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* Q = QO + buf * 4 * kTileElems;
    const bf16* Qt = Q + kTileElems;
    const bf16* dO = Q + 2 * kTileElems;
    const bf16* dOt = Q + 3 * kTileElems;
    const float* L = stats + buf * 4 * kRows;
    const bool diag = qt == kt;

#pragma unroll 1
    for (int ch = 0; ch < 4; ++ch) {  // 16 queries at a time
      if (diag && ch < warp) continue;  // all 16 queries precede all of this warp's keys
      // S^T = K Q^T, Ṡ^T/s = K̇ Q^T + K Q̇^T, dP^T = V dO^T, ḋP^T = V ḋO^T + V̇ dO^T
      float s[2][4], st[2][4], dp[2][4], dpt[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        zero4(s[j]), zero4(st[j]), zero4(dp[j]), zero4(dpt[j]);
        uint32_t qb[4][2], qtb[4][2], ob[4][2], otb[4][2];
        load_b_rows(qb, Q, ch * 16 + j * 8);
        load_b_rows(qtb, Qt, ch * 16 + j * 8);
        load_b_rows(ob, dO, ch * 16 + j * 8);
        load_b_rows(otb, dOt, ch * 16 + j * 8);
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
          uint32_t fa[4];
          load_a_frag(fa, Ks, warp * 16, ks);
          mma16816(s[j], fa, qb[ks][0], qb[ks][1]);
          mma16816(st[j], fa, qtb[ks][0], qtb[ks][1]);
          load_a_frag(fa, Kts, warp * 16, ks);
          mma16816(st[j], fa, qb[ks][0], qb[ks][1]);
          load_a_frag(fa, Vs, warp * 16, ks);
          mma16816(dp[j], fa, ob[ks][0], ob[ks][1]);
          mma16816(dpt[j], fa, otb[ks][0], otb[ks][1]);
          load_a_frag(fa, Vts, warp * 16, ks);
          mma16816(dpt[j], fa, ob[ks][0], ob[ks][1]);
        }
      }
      // element e of n-tile j: key (e < 2 ? key_a : key_b), query column qi
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = ch * 16 + j * 8 + 2 * c + (e & 1);
          const int key = e < 2 ? key_a : key_b;
          backward_entry(s[j][e], st[j][e], dp[j][e], dpt[j][e], sl2, scale, L[qi],
                         L[kRows + qi], L[2 * kRows + qi], L[3 * kRows + qi],
                         diag && qt * kRows + qi < key);
        }
      uint32_t pa[4], pta[4], dsa[4], dsta[4];
      pack_a(pa, s);
      pack_a(pta, st);
      pack_a(dsa, dp);
      pack_a(dsta, dpt);
      uint32_t bb[8][2];
      load_b_cols(bb, dO, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        mma16816(dv[nt], pa, bb[nt][0], bb[nt][1]);    // dV += P^T dO
        mma16816(dvt[nt], pta, bb[nt][0], bb[nt][1]);  // ḋV += Ṗ^T dO
      }
      load_b_cols(bb, dOt, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(dvt[nt], pa, bb[nt][0], bb[nt][1]);  // + P^T ḋO
      load_b_cols(bb, Q, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        mma16816(dk[nt], dsa, bb[nt][0], bb[nt][1]);    // dK += dS^T Q
        mma16816(dkt[nt], dsta, bb[nt][0], bb[nt][1]);  // ḋK += ḋS^T Q
      }
      load_b_cols(bb, Qt, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(dkt[nt], dsa, bb[nt][0], bb[nt][1]);  // + dS^T Q̇
    }
    __syncthreads();
  }
  bf16* kout = dinp + head + C;
  bf16* ktout = dinp_t + head + C;
  accumulate_rows(kout, C3, k0 + warp * 16, T_, dk, scale, false);
  accumulate_rows(ktout, C3, k0 + warp * 16, T_, dkt, scale, false);
  accumulate_rows(kout + C, C3, k0 + warp * 16, T_, dv, 1.0f, false);
  accumulate_rows(ktout + C, C3, k0 + warp * 16, T_, dvt, 1.0f, false);
}

// ---------------------------------------------------------------------------------------------
// dQ and its tangent. grid (ceil(T/64), NH, B), late query tiles first.
// smem: Q, Q̇, dO, ḋO + 2 x (K, K̇, V, V̇).
__global__ void __launch_bounds__(kThreads)
    flash_tangent_dq_kernel(bf16* dinp, bf16* dinp_t, const bf16* dout, const bf16* dout_t,
                            const bf16* inp, const bf16* inp_t, const float* lse,
                            const float* cst, const float* D, const float* Dt, int T_, int C,
                            int NH, float scale) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* Qts = Qs + kTileElems;
  bf16* dOs = Qts + kTileElems;
  bf16* dOts = dOs + kTileElems;
  bf16* KV = dOts + kTileElems;  // [2][K, K̇, V, V̇]
  const int b = blockIdx.z, h = blockIdx.y;
  const int qt = gridDim.x - 1 - blockIdx.x, q0 = qt * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const size_t C3 = size_t(3) * C;
  const size_t head = size_t(b) * T_ * C3 + size_t(h) * kHs;
  const size_t ohead = size_t(b) * T_ * C + size_t(h) * kHs;
  const bf16 *qbase = inp + head, *qtbase = inp_t + head;
  const size_t bh = (size_t(b) * NH + h) * T_;
  const float sl2 = scale * kLog2e;

  auto load_kv = [&](int kt, int buf) {
    bf16* dst = KV + buf * 4 * kTileElems;
    load_tile(dst, qbase + C, C3, kt * kRows, T_);
    load_tile(dst + kTileElems, qtbase + C, C3, kt * kRows, T_);
    load_tile(dst + 2 * kTileElems, qbase + 2 * C, C3, kt * kRows, T_);
    load_tile(dst + 3 * kTileElems, qtbase + 2 * C, C3, kt * kRows, T_);
  };
  load_tile(Qs, qbase, C3, q0, T_);
  load_tile(Qts, qtbase, C3, q0, T_);
  load_tile(dOs, dout + ohead, size_t(C), q0, T_);
  load_tile(dOts, dout_t + ohead, size_t(C), q0, T_);
  load_kv(0, 0);
  cp_async_commit();

  const int row_a = q0 + warp * 16 + g, row_b = row_a + 8;
  // rows beyond T: lse = +inf gives P = Ṗ = 0 (never stored anyway)
  float Lr[2], cr[2], Dr[2], Dtr[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = i ? row_b : row_a;
    const bool in = row < T_;
    Lr[i] = in ? lse[bh + row] * kLog2e : INFINITY;
    cr[i] = in ? cst[bh + row] : 0.0f;
    Dr[i] = in ? D[bh + row] : 0.0f;
    Dtr[i] = in ? Dt[bh + row] : 0.0f;
  }

  float dq[8][4], dqt[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) zero4(dq[i]), zero4(dqt[i]);

  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt & 1;
    if (kt < qt) {
      load_kv(kt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* K = KV + buf * 4 * kTileElems;
    const bf16* Kt = K + kTileElems;
    const bf16* V = K + 2 * kTileElems;
    const bf16* Vt = K + 3 * kTileElems;
    const bool diag = kt == qt;
#pragma unroll 1
    for (int ch = 0; ch < 4; ++ch) {  // 16 keys at a time
      if (diag && ch > warp) continue;  // all 16 keys follow all of this warp's queries
      float s[2][4], st[2][4], dp[2][4], dpt[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        zero4(s[j]), zero4(st[j]), zero4(dp[j]), zero4(dpt[j]);
        uint32_t kb[4][2], ktb[4][2], vb[4][2], vtb[4][2];
        load_b_rows(kb, K, ch * 16 + j * 8);
        load_b_rows(ktb, Kt, ch * 16 + j * 8);
        load_b_rows(vb, V, ch * 16 + j * 8);
        load_b_rows(vtb, Vt, ch * 16 + j * 8);
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
          uint32_t fa[4];
          load_a_frag(fa, Qs, warp * 16, ks);
          mma16816(s[j], fa, kb[ks][0], kb[ks][1]);     // S = Q K^T
          mma16816(st[j], fa, ktb[ks][0], ktb[ks][1]);  // Ṡ/s = Q K̇^T
          load_a_frag(fa, Qts, warp * 16, ks);
          mma16816(st[j], fa, kb[ks][0], kb[ks][1]);    //     + Q̇ K^T
          load_a_frag(fa, dOs, warp * 16, ks);
          mma16816(dp[j], fa, vb[ks][0], vb[ks][1]);    // dP = dO V^T
          mma16816(dpt[j], fa, vtb[ks][0], vtb[ks][1]);  // ḋP = dO V̇^T
          load_a_frag(fa, dOts, warp * 16, ks);
          mma16816(dpt[j], fa, vb[ks][0], vb[ks][1]);   //      + ḋO V^T
        }
      }
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = kt * kRows + ch * 16 + j * 8 + 2 * c + (e & 1);
          const int i = e < 2 ? 0 : 1;
          backward_entry(s[j][e], st[j][e], dp[j][e], dpt[j][e], sl2, scale, Lr[i], cr[i], Dr[i],
                         Dtr[i], diag && key > (i ? row_b : row_a));
        }
      uint32_t dsa[4], dsta[4];
      pack_a(dsa, dp);
      pack_a(dsta, dpt);
      uint32_t bb[8][2];
      load_b_cols(bb, K, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        mma16816(dq[nt], dsa, bb[nt][0], bb[nt][1]);    // dQ += dS K
        mma16816(dqt[nt], dsta, bb[nt][0], bb[nt][1]);  // ḋQ += ḋS K
      }
      load_b_cols(bb, Kt, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(dqt[nt], dsa, bb[nt][0], bb[nt][1]);  // + dS K̇
    }
    __syncthreads();
  }
  accumulate_rows(dinp + head, C3, q0 + warp * 16, T_, dq, scale, false);
  accumulate_rows(dinp_t + head, C3, q0 + warp * 16, T_, dqt, scale, false);
}

}  // namespace

bool flash_tangent_usable(int C, int NH) {
  return NH > 0 && C % NH == 0 && C / NH == kHs && C % 8 == 0;
}

void flash_tangent_forward(bf16* out, bf16* out_t, float* lse, float* cst, const bf16* inp,
                           const bf16* inp_t, int B, int T_, int C, int NH, float scale,
                           cudaStream_t stream) {
  if (B == 0 || T_ == 0) return;
  const size_t smem = 10 * kTileBytes;
  set_smem_limit(flash_tangent_forward_kernel, smem);
  dim3 grid(ceil_div(T_, kRows), NH, B);
  flash_tangent_forward_kernel<<<grid, kThreads, smem, stream>>>(out, out_t, lse, cst, inp, inp_t,
                                                                 T_, C, NH, scale);
  SGPT_LAUNCH_CHECK();
}

void flash_tangent_backward(bf16* dinp, bf16* dinp_t, const bf16* dout, const bf16* dout_t,
                            const bf16* out, const bf16* out_t, const bf16* inp,
                            const bf16* inp_t, const float* lse, const float* cst, float* D,
                            float* Dt, int B, int T_, int C, int NH, float scale,
                            cudaStream_t stream) {
  if (B == 0 || T_ == 0) return;
  const int warps = B * T_ * NH, per_block = 8;
  flash_tangent_rowdot_kernel<<<ceil_div(warps, per_block), 32 * per_block, 0, stream>>>(
      D, Dt, dout, dout_t, out, out_t, B * T_, T_, C, NH);
  SGPT_LAUNCH_CHECK();
  dim3 grid(ceil_div(T_, kRows), NH, B);
  const size_t smem_kv = 12 * kTileBytes + 8 * kRows * sizeof(float);
  set_smem_limit(flash_tangent_dkdv_kernel, smem_kv);
  flash_tangent_dkdv_kernel<<<grid, kThreads, smem_kv, stream>>>(
      dinp, dinp_t, dout, dout_t, inp, inp_t, lse, cst, D, Dt, T_, C, NH, scale);
  SGPT_LAUNCH_CHECK();
  const size_t smem_q = 12 * kTileBytes;
  set_smem_limit(flash_tangent_dq_kernel, smem_q);
  flash_tangent_dq_kernel<<<grid, kThreads, smem_q, stream>>>(
      dinp, dinp_t, dout, dout_t, inp, inp_t, lse, cst, D, Dt, T_, C, NH, scale);
  SGPT_LAUNCH_CHECK();
}

}  // namespace sgpt::cuda
