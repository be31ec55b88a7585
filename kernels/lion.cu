// Lion on the GPU: the rule of src/optim/lion.h, one element at a time, in the frame of
// kernels/update.cuh (one launch over the flat buffer). Every fp32 operation is explicitly
// rounded in the CPU reference's order (cpu::lion_update), so the results are equal bit for bit.
#include "optim/lion.h"
#include "update.cuh"

namespace sgpt::cuda {
namespace {

// State: m (slot 0).
struct LionRule {
  static constexpr int kSlots = 1;
  static constexpr bool writes(int) { return true; }
  LionConsts c;
  __device__ __forceinline__ void operator()(float& p, float (&s)[1], float g, bool decayed) const {
    float& m = s[0];
    if (decayed) p = __fmul_rn(p, c.decay);                                      // p = p * (1 - lr*wd)
    const float u = __fadd_rn(__fmul_rn(m, c.b1), __fmul_rn(c.one_minus_b1, g));  // c = b1*m + (1-b1)*g
    p = __fadd_rn(p, __fmul_rn(c.neg_lr, sign_of(u)));                           // p = p - lr*sign(c)
    m = __fadd_rn(__fmul_rn(m, c.b2), __fmul_rn(c.one_minus_b2, g));            // m = b2*m + (1-b2)*g
  }
  __device__ void measure(const float (&)[1], uint32_t&, double&, double&, uint32_t&) const {}
};

class Lion final : public Optimizer {
 public:
  void update(const OptimizerStep& s, float* const* state, const UpdateTarget& t,
              ReduceScratch* metrics) const override {
    const OptimizerConfig& o = *s.cfg;
    launch_update(LionRule{LionConsts::make(s.lr, o.beta1, o.beta2, o.weight_decay)}, state, t,
                  metrics);
  }
};

}  // namespace

std::unique_ptr<Optimizer> make_lion_cuda() { return std::make_unique<Lion>(); }

}  // namespace sgpt::cuda
