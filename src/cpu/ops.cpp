// CPU reference of the GPT-2 ops declared in cpu/ops.h.
//
// Math and memory layout (row-major; N = B*T rows; hs = C/NH):
//
//   encoder      out[n,:]  = wte[inp[n],:] + wpe[n % T,:]
//   layernorm    m = sum_c x_c / C ; v = sum_c (x_c - m)^2 / C (biased) ; s = 1/sqrt(v + 1e-5)
//                out_c = (x_c - m) * s * w_c (+ b_c) ; mean[n] = m, rstd[n] = s
//                backward, with xh = (x - m)*s and g = w * dout:
//                dx_c += (g_c - mean(g) - xh_c * mean(g * xh)) * s ; dw_c += xh_c*dout_c ; db_c += dout_c
//   matmul       out[n,o] = bias[o] + sum_c inp[n,c] * weight[o,c]      (weight is [OC, C])
//                dinp[n,c] += sum_o dout[n,o] * weight[o,c] ; dweight[o,c] += sum_n dout[n,o]*inp[n,c]
//                dbias[o] += sum_n dout[n,o]
//   attention    inp[b,t,:] = (q | k | v), each [NH, hs]; for head h and query t:
//                a[t2] = softmax_{t2 <= t}(scale * q_t . k_t2) ; out[b,t,h*hs+i] = sum_t2 a[t2] v_t2[i]
//                att[b,h,t,t2] = a[t2] for t2 <= t, 0 above the diagonal.
//                backward: da[t2] = dout_t . v_t2 ; dv_t2 += a[t2] dout_t ;
//                dz[t2] = a[t2] (da[t2] - sum_j a[j] da[j]) ; dq_t += scale dz[t2] k_t2 ;
//                dk_t2 += scale dz[t2] q_t
//   gelu         y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
//                dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3*0.044715 x^2)
//   crossentropy over the first V of Vp columns, with mx = max_{j<V} l_j, S = sum_{j<V} exp(l_j - mx):
//                loss = log(S) - (l_target - mx) ; dl_j = dloss (exp(l_j - mx)/S - [j == target]),
//                dl_j = 0 for V <= j < Vp.
//
// Determinism: every output element is reduced by one thread in a fixed order that does not depend
// on the number of threads (OpenMP loops only split independent outputs). In particular every
// matmul output is bias (or the existing value, for the backward += ) plus the products added one
// at a time in increasing index order -- bit-identical to the naive triple loop, whatever the SIMD
// width picked at run time, since SIMD lanes hold different output elements and -ffp-contract=off
// forbids fused multiply-adds.
#include "cpu/ops.h"
#include <type_traits>
#include "cpu/dual.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/philox.h"

namespace sgpt::cpu {
// Unqualified math: the std overloads for float and double, Dual's (cpu/dual.h) found beside them.
using std::exp;
using std::log;
using std::sqrt;
using std::tanh;

namespace {

// Loops with less work than this (in elements or multiply-adds) stay on one thread.
constexpr long kParallelMin = 1L << 15;

// A per-thread scratch buffer (one per slot), 64-byte aligned, grown on demand, never shrunk.
template <class F>
F* scratch(size_t n, int slot) {
  thread_local std::vector<F> buf[4];
  std::vector<F>& v = buf[slot];
  const size_t pad = 64 / sizeof(F);
  if (v.size() < n + pad) v.resize(n + pad);
  auto addr = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<F*>((addr + 63) & ~uintptr_t(63));
}

// ---------------------------------------------------------------------------------------------
// GEMM:  C(m, n) += sum_{k=0}^{K-1} A(m, k) * B(k, n), with arbitrary element strides for A and
// B, so the three products of a Linear layer are one routine:
//   forward  out   = inp  @ W^T : A(m,k) = inp[m*C+k],   B(k,n) = W[n*C+k]
//   backward dinp += dout @ W   : A(m,k) = dout[m*OC+k], B(k,n) = W[k*C+n]
//   backward dW   += dout^T@inp : A(m,k) = dout[k*OC+m], B(k,n) = inp[k*C+n]
// Blocking: the output is cut into MC x NC tiles (one OpenMP task each, so no two threads write
// the same element); a tile walks K in KC-blocks, packing A into MR-row panels and B into NR-column
// panels ([k][lane] contiguous); a register micro-kernel of MR x NR accumulators (NR = 2 SIMD
// vectors) loads C, adds the KC products in order and stores C back.
template <class F>
struct Gemm {
  int M, N, K;
  const F* A;
  size_t a_sm, a_sk;
  const F* B;
  size_t b_sk, b_sn;
  F* C;
  size_t ldc;
};

constexpr int kMR = 6;
constexpr int kMC = 96;   // multiple of kMR
constexpr int kNC = 256;  // multiple of every NR used (2 * 16 floats at most)
constexpr int kKC = 256;

template <class F, int W>
struct Vec {
  typedef F type __attribute__((vector_size(W * sizeof(F))));
};

// Micro-kernel: C[rows x cols] (rows <= MR, cols <= NR) += Ap (kc x MR) * Bp (kc x NR).
template <class F, int W>
[[gnu::always_inline]] inline void micro_kernel(int kc, const F* Ap, const F* Bp, F* C, size_t ldc,
                                                int rows, int cols) {
  using V = typename Vec<F, W>::type;
  constexpr int NR = 2 * W;
  V acc[kMR][2];
  const bool full = rows == kMR && cols == NR;
  alignas(64) F edge[kMR][NR];
  if (!full) {
    std::memset(edge, 0, sizeof(edge));
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < cols; ++j) edge[r][j] = C[r * ldc + j];
  }
  for (int r = 0; r < kMR; ++r) {
    const F* src = full ? C + r * ldc : edge[r];
    std::memcpy(&acc[r][0], src, sizeof(V));
    std::memcpy(&acc[r][1], src + W, sizeof(V));
  }
  for (int k = 0; k < kc; ++k) {
    V b0, b1;
    std::memcpy(&b0, Bp + k * NR, sizeof(V));
    std::memcpy(&b1, Bp + k * NR + W, sizeof(V));
    const F* a = Ap + k * kMR;
    for (int r = 0; r < kMR; ++r) {
      acc[r][0] += b0 * a[r];
      acc[r][1] += b1 * a[r];
    }
  }
  for (int r = 0; r < kMR; ++r) {
    F* dst = full ? C + r * ldc : edge[r];
    std::memcpy(dst, &acc[r][0], sizeof(V));
    std::memcpy(dst + W, &acc[r][1], sizeof(V));
  }
  if (!full) {
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < cols; ++j) C[r * ldc + j] = edge[r][j];
  }
}

// One output tile (task index -> MC x NC tile), all of K.
template <class F, int W>
[[gnu::always_inline]] inline void gemm_tile(const Gemm<F>& g, int task, F* Ap, F* Bp) {
  constexpr int NR = 2 * W;
  const int mt = (g.M + kMC - 1) / kMC;
  const int i0 = (task % mt) * kMC, j0 = (task / mt) * kNC;
  const int mc = std::min(kMC, g.M - i0), nc = std::min(kNC, g.N - j0);
  const int mp = (mc + kMR - 1) / kMR, np = (nc + NR - 1) / NR;
  for (int k0 = 0; k0 < g.K; k0 += kKC) {
    const int kc = std::min(kKC, g.K - k0);
    // Pack A: Ap[p][k][r] = A(i0 + p*MR + r, k0 + k), zero beyond the tile.
    for (int p = 0; p < mp; ++p) {
      F* dst = Ap + size_t(p) * kc * kMR;
      for (int r = 0; r < kMR; ++r) {
        const int m = p * kMR + r;
        if (m >= mc) {
          for (int k = 0; k < kc; ++k) dst[k * kMR + r] = F(0);
          continue;
        }
        const F* src = g.A + size_t(i0 + m) * g.a_sm + size_t(k0) * g.a_sk;
        for (int k = 0; k < kc; ++k) dst[k * kMR + r] = src[k * g.a_sk];
      }
    }
    // Pack B: Bp[q][k][j] = B(k0 + k, j0 + q*NR + j), zero beyond the tile.
    for (int q = 0; q < np; ++q) {
      F* dst = Bp + size_t(q) * kc * NR;
      const int cols = std::min(NR, nc - q * NR);
      for (int k = 0; k < kc; ++k) {
        const F* src = g.B + size_t(k0 + k) * g.b_sk + size_t(j0 + q * NR) * g.b_sn;
        F* d = dst + k * NR;
        for (int j = 0; j < cols; ++j) d[j] = src[j * g.b_sn];
        for (int j = cols; j < NR; ++j) d[j] = F(0);
      }
    }
    for (int q = 0; q < np; ++q)
      for (int p = 0; p < mp; ++p)
        micro_kernel<F, W>(kc, Ap + size_t(p) * kc * kMR, Bp + size_t(q) * kc * NR,
                           g.C + size_t(i0 + p * kMR) * g.ldc + j0 + q * NR, g.ldc,
                           std::min(kMR, mc - p * kMR), std::min(NR, nc - q * NR));
  }
}

// The tile function compiled for three instruction sets; picked once at run time.
template <class F>
void gemm_tile_base(const Gemm<F>& g, int task, F* Ap, F* Bp) {
  gemm_tile<F, 16 / sizeof(F)>(g, task, Ap, Bp);
}
#if defined(__x86_64__) && defined(__GNUC__)
template <class F>
__attribute__((target("avx2"))) void gemm_tile_avx2(const Gemm<F>& g, int task, F* Ap, F* Bp) {
  gemm_tile<F, 32 / sizeof(F)>(g, task, Ap, Bp);
}
template <class F>
__attribute__((target("avx512f"))) void gemm_tile_avx512(const Gemm<F>& g, int task, F* Ap,
                                                          F* Bp) {
  gemm_tile<F, 64 / sizeof(F)>(g, task, Ap, Bp);
}
#endif

template <class F>
using GemmTileFn = void (*)(const Gemm<F>&, int, F*, F*);

template <class F>
GemmTileFn<F> pick_gemm_tile() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return &gemm_tile_avx512<F>;
  if (__builtin_cpu_supports("avx2")) return &gemm_tile_avx2<F>;
#endif
  return &gemm_tile_base<F>;
}

template <class F>
void gemm(const Gemm<F>& g) {
  if (g.M <= 0 || g.N <= 0 || g.K <= 0) return;
  if constexpr (!std::is_floating_point_v<F>) {  // dual numbers: the plain triple loop, k in order
#pragma omp parallel for if (double(g.M) * g.N * g.K > double(kParallelMin) * 8)
    for (int m = 0; m < g.M; ++m)
      for (int n = 0; n < g.N; ++n) {
        F acc = g.C[size_t(m) * g.ldc + n];
        for (int k = 0; k < g.K; ++k)
          acc += g.A[size_t(m) * g.a_sm + size_t(k) * g.a_sk] * g.B[size_t(k) * g.b_sk + size_t(n) * g.b_sn];
        g.C[size_t(m) * g.ldc + n] = acc;
      }
    return;
  } else {
  static const GemmTileFn<F> tile = pick_gemm_tile<F>();
  const int tasks = ((g.M + kMC - 1) / kMC) * ((g.N + kNC - 1) / kNC);
  const double work = double(g.M) * g.N * g.K;
#pragma omp parallel if (tasks > 1 && work > double(kParallelMin) * 8)
  {
    F* Ap = scratch<F>(size_t(kMC) * kKC, 0);
    F* Bp = scratch<F>(size_t(kKC) * kNC, 1);
#pragma omp for schedule(dynamic)
    for (int t = 0; t < tasks; ++t) tile(g, t, Ap, Bp);
  }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Encoder

template <class F>
void encoder_forward(F* out, const int* inp, const F* wte, const F* wpe, int B, int T, int C) {
  const int N = B * T;
#pragma omp parallel for if (long(N) * C > kParallelMin)
  for (int n = 0; n < N; ++n) {
    const F* e = wte + size_t(inp[n]) * C;
    const F* p = wpe + size_t(n % T) * C;
    F* o = out + size_t(n) * C;
    for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
  }
}

template <class F>
void encoder_backward(F* dwte, F* dwpe, const F* dout, const int* inp, int B, int T, int C) {
  // A token may occur at several positions, so rows of dwte are shared: split the work by
  // channels instead, each thread adding all rows n = 0..N-1 in order for its channels.
  const int N = B * T;
  constexpr int kChunk = 64;
  const int chunks = (C + kChunk - 1) / kChunk;
#pragma omp parallel for if (long(N) * C > kParallelMin)
  for (int ch = 0; ch < chunks; ++ch) {
    const int c0 = ch * kChunk, c1 = std::min(C, c0 + kChunk);
    for (int n = 0; n < N; ++n) {
      const F* d = dout + size_t(n) * C;
      F* gte = dwte + size_t(inp[n]) * C;
      F* gpe = dwpe + size_t(n % T) * C;
      for (int c = c0; c < c1; ++c) {
        gte[c] += d[c];
        gpe[c] += d[c];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

template <class F>
void layernorm_forward(F* out, F* mean, F* rstd, const F* inp, const F* weight, const F* bias,
                       int N, int C) {
  const F eps = F(1e-5);
#pragma omp parallel for if (long(N) * C > kParallelMin)
  for (int n = 0; n < N; ++n) {
    const F* x = inp + size_t(n) * C;
    F* o = out + size_t(n) * C;
    F m = 0;
    for (int c = 0; c < C; ++c) m += x[c];
    m = m / F(C);
    F v = 0;
    for (int c = 0; c < C; ++c) {
      const F d = x[c] - m;
      v += d * d;
    }
    v = v / F(C);
    const F s = F(1) / sqrt(v + eps);
    if (bias) {
      for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    } else {
      for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c];
    }
    mean[n] = m;
    rstd[n] = s;
  }
}

template <class F>
void layernorm_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp,
                        const F* weight, const F* mean, const F* rstd, int N, int C) {
  const bool par = long(N) * C > kParallelMin;
  // dinp: one row per iteration.
#pragma omp parallel for if (par)
  for (int n = 0; n < N; ++n) {
    const F* x = inp + size_t(n) * C;
    const F* d = dout + size_t(n) * C;
    F* dx = dinp + size_t(n) * C;
    const F m = mean[n], s = rstd[n];
    F g_mean = 0, gx_mean = 0;
    for (int c = 0; c < C; ++c) {
      const F xh = (x[c] - m) * s;
      const F g = weight[c] * d[c];
      g_mean += g;
      gx_mean += g * xh;
    }
    g_mean = g_mean / F(C);
    gx_mean = gx_mean / F(C);
    for (int c = 0; c < C; ++c) {
      const F xh = (x[c] - m) * s;
      const F g = weight[c] * d[c];
      dx[c] += (g - g_mean - xh * gx_mean) * s;
    }
  }
  // dweight, dbias: channel chunks, rows added in order.
  constexpr int kChunk = 64;
  const int chunks = (C + kChunk - 1) / kChunk;
#pragma omp parallel for if (par)
  for (int ch = 0; ch < chunks; ++ch) {
    const int c0 = ch * kChunk, c1 = std::min(C, c0 + kChunk);
    for (int n = 0; n < N; ++n) {
      const F* x = inp + size_t(n) * C;
      const F* d = dout + size_t(n) * C;
      const F m = mean[n], s = rstd[n];
      for (int c = c0; c < c1; ++c) dweight[c] += (x[c] - m) * s * d[c];
      if (dbias)
        for (int c = c0; c < c1; ++c) dbias[c] += d[c];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Matmul (Linear layer)

template <class F>
void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC) {
#pragma omp parallel for if (long(N) * OC > kParallelMin)
  for (int n = 0; n < N; ++n) {
    F* o = out + size_t(n) * OC;
    if (bias) std::copy(bias, bias + OC, o);
    else std::fill(o, o + OC, F(0));
  }
  gemm(Gemm<F>{N, OC, C, inp, size_t(C), 1, weight, 1, size_t(C), out, size_t(OC)});
}

template <class F>
void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                     int N, int C, int OC) {
  // dinp[N,C] += dout[N,OC] @ weight[OC,C]
  gemm(Gemm<F>{N, C, OC, dout, size_t(OC), 1, weight, size_t(C), 1, dinp, size_t(C)});
  // dweight[OC,C] += dout^T[OC,N] @ inp[N,C]
  gemm(Gemm<F>{OC, C, N, dout, 1, size_t(OC), inp, size_t(C), 1, dweight, size_t(C)});
  if (dbias) {
    constexpr int kChunk = 256;
    const int chunks = (OC + kChunk - 1) / kChunk;
#pragma omp parallel for if (long(N) * OC > kParallelMin)
    for (int ch = 0; ch < chunks; ++ch) {
      const int o0 = ch * kChunk, o1 = std::min(OC, o0 + kChunk);
      for (int n = 0; n < N; ++n) {
        const F* d = dout + size_t(n) * OC;
        for (int o = o0; o < o1; ++o) dbias[o] += d[o];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Attention. One (batch, head) pair per OpenMP iteration: it owns the q/k/v slices of dinp of that
// pair, so the backward's sums over queries (into dk, dv) need no cross-thread reduction.
// Scores are computed for all keys of a query at once from a transposed copy of K (kT[i][t2]), so
// the inner loops run over contiguous memory; each score is still q_0 k_0 + q_1 k_1 + ... in order.

template <class F>
void attention_forward(F* out, F* att, const F* inp, int B, int T, int C, int NH, F scale) {
  const int hs = C / NH;
  const size_t C3 = size_t(3) * C;
#pragma omp parallel for if (long(B) * NH * T * T * hs > kParallelMin)
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH, h = bh % NH;
    const F* base = inp + size_t(b) * T * C3 + size_t(h) * hs;  // q of (b, t=0, h)
    F* kT = scratch<F>(size_t(hs) * T, 2);
    for (int t2 = 0; t2 < T; ++t2)
      for (int i = 0; i < hs; ++i) kT[size_t(i) * T + t2] = base[t2 * C3 + C + i];
    for (int t = 0; t < T; ++t) {
      const F* q = base + t * C3;
      F* a = att + (size_t(bh) * T + t) * T;
      const int len = t + 1;
      for (int t2 = 0; t2 < len; ++t2) a[t2] = F(0);
      for (int i = 0; i < hs; ++i) {
        const F qi = q[i];
        const F* kr = kT + size_t(i) * T;
        for (int t2 = 0; t2 < len; ++t2) a[t2] += qi * kr[t2];
      }
      F mx = -INFINITY;
      for (int t2 = 0; t2 < len; ++t2) {
        a[t2] = a[t2] * scale;
        mx = std::max(mx, a[t2]);
      }
      F sum = 0;
      for (int t2 = 0; t2 < len; ++t2) {
        a[t2] = exp(a[t2] - mx);
        sum += a[t2];
      }
      const F inv = F(1) / sum;
      for (int t2 = 0; t2 < len; ++t2) a[t2] = a[t2] * inv;
      for (int t2 = len; t2 < T; ++t2) a[t2] = F(0);
      F* o = out + (size_t(b) * T + t) * C + size_t(h) * hs;
      for (int i = 0; i < hs; ++i) o[i] = F(0);
      for (int t2 = 0; t2 < len; ++t2) {
        const F w = a[t2];
        const F* v = base + t2 * C3 + 2 * C;
        for (int i = 0; i < hs; ++i) o[i] += w * v[i];
      }
    }
  }
}

template <class F>
void attention_backward(F* dinp, const F* dout, const F* inp, const F* att, int B, int T, int C,
                        int NH, F scale) {
  const int hs = C / NH;
  const size_t C3 = size_t(3) * C;
#pragma omp parallel for if (long(B) * NH * T * T * hs > kParallelMin)
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH, h = bh % NH;
    const F* base = inp + size_t(b) * T * C3 + size_t(h) * hs;
    F* dbase = dinp + size_t(b) * T * C3 + size_t(h) * hs;
    F* vT = scratch<F>(size_t(hs) * T, 2);
    F* da = scratch<F>(size_t(T), 3);
    for (int t2 = 0; t2 < T; ++t2)
      for (int i = 0; i < hs; ++i) vT[size_t(i) * T + t2] = base[t2 * C3 + 2 * C + i];
    for (int t = 0; t < T; ++t) {
      const F* a = att + (size_t(bh) * T + t) * T;
      const F* d = dout + (size_t(b) * T + t) * C + size_t(h) * hs;
      const F* q = base + t * C3;
      F* dq = dbase + t * C3;
      const int len = t + 1;
      // da[t2] = dout_t . v_t2 ; dv_t2 += a[t2] * dout_t
      for (int t2 = 0; t2 < len; ++t2) da[t2] = F(0);
      for (int i = 0; i < hs; ++i) {
        const F di = d[i];
        const F* vr = vT + size_t(i) * T;
        for (int t2 = 0; t2 < len; ++t2) da[t2] += di * vr[t2];
      }
      for (int t2 = 0; t2 < len; ++t2) {
        const F w = a[t2];
        F* dv = dbase + t2 * C3 + 2 * C;
        for (int i = 0; i < hs; ++i) dv[i] += w * d[i];
      }
      // softmax backward, with the logit scale folded in: dz[t2] = scale * a (da - sum a da)
      F dot = 0;
      for (int t2 = 0; t2 < len; ++t2) dot += a[t2] * da[t2];
      for (int t2 = 0; t2 < len; ++t2) da[t2] = scale * (a[t2] * (da[t2] - dot));
      // dq_t += dz[t2] k_t2 ; dk_t2 += dz[t2] q_t
      for (int t2 = 0; t2 < len; ++t2) {
        const F z = da[t2];
        const F* k = base + t2 * C3 + C;
        F* dk = dbase + t2 * C3 + C;
        for (int i = 0; i < hs; ++i) dq[i] += z * k[i];
        for (int i = 0; i < hs; ++i) dk[i] += z * q[i];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GELU (tanh form) and residual

template <class F>
void gelu_forward(F* out, const F* inp, size_t n) {
  const F k0 = F(0.7978845608028654);  // sqrt(2/pi)
  const F k1 = F(0.044715);
#pragma omp parallel for if (long(n) > kParallelMin)
  for (std::ptrdiff_t i = 0; i < std::ptrdiff_t(n); ++i) {
    const F x = inp[i];
    const F u = k0 * (x + k1 * x * x * x);
    out[i] = F(0.5) * x * (F(1) + tanh(u));
  }
}

template <class F>
void gelu_backward(F* dinp, const F* inp, const F* dout, size_t n) {
  const F k0 = F(0.7978845608028654);
  const F k1 = F(0.044715);
#pragma omp parallel for if (long(n) > kParallelMin)
  for (std::ptrdiff_t i = 0; i < std::ptrdiff_t(n); ++i) {
    const F x = inp[i];
    const F u = k0 * (x + k1 * x * x * x);
    const F th = tanh(u);
    const F sech2 = F(1) - th * th;
    const F grad = F(0.5) * (F(1) + th) + F(0.5) * x * sech2 * k0 * (F(1) + F(3) * k1 * x * x);
    dinp[i] += grad * dout[i];
  }
}

template <class F>
void residual_forward(F* out, const F* a, const F* b, size_t n) {
#pragma omp parallel for if (long(n) > kParallelMin)
  for (std::ptrdiff_t i = 0; i < std::ptrdiff_t(n); ++i) out[i] = a[i] + b[i];
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy and GNB label sampling

template <class F>
void crossentropy_forward(F* losses, const F* logits, const int* targets, int N, int V, int Vp) {
#pragma omp parallel for if (long(N) * V > kParallelMin)
  for (int n = 0; n < N; ++n) {
    const F* l = logits + size_t(n) * Vp;
    F mx = -INFINITY;
    for (int j = 0; j < V; ++j) mx = std::max(mx, l[j]);
    F sum = 0;
    for (int j = 0; j < V; ++j) sum += exp(l[j] - mx);
    losses[n] = log(sum) - (l[targets[n]] - mx);
  }
}

template <class F>
void crossentropy_backward(F* dlogits, const F* logits, const int* targets, F dloss, int N, int V,
                           int Vp) {
#pragma omp parallel for if (long(N) * V > kParallelMin)
  for (int n = 0; n < N; ++n) {
    const F* l = logits + size_t(n) * Vp;
    F* dl = dlogits + size_t(n) * Vp;  // may be the same memory as l
    F mx = -INFINITY;
    for (int j = 0; j < V; ++j) mx = std::max(mx, l[j]);
    // dl[j] first holds exp(l[j] - mx) (each l[j] read before dl[j] is written).
    F sum = 0;
    for (int j = 0; j < V; ++j) {
      const F e = exp(l[j] - mx);
      dl[j] = e;
      sum += e;
    }
    const F inv = F(1) / sum;
    const int tgt = targets[n];
    for (int j = 0; j < V; ++j) dl[j] = dloss * (dl[j] * inv - (j == tgt ? F(1) : F(0)));
    for (int j = V; j < Vp; ++j) dl[j] = F(0);
  }
}

template <class F>
void sample_labels(int* targets, const F* logits, int N, int T, int V, int Vp, uint64_t seed,
                   uint32_t step, uint32_t seq0) {
#pragma omp parallel for if (long(N) * V > kParallelMin)
  for (int n = 0; n < N; ++n) {
    const F* l = logits + size_t(n) * Vp;
    const float u = gnb_uniform(seed, step, seq0 + uint32_t(n / T), uint32_t(n % T));
    F mx = -INFINITY;
    for (int j = 0; j < V; ++j) mx = std::max(mx, l[j]);
    F total = 0;
    for (int j = 0; j < V; ++j) total += exp(l[j] - mx);
    const F threshold = F(u) * total;
    // Walk the same running sum; the fallback (reached only if rounding makes every partial sum
    // <= u*S, which needs u*S to round up to S) is the last label with nonzero probability.
    int label = -1, last_nonzero = 0;
    F cdf = 0;
    for (int j = 0; j < V; ++j) {
      const F e = exp(l[j] - mx);
      cdf += e;
      if (e > F(0)) last_nonzero = j;
      if (cdf > threshold) {
        label = j;
        break;
      }
    }
    targets[n] = label >= 0 ? label : last_nonzero;
  }
}

// ---------------------------------------------------------------------------------------------
// Explicit instantiations. Every op for every number type: float (the reference), double (the finite-difference tests)
// and dual numbers (exact Hessian-vector products, cpu/dual.h); the GNB label sampling for the
// first two.
#define SGPT_INSTANTIATE_OPS(F)                                                                  \
  template void encoder_forward<F>(F*, const int*, const F*, const F*, int, int, int);           \
  template void encoder_backward<F>(F*, F*, const F*, const int*, int, int, int);                \
  template void layernorm_forward<F>(F*, F*, F*, const F*, const F*, const F*, int, int);        \
  template void layernorm_backward<F>(F*, F*, F*, const F*, const F*, const F*, const F*,        \
                                      const F*, int, int);                                       \
  template void matmul_forward<F>(F*, const F*, const F*, const F*, int, int, int);              \
  template void matmul_backward<F>(F*, F*, F*, const F*, const F*, const F*, int, int, int);     \
  template void attention_forward<F>(F*, F*, const F*, int, int, int, int, F);                   \
  template void attention_backward<F>(F*, const F*, const F*, const F*, int, int, int, int, F);  \
  template void gelu_forward<F>(F*, const F*, size_t);                                           \
  template void gelu_backward<F>(F*, const F*, const F*, size_t);                                \
  template void residual_forward<F>(F*, const F*, const F*, size_t);                             \
  template void crossentropy_forward<F>(F*, const F*, const int*, int, int, int);                \
  template void crossentropy_backward<F>(F*, const F*, const int*, F, int, int, int);

SGPT_INSTANTIATE_OPS(float)
SGPT_INSTANTIATE_OPS(double)
SGPT_INSTANTIATE_OPS(Dual<float>)
SGPT_INSTANTIATE_OPS(Dual<double>)
template void sample_labels<float>(int*, const float*, int, int, int, int, uint64_t, uint32_t, uint32_t);
template void sample_labels<double>(int*, const double*, int, int, int, int, uint64_t, uint32_t, uint32_t);
#undef SGPT_INSTANTIATE_OPS

}  // namespace sgpt::cpu
