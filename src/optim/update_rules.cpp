#include "optim/update_rules.h"

#include <cmath>

#include "common/philox.h"

namespace sgpt {

SophiaConsts SophiaConsts::make(double lr, double beta1, double rho, double bs, double wd) {
  SophiaConsts c;
  c.b1 = static_cast<float>(beta1);
  c.one_minus_b1 = static_cast<float>(1.0 - beta1);
  c.decay = static_cast<float>(1.0 - lr * wd);
  c.rho_bs = static_cast<float>(rho * bs);
  c.neg_lr = static_cast<float>(-lr);
  return c;
}

HessianConsts HessianConsts::make(double beta2) {
  return HessianConsts{static_cast<float>(beta2), static_cast<float>(1.0 - beta2)};
}

AdamWConsts AdamWConsts::make(double lr, double beta1, double beta2, double eps, double wd,
                              int64_t t) {
  AdamWConsts c;
  c.b1 = static_cast<float>(beta1);
  c.one_minus_b1 = static_cast<float>(1.0 - beta1);
  c.b2 = static_cast<float>(beta2);
  c.one_minus_b2 = static_cast<float>(1.0 - beta2);
  c.decay = static_cast<float>(1.0 - lr * wd);
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(t));
  c.neg_step_size = static_cast<float>(-lr / bc1);
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  c.eps = static_cast<float>(eps);
  return c;
}

namespace cpu {

void sophia_update(float* p, float* m, const float* h, const float* g, size_t n,
                   const SophiaConsts& c, bool decayed, SophiaMetrics* metrics) {
  double unclipped = 0, l1 = 0, sq = 0;
  for (size_t i = 0; i < n; ++i) {
    float pi = p[i];
    if (decayed) pi = pi * c.decay;
    float mi = m[i] * c.b1;
    mi = mi + c.one_minus_b1 * g[i];
    const float hi = h[i];
    const float d = hi * c.rho_bs + 1e-15f;
    float r = std::fabs(mi) / d;
    r = r > 1.0f ? 1.0f : r;  // keeps NaN (a comparison with NaN is false)
    const float s = mi > 0.0f ? 1.0f : (mi < 0.0f ? -1.0f : mi);  // sign(0) = 0, sign(NaN) = NaN
    pi = pi + c.neg_lr * s * r;
    p[i] = pi;
    m[i] = mi;
    if (metrics) {
      unclipped += std::fabs(mi) < c.rho_bs * hi ? 1.0 : 0.0;
      l1 += std::fabs(static_cast<double>(hi));
      sq += static_cast<double>(hi) * static_cast<double>(hi);
    }
  }
  if (metrics) {
    metrics->unclipped += unclipped;
    metrics->count += static_cast<double>(n);
    metrics->h_l1 += l1;
    metrics->h_sq += sq;
  }
}

void hessian_ema(float* h, const float* g, size_t n, const HessianConsts& c) {
  for (size_t i = 0; i < n; ++i) {
    float t = c.one_minus_b2 * g[i];
    t = t * g[i];
    h[i] = h[i] * c.b2 + t;
  }
}

void hutchinson_ema(float* h, const float* hu, size_t n, const HessianConsts& c, uint64_t seed,
                    uint32_t step, size_t index_base, bool rademacher) {
  for (size_t i = 0; i < n; ++i) {
    const float u = hutchinson_probe(seed, step, index_base + i, rademacher);
    float t = c.one_minus_b2 * u;
    t = t * hu[i];
    h[i] = h[i] * c.b2 + t;
  }
}

void adamw_update(float* p, float* m, float* v, const float* g, size_t n, const AdamWConsts& c,
                  bool decayed) {
  for (size_t i = 0; i < n; ++i) {
    float pi = p[i];
    if (decayed) pi = pi * c.decay;
    float mi = m[i] * c.b1;
    mi = mi + c.one_minus_b1 * g[i];
    float t = c.one_minus_b2 * g[i];
    t = t * g[i];
    const float vi = v[i] * c.b2 + t;
    const float denom = std::sqrt(vi) * c.inv_sqrt_bc2 + c.eps;
    pi = pi + c.neg_step_size * mi / denom;
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

double sum_squares(const float* g, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  return s;
}

float clip_scale(double norm, double clip) {
  if (clip > 0 && norm > clip) return static_cast<float>(clip / (norm + 1e-6));
  return 1.0f;
}

void scale(float* g, size_t n, float s) {
  for (size_t i = 0; i < n; ++i) g[i] *= s;
}

}  // namespace cpu

double lr_at(int64_t step, double lr, double min_lr, int64_t warmup_iters, int64_t lr_decay_iters) {
  if (step < warmup_iters) return lr * static_cast<double>(step) / static_cast<double>(warmup_iters);
  if (step > lr_decay_iters) return min_lr;
  if (lr_decay_iters <= warmup_iters) return min_lr;
  const double ratio = static_cast<double>(step - warmup_iters) /
                       static_cast<double>(lr_decay_iters - warmup_iters);
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return min_lr + coeff * (lr - min_lr);
}

}  // namespace sgpt
