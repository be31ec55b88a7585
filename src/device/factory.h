// The one place that makes a backend, a decoder or an NCCL communicator for the CPU or the GPU, and
// answers what the commands ask about CUDA: whether this build has it, whether a GPU is usable,
// which GPU a process uses. The GPU side comes from the CUDA library (src/cuda/: cuda_backend.h,
// decode_cuda.h, entry.h); a build without CUDA links src/device/no_cuda.cpp in its place
// (CMakeLists.txt), whose functions say that this build has no CUDA, so no caller needs an #if.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "config/config.h"
#include "dist/comm.h"
#include "model/gpt2.h"
#include "sample/batch.h"
#include "sample/decoder.h"

namespace sgpt {

// Whether this build has the CUDA backend (nvcc was found when it was built).
bool cuda_built();

// True when a GPU can be used (a CUDA build, a driver, a device, a context can be created); false
// with the reason in *why otherwise.
bool gpu_usable(std::string* why);

// Makes GPU `local_rank % device count` current (one GPU per process on a node). Call before
// anything else touches CUDA; returns the device index, or -1 when no device is visible (always in
// a build without CUDA).
int select_gpu(int local_rank);

// The backend of a run, for micro-batches of B sequences of cfg.model.block_size tokens: on the
// GPU (cfg.precision, cfg.attention, cfg.recompute) when use_gpu, else the fp32 CPU reference.
// UserError when the GPU cannot use the attention asked for.
std::unique_ptr<Backend> make_backend(const Config& cfg, bool use_gpu, int B,
                                      const std::vector<float>& params,
                                      const DistOptions& dist = {});

// The KV-cache decoder (sample/decoder.h, fp32): the GPU's when use_gpu, else the CPU's.
std::unique_ptr<Decoder> make_decoder(const ModelConfig& cfg, bool use_gpu);

// The batch decoder of `slots` sequences (sample/batch.h): the GPU's (weights and KV cache in
// bf16 when bf16, else fp32) when use_gpu, else the fp32 CPU one (bf16 on the CPU: UserError).
std::unique_ptr<BatchDecoder> make_batch_decoder(const ModelConfig& cfg, int slots, bool use_gpu, bool bf16);

// NCCL, the communicator of data parallel training on GPUs: whether this build has it (a CUDA
// build where CMake found NCCL); rank 0's unique id, to hand to every rank; the communicator of
// `rank` among `world` on the current device (blocks until every rank has joined). The last two
// need nccl_built().
bool nccl_built();
std::vector<uint8_t> nccl_unique_id();
std::unique_ptr<dist::Comm> make_nccl_comm(int rank, int world, const std::vector<uint8_t>& id);

}  // namespace sgpt
