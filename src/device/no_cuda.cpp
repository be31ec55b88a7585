// The CUDA library's functions in a build without CUDA (CMakeLists.txt links this file instead of
// the library): each says that this build has no CUDA, with the messages the commands have always
// given. The device factory (device/factory.cpp) and `bench` (cuda/bench.h) call them; their
// declarations are the CUDA library's plain C++ headers.
#include <stdexcept>
#include <string>

#include "common/error.h"
#include "cuda/bench.h"
#include "cuda/cuda_backend.h"
#include "cuda/decode_batch.h"
#include "cuda/decode_cuda.h"
#include "cuda/entry.h"

namespace sgpt {
namespace {

const char* const kNoCuda = "this build has no CUDA backend (nvcc was not found when it was built)";
const char* const kBenchNoCuda =
    "bench needs a CUDA build: this build has no CUDA backend (nvcc was not found when it was "
    "built; docs/gpu.md)";

}  // namespace

bool cuda_usable(std::string* why) {
  if (why) *why = kNoCuda;
  return false;
}

int cuda_select_device(int) { return -1; }

// Not reached: the commands ask gpu_usable() first, which says no.
std::unique_ptr<Backend> make_cuda_backend(const ModelConfig&, int, int, Precision,
                                           const std::vector<float>&, AttentionImpl,
                                           const DistOptions&) {
  throw UserError(kNoCuda);
}

std::unique_ptr<Decoder> make_cuda_decoder(const ModelConfig&) { throw UserError(kNoCuda); }

std::unique_ptr<Decoder> make_cuda_decoder(const ModelConfig&, const CudaDecoderOptions&) {
  throw UserError(kNoCuda);
}

std::unique_ptr<BatchDecoder> make_cuda_batch_decoder(const ModelConfig&, int, const CudaBatchOptions&) {
  throw UserError(kNoCuda);
}

// The command line says it first (src/cli/bench_command.cpp, in the same words).
void bench_optimizer(const OptimizerBenchOptions&) { throw UserError(kBenchNoCuda); }

void bench_train(const TrainBenchOptions&) { throw UserError(kBenchNoCuda); }

void bench_sample(const SampleBenchOptions&) { throw UserError(kBenchNoCuda); }

namespace cuda {

bool built() { return false; }

bool nccl_built() { return false; }

std::vector<uint8_t> nccl_unique_id() { throw std::logic_error("this build has no NCCL"); }

std::unique_ptr<dist::Comm> make_nccl_comm(int, int, const std::vector<uint8_t>&) {
  throw std::logic_error("this build has no NCCL");
}

}  // namespace cuda
}  // namespace sgpt
