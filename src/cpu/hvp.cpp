#include "cpu/hvp.h"

#include <algorithm>

namespace sgpt::cpu {

template <class T>
HessianVectorProduct<T>::HessianVectorProduct(const ModelConfig& cfg, int max_B, int seq)
    : model_(cfg, max_B, seq) {}

template <class T>
T HessianVectorProduct<T>::accumulate(const T* params, const T* u, const int* inp, const int* tgt,
                                      int B, T scale, T* hu) {
  const size_t n = model_.layout().total;
  params_.resize(n);
  grads_.assign(n, Dual<T>());
  for (size_t i = 0; i < n; ++i) params_[i] = Dual<T>(params[i], u[i]);
  const Dual<T> loss = model_.forward(params_.data(), inp, tgt, B);
  model_.backward(params_.data(), grads_.data(), Dual<T>(scale, T(0)));
  for (size_t i = 0; i < n; ++i) hu[i] += grads_[i].d;
  return loss.v;
}

template class HessianVectorProduct<float>;
template class HessianVectorProduct<double>;

}  // namespace sgpt::cpu
