// The compute backend the training loop is written over. The loop (src/train/trainer.cpp) owns the
// data, the schedule, the GNB cadence, logging and checkpoints; a backend owns the parameters, the
// gradients, the optimizer state and the arithmetic. CpuBackend (src/cpu/cpu_backend.cpp) is
// the fp32 reference; CudaBackend (src/cuda/) implements the same contract on the GPU.
//
// Gradient contract: train_micro / gnb_micro ACCUMULATE into the gradient buffer the gradient of
// (mean loss over the micro-batch) * grad_scale; the loop passes grad_scale =
// 1/(accumulation_steps * world), so after all micro-steps and reduce_grad() the buffer holds the
// gradient of the mean loss over the whole step's batch, all ranks together.
//
// Data parallel (docs/multi_gpu.md). A backend built with a dist::Comm of world W > 1 reduces the
// gradient over the ranks: the loop calls begin_last_micro() before the last micro-step of a step
// (a backend may then start reducing each layer's gradient as soon as its backward is done) and
// reduce_grad() after it. Without ZeRO-1 every rank then holds the whole summed gradient; with
// ZeRO-1 (dist.zero = 1) rank r holds only its shard (dist::ShardLayout over ParamLayout::total)
// and keeps the optimizer state of that shard alone; the optimizer updates the shard and the
// working weights are all-gathered. grad_sum_squares() and the Sophia-G metrics are global (summed
// over ranks); get() gathers and set() takes a whole-model vector on every rank, so checkpoints do
// not depend on W. get() and every method that reduces are collective: all ranks call them.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "optim/optimizer.h"
#include "dist/comm.h"
#include "model/gpt2.h"

namespace sgpt {

// fp32: every tensor fp32 (parity with the CPU reference). bf16: bf16 parameters, activations and
// gradients; fp32 master weights and optimizer state.
enum class Precision { kFp32, kBf16 };

// Attention on the GPU: our own kernels (kernels/attention.cu, kernels/flash_attention.cu) or
// cuDNN's fused flash attention (src/cuda/attention_cudnn.cpp; bf16 only). kAuto picks cuDNN when
// it is usable (bf16, a build with cuDNN, a supported head size, a deterministic engine found)
// and our kernels otherwise. The config key `attention` ("auto", "own", "cudnn") selects it.
enum class AttentionImpl { kAuto, kOwn, kCudnn };
AttentionImpl attention_impl_from_name(const std::string& name);  // throws std::invalid_argument

// How a backend takes part in data parallelism: the communicator (nullptr: one process) and
// whether the optimizer state is sharded (ZeRO-1).
struct DistOptions {
  dist::Comm* comm = nullptr;
  bool zero = true;
  int world() const { return comm ? comm->world() : 1; }
  int rank() const { return comm ? comm->rank() : 0; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual const ModelConfig& model() const = 0;
  virtual const ParamLayout& layout() const = 0;

  virtual void zero_grad() = 0;
  // inp, tgt: B*T token ids (int32). Returns the mean loss over the micro-batch.
  virtual float train_micro(const int* inp, const int* tgt, int B, int T, float grad_scale) = 0;
  // GNB: forward, sample one label per position from softmax(logits[:V]) with Philox
  // (seed, step, global sequence index seq0 + b, position t), backward of the mean CE against the
  // sampled labels. Returns that mean CE.
  virtual float gnb_micro(const int* inp, int B, int T, float grad_scale, uint64_t seed,
                          uint32_t step, uint32_t seq0) = 0;
  // Forward only; mean loss.
  virtual float eval_micro(const int* inp, const int* tgt, int B, int T) = 0;

  // Data parallel: see the comment at the top. No-ops for a single process.
  virtual void begin_last_micro() {}
  virtual void reduce_grad() {}
  // Mean over ranks of per-rank values (losses): collective; identity for a single process.
  virtual void average(double* x, size_t n) { (void)x; (void)n; }

  // Sum of squares of the whole (reduced) gradient buffer, all ranks together.
  virtual double grad_sum_squares() = 0;
  virtual void scale_grad(float s) = 0;

  // One update of the optimizer s.cfg->name (src/optim/optimizer.h) over the whole flat buffer
  // (this rank's shard under ZeRO-1); the decay mask is ParamLayout::decayed. Its state slots are
  // allocated, zeroed, at its first step. `metrics`: Sophia's clipping statistics (global), when
  // non-null.
  virtual void optimizer_step(const OptimizerStep& s, SophiaMetrics* metrics) = 0;
  // The GNB estimator's update of slot "h": h = b2*h + (1-b2)*grad*grad.
  virtual void hessian_ema(const HessianConsts& c) = 0;
  // The Hutchinson estimator (Sophia-H). hvp_micro ACCUMULATES into the gradient buffer
  // grad_scale * H u, H the Hessian of the mean loss over the micro-batch at the current weights
  // and u the probe of `step` (hutchinson_probe, src/common/philox.h: keyed by seed, step and the
  // global parameter index, so every rank and backend draws the same u); returns the mean loss.
  // After reduce_grad(), hutchinson_ema updates slot "h": h = b2*h + (1-b2)*u*(H u).
  virtual float hvp_micro(const int* inp, const int* tgt, int B, int T, float grad_scale,
                          uint64_t seed, uint32_t step, bool rademacher) {
    (void)inp; (void)tgt; (void)B; (void)T; (void)grad_scale; (void)seed; (void)step; (void)rademacher;
    throw std::logic_error(name() + ": no Hessian-vector product");
  }
  virtual void hutchinson_ema(const HessianConsts& c, uint64_t seed, uint32_t step, bool rademacher) {
    (void)c; (void)seed; (void)step; (void)rademacher;
    throw std::logic_error(name() + ": no Hutchinson estimator");
  }
  // Why this backend cannot run `optimizer` (an OptimizerKind name), or "" when it can.
  virtual std::string cannot_run(const std::string& optimizer) const { (void)optimizer; return ""; }

  // State transfer as fp32 host vectors of ParamLayout::total elements (checkpoints, tests).
  // slot: "params" (fp32 master), an optimizer's state slot (OptimizerKind::slots: "m", "h",
  // "v"), "grad", and "working" (the bf16 working weights, widened exactly; only where
  // has_working_weights()).
  virtual void get(const std::string& slot, std::vector<float>& out) = 0;
  virtual void set(const std::string& slot, const std::vector<float>& in) = 0;

  // Memory in MiB: the device's memory in use (the whole device, as cudaMemGetInfo reports it;
  // -1 on the CPU) and this rank's optimizer state (fp32 master when separate, m, h/v).
  virtual double device_memory_mib() { return -1; }
  virtual double state_memory_mib() = 0;

  // Gradient accumulation over micro-steps in fp32 (bf16 mode; the fp32 backends always do).
  // Set before training: switching clears the gradient.
  virtual void set_grad_accum_fp32(bool on) { (void)on; }
  virtual bool grad_accum_fp32() const { return true; }

  // A working copy of the weights separate from the fp32 master (bf16 mode), written by the
  // optimizer with stochastic rounding keyed by (seed, counter, global index); the counter
  // advances once per optimizer step. Checkpoints save both so a resumed run has the same bits.
  virtual bool has_working_weights() const { return false; }
  virtual uint32_t rounding_counter() const { return 0; }
  virtual void set_rounding(uint64_t seed, uint32_t counter) { (void)seed; (void)counter; }

  // Switches the attention implementation between steps (benchmarks interleave them on one
  // backend). The CPU backend has one implementation and ignores it.
  virtual void set_attention(AttentionImpl) {}
  // Sophia-H's Hessian-vector product: the fused tensor-core attention where it applies (bf16,
  // head size 64; the default) or the materialized fp32 products (benchmarks compare the two).
  // The CPU backend has one implementation and ignores it.
  virtual void set_hvp_fused_attention(bool on) { (void)on; }

  // The lm head's forward product in FP8 E4M3 (config key `lm_head_precision`, docs/config.md;
  // cuda/gpt2_cuda.h says how). Set it before the first step. Throws std::invalid_argument with
  // the reason where it cannot be used: the CPU backend, fp32, a GPU before compute capability
  // 8.9, n_embd not a multiple of 16.
  virtual void set_lm_head_fp8(bool on) {
    if (on) throw std::invalid_argument("the FP8 lm head needs the GPU");
  }

  // Activation recompute (config key `recompute`, docs/config.md): 0 keeps every activation for
  // the backward, 1 recomputes the GELU outputs in the backward, 2 also the LayerNorm outputs;
  // the results are bit-identical at every level. Set it before the first step (the GPU backend
  // allocates its activations at the first forward); throws std::invalid_argument outside 0..2.
  // The CPU backend ignores it.
  virtual void set_recompute(int level) {
    if (level < 0 || level > 2) throw std::invalid_argument("recompute must be 0, 1 or 2");
  }
  // CUDA graphs of the training micro-step (config key `cuda_graphs`, docs/config.md): the
  // launches of train_micro's forward, loss and backward are captured once per shape and replayed,
  // with the same kernels on the same buffers, so the bits are those of eager launches. The
  // data-parallel last micro-step with overlapped reduction, the estimators' passes, evaluation
  // and the optimizer stay eager. A backend without graphs ignores it.
  virtual void set_cuda_graphs(bool on) { (void)on; }
  // "off", "on, ..." or "off (capture failed: why)"; "" where the backend has no graphs.
  virtual std::string cuda_graphs_status() const { return ""; }
  // Device memory this backend holds, one entry per allocation: (what, bytes as allocated). The
  // activations appear after the first step. Empty on the CPU.
  virtual std::vector<std::pair<std::string, size_t>> memory_breakdown() const { return {}; }

  // Forward only, per position: losses_out[b*T + t] = cross-entropy of the logits at (b, t)
  // against tgt[b*T + t] (fp32, B*T values; B <= the allocated batch, T = the allocated length),
  // and exactly 0 where tgt[b*T + t] < 0 (padding: those positions are not scored). inp holds
  // valid ids everywhere. Not collective. Used by the HellaSwag evaluation (src/eval/).
  virtual void eval_losses(const int* inp, const int* tgt, int B, int T, float* losses_out) {
    (void)inp; (void)tgt; (void)B; (void)T; (void)losses_out;
    throw std::logic_error("eval_losses not implemented");
  }

  // The device, for logs and the MFU peak (src/eval/mfu.h): the GPU's name as the driver reports
  // it (cudaDeviceProp::name, e.g. "NVIDIA H100 80GB HBM3"), "cpu" for the CPU backend, "" when
  // unknown.
  virtual std::string device_name() const { return ""; }
  // The machine, for the first record of a run's log.jsonl: e.g. {"device", "driver",
  // "cuda_runtime", "cudnn", "nccl", ...} on the GPU, {"device": "cpu", "threads": N} on the CPU;
  // {} when unknown. Not collective.
  virtual nlohmann::json machine_info() const { return nlohmann::json::object(); }
};

}  // namespace sgpt
