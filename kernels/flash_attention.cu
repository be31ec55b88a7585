// Causal self-attention on the tensor cores, bf16 storage, head size 64 (FlashAttention-2 style).
// The fp32 path and other head sizes use kernels/attention.cu; both compute the same function and
// save the same log-sum-exp, so either backward can follow either forward.
//
// Layout (as kernels/attention.cu): inp [B, T, 3C] holds q | k | v per position, each [NH, 64];
// out [B, T, C]; lse [B, NH, T] fp32; dinp [B, T, 3C] (dq | dk | dv, ACCUMULATED into).
// Math, for head h, query t, key j <= t, s_tj = scale * q_t . k_j (scale includes the optional
// 1/(layer+1)):
//   lse_t = log sum_{j<=t} exp(s_tj) ;  P_tj = exp(s_tj - lse_t) ;  out_t = sum_j P_tj v_j
//   D_t = dout_t . out_t ;  dP_tj = dout_t . v_j ;  dS_tj = P_tj (dP_tj - D_t)
//   dq_t += scale sum_j dS_tj k_j ;  dk_j += scale sum_t dS_tj q_t ;  dv_j += sum_t P_tj dout_t
// Exponentials are taken base 2 on s * log2(e) (one multiply folded into the scale).
//
// Tensor-core use: mma.sync.m16n8k16 (bf16 operands, fp32 accumulators); operands are staged in
// shared memory by cp.async (tiles of 64 rows x 64 dims, rows padded to 72 elements so that the
// 8 row addresses of an ldmatrix hit 8 different 16-byte bank groups) and moved into registers by
// ldmatrix (.trans where the operand must be transposed). Rows at or beyond T are zero-filled by
// cp.async and masked (causally, or through lse = +inf in the backward), never stored.
//
// Forward: a block = 4 warps = 64 queries of one (b, h), each warp 16 query rows; it streams key
// tiles 0 .. its diagonal tile (causal block skipping), double-buffered. Online softmax per row in
// registers (running max m and a per-thread partial sum l, reduced over the 4 lanes that share a
// row at the end); the probabilities are rounded to bf16 for the P.V product (the sum l is kept
// in fp32 from the unrounded values), as in FlashAttention-2.
// Backward (deterministic, no atomics: every output element is accumulated by one thread in a
// fixed order):
//   dk/dv kernel: a block = 64 keys (16 per warp); streams query tiles from its diagonal tile to
//     the end; per 16-query chunk: S^T = K Q^T, P^T, dP^T = V dO^T, dS^T, then dV += P^T dO and
//     dK += dS^T Q with the chunk's P^T / dS^T fragments reused directly as mma A operands.
//   dq kernel: a block = 64 queries; streams key tiles 0 .. diagonal; per 16-key chunk S, P, dP,
//     dS, then dQ += dS K.
//   With accumulate = false the results overwrite dinp (each element has exactly one writer).
//   D_t comes from the rowdot kernel of kernels/attention.cu (computed from the bf16-stored out).
#include <cstdint>

#include "cuda/ops_cuda.h"
#include "flash_common.cuh"

namespace sgpt::cuda {

namespace {

using namespace flash;

// ---------------------------------------------------------------------------------------------
// Forward. grid (ceil(T/64), NH, B), heavy (late) query tiles first. smem: Q + 2 x (K, V).
__global__ void __launch_bounds__(kThreads)
    flash_forward_kernel(bf16* out, float* lse, const bf16* inp, int T_, int C, int NH,
                         float scale) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* Ks = Qs + kTileElems;      // [2][tile]
  bf16* Vs = Ks + 2 * kTileElems;  // [2][tile]
  const int b = blockIdx.z, h = blockIdx.y;
  const int qt = gridDim.x - 1 - blockIdx.x, q0 = qt * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const size_t C3 = size_t(3) * C;
  const bf16* qbase = inp + size_t(b) * T_ * C3 + size_t(h) * kHs;
  const bf16* kbase = qbase + C;
  const bf16* vbase = qbase + 2 * C;
  const float sl2 = scale * kLog2e;

  load_tile(Qs, qbase, C3, q0, T_);
  load_tile(Ks, kbase, C3, 0, T_);
  load_tile(Vs, vbase, C3, 0, T_);
  cp_async_commit();

  uint32_t qa[4][4];
  float o[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int row_a = q0 + warp * 16 + g, row_b = row_a + 8;  // this thread's two query rows

  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt & 1;
    if (kt < qt) {
      load_tile(Ks + (buf ^ 1) * kTileElems, kbase, C3, (kt + 1) * kRows, T_);
      load_tile(Vs + (buf ^ 1) * kTileElems, vbase, C3, (kt + 1) * kRows, T_);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) load_a_frags(qa, Qs, warp * 16);
    const bf16* K = Ks + buf * kTileElems;
    const bf16* V = Vs + buf * kTileElems;

    // S = Q K^T for this warp's 16 rows x 64 keys
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
      uint32_t kb[4][2];
      load_b_rows(kb, K, nt * 8);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) mma16816(s[nt], qa[ks], kb[ks][0], kb[ks][1]);
    }
    // scale (base 2) and causal mask on the diagonal tile
    const int k0 = kt * kRows;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + nt * 8 + 2 * c + (e & 1);
        const int row = e < 2 ? row_a : row_b;
        s[nt][e] = (kt == qt && key > row) ? -INFINITY : s[nt][e] * sl2;
      }
    // online softmax
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
    // every row has key 0 <= row in tile 0, so mx is finite from the first tile on
    const float corr0 = exp2f(m[0] - mx[0]), corr1 = exp2f(m[1] - mx[1]);
    m[0] = mx[0], m[1] = mx[1];
    l[0] *= corr0, l[1] *= corr1;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      o[nt][0] *= corr0, o[nt][1] *= corr0, o[nt][2] *= corr1, o[nt][3] *= corr1;
      s[nt][0] = exp2f(s[nt][0] - mx[0]);
      s[nt][1] = exp2f(s[nt][1] - mx[0]);
      s[nt][2] = exp2f(s[nt][2] - mx[1]);
      s[nt][3] = exp2f(s[nt][3] - mx[1]);
      l[0] += s[nt][0] + s[nt][1];
      l[1] += s[nt][2] + s[nt][3];
    }
    // O += P V, 4 k-steps of 16 keys; P's accumulator layout is the A layout of m16k16
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      uint32_t pa[4];
      pa[0] = pack_bf16(s[2 * ks][0], s[2 * ks][1]);
      pa[1] = pack_bf16(s[2 * ks][2], s[2 * ks][3]);
      pa[2] = pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
      pa[3] = pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
      uint32_t vb[8][2];
      load_b_cols(vb, V, ks * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(o[nt], pa, vb[nt][0], vb[nt][1]);
    }
    __syncthreads();  // this buffer is refilled by the next iteration's loads
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
  const float inv0 = 1.0f / l[0], inv1 = 1.0f / l[1];
  bf16* obase = out + size_t(b) * T_ * C + size_t(h) * kHs;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const int d = nt * 8 + 2 * c;
    if (row_a < T_)
      *reinterpret_cast<__nv_bfloat162*>(obase + size_t(row_a) * C + d) =
          __floats2bfloat162_rn(o[nt][0] * inv0, o[nt][1] * inv0);
    if (row_b < T_)
      *reinterpret_cast<__nv_bfloat162*>(obase + size_t(row_b) * C + d) =
          __floats2bfloat162_rn(o[nt][2] * inv1, o[nt][3] * inv1);
  }
  if (c == 0) {
    float* lrow = lse + (size_t(b) * NH + h) * T_;
    if (row_a < T_) lrow[row_a] = (m[0] + log2f(l[0])) * kLn2;
    if (row_b < T_) lrow[row_b] = (m[1] + log2f(l[1])) * kLn2;
  }
}

// ---------------------------------------------------------------------------------------------
// dK, dV. grid (ceil(T/64), NH, B); key tile = blockIdx.x (early tiles have the most queries and
// launch first). smem: K, V (read once into registers) + 2 x (Q, dO) + 2 x (lse2, D) [64] fp32.
__global__ void __launch_bounds__(kThreads)
    flash_backward_dkdv_kernel(bf16* dinp, const bf16* dout, const bf16* inp, const float* lse,
                               const float* D, int T_, int C, int NH, float scale,
                               bool accumulate) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* Vs = Ks + kTileElems;
  bf16* Qs = Vs + kTileElems;          // [2][tile]
  bf16* dOs = Qs + 2 * kTileElems;     // [2][tile]
  float* Ls = reinterpret_cast<float*>(dOs + 2 * kTileElems);  // [2][64] lse * log2(e)
  float* Dsm = Ls + 2 * kRows;                                 // [2][64]
  const int b = blockIdx.z, h = blockIdx.y;
  const int kt = blockIdx.x, k0 = kt * kRows;
  const int nqt = (T_ + kRows - 1) / kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const size_t C3 = size_t(3) * C;
  const bf16* qbase = inp + size_t(b) * T_ * C3 + size_t(h) * kHs;
  const bf16* dobase = dout + size_t(b) * T_ * C + size_t(h) * kHs;
  const float* lse_bh = lse + (size_t(b) * NH + h) * T_;
  const float* D_bh = D + (size_t(b) * NH + h) * T_;
  const float sl2 = scale * kLog2e;

  auto load_q_side = [&](int qt, int buf) {
    load_tile(Qs + buf * kTileElems, qbase, C3, qt * kRows, T_);
    load_tile(dOs + buf * kTileElems, dobase, size_t(C), qt * kRows, T_);
    if (threadIdx.x < kRows) {
      const int t = qt * kRows + threadIdx.x;
      // rows beyond T: lse = +inf makes P = 0 there (their zero-filled q, dO give finite S, dP)
      Ls[buf * kRows + threadIdx.x] = t < T_ ? lse_bh[t] * kLog2e : INFINITY;
      Dsm[buf * kRows + threadIdx.x] = t < T_ ? D_bh[t] : 0.0f;
    }
  };

  load_tile(Ks, qbase + C, C3, k0, T_);
  load_tile(Vs, qbase + 2 * C, C3, k0, T_);
  load_q_side(kt, 0);
  cp_async_commit();

  uint32_t ka[4][4], va[4][4];
  float dk[8][4], dv[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.0f;
  const int key_a = k0 + warp * 16 + g, key_b = key_a + 8;  // this thread's two key rows

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
    if (qt == kt) {
      load_a_frags(ka, Ks, warp * 16);
      load_a_frags(va, Vs, warp * 16);
    }
    const bf16* Q = Qs + buf * kTileElems;
    const bf16* dO = dOs + buf * kTileElems;
    const float* L = Ls + buf * kRows;
    const float* Dt = Dsm + buf * kRows;
    const bool diag = qt == kt;

#pragma unroll
    for (int ch = 0; ch < 4; ++ch) {  // 16 queries at a time
      if (diag && ch < warp) continue;  // all 16 queries precede all of this warp's keys
      float st[2][4], dpt[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.0f;
        dpt[j][0] = dpt[j][1] = dpt[j][2] = dpt[j][3] = 0.0f;
        uint32_t qb[4][2], ob[4][2];
        load_b_rows(qb, Q, ch * 16 + j * 8);
        load_b_rows(ob, dO, ch * 16 + j * 8);
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
          mma16816(st[j], ka[ks], qb[ks][0], qb[ks][1]);   // S^T = K Q^T
          mma16816(dpt[j], va[ks], ob[ks][0], ob[ks][1]);  // dP^T = V dO^T
        }
      }
      // P^T, dS^T; element e of n-tile j: key (e < 2 ? key_a : key_b), query qcol
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = ch * 16 + j * 8 + 2 * c + (e & 1);
          const int query = qt * kRows + qi;
          const int key = e < 2 ? key_a : key_b;
          float p = exp2f(st[j][e] * sl2 - L[qi]);
          if (diag && query < key) p = 0.0f;
          st[j][e] = p;
          dpt[j][e] = p * (dpt[j][e] - Dt[qi]);
        }
      uint32_t pa[4], dsa[4];
      pa[0] = pack_bf16(st[0][0], st[0][1]);
      pa[1] = pack_bf16(st[0][2], st[0][3]);
      pa[2] = pack_bf16(st[1][0], st[1][1]);
      pa[3] = pack_bf16(st[1][2], st[1][3]);
      dsa[0] = pack_bf16(dpt[0][0], dpt[0][1]);
      dsa[1] = pack_bf16(dpt[0][2], dpt[0][3]);
      dsa[2] = pack_bf16(dpt[1][0], dpt[1][1]);
      dsa[3] = pack_bf16(dpt[1][2], dpt[1][3]);
      uint32_t bb[8][2];
      load_b_cols(bb, dO, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(dv[nt], pa, bb[nt][0], bb[nt][1]);  // dV += P^T dO
      load_b_cols(bb, Q, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(dk[nt], dsa, bb[nt][0], bb[nt][1]);  // dK += dS^T Q
    }
    __syncthreads();
  }
  bf16* kout = dinp + size_t(b) * T_ * C3 + C + size_t(h) * kHs;
  accumulate_rows(kout, C3, k0 + warp * 16, T_, dk, scale, accumulate);
  accumulate_rows(kout + C, C3, k0 + warp * 16, T_, dv, 1.0f, accumulate);
}

// ---------------------------------------------------------------------------------------------
// dQ. grid (ceil(T/64), NH, B), late query tiles first. smem: Q, dO (into registers) + 2 x (K, V).
__global__ void __launch_bounds__(kThreads)
    flash_backward_dq_kernel(bf16* dinp, const bf16* dout, const bf16* inp, const float* lse,
                             const float* D, int T_, int C, int NH, float scale,
                             bool accumulate) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* dOs = Qs + kTileElems;
  bf16* Ks = dOs + kTileElems;     // [2][tile]
  bf16* Vs = Ks + 2 * kTileElems;  // [2][tile]
  const int b = blockIdx.z, h = blockIdx.y;
  const int qt = gridDim.x - 1 - blockIdx.x, q0 = qt * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const size_t C3 = size_t(3) * C;
  const bf16* qbase = inp + size_t(b) * T_ * C3 + size_t(h) * kHs;
  const bf16* kbase = qbase + C;
  const bf16* vbase = qbase + 2 * C;
  const float sl2 = scale * kLog2e;

  load_tile(Qs, qbase, C3, q0, T_);
  load_tile(dOs, dout + size_t(b) * T_ * C + size_t(h) * kHs, size_t(C), q0, T_);
  load_tile(Ks, kbase, C3, 0, T_);
  load_tile(Vs, vbase, C3, 0, T_);
  cp_async_commit();

  const int row_a = q0 + warp * 16 + g, row_b = row_a + 8;
  const float* lse_bh = lse + (size_t(b) * NH + h) * T_;
  const float* D_bh = D + (size_t(b) * NH + h) * T_;
  // rows beyond T: lse = +inf gives P = 0 (never stored anyway)
  const float L0 = row_a < T_ ? lse_bh[row_a] * kLog2e : INFINITY;
  const float L1 = row_b < T_ ? lse_bh[row_b] * kLog2e : INFINITY;
  const float D0 = row_a < T_ ? D_bh[row_a] : 0.0f;
  const float D1 = row_b < T_ ? D_bh[row_b] : 0.0f;

  uint32_t qa[4][4], oa[4][4];
  float dq[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;

  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt & 1;
    if (kt < qt) {
      load_tile(Ks + (buf ^ 1) * kTileElems, kbase, C3, (kt + 1) * kRows, T_);
      load_tile(Vs + (buf ^ 1) * kTileElems, vbase, C3, (kt + 1) * kRows, T_);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
      load_a_frags(qa, Qs, warp * 16);
      load_a_frags(oa, dOs, warp * 16);
    }
    const bf16* K = Ks + buf * kTileElems;
    const bf16* V = Vs + buf * kTileElems;
    const bool diag = kt == qt;
#pragma unroll
    for (int ch = 0; ch < 4; ++ch) {  // 16 keys at a time
      if (diag && ch > warp) continue;  // all 16 keys follow all of this warp's queries
      float s[2][4], dp[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
        uint32_t kb[4][2], vb[4][2];
        load_b_rows(kb, K, ch * 16 + j * 8);
        load_b_rows(vb, V, ch * 16 + j * 8);
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
          mma16816(s[j], qa[ks], kb[ks][0], kb[ks][1]);   // S = Q K^T
          mma16816(dp[j], oa[ks], vb[ks][0], vb[ks][1]);  // dP = dO V^T
        }
      }
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = kt * kRows + ch * 16 + j * 8 + 2 * c + (e & 1);
          const int row = e < 2 ? row_a : row_b;
          float p = exp2f(s[j][e] * sl2 - (e < 2 ? L0 : L1));
          if (diag && key > row) p = 0.0f;
          dp[j][e] = p * (dp[j][e] - (e < 2 ? D0 : D1));
        }
      uint32_t dsa[4];
      dsa[0] = pack_bf16(dp[0][0], dp[0][1]);
      dsa[1] = pack_bf16(dp[0][2], dp[0][3]);
      dsa[2] = pack_bf16(dp[1][0], dp[1][1]);
      dsa[3] = pack_bf16(dp[1][2], dp[1][3]);
      uint32_t kb[8][2];
      load_b_cols(kb, K, ch * 16);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(dq[nt], dsa, kb[nt][0], kb[nt][1]);  // dQ += dS K
    }
    __syncthreads();
  }
  accumulate_rows(dinp + size_t(b) * T_ * C3 + size_t(h) * kHs, C3, q0 + warp * 16, T_, dq, scale,
                  accumulate);
}

}  // namespace

bool flash_attention_usable(const void* inp, const void* out, int C, int NH) {
  if (NH <= 0 || C % NH != 0 || C / NH != kHs) return false;
  // 16-byte cp.async of rows: row strides (3C, C elements) and the bases must be 16-byte aligned
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return C % 8 == 0 && aligned(inp) && aligned(out);
}

void flash_attention_forward(bf16* out, float* lse, const bf16* inp, int B, int T_, int C, int NH,
                             float scale, cudaStream_t stream) {
  if (B == 0 || T_ == 0) return;
  const size_t smem = 5 * kTileBytes;
  set_smem_limit(flash_forward_kernel, smem);
  dim3 grid(ceil_div(T_, kRows), NH, B);
  flash_forward_kernel<<<grid, kThreads, smem, stream>>>(out, lse, inp, T_, C, NH, scale);
  SGPT_LAUNCH_CHECK();
}

void flash_attention_backward(bf16* dinp, const bf16* dout, const bf16* inp, const float* lse,
                              const float* D, int B, int T_, int C, int NH, float scale,
                              cudaStream_t stream, bool accumulate) {
  if (B == 0 || T_ == 0) return;
  dim3 grid(ceil_div(T_, kRows), NH, B);
  const size_t smem_kv = 6 * kTileBytes + 4 * kRows * sizeof(float);
  set_smem_limit(flash_backward_dkdv_kernel, smem_kv);
  flash_backward_dkdv_kernel<<<grid, kThreads, smem_kv, stream>>>(dinp, dout, inp, lse, D, T_, C,
                                                                  NH, scale, accumulate);
  SGPT_LAUNCH_CHECK();
  const size_t smem_q = 6 * kTileBytes;
  set_smem_limit(flash_backward_dq_kernel, smem_q);
  flash_backward_dq_kernel<<<grid, kThreads, smem_q, stream>>>(dinp, dout, inp, lse, D, T_, C, NH,
                                                               scale, accumulate);
  SGPT_LAUNCH_CHECK();
}

}  // namespace sgpt::cuda
