// The fp32 CPU KV-cache decoder (docs/sampling.md): the Decoder of sample/decoder.h, computed with
// the reference ops of cpu/ops.h over the flat parameter layout of model/gpt2.h.
#pragma once
#include <memory>

#include "model/gpt2.h"
#include "sample/decoder.h"

namespace sgpt {

// The fp32 CPU decoder (OpenMP threads as the reference ops use them).
std::unique_ptr<Decoder> make_cpu_decoder(const ModelConfig& cfg);

}  // namespace sgpt
