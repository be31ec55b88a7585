// The frame every fused optimizer kernel shares (kernels/optimizer.cu, kernels/lion.cu): one
// launch over the flat buffer, one thread per chunk of 8 consecutive elements (kernels/cast.cuh:
// 16-byte loads and stores where aligned), the decay mask tested once per chunk, the working
// weights written from the updated fp32 master (a copy, or stochastic rounding for bf16/fp16).
// An optimizer supplies only the arithmetic of one element, as a Rule:
//
//   struct Rule {
//     static constexpr int kSlots = N;                 // its fp32 state slots, OptimizerKind order
//     static constexpr bool writes(int slot);          // false: the slot is only read (Sophia's h)
//     __device__ void operator()(float& p, float (&s)[N], float g, bool decayed) const;
//     // Only for kernels launched with metrics (Sophia-G, Sophia-H): the four sums of one
//     // element after its update, as (count, sum a, sum b, count2).
//     __device__ void measure(const float (&s)[N], uint32_t& count, double& a, double& b,
//                             uint32_t& count2) const;
//   };
//
// With metrics the per-thread sums are reduced deterministically (kernels/norm.cuh: fixed block
// tree, per-block partials, fixed-order finalize passes; no atomics).
#pragma once
#include "cast.cuh"
#include "cuda/optimizer.h"
#include "norm.cuh"

namespace sgpt::cuda {

// The fp32 state slots of a rule, passed by value.
template <int N>
struct Slots {
  float* s[N];
};

__device__ __forceinline__ bool decayed_at(const DecayRanges& d, size_t j) {
  bool in = false;
  for (int r = 0; r < d.count; ++r) in |= (j >= d.begin[r]) & (j < d.end[r]);
  return in;
}

// 0: no element of [j0, j0+8) decayed, 1: all decayed, 2: mixed (ask per element).
__device__ __forceinline__ int chunk_decay(const DecayRanges& d, size_t j0) {
  for (int r = 0; r < d.count; ++r) {
    if (j0 + 8 <= d.begin[r]) return 0;  // sorted: every later range starts further on
    if (j0 < d.end[r]) return (j0 >= d.begin[r] && j0 + 8 <= d.end[r]) ? 1 : 2;
  }
  return 0;
}

// sign(x) with sign(0) = 0 and sign(NaN) = NaN, as the CPU references write it.
__device__ __forceinline__ float sign_of(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); }

template <class Rule, class GradT, class ParamT, bool kMetrics>
__global__ void __launch_bounds__(kReduceThreads)
    update_kernel(Rule rule, float* __restrict__ p, Slots<Rule::kSlots> state,
                  const GradT* __restrict__ g, ParamT* __restrict__ w, ChunkGrid grid,
                  DecayRanges decay, uint64_t seed, uint32_t step, double* __restrict__ partials,
                  size_t partial_stride) {
  constexpr int N = Rule::kSlots;
  uint32_t count = 0, count2 = 0;
  double sum_a = 0.0, sum_b = 0.0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk ch = grid.chunk(q);
    float pv[8], sv[N][8], gv[8];
    load8(p, ch, pv);
#pragma unroll
    for (int i = 0; i < N; ++i) load8(state.s[i], ch, sv[i]);
    load8(g, ch, gv);
    const int dmode = chunk_decay(decay, ch.j0);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      float s[N];
#pragma unroll
      for (int i = 0; i < N; ++i) s[i] = sv[i][k];
      rule(pv[k], s, gv[k], dmode == 1 || (dmode == 2 && decayed_at(decay, ch.j0 + k)));
#pragma unroll
      for (int i = 0; i < N; ++i) sv[i][k] = s[i];
      if constexpr (kMetrics) {
        if (k >= ch.kb && k < ch.ke) rule.measure(s, count, sum_a, sum_b, count2);
      }
    }
    store8(p, ch, pv);
#pragma unroll
    for (int i = 0; i < N; ++i)
      if (Rule::writes(i)) store8(state.s[i], ch, sv[i]);
    if (w != nullptr) store_weights8(w, ch, pv, seed, step);
  }
  if constexpr (kMetrics) {
    const double s0 = block_sum(static_cast<double>(count));
    const double s1 = block_sum(sum_a);
    const double s2 = block_sum(sum_b);
    const double s3 = block_sum(static_cast<double>(count2));
    if (threadIdx.x == 0) {
      partials[blockIdx.x] = s0;
      partials[partial_stride + blockIdx.x] = s1;
      partials[2 * partial_stride + blockIdx.x] = s2;
      partials[3 * partial_stride + blockIdx.x] = s3;
    }
  }
}

// The working-weight buffer, or nullptr when it is the master itself (fp32: nothing to write).
template <class ParamT>
ParamT* weights_or_null(ParamT* w, const float* master) {
  return static_cast<const void*>(w) == static_cast<const void*>(master) ? nullptr : w;
}

// Launches `rule` over [0, n) of the buffers (element i is global index key.index_base + i).
// With `metrics` the four sums land in metrics->results()[0..4) (read_sophia_metrics).
template <class Rule, class GradT, class ParamT>
void launch_update(const Rule& rule, float* master, Slots<Rule::kSlots> state, const GradT* g,
                   ParamT* weights_out, size_t n, const DecayRanges& decay,
                   const RoundingKey& key, ReduceScratch* metrics, cudaStream_t stream) {
  ParamT* w = weights_or_null(weights_out, master);
  const size_t b = key.index_base;
  bool aligned = chunk_aligned(master, b) && chunk_aligned(g, b) && chunk_aligned(w, b);
  for (int i = 0; i < Rule::kSlots; ++i) aligned = aligned && chunk_aligned(state.s[i], b);
  const ChunkGrid grid = make_chunk_grid(n, b, aligned);
  if (grid.nchunks == 0) {
    if (metrics) CUDA_CHECK(cudaMemsetAsync(metrics->results(), 0, 4 * sizeof(double), stream));
    return;
  }
  const unsigned blocks = full_grid(grid.nchunks, kReduceThreads);
  if (metrics) {
    metrics->reserve(blocks);
    update_kernel<Rule, GradT, ParamT, true><<<blocks, kReduceThreads, 0, stream>>>(
        rule, master, state, g, w, grid, decay, key.seed, key.step, metrics->partials(),
        metrics->capacity());
    CUDA_LAUNCH_CHECK();
    launch_reduce_finalize(*metrics, blocks, 4, stream);
  } else {
    update_kernel<Rule, GradT, ParamT, false><<<blocks, kReduceThreads, 0, stream>>>(
        rule, master, state, g, w, grid, decay, key.seed, key.step, nullptr, 0);
    CUDA_LAUNCH_CHECK();
  }
}

// An optimizer's cuda::Optimizer::update in one call: the buffers' element types from the
// target, then launch_update (src/cuda/optimizer.h).
template <class Rule>
void launch_update(const Rule& rule, float* const* state, const UpdateTarget& t,
                   ReduceScratch* metrics) {
  Slots<Rule::kSlots> slots;
  for (int i = 0; i < Rule::kSlots; ++i) slots.s[i] = state[i];
  with_types(t, [&](const auto* g, auto* w) {
    launch_update(rule, t.master, slots, g, w, t.n, t.decay, t.key, metrics, t.stream);
  });
}

}  // namespace sgpt::cuda
