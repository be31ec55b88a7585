// Fused optimizer steps over the flat parameter buffer: Sophia-G (with its metrics), the Hessian
// EMA and AdamW, one launch each; plus the unfused per-tensor baseline the benchmark compares with.
//
// Math (docs/design.md section 3; CPU references of the same names in src/optim/update_rules.cpp), per element,
// in this order, every fp32 operation explicitly rounded (__fmul_rn, __fadd_rn, __fdiv_rn,
// __fsqrt_rn: no FMA contraction, IEEE division and square root) so the results equal the CPU's
// (compiled with -ffp-contract=off) bit for bit:
//   Sophia-G   p = p*decay            (decayed tensors only)
//              m = m*b1 + (1-b1)*g
//              d = h*(rho*bs) + 1e-15
//              r = |m| / d ; r = r > 1 ? 1 : r          (a NaN r stays NaN)
//              s = m > 0 ? 1 : (m < 0 ? -1 : m)         (sign(0) = 0, sign(NaN) = NaN)
//              p = p + ((-lr)*s)*r
//              metrics: count of |m| < (rho*bs)*h, sum |h|, sum h^2 (the sums in double)
//   Hessian    h = h*b2 + ((1-b2)*g)*g
//   AdamW      p = p*decay (decayed only) ; m = m*b1 + (1-b1)*g ; v = v*b2 + ((1-b2)*g)*g ;
//              p = p + (neg_step_size*m) / (sqrt(v)*inv_sqrt_bc2 + eps)
//   working weights w = p (ParamT float) or stochastic rounding of p (bf16, fp16; cast.cuh).
//
// Memory layout: p (fp32 master), m, h, v are contiguous fp32 buffers of n elements, g a buffer of
// n GradT, w a buffer of n ParamT; element i is global flat index j = index_base + i. Each thread
// handles one chunk of 8 consecutive elements starting at a global multiple of 8 (16-byte loads
// and stores: two per fp32 chunk, one per 16-bit chunk); the grid covers all chunks. The decay mask is a
// short list of global index ranges (DecayRanges) tested once per chunk (per element only for a
// chunk that straddles a range boundary).
// Bytes per element of a Sophia-G step: 5*4 (read p, m, h; write p, m) + sizeof(GradT) +
// sizeof(ParamT) when w is written: 24 for fp32 (w = nullptr) and for bf16 g and w.
//
// Metrics reduction: deterministic, no atomics (kernels/norm.cuh): per-thread (count, double
// sums) over its chunk, fixed block tree, per-block partials, fixed-order finalize passes.
//
// Contents: device helpers, fused kernels, unfused baseline kernels, then the launchers.
#include <stdexcept>

#include "cast.cuh"
#include "norm.cuh"

namespace sgpt::cuda {

// ------------------------------------------------------------------------------ device helpers

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

// The part of the update Sophia-G and AdamW share (docs/design.md section 3, in this order): decoupled
// weight decay of the parameter where the tensor is decayed, then the first moment
// m = b1 * m + (1 - b1) * g, each operation rounded as written.
__device__ __forceinline__ void decay_and_momentum(float& p, float& m, float g, bool decayed,
                                                   float decay, float b1, float one_minus_b1) {
  if (decayed) p = __fmul_rn(p, decay);
  m = __fadd_rn(__fmul_rn(m, b1), __fmul_rn(one_minus_b1, g));
}

__device__ __forceinline__ float sophia_sign(float x) {
  return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x);
}

// ------------------------------------------------------------------------------- fused kernels

template <class GradT, class ParamT, bool kMetrics>
__global__ void __launch_bounds__(kReduceThreads)
    sophia_step_kernel(float* __restrict__ p, float* __restrict__ m, const float* __restrict__ h,
                       const GradT* __restrict__ g, ParamT* __restrict__ w, ChunkGrid grid,
                       DecayRanges decay, SophiaConsts c, uint64_t seed, uint32_t step,
                       double* __restrict__ partials, size_t partial_stride) {
  uint32_t unclipped = 0;
  double h_l1 = 0.0, h_sq = 0.0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk ch = grid.chunk(q);
    float pv[8], mv[8], hv[8], gv[8];
    load8(p, ch, pv);
    load8(m, ch, mv);
    load8(h, ch, hv);
    load8(g, ch, gv);
    const int dmode = chunk_decay(decay, ch.j0);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      float pi = pv[k], mi = mv[k];
      decay_and_momentum(pi, mi, gv[k], dmode == 1 || (dmode == 2 && decayed_at(decay, ch.j0 + k)),
                         c.decay, c.b1, c.one_minus_b1);
      const float hi = hv[k];
      const float d = __fadd_rn(__fmul_rn(hi, c.rho_bs), 1e-15f);
      float r = __fdiv_rn(fabsf(mi), d);
      r = r > 1.0f ? 1.0f : r;
      pi = __fadd_rn(pi, __fmul_rn(__fmul_rn(c.neg_lr, sophia_sign(mi)), r));
      pv[k] = pi;
      mv[k] = mi;
      if constexpr (kMetrics) {
        if (k >= ch.kb && k < ch.ke) {
          unclipped += fabsf(mi) < __fmul_rn(c.rho_bs, hi) ? 1u : 0u;
          const double hd = static_cast<double>(hi);
          h_l1 = __dadd_rn(h_l1, fabs(hd));
          h_sq = __dadd_rn(h_sq, __dmul_rn(hd, hd));  // exact product of two floats
        }
      }
    }
    store8(p, ch, pv);
    store8(m, ch, mv);
    if (w != nullptr) store_weights8(w, ch, pv, seed, step);
  }
  if constexpr (kMetrics) {
    const double s0 = block_sum(static_cast<double>(unclipped));
    const double s1 = block_sum(h_l1);
    const double s2 = block_sum(h_sq);
    if (threadIdx.x == 0) {
      partials[blockIdx.x] = s0;
      partials[partial_stride + blockIdx.x] = s1;
      partials[2 * partial_stride + blockIdx.x] = s2;
    }
  }
}

template <class GradT>
__global__ void __launch_bounds__(256)
    hessian_ema_kernel(float* __restrict__ h, const GradT* __restrict__ g, ChunkGrid grid,
                       HessianConsts c) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk ch = grid.chunk(q);
    float hv[8], gv[8];
    load8(h, ch, hv);
    load8(g, ch, gv);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float t = __fmul_rn(__fmul_rn(c.one_minus_b2, gv[k]), gv[k]);
      hv[k] = __fadd_rn(__fmul_rn(hv[k], c.b2), t);
    }
    store8(h, ch, hv);
  }
}

template <class GradT, class ParamT>
__global__ void __launch_bounds__(256)
    adamw_step_kernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                      const GradT* __restrict__ g, ParamT* __restrict__ w, ChunkGrid grid,
                      DecayRanges decay, AdamWConsts c, uint64_t seed, uint32_t step) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk ch = grid.chunk(q);
    float pv[8], mv[8], vv[8], gv[8];
    load8(p, ch, pv);
    load8(m, ch, mv);
    load8(v, ch, vv);
    load8(g, ch, gv);
    const int dmode = chunk_decay(decay, ch.j0);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      float pi = pv[k], mi = mv[k];
      decay_and_momentum(pi, mi, gv[k], dmode == 1 || (dmode == 2 && decayed_at(decay, ch.j0 + k)),
                         c.decay, c.b1, c.one_minus_b1);
      const float t = __fmul_rn(__fmul_rn(c.one_minus_b2, gv[k]), gv[k]);
      const float vi = __fadd_rn(__fmul_rn(vv[k], c.b2), t);
      const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), c.inv_sqrt_bc2), c.eps);
      pi = __fadd_rn(pi, __fdiv_rn(__fmul_rn(c.neg_step_size, mi), denom));
      pv[k] = pi;
      mv[k] = mi;
      vv[k] = vi;
    }
    store8(p, ch, pv);
    store8(m, ch, mv);
    store8(v, ch, vv);
    if (w != nullptr) store_weights8(w, ch, pv, seed, step);
  }
}

// ------------------------------------------------------- unfused baseline (benchmark only)
// One element per thread, one operation per launch, like PyTorch's eager element-wise kernels.

#define SGPT_UNFUSED_LOOP(n) \
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<size_t>(gridDim.x) * blockDim.x)

__global__ void uf_mul_scalar(float* x, size_t n, float s) {  // x.mul_(s)
  SGPT_UNFUSED_LOOP(n) x[i] = __fmul_rn(x[i], s);
}
template <class GradT>
__global__ void uf_add_scaled(float* x, const GradT* y, size_t n, float a) {  // x.add_(y, alpha=a)
  SGPT_UNFUSED_LOOP(n) x[i] = __fadd_rn(x[i], __fmul_rn(a, Elem<GradT>::to_f32(y[i])));
}
__global__ void uf_abs(const float* x, float* out, size_t n) {  // out = x.abs()
  SGPT_UNFUSED_LOOP(n) out[i] = fabsf(x[i]);
}
__global__ void uf_mul_to(const float* x, float* out, size_t n, float s) {  // out = s * x
  SGPT_UNFUSED_LOOP(n) out[i] = __fmul_rn(x[i], s);
}
__global__ void uf_add_scalar(float* x, size_t n, float s) {  // x += s
  SGPT_UNFUSED_LOOP(n) x[i] = __fadd_rn(x[i], s);
}
__global__ void uf_div(float* x, const float* y, size_t n) {  // x /= y
  SGPT_UNFUSED_LOOP(n) x[i] = __fdiv_rn(x[i], y[i]);
}
__global__ void uf_clamp_max1(float* x, size_t n) {  // x.clamp_(None, 1)
  SGPT_UNFUSED_LOOP(n) x[i] = x[i] > 1.0f ? 1.0f : x[i];
}
__global__ void uf_sign(const float* x, float* out, size_t n) {  // out = x.sign()
  SGPT_UNFUSED_LOOP(n) out[i] = sophia_sign(x[i]);
}
__global__ void uf_addcmul(float* x, const float* a, const float* b, size_t n, float value) {
  SGPT_UNFUSED_LOOP(n) x[i] = __fadd_rn(x[i], __fmul_rn(__fmul_rn(value, a[i]), b[i]));
}
template <class GradT>
__global__ void uf_addcmul_gg(float* x, const GradT* g, size_t n, float value) {  // x += value*g*g
  SGPT_UNFUSED_LOOP(n) {
    const float gi = Elem<GradT>::to_f32(g[i]);
    x[i] = __fadd_rn(x[i], __fmul_rn(__fmul_rn(value, gi), gi));
  }
}
#undef SGPT_UNFUSED_LOOP

// ---------------------------------------------------------------------------------- launchers

void DecayRanges::add(size_t b, size_t e) {
  if (e < b) throw std::invalid_argument("DecayRanges::add: end < begin");
  if (e == b) return;
  if (count > 0 && b < end[count - 1])
    throw std::invalid_argument("DecayRanges::add: ranges must be added in increasing order");
  if (count > 0 && b == end[count - 1]) {
    end[count - 1] = e;
    return;
  }
  if (count == kMax) throw std::invalid_argument("DecayRanges::add: more than kMax ranges");
  begin[count] = b;
  end[count] = e;
  ++count;
}

bool DecayRanges::contains(size_t i) const {
  for (int r = 0; r < count; ++r)
    if (i >= begin[r] && i < end[r]) return true;
  return false;
}

DecayRanges DecayRanges::from_layout(const ParamLayout& layout) {
  DecayRanges d;
  for (int t = 0; t < kNumParamTensors; ++t)
    if (ParamLayout::decayed(t)) d.add(layout.offset[t], layout.offset[t] + layout.size[t]);
  return d;
}

template <class ParamT>
static ParamT* weights_or_null(ParamT* w, const float* master) {
  return static_cast<const void*>(w) == static_cast<const void*>(master) ? nullptr : w;
}

template <class GradT, class ParamT>
void sophia_step(float* master, float* m, const float* h, const GradT* g, ParamT* weights_out,
                 size_t n, const DecayRanges& decay, const SophiaConsts& c, const RoundingKey& key,
                 ReduceScratch* metrics, cudaStream_t stream) {
  ParamT* w = weights_or_null(weights_out, master);
  const size_t b = key.index_base;
  const bool aligned = chunk_aligned(master, b) && chunk_aligned(m, b) && chunk_aligned(h, b) &&
                       chunk_aligned(g, b) && chunk_aligned(w, b);
  const ChunkGrid grid = make_chunk_grid(n, b, aligned);
  if (grid.nchunks == 0) {
    if (metrics) CUDA_CHECK(cudaMemsetAsync(metrics->results(), 0, 3 * sizeof(double), stream));
    return;
  }
  const unsigned blocks = full_grid(grid.nchunks, kReduceThreads);
  if (metrics) {
    metrics->reserve(blocks);
    sophia_step_kernel<GradT, ParamT, true><<<blocks, kReduceThreads, 0, stream>>>(
        master, m, h, g, w, grid, decay, c, key.seed, key.step, metrics->partials(),
        metrics->capacity());
    CUDA_LAUNCH_CHECK();
    launch_reduce_finalize(*metrics, blocks, 3, stream);
  } else {
    sophia_step_kernel<GradT, ParamT, false><<<blocks, kReduceThreads, 0, stream>>>(
        master, m, h, g, w, grid, decay, c, key.seed, key.step, nullptr, 0);
    CUDA_LAUNCH_CHECK();
  }
}

void read_sophia_metrics(ReduceScratch& metrics, size_t n, SophiaMetrics* out,
                         cudaStream_t stream) {
  double r[3];
  CUDA_CHECK(cudaMemcpyAsync(r, metrics.results(), sizeof(r), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  out->unclipped += r[0];
  out->count += static_cast<double>(n);
  out->h_l1 += r[1];
  out->h_sq += r[2];
}

template <class GradT>
void hessian_ema(float* h, const GradT* g, size_t n, const HessianConsts& c, cudaStream_t stream) {
  const ChunkGrid grid = make_chunk_grid(n, 0, chunk_aligned(h, 0) && chunk_aligned(g, 0));
  if (grid.nchunks == 0) return;
  hessian_ema_kernel<GradT><<<full_grid(grid.nchunks, 256), 256, 0, stream>>>(h, g, grid, c);
  CUDA_LAUNCH_CHECK();
}

template <class GradT, class ParamT>
void adamw_step(float* master, float* m, float* v, const GradT* g, ParamT* weights_out, size_t n,
                const DecayRanges& decay, const AdamWConsts& c, const RoundingKey& key,
                cudaStream_t stream) {
  ParamT* w = weights_or_null(weights_out, master);
  const size_t b = key.index_base;
  const bool aligned = chunk_aligned(master, b) && chunk_aligned(m, b) && chunk_aligned(v, b) &&
                       chunk_aligned(g, b) && chunk_aligned(w, b);
  const ChunkGrid grid = make_chunk_grid(n, b, aligned);
  if (grid.nchunks == 0) return;
  adamw_step_kernel<GradT, ParamT><<<full_grid(grid.nchunks, 256), 256, 0, stream>>>(
      master, m, v, g, w, grid, decay, c, key.seed, key.step);
  CUDA_LAUNCH_CHECK();
}

std::vector<TensorSpan> pytorch_param_spans(const ParamLayout& layout, int n_layer) {
  std::vector<TensorSpan> spans;
  for (int t = 0; t < kNumParamTensors; ++t) {
    if (layout.size[t] == 0) continue;
    const bool layered = t >= kLn1w && t <= kFcprojb;
    const int parts = layered ? n_layer : 1;
    const size_t per = layout.size[t] / static_cast<size_t>(parts);
    for (int l = 0; l < parts; ++l) {
      const size_t b = layout.offset[t] + per * static_cast<size_t>(l);
      spans.push_back(TensorSpan{b, b + per, ParamLayout::decayed(t)});
    }
  }
  return spans;
}

static unsigned unfused_grid(size_t n) {
  return static_cast<unsigned>(std::min<size_t>((n + 255) / 256, 65535u * 8u));
}

template <class GradT, class ParamT>
void sophia_step_unfused(float* master, float* m, const float* h, const GradT* g,
                         ParamT* weights_out, const std::vector<TensorSpan>& spans,
                         const SophiaConsts& c, const RoundingKey& key, float* tmp,
                         cudaStream_t stream) {
  ParamT* w = weights_or_null(weights_out, master);
  size_t max_len = 0;
  for (const TensorSpan& s : spans) max_len = std::max(max_len, s.end - s.begin);
  float* t0 = tmp;
  float* t1 = tmp + max_len;
  float* t2 = tmp + 2 * max_len;
  for (const TensorSpan& s : spans) {
    const size_t n = s.end - s.begin;
    float* p = master + s.begin;
    float* mm = m + s.begin;
    const float* hh = h + s.begin;
    const GradT* gg = g + s.begin;
    const unsigned blocks = unfused_grid(n);
    // PyTorch multiplies every parameter by (1 - lr*wd); the no-decay group has wd = 0.
    uf_mul_scalar<<<blocks, 256, 0, stream>>>(p, n, s.decayed ? c.decay : 1.0f);
    uf_mul_scalar<<<blocks, 256, 0, stream>>>(mm, n, c.b1);
    uf_add_scaled<GradT><<<blocks, 256, 0, stream>>>(mm, gg, n, c.one_minus_b1);
    uf_abs<<<blocks, 256, 0, stream>>>(mm, t0, n);
    uf_mul_to<<<blocks, 256, 0, stream>>>(hh, t1, n, c.rho_bs);
    uf_add_scalar<<<blocks, 256, 0, stream>>>(t1, n, 1e-15f);
    uf_div<<<blocks, 256, 0, stream>>>(t0, t1, n);
    uf_clamp_max1<<<blocks, 256, 0, stream>>>(t0, n);
    uf_sign<<<blocks, 256, 0, stream>>>(mm, t2, n);
    uf_addcmul<<<blocks, 256, 0, stream>>>(p, t2, t0, n, c.neg_lr);
    CUDA_LAUNCH_CHECK();
    if (w != nullptr) {
      RoundingKey k = key;
      k.index_base = key.index_base + s.begin;
      stochastic_round(p, w + s.begin, n, k, stream);
    }
  }
}

template <class GradT>
void hessian_ema_unfused(float* h, const GradT* g, const std::vector<TensorSpan>& spans,
                         const HessianConsts& c, cudaStream_t stream) {
  for (const TensorSpan& s : spans) {
    const size_t n = s.end - s.begin;
    const unsigned blocks = unfused_grid(n);
    uf_mul_scalar<<<blocks, 256, 0, stream>>>(h + s.begin, n, c.b2);
    uf_addcmul_gg<GradT><<<blocks, 256, 0, stream>>>(h + s.begin, g + s.begin, n, c.one_minus_b2);
    CUDA_LAUNCH_CHECK();
  }
}

// ------------------------------------------------------------------------ instantiations
#define SGPT_INSTANTIATE_STEP(G, P)                                                              \
  template void sophia_step<G, P>(float*, float*, const float*, const G*, P*, size_t,           \
                                  const DecayRanges&, const SophiaConsts&, const RoundingKey&,  \
                                  ReduceScratch*, cudaStream_t);                                \
  template void adamw_step<G, P>(float*, float*, float*, const G*, P*, size_t,                  \
                                 const DecayRanges&, const AdamWConsts&, const RoundingKey&,    \
                                 cudaStream_t);                                                 \
  template void sophia_step_unfused<G, P>(float*, float*, const float*, const G*, P*,           \
                                          const std::vector<TensorSpan>&, const SophiaConsts&, \
                                          const RoundingKey&, float*, cudaStream_t);
#define SGPT_INSTANTIATE_GRAD(G)                                                              \
  SGPT_INSTANTIATE_STEP(G, float)                                                             \
  SGPT_INSTANTIATE_STEP(G, __nv_bfloat16)                                                     \
  SGPT_INSTANTIATE_STEP(G, __half)                                                            \
  template void hessian_ema<G>(float*, const G*, size_t, const HessianConsts&, cudaStream_t); \
  template void hessian_ema_unfused<G>(float*, const G*, const std::vector<TensorSpan>&,      \
                                       const HessianConsts&, cudaStream_t);
SGPT_INSTANTIATE_GRAD(float)
SGPT_INSTANTIATE_GRAD(__nv_bfloat16)
SGPT_INSTANTIATE_GRAD(__half)
#undef SGPT_INSTANTIATE_GRAD
#undef SGPT_INSTANTIATE_STEP

}  // namespace sgpt::cuda
