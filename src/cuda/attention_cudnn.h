// Causal multi-head attention through cuDNN's fused flash attention (bf16), built with cuDNN's
// backend graph API (cudnnBackend*: the C++ frontend headers are not used).
//
// Same contract as attention_forward/attention_backward<bf16> (cuda/ops_cuda.h): inp [B,T,3C]
// holding q,k,v (head h at columns h*hs of each third), out [B,T,C], lse [B,NH,T] fp32 = the
// natural log-sum-exp of each query's scaled logits (cuDNN calls it the softmax "stats"; the two
// are the same quantity, so either implementation's forward can feed either backward). The
// backward OVERWRITES dinp [B,T,3C].
//
// The graphs (one forward, one backward per batch shape, cached; the scale is a by-value scalar
// so every layer shares them) are the operation patterns cuDNN's runtime fusion engine recognises
// as scaled dot-product attention: Q.K^T, scale, causal mask (generated row/column indices,
// row >= col, select), softmax with its stats, P.V; the backward recomputes P from the stats and
// forms dV = P^T.dO, dS = P * (dO.V^T - rowsum(dO*O)) * scale, dK = dS^T.Q, dQ = dS.K.
// Engines whose numerical notes say "non-deterministic" are skipped, so repeated runs give the
// same bits (checked by tests/gpu/test_kernels_attention.cpp).
#pragma once
#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "cuda/ops_cuda.h"

namespace sgpt::cuda {

class CudnnAttention {
 public:
  // Throws std::runtime_error when the build has no cuDNN or no cuDNN handle can be created.
  CudnnAttention();
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Whether this build links cuDNN.
  static bool built();
  // The cuDNN library loaded at run time, "9.19.0" (empty in a build without cuDNN).
  static std::string runtime_version();
  // Whether the shapes are ones cuDNN's fused attention supports: head size C/NH a multiple of 8
  // and at most 128, C a multiple of 8 (16-byte aligned q, k, v column blocks).
  static bool supports(int C, int NH);

  // Builds (and caches) the forward and backward plans for this shape now, so that an unsupported
  // shape or a missing engine is reported here rather than at the first training step.
  void prepare(int B, int T, int C, int NH);

  // The workspace bytes the forward and backward plans of this shape need (the larger of the
  // two; builds the plans when not cached yet).
  size_t workspace_bytes(int B, int T, int C, int NH);

  // `workspace`: device memory of at least workspace_bytes(B, T, C, NH) bytes, 16-byte aligned,
  // that nothing else uses during the call (the model lends a region of its logits buffer, dead
  // at those times); nullptr: a workspace owned by this object, grown on demand.
  void forward(bf16* out, float* lse, const bf16* inp, int B, int T, int C, int NH, float scale,
               cudaStream_t stream, void* workspace = nullptr);
  void backward(bf16* dinp, const bf16* dout, const bf16* inp, const bf16* out, const float* lse,
                int B, int T, int C, int NH, float scale, cudaStream_t stream,
                void* workspace = nullptr);
  // Bytes of the workspace owned by this object (0 while every call got one from the caller).
  size_t own_workspace_bytes() const;

  // "cuDNN <runtime version>, forward engine <index>, backward engine <index>, workspace <MiB>"
  // (engines of the plans built so far; the workspace is the largest any of them needs), for logs
  // and benchmark records.
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sgpt::cuda
