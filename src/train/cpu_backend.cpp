#include "train/cpu_backend.h"

#include <algorithm>
#include <stdexcept>

#include "cpu/gpt2_cpu.h"
#include "cpu/ops.h"

namespace sgpt {
namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(const ModelConfig& cfg, int max_B, int T, const std::vector<float>& init)
      : cfg_(cfg), layout_(ParamLayout::make(cfg)), model_(cfg, max_B, T), params_(init),
        grads_(layout_.total, 0.0f), m_(layout_.total, 0.0f), targets_(static_cast<size_t>(max_B) * T) {
    if (params_.size() != layout_.total)
      throw std::invalid_argument("CpuBackend: initial parameters have the wrong size");
  }

  std::string name() const override { return "cpu"; }
  const ModelConfig& model() const override { return cfg_; }
  const ParamLayout& layout() const override { return layout_; }

  void zero_grad() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }

  float train_micro(const int* inp, const int* tgt, int B, int T, float grad_scale) override {
    check_T(T);
    const float loss = model_.forward(params_.data(), inp, tgt, B);
    model_.backward(params_.data(), grads_.data(), grad_scale);
    return loss;
  }

  float gnb_micro(const int* inp, int B, int T, float grad_scale, uint64_t seed, uint32_t step,
                  uint32_t seq0) override {
    check_T(T);
    model_.forward_logits(params_.data(), inp, B);
    cpu::sample_labels(targets_.data(), model_.logits(), B * T, T, cfg_.vocab_size,
                       cfg_.padded_vocab_size, seed, step, seq0);
    const float loss = model_.loss(targets_.data());
    model_.backward(params_.data(), grads_.data(), grad_scale);
    return loss;
  }

  float eval_micro(const int* inp, const int* tgt, int B, int T) override {
    check_T(T);
    return model_.forward(params_.data(), inp, tgt, B);
  }

  double grad_sum_squares() override { return cpu::sum_squares(grads_.data(), grads_.size()); }
  void scale_grad(float s) override { cpu::scale(grads_.data(), grads_.size(), s); }

  void sophia_step(const SophiaConsts& c, SophiaMetrics* metrics) override {
    ensure(h_);
    for_each_tensor([&](size_t off, size_t n, bool decayed) {
      cpu::sophia_update(params_.data() + off, m_.data() + off, h_.data() + off,
                         grads_.data() + off, n, c, decayed, metrics);
    });
  }

  void hessian_ema(const HessianConsts& c) override {
    ensure(h_);
    cpu::hessian_ema(h_.data(), grads_.data(), grads_.size(), c);
  }

  void adamw_step(const AdamWConsts& c) override {
    ensure(v_);
    for_each_tensor([&](size_t off, size_t n, bool decayed) {
      cpu::adamw_update(params_.data() + off, m_.data() + off, v_.data() + off,
                        grads_.data() + off, n, c, decayed);
    });
  }

  void get(const std::string& slot, std::vector<float>& out) override {
    std::vector<float>& s = buffer(slot);
    ensure(s);
    out = s;
  }
  void set(const std::string& slot, const std::vector<float>& in) override {
    if (in.size() != layout_.total)
      throw std::invalid_argument("CpuBackend::set(" + slot + "): wrong size");
    buffer(slot) = in;
  }

 private:
  void check_T(int T) const {
    if (T != model_.T()) throw std::invalid_argument("CpuBackend: sequence length differs from the allocated one");
  }
  void ensure(std::vector<float>& v) {
    if (v.size() != layout_.total) v.assign(layout_.total, 0.0f);
  }
  std::vector<float>& buffer(const std::string& slot) {
    if (slot == "params") return params_;
    if (slot == "grad") return grads_;
    if (slot == "m") return m_;
    if (slot == "h") return h_;
    if (slot == "v") return v_;
    throw std::invalid_argument("CpuBackend: unknown state slot '" + slot + "'");
  }
  template <class Fn>
  void for_each_tensor(Fn&& fn) {
    for (int i = 0; i < kNumParamTensors; ++i)
      if (layout_.size[i] > 0) fn(layout_.offset[i], layout_.size[i], ParamLayout::decayed(i));
  }

  ModelConfig cfg_;
  ParamLayout layout_;
  cpu::Gpt2<float> model_;
  std::vector<float> params_, grads_, m_, h_, v_;
  std::vector<int> targets_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& cfg, int max_B, int T,
                                          const std::vector<float>& init_params) {
  return std::make_unique<CpuBackend>(cfg, max_B, T, init_params);
}

}  // namespace sgpt
