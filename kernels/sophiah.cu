// Sophia-H on the GPU: the rule of src/optim/sophiah.h, one element at a time, in the frame of
// kernels/update.cuh (one launch over the flat buffer, with the metrics reduction when asked).
// Every fp32 operation is explicitly rounded in the CPU reference's order (cpu::sophiah_update),
// so p and m are equal bit for bit:
//   p = p*decay                          (decayed tensors only)
//   m = m*b1 + (1-b1)*g
//   d = gamma*h ; d = d < eps ? eps : d  (max(gamma*h, eps); a NaN h stays NaN)
//   r = m / d ; r clamped to [-1, 1]     (NaN kept)
//   p = p + (-lr)*r
// Metrics, as the CPU's: count of |m| < d (unclipped), sum |h|, sum h^2 (in double), count of
// h < 0; reduced deterministically by the frame (no atomics).
#include "optim/sophiah.h"
#include "update.cuh"

namespace sgpt::cuda {
namespace {

// State: m (slot 0), h (slot 1, read only: the Hutchinson estimator writes it).
struct SophiaHRule {
  static constexpr int kSlots = 2;
  static constexpr bool writes(int slot) { return slot == 0; }
  SophiaHConsts c;
  __device__ __forceinline__ float denom(float h) const {
    const float d = __fmul_rn(c.gamma, h);  // d = gamma*h
    return d < c.eps ? c.eps : d;           // max(d, eps); NaN stays NaN
  }
  __device__ __forceinline__ void operator()(float& p, float (&s)[2], float g, bool decayed) const {
    float& m = s[0];
    if (decayed) p = __fmul_rn(p, c.decay);                            // p = p * (1 - lr*wd)
    m = __fadd_rn(__fmul_rn(m, c.b1), __fmul_rn(c.one_minus_b1, g));  // m = b1*m + (1-b1)*g
    float r = __fdiv_rn(m, denom(s[1]));                               // r = m / max(gamma*h, eps)
    r = r > 1.0f ? 1.0f : (r < -1.0f ? -1.0f : r);                    // clamp, NaN kept
    p = __fadd_rn(p, __fmul_rn(c.neg_lr, r));                          // p = p - lr*r
  }
  __device__ __forceinline__ void measure(const float (&s)[2], uint32_t& unclipped, double& h_l1,
                                          double& h_sq, uint32_t& negative) const {
    unclipped += fabsf(s[0]) < denom(s[1]) ? 1u : 0u;
    const double h = static_cast<double>(s[1]);
    h_l1 = __dadd_rn(h_l1, fabs(h));
    h_sq = __dadd_rn(h_sq, __dmul_rn(h, h));  // the exact product of two floats
    negative += s[1] < 0.0f ? 1u : 0u;
  }
};

class SophiaH final : public Optimizer {
 public:
  void update(const OptimizerStep& s, float* const* state, const UpdateTarget& t,
              ReduceScratch* metrics) const override {
    const OptimizerConfig& o = *s.cfg;
    const double gamma = o.rho * hessian_correction(s);  // h / (1 - beta2^n) when corrected
    launch_update(SophiaHRule{SophiaHConsts::make(s.lr, o.beta1, gamma, o.eps, o.weight_decay)},
                  state, t, metrics);
  }
};

}  // namespace

std::unique_ptr<Optimizer> make_sophiah_cuda() { return std::make_unique<SophiaH>(); }

}  // namespace sgpt::cuda
