// Bit casts between floating-point values and their encodings, identical on host and device
// (the host side uses memcpy, the device side the CUDA intrinsics). Shared by the rounding code
// (cast.cuh) and the host/device expf replica (classifier.cuh).
#pragma once
#include <cstdint>
#include <cstring>

#include "common/philox.h"  // SGPT_HD

namespace sgpt::cuda {

SGPT_HD uint32_t f32_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
#endif
}

SGPT_HD float bits_f32(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, 4);
  return x;
#endif
}

SGPT_HD uint64_t f64_bits(double d) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t b;
  std::memcpy(&b, &d, 8);
  return b;
#endif
}

SGPT_HD double bits_f64(uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(b));
#else
  double d;
  std::memcpy(&d, &b, 8);
  return d;
#endif
}

}  // namespace sgpt::cuda
