// GPU optimizer, reduction and cast kernels over the flat parameter buffer (docs/design.md section 3).
// Plain C++ declarations: usable from .cpp (host compiler) and .cu files. Implementations:
//   kernels/optimizer.cu  sophia_step, hessian_ema, adamw_step (+ the unfused benchmark baseline)
//   kernels/hutchinson.cu hutchinson_probe_fill, hutchinson_ema (Sophia-H's estimator)
//   kernels/norm.cu       grad_sum_squares, scale_grad, the deterministic second reduction pass
//   kernels/cast.cu       cast_rn, stochastic_round, to_float, accumulate_float, fill_uniform
// Each function pairs with the CPU reference of the same name in src/optim/update_rules.h, which is its
// test oracle (tests/gpu/test_optimizer*.cpp).
//
// Conventions shared by every function here:
//  * One launch covers the whole buffer [0, n) (n may exceed 2^32; indices are size_t).
//  * Element i of the buffers is element `index_base + i` of the global flat parameter layout
//    (index_base = 0 except for a ZeRO shard). The decay ranges and the stochastic-rounding
//    stream are keyed by that global index, so a shard computes exactly what the whole buffer
//    would.
//  * fp32 arithmetic uses explicitly rounded operations (no FMA contraction), in the order of the
//    CPU reference: the fp32 results (master weights, m, h, v) equal the CPU's bit for bit.
//  * GradT / ParamT are float, __nv_bfloat16 or __half. Gradients are widened to fp32 exactly.
//    Working weights (ParamT) are written from the updated fp32 master: float copies it, bf16 and
//    fp16 round it stochastically (see RoundingKey). weights_out may be nullptr (no copy, e.g. when
//    the fp32 master IS the working weight buffer); it must not alias master otherwise.
//  * Pointers may have any alignment (16-byte-aligned buffers take the vectorised path).
//  * Everything is asynchronous on `stream` except the read_* helpers, which synchronize it.
//  * Errors throw std::runtime_error (src/cuda/check.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "optim/update_rules.h"
#include "model/gpt2.h"

namespace sgpt::cuda {

// The decayed tensors as half-open ranges [begin, end) of global flat indices, sorted, disjoint,
// adjacent ranges merged. Passed by value to the kernels (no per-tensor launches).
struct DecayRanges {
  static constexpr int kMax = 8;
  int count = 0;
  size_t begin[kMax] = {};
  size_t end[kMax] = {};
  // The tensors with ParamLayout::decayed(i) true (the Linear weight matrices). For GPT-2 in
  // llm.c's order this is two ranges: [qkvw, attprojw] and [fcw, fcprojw].
  static DecayRanges from_layout(const ParamLayout& layout);
  // Add [b, e) (empty ranges ignored; merged with the previous range when adjacent). Ranges must
  // be added in increasing order; throws std::invalid_argument otherwise or when full.
  void add(size_t b, size_t e);
  bool contains(size_t i) const;
};

// Key of the stochastic rounding of working weights: the random word of global element j is
// word (j % 4) of philox(seed, counter = (j/4 low 32 bits, j/4 high 32 bits, step,
// kStochasticRounding)) (src/common/philox.h; rounding in kernels/cast.cuh).
struct RoundingKey {
  uint64_t seed = 0;
  uint32_t step = 0;
  size_t index_base = 0;  // global flat index of element 0 of the buffers passed
};

// Device scratch for the deterministic reductions: per-block partials, the levels of the
// finalize passes, and the final values. One per concurrent stream; construct once and reuse
// (cudaMalloc on the current device). The partial storage grows on demand to the largest buffer
// reduced so far (the growth cudaFree/cudaMallocs, which synchronizes the device: it happens on
// the first reduction of a given size, not every step). Results of the last reduction launched
// into it are at results()[0 .. kValues) (device memory).
class ReduceScratch {
 public:
  static constexpr int kValues = 4;  // values reduced per launch, at most
  ReduceScratch();
  ~ReduceScratch();
  ReduceScratch(const ReduceScratch&) = delete;
  ReduceScratch& operator=(const ReduceScratch&) = delete;
  double* results() { return results_; }
  // Make room for `blocks` per-block partials per value (layout: value v of block b at
  // partials()[v * capacity() + b]) and for the finalize levels after it (level()).
  void reserve(size_t blocks);
  double* partials() { return partials_; }
  double* level() { return level_; }  // kValues * level_capacity() doubles
  size_t capacity() const { return capacity_; }
  size_t level_capacity() const { return level_capacity_; }

 private:
  double* results_ = nullptr;
  double* partials_ = nullptr;
  double* level_ = nullptr;
  size_t capacity_ = 0, level_capacity_ = 0;
};

// ---------------------------------------------------------------- kernels/optimizer.cu
// Sophia-G step (cpu::sophia_update), per element i in [0, n), j = index_base + i:
//   p = p*decay (only when decay.contains(j)) ; m = m*b1 + (1-b1)*g ; d = h*(rho*bs) + 1e-15 ;
//   r = min(|m|/d, 1) (NaN kept) ; p = p + (-lr)*sign(m)*r ; weights_out = round(p)
// When `metrics` is non-null the same launch reduces (deterministically: the grid depends on n
// only, every tree is fixed, no atomics: same inputs, same bits) the count of |m| < rho*bs*h, sum |h| and sum h^2 (in double) into metrics->results();
// read them with read_sophia_metrics. Pass nullptr on steps that are not logged.
template <class GradT, class ParamT>
void sophia_step(float* master, float* m, const float* h, const GradT* g, ParamT* weights_out,
                 size_t n, const DecayRanges& decay, const SophiaConsts& c, const RoundingKey& key,
                 ReduceScratch* metrics, cudaStream_t stream);

// Synchronizes `stream` and adds the last sophia_step's (or Sophia-H step's) sums over n elements
// into `out` (unclipped, count += n, h_l1, h_sq, h_negative), the way cpu::sophia_update /
// cpu::sophiah_update accumulate them.
void read_sophia_metrics(ReduceScratch& metrics, size_t n, SophiaMetrics* out,
                         cudaStream_t stream);

// Hessian EMA (cpu::hessian_ema): h = h*b2 + ((1-b2)*g)*g.
template <class GradT>
void hessian_ema(float* h, const GradT* g, size_t n, const HessianConsts& c, cudaStream_t stream);

// ---------------------------------------------------------------- kernels/hutchinson.cu
// Sophia-H's probe: u[i] = hutchinson_probe(seed, step, index_base + i, rademacher) (src/common/
// philox.h), rounded to T (float or bf16). See kernels/hutchinson.cu for how the Gaussian branch's
// double math relates to the CPU's.
template <class T>
void hutchinson_probe_fill(T* u, size_t n, uint64_t seed, uint32_t step, size_t index_base,
                           bool rademacher, cudaStream_t stream);
// The Hutchinson EMA (cpu::hutchinson_ema): h = h*b2 + ((1-b2)*u)*hu, u the probe of global index
// index_base + i (recomputed). GradT: float or bf16 (widened exactly).
template <class GradT>
void hutchinson_ema(float* h, const GradT* hu, size_t n, const HessianConsts& c, uint64_t seed,
                    uint32_t step, size_t index_base, bool rademacher, cudaStream_t stream);

// AdamW (cpu::adamw_update): p = p*decay (decayed only) ; m = m*b1 + (1-b1)*g ;
// v = v*b2 + ((1-b2)*g)*g ; p = p + (neg_step_size*m) / (sqrt(v)*inv_sqrt_bc2 + eps) ;
// weights_out = round(p).
template <class GradT, class ParamT>
void adamw_step(float* master, float* m, float* v, const GradT* g, ParamT* weights_out, size_t n,
                const DecayRanges& decay, const AdamWConsts& c, const RoundingKey& key,
                cudaStream_t stream);

// ---- Benchmark baseline only: the unfused step the way PyTorch's eager SophiaG runs it, one
// launch per operation per parameter tensor (`sophiagpt bench optimizer` compares against it).
struct TensorSpan {
  size_t begin, end;
  bool decayed;
};
// One span per PyTorch parameter, in buffer order: layered tensors split per layer, empty tensors
// skipped (3 + 6*L spans for GPT-2 with bias = false).
std::vector<TensorSpan> pytorch_param_spans(const ParamLayout& layout, int n_layer);
// tmp: device scratch of at least 3 * (largest span) floats. Per span: p.mul_(decay);
// m.mul_(b1); m.add_(g, alpha=1-b1); t0 = |m|; t1 = h*rho_bs; t1 += 1e-15; t0 /= t1;
// t0 = min(t0, 1); t2 = sign(m); p.addcmul_(t2, t0, value=-lr); and, for bf16/fp16 working
// weights, w = round(p). Same arithmetic as sophia_step, so the same fp32 results.
template <class GradT, class ParamT>
void sophia_step_unfused(float* master, float* m, const float* h, const GradT* g,
                         ParamT* weights_out, const std::vector<TensorSpan>& spans,
                         const SophiaConsts& c, const RoundingKey& key, float* tmp,
                         cudaStream_t stream);
// Per span: h.mul_(b2); h.addcmul_(g, g, value=1-b2) (two launches).
template <class GradT>
void hessian_ema_unfused(float* h, const GradT* g, const std::vector<TensorSpan>& spans,
                         const HessianConsts& c, cudaStream_t stream);

// ---------------------------------------------------------------- kernels/norm.cu
// Sum of squares of g[0, n) for the global-norm clip, deterministic multi-pass reduction: each
// thread squares and adds 8 consecutive elements in fp32 (fused multiply-add, one rounding per
// element) and widens that to double, blocks reduce in double in a fixed tree, then the
// per-block partials are reduced in fixed-order passes (4096 to 1) down to one value. Relative error vs the exact sum
// (and vs cpu::sum_squares's double sum): at most about 8 * 2^-24 (~4.8e-7), since all terms are
// non-negative. The result stays on the device in scratch.results()[0].
template <class GradT>
void grad_sum_squares(const GradT* g, size_t n, ReduceScratch& scratch, cudaStream_t stream);
// Synchronizes `stream` and returns scratch.results()[0].
double read_sum_squares(ReduceScratch& scratch, cudaStream_t stream);
// g = g*s (cpu::scale); for bf16/fp16 computed in fp32 and rounded to nearest-even.
template <class GradT>
void scale_grad(GradT* g, size_t n, float s, cudaStream_t stream);

// ---------------------------------------------------------------- kernels/cast.cu
// out = round-to-nearest-even(in).
template <class T>
void cast_rn(const float* in, T* out, size_t n, cudaStream_t stream);
// out = stochastic rounding of in, keyed by `key` exactly as sophia_step's working weights
// (kernels/cast.cuh): each result is one of the two representable neighbours of the input
// (rounded up with probability equal to the fractional distance), so E[out] = in. For T = float
// this is a copy.
template <class T>
void stochastic_round(const float* in, T* out, size_t n, const RoundingKey& key,
                      cudaStream_t stream);
// out = (float)in, exact.
template <class T>
void to_float(const T* in, float* out, size_t n, cudaStream_t stream);
// acc = acc + (float)in, one fp32 addition (round to nearest) per element: the fp32 gradient
// accumulation of bf16 micro-step gradients (grad_accum_precision "fp32").
template <class T>
void accumulate_float(const T* in, float* acc, size_t n, cudaStream_t stream);
// out[i] = round(lo + (hi - lo) * u), u uniform in [0, 1) from Philox(seed, i) (stream
// kInitWeights with c2 = 0xB0B): benchmark and test inputs filled on the device.
template <class T>
void fill_uniform(T* out, size_t n, float lo, float hi, uint64_t seed, cudaStream_t stream);

}  // namespace sgpt::cuda
