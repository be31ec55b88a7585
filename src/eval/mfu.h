// Model FLOPs utilization (MFU): the model FLOPs a training step needs, over what the device could
// do in that time at its datasheet peak. Shared by the training log (src/train/trainer.cpp) and
// `sophiagpt bench train` (src/cuda/bench.cpp); docs/performance.md ("MFU").
#pragma once
#include <cstddef>
#include <string>

#include "model/gpt2.h"

namespace sgpt {

// Model FLOPs per trained token (forward + backward) of a GPT-2 with n_params parameters at
// sequence length T: 6 N + 12 L C T (nanoGPT's / PaLM's estimate: 6 N for the weight matmuls, the
// tied wte included as it is the LM head's matmul; 12 L C T for the attention scores and weighted
// sum, forward and backward, counted over the whole T x T square although causal kernels skip half).
double training_flops_per_token(const ModelConfig& m, size_t n_params, int T);

// Dense peak TFLOP/s of the named device for the precision the backend computes in, or 0 when
// unknown (MFU is then not reported). bf16: the tensor-core dense peak (H100 SXM 989, H100 PCIe
// 756, H200 989, A100 312). fp32: this program's fp32 path keeps TF32 off (cuBLASLt
// CUBLAS_COMPUTE_32F), so the plain FP32 peak (H100 SXM 67, H100 PCIe 51, H200 67, A100 19.5).
// device_name: Backend::device_name(), e.g. "NVIDIA H100 80GB HBM3"; "cpu" and "" give 0.
double detect_peak_tflops(const std::string& device_name, const std::string& precision);

// MFU as a fraction: flops_per_token * tokens_per_s / (peak_tflops * 1e12 * devices); -1 when
// peak_tflops <= 0 (unknown).
double mfu(double flops_per_token, double tokens_per_s, double peak_tflops, int devices = 1);

}  // namespace sgpt
