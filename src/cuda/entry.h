// What the device factory (src/device/factory.cpp) takes from the CUDA library besides the backend
// (cuda/cuda_backend.h) and the decoder (cuda/decode_cuda.h): whether this build has CUDA and NCCL,
// and the NCCL communicator of the multi-GPU path (docs/multi_gpu.md). A build without CUDA links
// src/device/no_cuda.cpp instead, which answers for every function of this header and of the two
// above. Plain C++ header (no CUDA or NCCL includes).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dist/comm.h"

namespace sgpt::cuda {

// True in the CUDA library (false from src/device/no_cuda.cpp).
bool built();

// Whether this build has NCCL (CMake found it). Without it the two functions below throw
// std::logic_error: ask first.
bool nccl_built();
// Rank 0's NCCL unique id, to hand to every rank (dist::rendezvous or an MPI broadcast).
std::vector<uint8_t> nccl_unique_id();
// The NCCL communicator of `rank` among `world` (cuda::NcclComm, cuda/nccl_comm.h) on the current
// device; blocks until every rank has joined.
std::unique_ptr<dist::Comm> make_nccl_comm(int rank, int world, const std::vector<uint8_t>& id);

}  // namespace sgpt::cuda
