// FP8 E4M3 (the OCP "FN" variant that Hopper's tensor cores take): 1 sign bit, 4 exponent bits
// (bias 7), 3 mantissa bits; no infinities; 0x7F / 0xFF are NaN; the largest finite magnitude is
// 448 (0x7E), the smallest normal 2^-6, subnormals m * 2^-9 (m = 1..7).
//
// e4m3_bits(x) rounds to the nearest value, ties to the even encoding, and saturates: a finite or
// infinite |x| past 448 gives +-448 (CUDA's __NV_SATFINITE); NaN gives 0x7F. This host/device
// version is written from the format's definition; the GPU's quantization kernel uses CUDA's own
// conversion (__nv_cvt_float_to_fp8), and the GPU tests compare the two bit for bit.
#pragma once
#include <cmath>
#include <cstdint>

#include "bits.cuh"

namespace sgpt::cuda {

constexpr float kE4m3Max = 448.0f;

SGPT_HD uint8_t e4m3_bits(float x) {
  const uint32_t b = f32_bits(x);
  const uint8_t sign = static_cast<uint8_t>((b >> 24) & 0x80u);
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7F;                // NaN
  if (a >= f32_bits(kE4m3Max)) return sign | 0x7E;  // saturate (infinity included)
  if (a < 0x3C800000u) {  // |x| < 2^-6: multiples of 2^-9; 8 * 2^-9 = 2^-6 encodes as 0x08
    const float m = rintf(bits_f32(a) * 512.0f);  // exact scaling; rint: nearest, ties to even
    return sign | static_cast<uint8_t>(m);
  }
  // Normal: keep 3 of fp32's 23 mantissa bits, rounding the 20 dropped ones to nearest even on
  // the encoding (a carry into the exponent field is the right result; below 448 the largest
  // result is 448 itself, 0x7E).
  const uint32_t e = (a >> 23) - 127 + 7;  // 1 .. 15
  const uint32_t m = a & 0x7FFFFFu;
  uint32_t q = (e << 3) | (m >> 20);
  const uint32_t rest = m & 0xFFFFFu;
  if (rest > 0x80000u || (rest == 0x80000u && (q & 1u))) ++q;
  return sign | static_cast<uint8_t>(q);
}

SGPT_HD float e4m3_value(uint8_t c) {
  const uint32_t e = (c >> 3) & 0xFu, m = c & 7u;
  float v;
  if (e == 15 && m == 7) v = NAN;
  else if (e == 0) v = static_cast<float>(m) * (1.0f / 512.0f);
  else v = bits_f32(((e - 7 + 127) << 23) | (m << 20));
  return (c & 0x80u) ? -v : v;
}

}  // namespace sgpt::cuda
