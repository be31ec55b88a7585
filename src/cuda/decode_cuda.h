// The GPU KV-cache decoder (docs/sampling.md): the Decoder of sample/decoder.h on the current
// CUDA device, fp32 throughout.
//
// Device memory: the fp32 parameters (copied from the host by set_params, ParamLayout order), the
// key and value caches [L, block_size, C] each, and activations for block_size rows (a prefill
// or a slide runs all its rows at once; a step runs one). Per layer and call:
//   LayerNorm (kernels/layernorm.cu), the qkv Linear (cuBLASLt, kernels/matmul.cu; TF32 off),
//   the new keys and values copied into the cache, attention of each new query over the cached
//   positions (kernels/decode.cu: one block per query row and head), the output projection, the
//   residual, LayerNorm, the MLP (cuBLASLt, gelu.cu, cuBLASLt) and the residual; then the final
//   LayerNorm and the tied head for the last row only, and the vocab_size logits are copied back
//   to the host, where sampling happens (sample/sampling.h), as on the CPU.
// The logits differ from the CPU decoder's by fp32 rounding only (about 1e-6 relative; the
// reductions are ordered differently: cuBLASLt's dot products, the block reductions of LayerNorm
// and attention; tests/gpu/test_decode.cpp requires 1e-4), so
// for one seed both produce the same tokens except where a draw falls within that rounding of a
// boundary between two tokens' cumulative probabilities.
//
// Plain C++ header (no CUDA includes): the CLI includes it from g++ translation units.
#pragma once
#include <memory>

#include "sample/decoder.h"
#include "model/gpt2.h"

struct CUstream_st;

namespace sgpt {

// A GPU decoder on the current device. Throws std::runtime_error when CUDA fails (no device,
// out of memory).
std::unique_ptr<Decoder> make_cuda_decoder(const ModelConfig& cfg);

namespace cuda {

// Launchers of kernels/decode.cu (fp32; asynchronous on `stream`).
// x[r, :] = wte[tokens[r], :] + wpe[pos0 + r, :] for r < n (tokens: device array).
void decode_embed(float* x, const int* tokens, const float* wte, const float* wpe, int n, int pos0,
                  int C, CUstream_st* stream);
// kcache[pos0 + r, :] = qkv[r, C:2C], vcache[pos0 + r, :] = qkv[r, 2C:3C] for r < n.
void decode_store_kv(float* kcache, float* vcache, const float* qkv, int n, int pos0, int C,
                     CUstream_st* stream);
// out[r, h*hs:(h+1)*hs] = softmax_{t <= pos0 + r}(scale * q_{r,h} . k_{t,h}) @ v_{t,h}, q from
// qkv[r, 0:C], keys and values from the caches ([*, C] rows). max_len bounds pos0 + n (shared
// memory is sized for it).
void decode_attention(float* out, const float* qkv, const float* kcache, const float* vcache,
                      int n, int pos0, int C, int NH, float scale, int max_len,
                      CUstream_st* stream);

}  // namespace cuda
}  // namespace sgpt
