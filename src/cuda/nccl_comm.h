// NCCL communicator for the GPU data-parallel path (docs/multi_gpu.md): one rank per GPU. Host
// collectives of dist::Comm are staged through a small device buffer on the communicator's own
// stream; device collectives are enqueued on the stream the caller names. Plain C++ header (no
// NCCL or CUDA includes), so the CLI can create one from any translation unit.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/comm.h"

namespace sgpt::cuda {

enum class CommType { kFloat, kBf16, kDouble };

class NcclComm : public dist::Comm {
 public:
  // Rank 0's unique id, to hand to every rank (dist::rendezvous).
  static std::vector<uint8_t> unique_id();
  // Creates the communicator (blocks until every rank has joined) on the current device.
  static std::unique_ptr<NcclComm> create(int rank, int world, const std::vector<uint8_t>& id);
  // "NCCL 2.28.9"
  static std::string version();

  // Device collectives, asynchronous on `stream` (a cudaStream_t). In place as dist::Comm's.
  virtual void allreduce_dev(void* buf, size_t n, CommType t, void* stream) = 0;
  virtual void reduce_dev(void* buf, size_t n, CommType t, int root, void* stream) = 0;
  virtual void reduce_scatter_dev(void* buf, size_t shard, CommType t, void* stream) = 0;
  virtual void allgather_dev(void* buf, size_t shard, CommType t, void* stream) = 0;
  virtual void group_start() = 0;
  virtual void group_end() = 0;
  // Waits for `stream` to finish, checking NCCL's asynchronous error state while it waits (an
  // error throws std::runtime_error naming it; a peer that never answers is left to the watchdog).
  virtual void sync(void* stream) = 0;
};

}  // namespace sgpt::cuda
