// See cuda/entry.h. Compiled in every CUDA build; the NCCL parts only where CMake found NCCL
// (SGPT_WITH_NCCL; src/cuda/nccl_comm.cpp is compiled only then).
#include "cuda/entry.h"

#include <stdexcept>

#ifdef SGPT_WITH_NCCL
#include "cuda/nccl_comm.h"
#endif

namespace sgpt::cuda {

bool built() { return true; }

#ifdef SGPT_WITH_NCCL

bool nccl_built() { return true; }

std::vector<uint8_t> nccl_unique_id() { return NcclComm::unique_id(); }

std::unique_ptr<dist::Comm> make_nccl_comm(int rank, int world, const std::vector<uint8_t>& id) {
  return NcclComm::create(rank, world, id);
}

#else

bool nccl_built() { return false; }

std::vector<uint8_t> nccl_unique_id() { throw std::logic_error("this build has no NCCL"); }

std::unique_ptr<dist::Comm> make_nccl_comm(int, int, const std::vector<uint8_t>&) {
  throw std::logic_error("this build has no NCCL");
}

#endif  // SGPT_WITH_NCCL

}  // namespace sgpt::cuda
