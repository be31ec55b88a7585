// The building blocks of the tensor-core attention kernels (kernels/flash_attention.cu, the
// training forward and backward; kernels/flash_tangent.cu, the forward-mode tangents of both for
// Sophia-H's Hessian-vector product): bf16 tiles of 64 rows x 64 dims staged in shared memory by
// cp.async (rows padded to 72 elements so the 8 row addresses of an ldmatrix fall in 8 different
// 16-byte bank groups), ldmatrix into mma.sync.m16n8k16 fragments (bf16 operands, fp32
// accumulators), and the row write-back of a warp's 16 x 64 accumulator.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace sgpt::cuda::flash {

constexpr int kHs = 64;        // head size
constexpr int kRows = 64;      // rows per tile (queries or keys), 16 per warp
constexpr int kLd = kHs + 8;   // padded shared-memory row, in bf16 elements (144 bytes)
constexpr int kThreads = 128;  // 4 warps
constexpr int kTileElems = kRows * kLd;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d (16x8 fp32) += a (16x16 bf16, row) * b (16x8 bf16, col)
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<uint32_t*>(&v);
}

// Issues the cp.async copies of rows [r0, r0 + 64) x 64 dims of one head's slot into a padded
// shared tile; rows >= T are zero-filled. 512 16-byte chunks, 4 per thread.
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* base, size_t row_stride, int r0,
                                          int T_) {
#pragma unroll
  for (int i = 0; i < kRows * kHs / 8 / kThreads; ++i) {
    const int chunk = threadIdx.x + i * kThreads;
    const int r = chunk / (kHs / 8), c = (chunk % (kHs / 8)) * 8;
    const int t = r0 + r;
    const bool valid = t < T_;
    const bf16* src = base + size_t(valid ? t : 0) * row_stride + c;
    cp_async16(dst + r * kLd + c, src, valid);
  }
}

// A operand (16 rows x 64 dims, 4 k-steps of 16) of rows [row0, row0 + 16) of a padded tile.
__device__ __forceinline__ void load_a_frags(uint32_t (&a)[4][4], const bf16* tile, int row0) {
  const int lane = threadIdx.x % 32;
  const int r = row0 + (lane % 8) + ((lane / 8) & 1) * 8;
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) ldsm_x4(a[ks], tile + r * kLd + ks * 16 + (lane / 16) * 8);
}

// B operands for a product against rows [n0, n0 + 8) of a tile as the n side, all 64 dims as the
// k side ("X Y^T" with Y the tile): b[ks][0..1] for k-step ks.
__device__ __forceinline__ void load_b_rows(uint32_t (&b)[4][2], const bf16* tile, int n0) {
  const int lane = threadIdx.x % 32;
  const bf16* p = tile + (n0 + lane % 8) * kLd + (lane / 8) * 8;
  uint32_t r[4];
  ldsm_x4(r, p);  // dims 0..31
  b[0][0] = r[0], b[0][1] = r[1], b[1][0] = r[2], b[1][1] = r[3];
  ldsm_x4(r, p + 32);  // dims 32..63
  b[2][0] = r[0], b[2][1] = r[1], b[3][0] = r[2], b[3][1] = r[3];
}

// B operands for a product with rows [k0, k0 + 16) of a tile as the k side and dims as the n side
// ("P Y" with Y the tile): b[nt][0..1] for the 8 n-tiles of 8 dims.
__device__ __forceinline__ void load_b_cols(uint32_t (&b)[8][2], const bf16* tile, int k0) {
  const int lane = threadIdx.x % 32;
  const bf16* p = tile + (k0 + (lane % 8) + ((lane / 8) & 1) * 8) * kLd + (lane / 16) * 8;
#pragma unroll
  for (int np = 0; np < 4; ++np) {
    uint32_t r[4];
    ldsm_x4_t(r, p + np * 16);
    b[2 * np][0] = r[0], b[2 * np][1] = r[1], b[2 * np + 1][0] = r[2], b[2 * np + 1][1] = r[3];
  }
}


// Adds a warp's 16 x 64 fp32 accumulator (times `mul`) into rows [row0, row0 + 16) of a bf16
// [T, ld] slot (read-modify-write; this thread is the only writer of its elements), or
// overwrites them when !accumulate.
__device__ __forceinline__ void accumulate_rows(bf16* base, size_t ld, int row0, int T_,
                                                const float (&acc)[8][4], float mul,
                                                bool accumulate) {
  const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + g + 8 * half;
    if (row >= T_) continue;
    bf16* p = base + size_t(row) * ld;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      __nv_bfloat162* q = reinterpret_cast<__nv_bfloat162*>(p + nt * 8 + 2 * c);
      const float2 old = accumulate ? __bfloat1622float2(*q) : make_float2(0.0f, 0.0f);
      *q = __floats2bfloat162_rn(old.x + mul * acc[nt][2 * half],
                                 old.y + mul * acc[nt][2 * half + 1]);
    }
  }
}

template <class Kernel>
void set_smem_limit(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    SGPT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
}

constexpr size_t kTileBytes = sizeof(bf16) * kTileElems;

}  // namespace sgpt::cuda::flash
