// The GPU batch decoder (sample/batch.h, docs/sampling.md "Batches" and "bf16"): `slots`
// sequences, each with its own KV cache, advanced one token each per step by one launch sequence
// replayed from a CUDA graph.
//
// Per layer and step (rows = slots; kernels/decode_batch.cu, cuda/decode_batch_ops.h), 5
// launches: the qkv Linear, which first applies ln_1 to its rows (in its blocks, the bits of
// layernorm_forward; a separate layernorm_forward for widths its vectorized path does not take)
// and whose epilogue also stores each row's key and value in its slot's cache, attention of each
// row over its slot's cache, the output projection with the residual in its epilogue, the fc
// Linear with ln_2 before it and GELU in its epilogue, the fc projection with the residual in its
// epilogue; then the tied head with the final LayerNorm before it for every row, and the first k
// candidates of each row selected on the device
//   (decode_select_top) when the sampling options cut at k, else all logits copied back. The
//   step's graph begins with the copy of each row's token, slot and position from pinned host
//   memory, so one graph serves every step. A slot's prompt and a slot's slide run the same
//   kernels eagerly over that slot's rows. Should the capture fail, steps stay eager and name()
//   says "graph capture failed (why)".
// Precision: weights and caches in W = fp32 or bf16 (the matrices wte, wpe, qkv, attproj, fc,
// fcproj rounded to nearest; LayerNorm parameters and biases stay fp32), activations and all
// accumulation fp32. The fp32 variant's logits are within fp32 rounding of the CPU decoder's
// (its own Linear kernels, not cuBLASLt: not bit-identical to cuda/decode_cuda.h).
//
// Plain C++ header (no CUDA includes).
#pragma once
#include <memory>

#include "model/gpt2.h"
#include "sample/batch.h"

namespace sgpt {

struct CudaBatchOptions {
  bool bf16 = false;   // weights and KV cache in bf16
  bool graphs = true;  // replay each step from a CUDA graph (false: eager launches)
  // Hopper's programmatic dependent launch (cuda/decode_batch_ops.h): each kernel after the
  // embedding starts while the kernel before it still runs (a Linear loads its first weights,
  // then waits for that kernel; attention only waits). The same bits; plain
  // launches where the device or the build cannot. 7-11% more tokens/s at batch 1 on an H100
  // (docs/sampling.md); `bench sample --plain-launches` turns it off for comparison.
  bool dependent_launches = true;
};

// A GPU batch decoder of `slots` slots on the current device. std::runtime_error when CUDA fails.
std::unique_ptr<BatchDecoder> make_cuda_batch_decoder(const ModelConfig& cfg, int slots,
                                                      const CudaBatchOptions& o = {});

}  // namespace sgpt
