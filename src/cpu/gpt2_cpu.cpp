// GPT-2 forward/backward on the CPU (see cpu/gpt2_cpu.h for the model and the buffers).
#include "cpu/gpt2_cpu.h"

#include "cpu/dual.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu/ops.h"

namespace sgpt::cpu {

template <class F>
Gpt2<F>::Gpt2(const ModelConfig& cfg, int max_B, int T)
    : cfg_(cfg), layout_(ParamLayout::make(cfg)), max_B_(max_B), T_(T) {
  if (cfg.n_layer < 1 || cfg.n_head < 1 || cfg.n_embd < 1 || cfg.n_embd % cfg.n_head != 0)
    throw std::invalid_argument("Gpt2: n_embd must be a positive multiple of n_head");
  if (cfg.vocab_size < 1 || cfg.padded_vocab_size < cfg.vocab_size)
    throw std::invalid_argument("Gpt2: need 1 <= vocab_size <= padded_vocab_size");
  if (T < 1 || T > cfg.block_size)
    throw std::invalid_argument("Gpt2: T must be in [1, block_size], got " + std::to_string(T));
  if (max_B < 1) throw std::invalid_argument("Gpt2: max_B must be >= 1");

  const size_t N = static_cast<size_t>(max_B) * T;
  const size_t L = cfg.n_layer, C = cfg.n_embd, NH = cfg.n_head, Vp = cfg.padded_vocab_size;
  encoded_.resize(N * C);
  ln1_.resize(L * N * C);
  ln1_mean_.resize(L * N);
  ln1_rstd_.resize(L * N);
  qkv_.resize(L * N * 3 * C);
  atty_.resize(L * N * C);
  att_.resize(L * N * NH * T);  // [L, B, NH, T, T]
  res2_.resize(L * N * C);
  ln2_.resize(L * N * C);
  ln2_mean_.resize(L * N);
  ln2_rstd_.resize(L * N);
  fch_.resize(L * N * 4 * C);
  fch_gelu_.resize(L * N * 4 * C);
  res3_.resize(L * N * C);
  proj_.resize(N * C);
  lnf_.resize(N * C);
  lnf_mean_.resize(N);
  lnf_rstd_.resize(N);
  logits_.resize(N * Vp);
  losses_.resize(N);
  dres_.resize(N * C);
  dln_.resize(N * C);
  dqkv_.resize(N * 3 * C);
  datty_.resize(N * C);
  dfch_gelu_.resize(N * 4 * C);
  dfch_.resize(N * 4 * C);
  inp_.resize(N);
  targets_.resize(N);
}

template <class F>
F Gpt2<F>::attention_scale(int layer) const {
  return static_cast<F>(sgpt::attention_scale(cfg_, layer));
}

template <class F>
void Gpt2<F>::forward_logits(const F* params, const int* inp, int B) {
  if (B < 1 || B > max_B_)
    throw std::invalid_argument("Gpt2::forward_logits: B must be in [1, max_B]");
  const int T = T_, C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer;
  const int Vp = cfg_.padded_vocab_size, N = B * T;
  for (int n = 0; n < N; ++n)
    if (inp[n] < 0 || inp[n] >= cfg_.vocab_size)
      throw std::out_of_range("Gpt2::forward_logits: token id out of range");
  std::copy(inp, inp + N, inp_.begin());
  B_ = B;
  have_targets_ = false;

  encoder_forward(encoded_.data(), inp, tensor(params, kWte), tensor(params, kWpe), B, T, C);
  for (int l = 0; l < L; ++l) {
    const F* x = l == 0 ? encoded_.data() : act(res3_, l - 1, C);
    F* ln1 = act(ln1_, l, C);
    F* qkv = act(qkv_, l, 3 * C);
    F* atty = act(atty_, l, C);
    F* res2 = act(res2_, l, C);
    F* ln2 = act(ln2_, l, C);
    F* fch = act(fch_, l, 4 * C);
    F* fch_gelu = act(fch_gelu_, l, 4 * C);
    layernorm_forward(ln1, act(ln1_mean_, l, 1), act(ln1_rstd_, l, 1), x, tensor(params, kLn1w, l),
                      tensor(params, kLn1b, l), N, C);
    matmul_forward(qkv, ln1, tensor(params, kQkvw, l), tensor(params, kQkvb, l), N, C, 3 * C);
    attention_forward(atty, act(att_, l, static_cast<size_t>(NH) * T), qkv, B, T, C, NH,
                      attention_scale(l));
    matmul_forward(proj_.data(), atty, tensor(params, kAttprojw, l), tensor(params, kAttprojb, l),
                   N, C, C);
    residual_forward(res2, x, proj_.data(), static_cast<size_t>(N) * C);
    layernorm_forward(ln2, act(ln2_mean_, l, 1), act(ln2_rstd_, l, 1), res2,
                      tensor(params, kLn2w, l), tensor(params, kLn2b, l), N, C);
    matmul_forward(fch, ln2, tensor(params, kFcw, l), tensor(params, kFcb, l), N, C, 4 * C);
    gelu_forward(fch_gelu, fch, static_cast<size_t>(N) * 4 * C);
    matmul_forward(proj_.data(), fch_gelu, tensor(params, kFcprojw, l),
                   tensor(params, kFcprojb, l), N, 4 * C, C);
    residual_forward(act(res3_, l, C), res2, proj_.data(), static_cast<size_t>(N) * C);
  }
  layernorm_forward(lnf_.data(), lnf_mean_.data(), lnf_rstd_.data(), act(res3_, L - 1, C),
                    tensor(params, kLnfw), tensor(params, kLnfb), N, C);
  matmul_forward(logits_.data(), lnf_.data(), tensor(params, kWte), static_cast<const F*>(nullptr),
                 N, C, Vp);
}

template <class F>
F Gpt2<F>::loss(const int* targets) {
  if (B_ == 0) throw std::logic_error("Gpt2::loss: no forward pass yet");
  const int N = B_ * T_;
  for (int n = 0; n < N; ++n)
    if (targets[n] < 0 || targets[n] >= cfg_.vocab_size)
      throw std::out_of_range("Gpt2::loss: target id out of range");
  std::copy(targets, targets + N, targets_.begin());
  crossentropy_forward(losses_.data(), logits_.data(), targets, N, cfg_.vocab_size,
                       cfg_.padded_vocab_size);
  double sum = 0.0;  // reported value only; summed in double in row order
  for (int n = 0; n < N; ++n) sum += static_cast<double>(losses_[n]);
  have_targets_ = true;
  return static_cast<F>(sum / N);
}

template <class F>
F Gpt2<F>::forward(const F* params, const int* inp, const int* targets, int B) {
  forward_logits(params, inp, B);
  return loss(targets);
}

template <class F>
void Gpt2<F>::backward(const F* params, F* grads, F grad_scale) {
  if (!have_targets_) throw std::logic_error("Gpt2::backward: call loss() (or forward) first");
  have_targets_ = false;  // the logits are about to be overwritten
  const int B = B_, T = T_, C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer;
  const int V = cfg_.vocab_size, Vp = cfg_.padded_vocab_size, N = B * T;
  const size_t NC = static_cast<size_t>(N) * C;
  auto zero = [](std::vector<F>& v, size_t n) { std::fill(v.begin(), v.begin() + n, F(0)); };

  // d(mean loss * grad_scale) / dlogits, written over the logits.
  F* dlogits = logits_.data();
  crossentropy_backward(dlogits, logits_.data(), targets_.data(), grad_scale / static_cast<F>(N),
                        N, V, Vp);
  // Tied head: logits = lnf @ wte^T -> dlnf, and dwte (shared with the embedding gradient).
  zero(dln_, NC);
  matmul_backward(dln_.data(), tensor(grads, kWte), static_cast<F*>(nullptr), dlogits,
                  lnf_.data(), tensor(params, kWte), N, C, Vp);
  zero(dres_, NC);  // dres: gradient of the residual stream x_l, walking l downwards
  layernorm_backward(dres_.data(), tensor(grads, kLnfw), tensor(grads, kLnfb), dln_.data(),
                     act(res3_, L - 1, C), tensor(params, kLnfw), lnf_mean_.data(),
                     lnf_rstd_.data(), N, C);

  for (int l = L - 1; l >= 0; --l) {
    const F* x = l == 0 ? encoded_.data() : act(res3_, l - 1, C);
    // x_{l+1} = r + fcproj(gelu(fc(ln2(r)))): dres is d x_{l+1}, also the gradient of fcproj out.
    zero(dfch_gelu_, 4 * NC);
    matmul_backward(dfch_gelu_.data(), tensor(grads, kFcprojw, l), tensor(grads, kFcprojb, l),
                    dres_.data(), act(fch_gelu_, l, 4 * C), tensor(params, kFcprojw, l), N, 4 * C,
                    C);
    zero(dfch_, 4 * NC);
    gelu_backward(dfch_.data(), act(fch_, l, 4 * C), dfch_gelu_.data(), 4 * NC);
    zero(dln_, NC);
    matmul_backward(dln_.data(), tensor(grads, kFcw, l), tensor(grads, kFcb, l), dfch_.data(),
                    act(ln2_, l, C), tensor(params, kFcw, l), N, C, 4 * C);
    // dres += d ln2 / d r  (dres becomes d r)
    layernorm_backward(dres_.data(), tensor(grads, kLn2w, l), tensor(grads, kLn2b, l),
                       dln_.data(), act(res2_, l, C), tensor(params, kLn2w, l),
                       act(ln2_mean_, l, 1), act(ln2_rstd_, l, 1), N, C);
    // r = x_l + attproj(atty): dres is also the gradient of the attproj output.
    zero(datty_, NC);
    matmul_backward(datty_.data(), tensor(grads, kAttprojw, l), tensor(grads, kAttprojb, l),
                    dres_.data(), act(atty_, l, C), tensor(params, kAttprojw, l), N, C, C);
    zero(dqkv_, 3 * NC);
    attention_backward(dqkv_.data(), datty_.data(), act(qkv_, l, 3 * C),
                       act(att_, l, static_cast<size_t>(NH) * T), B, T, C, NH,
                       attention_scale(l));
    zero(dln_, NC);
    matmul_backward(dln_.data(), tensor(grads, kQkvw, l), tensor(grads, kQkvb, l), dqkv_.data(),
                    act(ln1_, l, C), tensor(params, kQkvw, l), N, C, 3 * C);
    // dres += d ln1 / d x_l  (dres becomes d x_l)
    layernorm_backward(dres_.data(), tensor(grads, kLn1w, l), tensor(grads, kLn1b, l),
                       dln_.data(), x, tensor(params, kLn1w, l), act(ln1_mean_, l, 1),
                       act(ln1_rstd_, l, 1), N, C);
  }
  encoder_backward(tensor(grads, kWte), tensor(grads, kWpe), dres_.data(), inp_.data(), B, T, C);
}

template class Gpt2<float>;
template class Gpt2<double>;
template class Gpt2<Dual<float>>;   // exact Hessian-vector products (cpu/hvp.h)
template class Gpt2<Dual<double>>;

}  // namespace sgpt::cpu
