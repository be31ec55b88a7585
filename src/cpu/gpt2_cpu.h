// GPT-2 forward and backward on the CPU, composed from the ops of cpu/ops.h, over the flat
// parameter buffer of model/gpt2.h (ParamLayout). The fp32 instance is the reference the CUDA
// backend is tested against; the double instance serves the finite-difference gradient tests.
//
// Model (N = B*T rows, C = n_embd, hs = C / n_head, L = n_layer, Vp = padded vocabulary):
//   x0 = wte[inp] + wpe[t]
//   for l in 0..L-1:
//     a  = attproj(attention(qkv(ln1(x_l))))       scale = 1/sqrt(hs), / (l+1) when
//     r  = x_l + a                                 scale_attn_by_inverse_layer_idx
//     x_{l+1} = r + fcproj(gelu(fc(ln2(r))))
//   logits = lnf(x_L) @ wte^T                       [N, Vp], tied head; the loss uses columns < V
//   loss = mean_n cross_entropy(logits[n, :V], targets[n])
//
// Activations are allocated once, for max_B x T rows. Buffers per layer (each [L, max_B*T, ...]):
// ln1 [C] + mean/rstd, qkv [3C], atty [C], att [NH, T, T], res2 [C] (= r), ln2 [C] + mean/rstd,
// fch [4C] (pre-GELU), fch_gelu [4C], res3 [C] (= x_{l+1}); plus the shared ones: encoded [C],
// proj scratch [C], lnf [C] + mean/rstd, logits [Vp], losses [1]. The backward reuses a few
// [N, C/3C/4C] gradient scratch buffers across layers and writes dlogits over the logits.
#pragma once
#include <vector>

#include "model/gpt2.h"

namespace sgpt::cpu {

template <class F>
class Gpt2 {
 public:
  // Allocates activations for up to max_B x T positions (1 <= T <= cfg.block_size).
  Gpt2(const ModelConfig& cfg, int max_B, int T);

  // Forward to logits [B*T, Vp] (B <= max_B). params: flat buffer (ParamLayout::make(cfg)).
  // inp: B*T token ids in [0, vocab_size).
  void forward_logits(const F* params, const int* inp, int B);
  // Mean cross-entropy of the last forward against targets (B*T ids in [0, vocab_size)); keeps a
  // copy of the targets for backward. May be called after sampling labels from logits().
  F loss(const int* targets);
  // forward_logits + loss.
  F forward(const F* params, const int* inp, const int* targets, int B);
  // Backward of (mean loss * grad_scale) of the last forward/loss; ACCUMULATES (+=) into grads
  // (flat, ParamLayout::total elements). Overwrites the logits with their gradient.
  void backward(const F* params, F* grads, F grad_scale);

  // [B*T, Vp] logits of the last forward (valid until backward overwrites them).
  const F* logits() const { return logits_.data(); }
  // [B*T] per-position losses of the last loss() call.
  const F* losses() const { return losses_.data(); }
  int T() const { return T_; }
  int max_B() const { return max_B_; }
  int B() const { return B_; }  // batch size of the last forward
  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }

 private:
  // Pointer to layer l of tensor i of a flat buffer; nullptr for size-0 (absent bias) tensors.
  template <class P>
  P* tensor(P* base, int i, int l = 0) const {
    if (layout_.size[i] == 0) return nullptr;
    const bool per_layer = !(i == kWte || i == kWpe || i == kLnfw || i == kLnfb);
    return base + layout_.layer_offset(i, l, per_layer ? cfg_.n_layer : 1);
  }
  F* act(std::vector<F>& v, int l, size_t per_row) {
    return v.data() + static_cast<size_t>(l) * static_cast<size_t>(max_B_) * T_ * per_row;
  }
  F attention_scale(int layer) const;

  ModelConfig cfg_;
  ParamLayout layout_;
  int max_B_, T_;
  int B_ = 0;
  bool have_targets_ = false;
  std::vector<int> inp_, targets_;
  // forward activations
  std::vector<F> encoded_, ln1_, ln1_mean_, ln1_rstd_, qkv_, atty_, att_, res2_, ln2_, ln2_mean_,
      ln2_rstd_, fch_, fch_gelu_, res3_, proj_, lnf_, lnf_mean_, lnf_rstd_, logits_, losses_;
  // backward scratch (one layer's worth, reused)
  std::vector<F> dres_, dln_, dqkv_, datty_, dfch_gelu_, dfch_;
};

extern template class Gpt2<float>;
extern template class Gpt2<double>;
// Gpt2<Dual<float>> and Gpt2<Dual<double>> (cpu/dual.h) are instantiated in gpt2_cpu.cpp too.

}  // namespace sgpt::cpu
