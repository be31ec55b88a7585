// Tuning experiment for the fused Sophia-G step (not part of the build; compiled by hand:
//   nvcc -std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -Isrc -Ikernels \
//        bench/optimizer_bench_variants.cu -o optimizer_bench_variants
// It times variants of the bf16-grad / bf16-weight step without metrics (same arithmetic as
// kernels/optimizer.cu) and of a plain vectorised copy, against cudaMemcpy device-to-device:
//   cache hint of loads/stores (streaming .cs, default, read-only .nc loads), chunks of 8
//   elements per thread per iteration (1 or 2), grid (persistent = SMs x occupancy x k, or one
//   chunk per thread), block size.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/philox.h"
#include "cast.cuh"

using namespace sgpt;
using namespace sgpt::cuda;

#define CK(x)                                                                  \
  do {                                                                         \
    cudaError_t e_ = (x);                                                      \
    if (e_ != cudaSuccess) {                                                   \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));   \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

template <int kHint>
__device__ __forceinline__ float4 ld4(const float* p) {
  if constexpr (kHint == 0) return __ldcs(reinterpret_cast<const float4*>(p));
  else if constexpr (kHint == 2) return __ldg(reinterpret_cast<const float4*>(p));
  else return *reinterpret_cast<const float4*>(p);
}
template <int kHint>
__device__ __forceinline__ uint4 ld4u(const void* p) {
  if constexpr (kHint == 0) return __ldcs(reinterpret_cast<const uint4*>(p));
  else if constexpr (kHint == 2) return __ldg(reinterpret_cast<const uint4*>(p));
  else return *reinterpret_cast<const uint4*>(p);
}
template <int kHint>
__device__ __forceinline__ void st4(float* p, float4 v) {
  if constexpr (kHint == 0) __stcs(reinterpret_cast<float4*>(p), v);
  else *reinterpret_cast<float4*>(p) = v;
}
template <int kHint>
__device__ __forceinline__ void st4u(void* p, uint4 v) {
  if constexpr (kHint == 0) __stcs(reinterpret_cast<uint4*>(p), v);
  else *reinterpret_cast<uint4*>(p) = v;
}

struct Consts {
  float b1, omb1, decay, rho_bs, neg_lr;
};

template <int kHint>
__device__ __forceinline__ void step_chunk(float* p, float* m, const float* h,
                                           const __nv_bfloat16* g, __nv_bfloat16* w, size_t i0,
                                           const Consts& c, uint64_t seed, uint32_t step) {
  float pv[8], mv[8], hv[8], gv[8];
  float4 a = ld4<kHint>(p + i0), b = ld4<kHint>(p + i0 + 4);
  pv[0] = a.x, pv[1] = a.y, pv[2] = a.z, pv[3] = a.w, pv[4] = b.x, pv[5] = b.y, pv[6] = b.z, pv[7] = b.w;
  a = ld4<kHint>(m + i0), b = ld4<kHint>(m + i0 + 4);
  mv[0] = a.x, mv[1] = a.y, mv[2] = a.z, mv[3] = a.w, mv[4] = b.x, mv[5] = b.y, mv[6] = b.z, mv[7] = b.w;
  a = ld4<kHint>(h + i0), b = ld4<kHint>(h + i0 + 4);
  hv[0] = a.x, hv[1] = a.y, hv[2] = a.z, hv[3] = a.w, hv[4] = b.x, hv[5] = b.y, hv[6] = b.z, hv[7] = b.w;
  const uint4 gg = ld4u<kHint>(g + i0);
  const uint32_t gw[4] = {gg.x, gg.y, gg.z, gg.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    gv[2 * k] = __uint_as_float(gw[k] << 16);
    gv[2 * k + 1] = __uint_as_float(gw[k] & 0xFFFF0000u);
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    float pi = __fmul_rn(pv[k], c.decay);
    float mi = __fadd_rn(__fmul_rn(mv[k], c.b1), __fmul_rn(c.omb1, gv[k]));
    const float d = __fadd_rn(__fmul_rn(hv[k], c.rho_bs), 1e-15f);
    float r = __fdiv_rn(fabsf(mi), d);
    r = r > 1.0f ? 1.0f : r;
    const float s = mi > 0.0f ? 1.0f : (mi < 0.0f ? -1.0f : mi);
    pv[k] = __fadd_rn(pi, __fmul_rn(__fmul_rn(c.neg_lr, s), r));
    mv[k] = mi;
  }
  st4<kHint>(p + i0, make_float4(pv[0], pv[1], pv[2], pv[3]));
  st4<kHint>(p + i0 + 4, make_float4(pv[4], pv[5], pv[6], pv[7]));
  st4<kHint>(m + i0, make_float4(mv[0], mv[1], mv[2], mv[3]));
  st4<kHint>(m + i0 + 4, make_float4(mv[4], mv[5], mv[6], mv[7]));
  const Philox4 r0 = sr_words(seed, step, i0 >> 2), r1 = sr_words(seed, step, (i0 >> 2) + 1);
  uint16_t bb[8];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    bb[k] = sr_bf16_bits(pv[k], r0.v[k]);
    bb[k + 4] = sr_bf16_bits(pv[k + 4], r1.v[k]);
  }
  st4u<kHint>(w + i0, make_uint4(bb[0] | (uint32_t(bb[1]) << 16), bb[2] | (uint32_t(bb[3]) << 16),
                                 bb[4] | (uint32_t(bb[5]) << 16), bb[6] | (uint32_t(bb[7]) << 16)));
}

// n must be a multiple of 8 * kChunks here.
template <int kHint, int kChunks>
__global__ void sophia_variant(float* __restrict__ p, float* __restrict__ m,
                               const float* __restrict__ h, const __nv_bfloat16* __restrict__ g,
                               __nv_bfloat16* __restrict__ w, size_t nchunks, Consts c,
                               uint64_t seed, uint32_t step) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t q = size_t(blockIdx.x) * blockDim.x + threadIdx.x; q * kChunks < nchunks; q += stride) {
#pragma unroll
    for (int u = 0; u < kChunks; ++u) {
      // chunks u of consecutive threads are adjacent: thread-major within a u-slab
      const size_t chunk = (q / blockDim.x) * blockDim.x * kChunks + u * blockDim.x + (q % blockDim.x);
      if (chunk < nchunks) step_chunk<kHint>(p, m, h, g, w, chunk * 8, c, seed, step);
    }
  }
}

template <int kHint>
__global__ void copy_variant(const float* __restrict__ a, float* __restrict__ b, size_t n4) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += stride)
    st4<kHint>(b + 4 * i, ld4<kHint>(a + 4 * i));
}

template <class F>
double median_ms(F f, int reps = 30) {
  for (int i = 0; i < 5; ++i) f();
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(ev[2 * i]));
    f();
    CK(cudaEventRecord(ev[2 * i + 1]));
  }
  CK(cudaDeviceSynchronize());
  std::vector<double> t(reps);
  for (int i = 0; i < reps; ++i) {
    float ms;
    CK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
    t[i] = ms;
  }
  for (auto& e : ev) CK(cudaEventDestroy(e));
  std::sort(t.begin(), t.end());
  return t[reps / 2];
}

template <int kHint, int kChunks>
void run_sophia(const char* name, float* p, float* m, float* h, __nv_bfloat16* g, __nv_bfloat16* w,
                size_t n, double floor_ms, int sms) {
  const size_t nchunks = n / 8;
  auto kern = sophia_variant<kHint, kChunks>;
  for (int threads : {128, 256, 512}) {
    int occ = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, threads, 0));
    for (int mult : {1, 2, 4, 0}) {
      const size_t full = (nchunks / kChunks + threads - 1) / threads;
      const size_t blocks = mult == 0 ? full : std::min<size_t>(full, size_t(sms) * occ * mult);
      uint32_t step = 0;
      const Consts c{0.965f, 0.035f, 0.99988f, 24576.0f, -6e-4f};
      const double ms = median_ms([&] {
        kern<<<unsigned(blocks), threads>>>(p, m, h, g, w, nchunks, c, 7, ++step);
      });
      CK(cudaGetLastError());
      std::printf("sophia %-8s chunks=%d threads=%3d occ=%d grid=%-9s %7.3f ms  %5.1f%% of floor\n",
                  name, kChunks, threads, occ,
                  mult == 0 ? "full" : (std::to_string(mult) + "x").c_str(), ms, 100 * floor_ms / ms);
    }
  }
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t n = 773.6e6;  // GPT-2 774M, rounded to a multiple of 16 below
  const size_t nn = n / 16 * 16;
  float *p, *m, *h;
  __nv_bfloat16 *g, *w;
  CK(cudaMalloc(&p, nn * 4));
  CK(cudaMalloc(&m, nn * 4));
  CK(cudaMalloc(&h, nn * 4));
  CK(cudaMalloc(&g, nn * 2));
  CK(cudaMalloc(&w, nn * 2));
  CK(cudaMemset(p, 0x3c, nn * 4));  // 0x3c3c3c3c ~ 0.0115
  CK(cudaMemset(m, 0x3a, nn * 4));
  CK(cudaMemset(h, 0x36, nn * 4));
  CK(cudaMemset(g, 0x3b, nn * 2));
  // memcpy and copy-kernel bandwidth on 2 x 3 GB
  const size_t cb = size_t(3) << 30;
  float *a, *b;
  CK(cudaMalloc(&a, cb));
  CK(cudaMalloc(&b, cb));
  CK(cudaMemset(a, 0x3f, cb));
  const double mc = median_ms([&] { CK(cudaMemcpyAsync(b, a, cb, cudaMemcpyDeviceToDevice)); });
  const double bw = 2.0 * cb / (mc * 1e-3);
  std::printf("cudaMemcpy D2D: %.3f ms, %.0f GB/s\n", mc, bw / 1e9);
  for (int mult : {1, 2, 4, 0}) {
    const size_t n4 = cb / 16;
    const size_t full = (n4 + 255) / 256;
    const size_t blocks = mult == 0 ? full : std::min<size_t>(full, size_t(sms) * 8 * mult);
    const double t0 = median_ms([&] { copy_variant<0><<<unsigned(blocks), 256>>>(a, b, n4); });
    const double t1 = median_ms([&] { copy_variant<1><<<unsigned(blocks), 256>>>(a, b, n4); });
    std::printf("copy kernel grid=%s: cs %.0f GB/s, default %.0f GB/s\n",
                mult == 0 ? "full" : (std::to_string(mult) + "x").c_str(), 2.0 * cb / (t0 * 1e-3) / 1e9,
                2.0 * cb / (t1 * 1e-3) / 1e9);
  }
  CK(cudaFree(a));
  CK(cudaFree(b));
  const double floor_ms = 24.0 * nn / bw * 1e3;
  std::printf("sophia floor (24 B/param, n=%zu): %.3f ms\n", nn, floor_ms);
  run_sophia<0, 1>("cs", p, m, h, g, w, nn, floor_ms, sms);
  run_sophia<1, 1>("default", p, m, h, g, w, nn, floor_ms, sms);
  run_sophia<2, 1>("nc", p, m, h, g, w, nn, floor_ms, sms);
  run_sophia<0, 2>("cs", p, m, h, g, w, nn, floor_ms, sms);
  run_sophia<1, 2>("default", p, m, h, g, w, nn, floor_ms, sms);
  return 0;
}
