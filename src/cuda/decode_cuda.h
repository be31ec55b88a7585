// The GPU KV-cache decoder (docs/sampling.md): the Decoder of sample/decoder.h on the current
// CUDA device, fp32 throughout.
//
// Device memory: the fp32 parameters (copied from the host by set_params, ParamLayout order), the
// key and value caches [L, block_size, C] each, and activations for block_size rows (a prefill
// or a slide runs all its rows at once; a step runs one). Per layer and call:
//   LayerNorm (kernels/layernorm.cu), the qkv Linear (cuBLASLt, kernels/matmul.cu; TF32 off),
//   the new keys and values copied into the cache, attention of each new query over the cached
//   positions (kernels/decode.cu: one block per query row and head), the output projection, the
//   residual and LayerNorm, the MLP (cuBLASLt, gelu.cu, cuBLASLt) and the residual (each residual
//   and the LayerNorm after it are one launch, residual_layernorm_forward, whose bits are those
//   of residual_forward followed by layernorm_forward); then the final
//   LayerNorm and the tied head for the last row only, and the vocab_size logits are copied back
//   to the host, where sampling happens (sample/sampling.h), as on the CPU.
// Steps (one new token) are replayed from a CUDA graph (docs/sampling.md): the first step after
// construction, after set_params or after a change of output mode runs eagerly (warming cuBLASLt's
// algorithm cache), the next one captures the step (the token and position copied from pinned
// host memory into device memory, every kernel above reading the position from there, the
// output copied back into pinned memory) and every later step replays it. The kernels and their
// arguments are those of the eager step, so the logits are bit for bit the same
// (tests/gpu/test_decode_fast.cpp). A prefill or a slide (many rows) always runs eagerly. Should
// the capture fail (a std::runtime_error from CUDA or cuBLASLt), the decoder stays eager and its
// name() says "graph capture failed (why)".
// Top-candidate output (Decoder::set_top_output): the first k candidates are selected on the
// device (decode_select_top) and only they are copied back.
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

struct CudaDecoderOptions {
  bool graphs = true;  // replay steps from a CUDA graph (false: every step eager, as before graphs)
};
std::unique_ptr<Decoder> make_cuda_decoder(const ModelConfig& cfg, const CudaDecoderOptions& o);

namespace cuda {

// Launchers of kernels/decode.cu (fp32; asynchronous on `stream`). With pos0_dev not null the
// kernels read pos0 from that device int instead of the argument (a graph replays them for any
// position); the arithmetic is the same.
// x[r, :] = wte[tokens[r], :] + wpe[pos0 + r, :] for r < n (tokens: device array).
void decode_embed(float* x, const int* tokens, const float* wte, const float* wpe, int n, int pos0,
                  int C, CUstream_st* stream, const int* pos0_dev = nullptr);
// kcache[pos0 + r, :] = qkv[r, C:2C], vcache[pos0 + r, :] = qkv[r, 2C:3C] for r < n.
void decode_store_kv(float* kcache, float* vcache, const float* qkv, int n, int pos0, int C,
                     CUstream_st* stream, const int* pos0_dev = nullptr);
// out[r, h*hs:(h+1)*hs] = softmax_{t <= pos0 + r}(scale * q_{r,h} . k_{t,h}) @ v_{t,h}, q from
// qkv[r, 0:C], keys and values from the caches ([*, C] rows). max_len bounds pos0 + n (shared
// memory is sized for it). interleave_scores = false scores one position at a time per warp (the
// kernel before the interleaving; the same bits, kept for the test that says so).
void decode_attention(float* out, const float* qkv, const float* kcache, const float* vcache,
                      int n, int pos0, int C, int NH, float scale, int max_len,
                      CUstream_st* stream, const int* pos0_dev = nullptr,
                      bool interleave_scores = true);

// The first k candidates (sample/sampling.h) of each of `rows` rows of logits (row r at
// logits + r * ld, V values), on the device: out[r * k + i] is candidate i of row r encoded as
// select_key_decode (below) reads it. Rows with row_pos[r] < 0 (row_pos: device array, may be
// null) are skipped and keep their previous output. scratch: select_top_scratch(V, k, rows)
// 64-bit words. Requires select_top_supported(V, k) (k <= kSelectMaxK and the candidates of the
// chunks fit one block: any k <= 64 for V <= 131072); throws otherwise.
constexpr int kSelectMaxK = 64;
bool select_top_supported(int V, int k);
size_t select_top_scratch(int V, int k, int rows);
void decode_select_top(unsigned long long* out, const float* logits, int rows, int V, size_t ld,
                       int k, unsigned long long* scratch, CUstream_st* stream,
                       const int* row_pos = nullptr);
// The candidate a key of decode_select_top stands for: its id and its key (the logit, NaN as
// -infinity, -0 as +0).
Candidate select_key_decode(unsigned long long key);

}  // namespace cuda
}  // namespace sgpt
