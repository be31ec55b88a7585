// Linear layers through cuBLASLt.
//
// Forward:  out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC]          (row-major, PyTorch layout)
//           (matmul_forward_accumulate: out += inp @ weight^T, beta = 1, no bias)
// Backward: dinp[N,C]     += dout[N,OC] @ weight[OC,C]
//           dweight[OC,C] += dout^T @ inp
//           dbias[OC]     += sum_n dout[n,:]
//
// cuBLASLt is column-major, so each row-major product is issued as its transpose: a row-major
// [R, K] matrix is a column-major K x R matrix with leading dimension K.
//   forward:  out^T (OC x N) = op_T(weight: C x OC) @ (inp: C x N)            + bias epilogue
//   dinp:     dinp^T (C x N) = (weight: C x OC) @ (dout: OC x N)              beta = 1
//   dweight:  dweight^T (C x OC) = (inp: C x N) @ op_T(dout: OC x N)          beta = 1
// Compute type CUBLAS_COMPUTE_32F in both precisions (so fp32 runs without TF32 and bf16 operands
// accumulate in fp32). The chosen algorithm is cached per shape, transposes, type, epilogue and
// pointer alignment (the heuristic must know the real alignment: it assumes 256 bytes otherwise).
// dbias uses our own deterministic two-stage column reduction (fixed order, no atomics).
//
// GELU fused into the epilogue (bf16 only; see matmul_forward_gelu in cuda/ops_cuda.h):
//   forward:  pre = inp @ weight^T + bias, out = gelu(pre): CUBLASLT_EPILOGUE_GELU_AUX(_BIAS) writes
//             out as D and pre as the auxiliary matrix (same shape and leading dimension as D);
//   backward: dpre = (dout @ weight) * gelu'(pre): CUBLASLT_EPILOGUE_DGELU on the dinp product,
//             reading pre as the auxiliary matrix (dinp is overwritten, beta = 0).
// cuBLASLt evaluates GELU from the fp32 accumulator; its GELU is the tanh approximation GPT-2
// uses, but its arithmetic differs from gelu.cu's at the level of fp32 rounding, so the fp32 path
// (parity with the CPU) keeps the separate kernels.
#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "common.cuh"
#include "cuda/ops_cuda.h"

#define SGPT_CUBLAS_CHECK(expr)                                                          \
  do {                                                                                   \
    const cublasStatus_t sgpt_status_ = (expr);                                          \
    if (sgpt_status_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::sgpt::cuda::throw_error("cuBLASLt", cublasLtGetStatusString(sgpt_status_), #expr, \
                                __FILE__, __LINE__);                                     \
  } while (0)

namespace sgpt::cuda {

enum class GeluEpilogue { kNone, kGeluAux, kDGelu };

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr int kFp8Key = -8;  // the data-type field of an FP8 product's algorithm key

template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else return CUDA_R_16BF;
}

uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al /= 2;
  return al;
}

}  // namespace

struct MatmulContext::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  using Key = std::tuple<int, int, int, int, int, int, bool, bool, int, bool, bool, uint32_t,
                         uint32_t, uint32_t, uint32_t, int, uint32_t>;
  std::map<Key, cublasLtMatmulAlgo_t> algos;

  // D (m x n, ldd) = op(A) @ op(B) + beta * D (+ bias[m]); column-major. gelu: kGeluAux writes
  // D = gelu(result), aux = result; kDGelu writes D = result * gelu'(aux). aux: m x n, ld ldd.
  template <class T>
  void matmul(T* D, const T* A, const T* B, const T* bias, int m, int n, int k, bool transa,
              bool transb, int lda, int ldb, int ldd, float beta, cudaStream_t stream,
              GeluEpilogue gelu = GeluEpilogue::kNone, const T* aux = nullptr) {
    const cudaDataType_t dt = cuda_type<T>();
    cublasLtMatmulDesc_t op;
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (gelu == GeluEpilogue::kGeluAux)
      epi = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    else if (gelu == GeluEpilogue::kDGelu)
      epi = CUBLASLT_EPILOGUE_DGELU;  // (bias not supported here: the callers pass none)
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    if (gelu != GeluEpilogue::kNone) {
      const int64_t ldaux = ldd;
      SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ldaux, sizeof(ldaux)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &dt, sizeof(dt)));
    }
    if (bias) {
      SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dt, sizeof(dt)));
    }
    cublasLtMatrixLayout_t la, lb, ld;
    SGPT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, dt, transa ? k : m, transa ? m : k, lda));
    SGPT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, dt, transb ? n : k, transb ? k : n, ldb));
    SGPT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, dt, m, n, ldd));

    const uint32_t al_a = alignment_of(A), al_b = alignment_of(B), al_d = alignment_of(D),
                   al_bias = bias ? alignment_of(bias) : 256;
    const Key key{m, n, k, lda, ldb, ldd, transa, transb, static_cast<int>(dt), bias != nullptr,
                  beta != 0.0f, al_a, al_b, al_d, al_bias, static_cast<int>(gelu),
                  aux ? alignment_of(aux) : 256};
    auto it = algos.find(key);
    if (it == algos.end()) {
      cublasLtMatmulPreference_t pref;
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const size_t ws = kWorkspaceBytes;
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      SGPT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, op, la, lb, ld, ld, pref, 1, &result, &found));
      cublasLtMatmulPreferenceDestroy(pref);
      if (found == 0)
        throw_error("cuBLASLt", "no algorithm for m=" + std::to_string(m) + " n=" +
                        std::to_string(n) + " k=" + std::to_string(k),
                    "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
      it = algos.emplace(key, result.algo).first;
    }
    const float alpha = 1.0f;
    SGPT_CUBLAS_CHECK(cublasLtMatmul(handle, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld,
                                     &it->second, workspace, kWorkspaceBytes, stream));
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
  }

  // D (m x n bf16, ldd) = a_descale * b_descale * (op_T(A: k x m E4M3, lda) @ (B: k x n E4M3,
  // ldb)), column-major, fp32 accumulation; the descales are device pointers. The layout FP8
  // GEMMs take: A transposed, B not (both operands contiguous along k).
  void matmul_fp8(bf16* D, const uint8_t* A, const uint8_t* B, const float* a_descale,
                  const float* b_descale, int m, int n, int k, int lda, int ldb, int ldd,
                  cudaStream_t stream) {
    cublasLtMatmulDesc_t op;
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_descale, sizeof(a_descale)));
    SGPT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_descale, sizeof(b_descale)));
    cublasLtMatrixLayout_t la, lb, ld;
    SGPT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, k, m, lda));
    SGPT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, k, n, ldb));
    SGPT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, m, n, ldd));
    const uint32_t al_a = alignment_of(A), al_b = alignment_of(B), al_d = alignment_of(D);
    const Key key{m, n, k, lda, ldb, ldd, true, false, kFp8Key, false, false, al_a, al_b, al_d, 256, 0, 256};
    auto it = algos.find(key);
    if (it == algos.end()) {
      cublasLtMatmulPreference_t pref;
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const size_t ws = kWorkspaceBytes;
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
      SGPT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      SGPT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, op, la, lb, ld, ld, pref, 1, &result, &found));
      cublasLtMatmulPreferenceDestroy(pref);
      if (found == 0)
        throw_error("cuBLASLt", "no FP8 algorithm for m=" + std::to_string(m) + " n=" +
                        std::to_string(n) + " k=" + std::to_string(k),
                    "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
      it = algos.emplace(key, result.algo).first;
    }
    const float alpha = 1.0f, beta = 0.0f;
    SGPT_CUBLAS_CHECK(cublasLtMatmul(handle, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld,
                                     &it->second, workspace, kWorkspaceBytes, stream));
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
  }
};

MatmulContext::MatmulContext() : impl_(std::make_unique<Impl>()) {
  SGPT_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  const cudaError_t e = cudaMalloc(&impl_->workspace, kWorkspaceBytes);
  if (e != cudaSuccess) {  // out of memory: leave no handle and no pending error behind
    cudaGetLastError();
    cublasLtDestroy(impl_->handle);
    impl_->workspace = nullptr;
    SGPT_CUDA_CHECK(e);
  }
}

size_t MatmulContext::workspace_bytes() const { return impl_->workspace ? kWorkspaceBytes : 0; }

MatmulContext::~MatmulContext() {
  if (impl_->workspace) cudaFree(impl_->workspace);
  if (impl_->handle) cublasLtDestroy(impl_->handle);
}

// Stage 1 of dbias: block (32, 8), grid (ceil(OC/32), chunks); partial: [chunks][OC].
template <class T>
__global__ void column_sum_partial(float* partial, const T* x, int N, int OC, int rows_per_chunk) {
  __shared__ float s[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  float a = 0.0f;
  if (c < OC)
    for (int r = r0 + threadIdx.y; r < r1; r += 8) a += to_f(x[size_t(r) * OC + c]);
  s[threadIdx.y][threadIdx.x] = a;
  __syncthreads();
  if (threadIdx.y == 0 && c < OC) {
    float t = 0.0f;
    for (int i = 0; i < 8; ++i) t += s[i][threadIdx.x];
    partial[size_t(blockIdx.y) * OC + c] = t;
  }
}

// Stage 2: dst[c] += sum over chunks in order.
template <class T>
__global__ void column_sum_final(T* dst, const float* partial, int chunks, int OC) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= OC) return;
  float a = 0.0f;
  for (int k = 0; k < chunks; ++k) a += partial[size_t(k) * OC + c];
  dst[c] = from_f<T>(to_f(dst[c]) + a);
}

template <class T>
void matmul_forward(MatmulContext& ctx, T* out, const T* inp, const T* weight, const T* bias,
                    int N, int C, int OC, cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  ctx.impl().matmul<T>(out, weight, inp, bias, OC, N, C, /*transa=*/true, /*transb=*/false, C, C,
                       OC, 0.0f, stream);
}

template <class T>
void matmul_forward_accumulate(MatmulContext& ctx, T* out, const T* inp, const T* weight, int N,
                               int C, int OC, cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  ctx.impl().matmul<T>(out, weight, inp, nullptr, OC, N, C, /*transa=*/true, /*transb=*/false, C,
                       C, OC, 1.0f, stream);
}

template <class T>
void matmul_backward(MatmulContext& ctx, T* dinp, T* dweight, T* dbias, const T* dout,
                     const T* inp, const T* weight, int N, int C, int OC, Scratch& scratch,
                     cudaStream_t stream, bool accumulate_dinp) {
  if (N == 0) return;
  if (dinp)
    ctx.impl().matmul<T>(dinp, weight, dout, nullptr, C, N, OC, false, false, C, OC, C,
                         accumulate_dinp ? 1.0f : 0.0f, stream);
  if (dweight)
    ctx.impl().matmul<T>(dweight, inp, dout, nullptr, C, OC, N, false, true, C, OC, C, 1.0f,
                         stream);
  if (dbias) {
    const int chunks = static_cast<int>(std::min<size_t>(128, ceil_div(N, 64)));
    const int rows_per_chunk = static_cast<int>(ceil_div(N, chunks));
    float* partial = scratch.floats(size_t(chunks) * OC);
    column_sum_partial<<<dim3(ceil_div(OC, 32), chunks), dim3(32, 8), 0, stream>>>(
        partial, dout, N, OC, rows_per_chunk);
    SGPT_LAUNCH_CHECK();
    column_sum_final<<<ceil_div(OC, 256), 256, 0, stream>>>(dbias, partial, chunks, OC);
    SGPT_LAUNCH_CHECK();
  }
}

bool fp8_matmul_usable() {
  int dev = 0, major = 0, minor = 0;
  SGPT_CUDA_CHECK(cudaGetDevice(&dev));
  SGPT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  SGPT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  return major * 10 + minor >= 89;
}

void matmul_forward_fp8(MatmulContext& ctx, bf16* out, const uint8_t* inp, const uint8_t* weight,
                        const float* inp_descale, const float* weight_descale, int N, int C,
                        int OC, cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  ctx.impl().matmul_fp8(out, weight, inp, weight_descale, inp_descale, OC, N, C, C, C, OC, stream);
}

void matmul_forward_gelu(MatmulContext& ctx, bf16* out, bf16* pre, const bf16* inp,
                         const bf16* weight, const bf16* bias, int N, int C, int OC,
                         cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  ctx.impl().matmul<bf16>(out, weight, inp, bias, OC, N, C, true, false, C, C, OC, 0.0f, stream,
                          GeluEpilogue::kGeluAux, pre);
}

void matmul_backward_dgelu(MatmulContext& ctx, bf16* dpre, bf16* dweight, bf16* dbias,
                           const bf16* dout, const bf16* inp, const bf16* weight, const bf16* pre,
                           int N, int C, int OC, Scratch& scratch, cudaStream_t stream) {
  if (N == 0) return;
  ctx.impl().matmul<bf16>(dpre, weight, dout, nullptr, C, N, OC, false, false, C, OC, C, 0.0f,
                          stream, GeluEpilogue::kDGelu, pre);
  matmul_backward<bf16>(ctx, nullptr, dweight, dbias, dout, inp, weight, N, C, OC, scratch, stream,
                        true);
}

#define SGPT_INSTANTIATE(T)                                                                    \
  template void matmul_forward<T>(MatmulContext&, T*, const T*, const T*, const T*, int, int, int, \
                                  cudaStream_t);                                               \
  template void matmul_forward_accumulate<T>(MatmulContext&, T*, const T*, const T*, int, int, \
                                             int, cudaStream_t);                               \
  template void matmul_backward<T>(MatmulContext&, T*, T*, T*, const T*, const T*, const T*, int, \
                                   int, int, Scratch&, cudaStream_t, bool);
SGPT_INSTANTIATE(float)
SGPT_INSTANTIATE(bf16)
#undef SGPT_INSTANTIATE

}  // namespace sgpt::cuda
