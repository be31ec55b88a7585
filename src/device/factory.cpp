// See device/factory.h.
#include "device/factory.h"

#include <stdexcept>

#include "common/error.h"
#include "cpu/cpu_backend.h"
#include "cpu/decode_cpu.h"
#include "cuda/cuda_backend.h"
#include "cuda/decode_batch.h"
#include "cuda/decode_cuda.h"
#include "cuda/entry.h"

namespace sgpt {

bool cuda_built() { return cuda::built(); }

bool gpu_usable(std::string* why) { return cuda_usable(why); }

int select_gpu(int local_rank) { return cuda_select_device(local_rank); }

std::unique_ptr<Backend> make_backend(const Config& cfg, bool use_gpu, int B, const std::vector<float>& params,
                                      const DistOptions& dist) {
  if (use_gpu) {
    try {
      auto be = make_cuda_backend(cfg.model, B, cfg.model.block_size,
                                  cfg.precision == "bf16" ? Precision::kBf16 : Precision::kFp32,
                                  params, attention_impl_from_name(cfg.attention), dist);
      be->set_recompute(cfg.recompute);  // before the first step allocates the activations
      if (cfg.lm_head_precision == "fp8") {
        try {
          be->set_lm_head_fp8(true);
        } catch (const std::invalid_argument& e) {
          throw UserError(std::string("config key 'lm_head_precision' is \"fp8\" but ") + e.what());
        }
      }
      be->set_cuda_graphs(cfg.cuda_graphs);
      return be;
    } catch (const std::invalid_argument& e) {  // attention "cudnn" that cannot be used
      throw UserError(e.what());
    }
  }
  return make_cpu_backend(cfg.model, B, cfg.model.block_size, params, dist);
}

std::unique_ptr<Decoder> make_decoder(const ModelConfig& cfg, bool use_gpu) {
  std::unique_ptr<Decoder> dec;
  if (use_gpu) dec = make_cuda_decoder(cfg);
  if (!dec) dec = make_cpu_decoder(cfg);
  return dec;
}

std::unique_ptr<BatchDecoder> make_batch_decoder(const ModelConfig& cfg, int slots, bool use_gpu, bool bf16) {
  if (use_gpu) return make_cuda_batch_decoder(cfg, slots, CudaBatchOptions{.bf16 = bf16});
  if (bf16) throw UserError("--precision bf16 needs the GPU: the CPU decoder is fp32 only");
  return make_cpu_batch_decoder(cfg, slots);
}

bool nccl_built() { return cuda::nccl_built(); }

std::vector<uint8_t> nccl_unique_id() { return cuda::nccl_unique_id(); }

std::unique_ptr<dist::Comm> make_nccl_comm(int rank, int world, const std::vector<uint8_t>& id) {
  return cuda::make_nccl_comm(rank, world, id);
}

}  // namespace sgpt
