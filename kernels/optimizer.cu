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
// Each rule is the arithmetic of one element (the frame that walks the buffer in chunks of 8,
// applies the decay mask and writes the working weights is kernels/update.cuh). Bytes per element
// of a Sophia-G step: 5*4 (read p, m, h; write p, m) + sizeof(GradT) + sizeof(ParamT) when w is
// written: 24 for fp32 (w = nullptr) and for bf16 g and w.
//
// Metrics reduction: deterministic, no atomics (kernels/norm.cuh): per-thread (count, double
// sums) over its chunk, fixed block tree, per-block partials, fixed-order finalize passes.
//
// Contents: device helpers, fused kernels, unfused baseline kernels, then the launchers.
#include <stdexcept>

#include "cast.cuh"
#include "norm.cuh"
#include "update.cuh"

namespace sgpt::cuda {

// ------------------------------------------------------------------------------------ rules

// Sophia-G, one element. State: m (slot 0), h (slot 1, read only: the estimator writes it).
struct SophiaRule {
  static constexpr int kSlots = 2;
  static constexpr bool writes(int slot) { return slot == 0; }
  SophiaConsts c;
  __device__ __forceinline__ void operator()(float& p, float (&s)[2], float g, bool decayed) const {
    float& m = s[0];
    const float h = s[1];
    if (decayed) p = __fmul_rn(p, c.decay);                               // p = p * (1 - lr*wd)
    m = __fadd_rn(__fmul_rn(m, c.b1), __fmul_rn(c.one_minus_b1, g));     // m = b1*m + (1-b1)*g
    const float d = __fadd_rn(__fmul_rn(h, c.rho_bs), 1e-15f);            // d = rho*bs*h + 1e-15
    float r = __fdiv_rn(fabsf(m), d);                                     // r = |m| / d
    r = r > 1.0f ? 1.0f : r;                                              // r = min(r, 1), NaN kept
    p = __fadd_rn(p, __fmul_rn(__fmul_rn(c.neg_lr, sign_of(m)), r));      // p = p - lr*sign(m)*r
  }
  // The win rate's count (|m| < rho*bs*h: the element was not clipped), sum |h|, sum h^2.
  __device__ __forceinline__ void measure(const float (&s)[2], uint32_t& unclipped, double& h_l1,
                                          double& h_sq, uint32_t&) const {
    unclipped += fabsf(s[0]) < __fmul_rn(c.rho_bs, s[1]) ? 1u : 0u;
    const double h = static_cast<double>(s[1]);
    h_l1 = __dadd_rn(h_l1, fabs(h));
    h_sq = __dadd_rn(h_sq, __dmul_rn(h, h));  // the exact product of two floats
  }
};

// AdamW (PyTorch's), one element. State: m (slot 0), v (slot 1).
struct AdamWRule {
  static constexpr int kSlots = 2;
  static constexpr bool writes(int) { return true; }
  AdamWConsts c;
  __device__ __forceinline__ void operator()(float& p, float (&s)[2], float g, bool decayed) const {
    float& m = s[0];
    float& v = s[1];
    if (decayed) p = __fmul_rn(p, c.decay);                                 // p = p * (1 - lr*wd)
    m = __fadd_rn(__fmul_rn(m, c.b1), __fmul_rn(c.one_minus_b1, g));       // m = b1*m + (1-b1)*g
    v = __fadd_rn(__fmul_rn(v, c.b2), __fmul_rn(__fmul_rn(c.one_minus_b2, g), g));  // v = b2*v + (1-b2)*g*g
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(v), c.inv_sqrt_bc2), c.eps);  // sqrt(v/bc2) + eps
    p = __fadd_rn(p, __fdiv_rn(__fmul_rn(c.neg_step_size, m), denom));    // p = p - lr/bc1 * m / denom
  }
  __device__ void measure(const float (&)[2], uint32_t&, double&, double&, uint32_t&) const {}
};

// ------------------------------------------------------------------------------- fused kernels

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
      const float t = __fmul_rn(__fmul_rn(c.one_minus_b2, gv[k]), gv[k]);  // (1-b2)*g*g
      hv[k] = __fadd_rn(__fmul_rn(hv[k], c.b2), t);                       // h = b2*h + that
    }
    store8(h, ch, hv);
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
  SGPT_UNFUSED_LOOP(n) out[i] = sign_of(x[i]);
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

template <class GradT, class ParamT>
void sophia_step(float* master, float* m, const float* h, const GradT* g, ParamT* weights_out,
                 size_t n, const DecayRanges& decay, const SophiaConsts& c, const RoundingKey& key,
                 ReduceScratch* metrics, cudaStream_t stream) {
  launch_update(SophiaRule{c}, master, Slots<2>{{m, const_cast<float*>(h)}}, g, weights_out, n,
                decay, key, metrics, stream);
}

void read_sophia_metrics(ReduceScratch& metrics, size_t n, SophiaMetrics* out,
                         cudaStream_t stream) {
  double r[4];
  CUDA_CHECK(cudaMemcpyAsync(r, metrics.results(), sizeof(r), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  out->unclipped += r[0];
  out->count += static_cast<double>(n);
  out->h_l1 += r[1];
  out->h_sq += r[2];
  out->h_negative += r[3];  // Sophia-H's count of negative h (0 for Sophia-G)
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
  launch_update(AdamWRule{c}, master, Slots<2>{{m, v}}, g, weights_out, n, decay, key, nullptr,
                stream);
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

// ------------------------------------------------------------------- cuda::Optimizer classes

namespace {
class SophiaG final : public Optimizer {
 public:
  void update(const OptimizerStep& s, float* const* state, const UpdateTarget& t,
              ReduceScratch* metrics) const override {
    const OptimizerConfig& o = *s.cfg;
    const double rho = o.rho * hessian_correction(s);  // h / (1 - beta2^n) when corrected
    launch_update(SophiaRule{SophiaConsts::make(s.lr, o.beta1, rho, s.bs, o.weight_decay)}, state,
                  t, metrics);
  }
};
class AdamW final : public Optimizer {
 public:
  void update(const OptimizerStep& s, float* const* state, const UpdateTarget& t,
              ReduceScratch* metrics) const override {
    const OptimizerConfig& o = *s.cfg;
    launch_update(AdamWRule{AdamWConsts::make(s.lr, o.beta1, o.beta2, o.eps, o.weight_decay, s.t)},
                  state, t, metrics);
  }
};
}  // namespace

std::unique_ptr<Optimizer> make_sophiag_cuda() { return std::make_unique<SophiaG>(); }
std::unique_ptr<Optimizer> make_adamw_cuda() { return std::make_unique<AdamW>(); }

}  // namespace sgpt::cuda
