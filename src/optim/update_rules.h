// CPU reference of the optimizers, the Hessian EMA, gradient clipping and the LR schedule
// (docs/design.md section 3). These are the literal formulas; the fused CUDA kernels of the same names
// must reproduce them bit for bit in fp32 (they use explicitly rounded multiply and add, no FMA
// contraction; this file is compiled with -ffp-contract=off).
#pragma once
#include <cstddef>
#include <cstdint>

namespace sgpt {

// Constants computed on the host in double, passed as float.
struct SophiaConsts {
  float b1, one_minus_b1;
  float decay;    // 1 - lr*wd (applied only to decayed tensors)
  float rho_bs;   // rho * bs
  float neg_lr;   // -lr
  static SophiaConsts make(double lr, double beta1, double rho, double bs, double weight_decay);
};

struct HessianConsts {
  float b2, one_minus_b2;
  static HessianConsts make(double beta2);
};

struct AdamWConsts {
  float b1, one_minus_b1, b2, one_minus_b2;
  float decay;           // 1 - lr*wd
  float neg_step_size;   // -lr / (1 - b1^t)
  float inv_sqrt_bc2;    // 1 / sqrt(1 - b2^t)
  float eps;
  // t is the 1-based step count (after increment), as PyTorch's state['step'].
  static AdamWConsts make(double lr, double beta1, double beta2, double eps, double weight_decay,
                          int64_t t);
};

// Sums a Sophia-G step reports (over the elements it touched): count of elements with
// |m| < rho*bs*h ("win rate" numerator), L1 and L2^2 of h.
struct SophiaMetrics {
  double unclipped = 0;
  double count = 0;
  double h_l1 = 0;
  double h_sq = 0;
  double h_negative = 0;  // entries of h below 0 (Sophia-H; GNB's h is never negative)
  double win_rate() const { return count > 0 ? unclipped / count : 0.0; }
  double negative_fraction() const { return count > 0 ? h_negative / count : 0.0; }
};

namespace cpu {

// One Sophia-G step on elements [0, n) of one tensor:
//   p = p*decay ; m = m*b1 + (1-b1)*g ; d = h*(rho*bs) + 1e-15 ; r = min(|m|/d, 1) (NaN kept) ;
//   p = p + (-lr) * sign(m) * r
// `decayed` selects whether p is multiplied by c.decay. Metrics are accumulated when non-null.
void sophia_update(float* p, float* m, const float* h, const float* g, size_t n,
                   const SophiaConsts& c, bool decayed, SophiaMetrics* metrics);

// h = h*b2 + (1-b2)*g*g  (evaluated left to right: ((1-b2)*g)*g)
void hessian_ema(float* h, const float* g, size_t n, const HessianConsts& c);
// The Hutchinson estimate's EMA (Sophia-H): h = h*b2 + ((1-b2)*u)*hu, with u[i] =
// hutchinson_probe(seed, step, index_base + i, rademacher) (src/common/philox.h) and hu = H u.
void hutchinson_ema(float* h, const float* hu, size_t n, const HessianConsts& c, uint64_t seed,
                    uint32_t step, size_t index_base, bool rademacher);

// PyTorch AdamW: p = p*decay ; m = m*b1 + (1-b1)*g ; v = v*b2 + (1-b2)*g*g ;
//   p = p + neg_step_size * m / (sqrt(v)*inv_sqrt_bc2 + eps)
void adamw_update(float* p, float* m, float* v, const float* g, size_t n, const AdamWConsts& c,
                  bool decayed);

// Global L2 norm (accumulated in double) of g[0, n).
double sum_squares(const float* g, size_t n);
// The factor clip/(norm+1e-6) when norm > clip, else 1 (clip <= 0 disables clipping).
float clip_scale(double norm, double clip);
void scale(float* g, size_t n, float s);

}  // namespace cpu

// Official schedule: linear warmup from 0 over warmup_iters, cosine from lr to min_lr until
// lr_decay_iters, then min_lr.
double lr_at(int64_t step, double lr, double min_lr, int64_t warmup_iters, int64_t lr_decay_iters);

}  // namespace sgpt
