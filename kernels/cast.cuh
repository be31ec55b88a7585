// Rounding fp32 to bf16 / fp16, and the element loads and stores the optimizer kernels share.
//
// Stochastic rounding (SR) of x to a 16-bit format: with lo <= x <= hi the two representable
// neighbours (lo = x rounded toward zero, hi the next value away from zero), the result is hi with
// probability (|x| - |lo|) / (|hi| - |lo|), else lo; so E[result] = x. It is a pure function of
// (x, r) with r a 32-bit random word:
//   bf16: add the top 16 bits of r to the low 16 bits of x's fp32 encoding, keep the high half
//         (the carry happens with probability low16/2^16: exactly unbiased).
//   fp16, |x| >= 2^-14 (normal range): the same with 13 bits (r >> 19) on the 13 bits fp16 drops,
//         then re-bias the exponent; anything that carries past 65504 becomes Inf (the upper
//         neighbour of the largest finite value, like bf16 past its largest finite value).
//   fp16, |x| < 2^-14 (subnormal spacing 2^-24): k = floor(|x|*2^24), frac = |x|*2^24 - k (both
//         exact), result k+1 when uniform01(r) < frac: bias at most 2^-24 of the spacing.
//   Inf stays Inf, NaN stays a (quiet) NaN, signs are kept; x = 0 gives 0.
// The random word of global element j at optimizer step s is word (j % 4) of
//   philox(seed, c0 = low32(j/4), c1 = high32(j/4), c2 = s, stream = kStochasticRounding),
// so one Philox evaluation serves four consecutive elements. Host and device compute the same bits
// (these functions are __host__ __device__), which the tests use.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "bits.cuh"
#include "common/philox.h"

namespace sgpt::cuda {

// The four random words of elements 4q .. 4q+3 (q = j / 4).
SGPT_HD Philox4 sr_words(uint64_t seed, uint32_t step, uint64_t q) {
  return philox(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32), step,
                kStochasticRounding);
}

SGPT_HD uint16_t sr_bf16_bits(float x, uint32_t r) {
  uint32_t b = f32_bits(x);
  if ((b & 0x7F800000u) == 0x7F800000u) {  // Inf or NaN: truncate, keep NaN a quiet NaN
    uint16_t top = static_cast<uint16_t>(b >> 16);
    if (b & 0x007FFFFFu) top |= 0x0040u;
    return top;
  }
  b += r >> 16;
  return static_cast<uint16_t>(b >> 16);
}

SGPT_HD uint16_t sr_half_bits(float x, uint32_t r) {
  const uint32_t b = f32_bits(x);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
  uint32_t a = b & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) return sign | (a > 0x7F800000u ? 0x7E00u : 0x7C00u);
  if (a >= 0x38800000u) {  // |x| >= 2^-14
    a += r >> 19;
    uint32_t h = (a >> 13) - (112u << 10);  // fp32 exponent bias 127 -> fp16 bias 15
    if (h >= 0x7C00u) h = 0x7C00u;
    return sign | static_cast<uint16_t>(h);
  }
  const float s = bits_f32(a) * 16777216.0f;  // |x| / 2^-24, exact
  const float k = floorf(s);
  const float frac = s - k;                   // exact
  const uint32_t q = static_cast<uint32_t>(k) + (uniform01(r) < frac ? 1u : 0u);
  return sign | static_cast<uint16_t>(q);
}

// ---- element types: widening to fp32, 16-bit encodings, rounding of working weights ----
template <class T>
struct Elem;

template <>
struct Elem<float> {
  static constexpr bool k16 = false;
  SGPT_HD static float to_f32(float x) { return x; }
};

template <>
struct Elem<__nv_bfloat16> {
  static constexpr bool k16 = true;
  SGPT_HD static float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
  SGPT_HD static float bits_to_f32(uint16_t b) { return bits_f32(static_cast<uint32_t>(b) << 16); }
  SGPT_HD static uint16_t sr_bits(float x, uint32_t r) { return sr_bf16_bits(x, r); }
  SGPT_HD static uint16_t rn_bits(float x) {
    __nv_bfloat16_raw raw = __float2bfloat16_rn(x);
    return raw.x;
  }
  SGPT_HD static __nv_bfloat16 from_bits(uint16_t b) {
    __nv_bfloat16_raw raw;
    raw.x = b;
    return __nv_bfloat16(raw);
  }
};

template <>
struct Elem<__half> {
  static constexpr bool k16 = true;
  SGPT_HD static float to_f32(__half x) { return __half2float(x); }
  SGPT_HD static float bits_to_f32(uint16_t b) {
    __half_raw raw;
    raw.x = b;
    return __half2float(__half(raw));
  }
  SGPT_HD static uint16_t sr_bits(float x, uint32_t r) { return sr_half_bits(x, r); }
  SGPT_HD static uint16_t rn_bits(float x) {
    __half_raw raw = __float2half_rn(x);
    return raw.x;
  }
  SGPT_HD static __half from_bits(uint16_t b) {
    __half_raw raw;
    raw.x = b;
    return __half(raw);
  }
};

#if defined(__CUDACC__)
// ---- chunked loads/stores (device only) ----
// The kernels walk the buffers in chunks of 8 elements that start at global indices j0 that are
// multiples of 8. Local element i0 + k (k in [0, 8)) of a buffer is global element j0 + k; i0 may
// be negative for the first chunk of a shard. Only k in [kb, ke) are inside the buffer. `vec`
// (all 8 inside and the buffer chunk-aligned) selects 16-byte accesses (two for fp32, one for
// 16-bit types) with streaming cache hints (every byte is touched once per step); otherwise
// scalar accesses of the valid elements, the others read as 0.
struct Chunk {
  long long i0;  // local index of the chunk's first element
  size_t j0;     // its global index (multiple of 8)
  int kb, ke;    // valid elements [kb, ke)
  bool vec;
};

template <class T>
__device__ __forceinline__ void load8(const T* src, const Chunk& c, float (&x)[8]) {
  if (c.vec) {
    if constexpr (!Elem<T>::k16) {
      const float4* s = reinterpret_cast<const float4*>(src + c.i0);
      const float4 a = __ldcs(s);
      const float4 b = __ldcs(s + 1);
      x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
      x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else {
      const uint4 a = __ldcs(reinterpret_cast<const uint4*>(src + c.i0));
      const uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        x[2 * k] = Elem<T>::bits_to_f32(static_cast<uint16_t>(w[k] & 0xFFFFu));
        x[2 * k + 1] = Elem<T>::bits_to_f32(static_cast<uint16_t>(w[k] >> 16));
      }
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) x[k] = (k >= c.kb && k < c.ke) ? Elem<T>::to_f32(src[c.i0 + k]) : 0.0f;
}

__device__ __forceinline__ void store8(float* dst, const Chunk& c, const float (&x)[8]) {
  if (c.vec) {
    float4* d = reinterpret_cast<float4*>(dst + c.i0);
    __stcs(d, make_float4(x[0], x[1], x[2], x[3]));
    __stcs(d + 1, make_float4(x[4], x[5], x[6], x[7]));
    return;
  }
#pragma unroll
  for (int k = 0; k < 8; ++k)
    if (k >= c.kb && k < c.ke) dst[c.i0 + k] = x[k];
}

template <class T>
__device__ __forceinline__ void store8_bits(T* dst, const Chunk& c, const uint16_t (&b)[8]) {
  if (c.vec) {
    uint4 a;
    a.x = b[0] | (static_cast<uint32_t>(b[1]) << 16);
    a.y = b[2] | (static_cast<uint32_t>(b[3]) << 16);
    a.z = b[4] | (static_cast<uint32_t>(b[5]) << 16);
    a.w = b[6] | (static_cast<uint32_t>(b[7]) << 16);
    __stcs(reinterpret_cast<uint4*>(dst + c.i0), a);
    return;
  }
#pragma unroll
  for (int k = 0; k < 8; ++k)
    if (k >= c.kb && k < c.ke) dst[c.i0 + k] = Elem<T>::from_bits(b[k]);
}

// Working weights of a chunk from the updated fp32 master values: a copy for float, stochastic
// rounding for 16-bit types (two Philox evaluations per chunk of 8).
template <class T>
__device__ __forceinline__ void store_weights8(T* dst, const Chunk& c, const float (&p)[8],
                                               uint64_t seed, uint32_t step) {
  if constexpr (!Elem<T>::k16) {
    store8(dst, c, p);
  } else {
    const Philox4 r0 = sr_words(seed, step, c.j0 >> 2);
    const Philox4 r1 = sr_words(seed, step, (c.j0 >> 2) + 1);
    uint16_t b[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      b[k] = Elem<T>::sr_bits(p[k], r0.v[k]);
      b[k + 4] = Elem<T>::sr_bits(p[k + 4], r1.v[k]);
    }
    store8_bits(dst, c, b);
  }
}

// The chunks covering local [0, n) with global base `index_base`: chunk q (q = 0 .. nchunks-1)
// starts at global index 8*(index_base/8 + q).
struct ChunkGrid {
  size_t n, index_base, first;  // first = index_base / 8
  size_t nchunks;
  bool aligned;                 // every buffer passes chunk_aligned
  __device__ __forceinline__ Chunk chunk(size_t q) const {
    Chunk c;
    c.j0 = (first + q) * 8;
    c.i0 = static_cast<long long>(c.j0) - static_cast<long long>(index_base);
    c.kb = c.i0 < 0 ? static_cast<int>(-c.i0) : 0;
    const long long rem = static_cast<long long>(n) - c.i0;
    c.ke = rem < 8 ? static_cast<int>(rem) : 8;
    c.vec = aligned && c.kb == 0 && c.ke == 8;
    return c;
  }
};

inline ChunkGrid make_chunk_grid(size_t n, size_t index_base, bool aligned) {
  ChunkGrid g;
  g.n = n;
  g.index_base = index_base;
  g.first = index_base / 8;
  g.nchunks = n == 0 ? 0 : (index_base + n + 7) / 8 - g.first;
  g.aligned = aligned;
  return g;
}

// True when the chunks (starting at global multiples of 8) are 16-byte aligned in this buffer.
template <class T>
inline bool chunk_aligned(const T* ptr, size_t index_base) {
  if (ptr == nullptr) return true;
  const uintptr_t a = reinterpret_cast<uintptr_t>(ptr) - (index_base % 8) * sizeof(T);
  return a % 16 == 0;
}
#endif

}  // namespace sgpt::cuda
