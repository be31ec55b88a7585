#include "cpu/cpu_backend.h"

#include <algorithm>
#include <map>
#include <stdexcept>

#include "common/philox.h"
#include "cpu/gpt2_cpu.h"
#include "cpu/hvp.h"
#include "cpu/ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace sgpt {
namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(const ModelConfig& cfg, int max_B, int T, const std::vector<float>& init,
             const DistOptions& dist)
      : cfg_(cfg), layout_(ParamLayout::make(cfg)), dist_(dist),
        shard_(dist::ShardLayout::make(layout_.total, dist.world())), model_(cfg, max_B, T),
        targets_(static_cast<size_t>(max_B) * T) {
    if (init.size() != layout_.total)
      throw std::invalid_argument("CpuBackend: initial parameters have the wrong size");
    sharded_ = dist_.world() > 1 && dist_.zero;
    lo_ = sharded_ ? shard_.begin(dist_.rank()) : 0;
    cnt_ = sharded_ ? shard_.owned(dist_.rank()) : layout_.total;
    params_.assign(shard_.padded, 0.0f);
    grads_.assign(shard_.padded, 0.0f);
    std::copy(init.begin(), init.end(), params_.begin());
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

  // Padding targets (< 0) are scored against token 0 and their losses then set to 0.
  void eval_losses(const int* inp, const int* tgt, int B, int T, float* losses_out) override {
    check_T(T);
    if (B < 1 || B > model_.max_B()) throw std::invalid_argument("CpuBackend::eval_losses: B out of range");
    const size_t n = static_cast<size_t>(B) * T;
    for (size_t i = 0; i < n; ++i) targets_[i] = tgt[i] < 0 ? 0 : tgt[i];
    model_.forward(params_.data(), inp, targets_.data(), B);
    const float* l = model_.losses();
    for (size_t i = 0; i < n; ++i) losses_out[i] = tgt[i] < 0 ? 0.0f : l[i];
  }

  std::string device_name() const override { return "cpu"; }
  nlohmann::json machine_info() const override {
#ifdef _OPENMP
    const int threads = omp_get_max_threads();
#else
    const int threads = 1;
#endif
    return nlohmann::json{{"device", "cpu"}, {"threads", threads}};
  }

  void reduce_grad() override {
    if (dist_.world() == 1) return;
    if (sharded_) dist_.comm->reduce_scatter_sum(grads_.data(), shard_.shard);
    else dist_.comm->allreduce_sum(grads_.data(), layout_.total);
  }

  void average(double* x, size_t n) override {
    if (dist_.world() == 1) return;
    dist_.comm->allreduce_sum(x, n);
    for (size_t i = 0; i < n; ++i) x[i] /= dist_.world();
  }

  // Without ZeRO every rank holds the same whole gradient: its own sum is the global one.
  double grad_sum_squares() override {
    double s = cpu::sum_squares(grads_.data() + lo_, cnt_);
    if (sharded_) dist_.comm->allreduce_sum(&s, 1);
    return s;
  }
  void scale_grad(float s) override { cpu::scale(grads_.data() + lo_, cnt_, s); }

  void optimizer_step(const OptimizerStep& s, SophiaMetrics* metrics) override {
    const OptimizerKind& kind = optimizer_kind(s.cfg->name);
    std::unique_ptr<CpuOptimizer>& opt = optimizers_[kind.name];
    if (!opt) opt = make_cpu_optimizer(kind.name);
    std::vector<float*> slots;
    for (const std::string& name : kind.slots) slots.push_back(ensure(state_[name]).data());
    SophiaMetrics local;
    for_each_owned([&](size_t off, size_t n, bool decayed) {
      std::vector<float*> at(slots);
      for (float*& p : at) p += off - lo_;
      opt->update(s, params_.data() + off, at.data(), grads_.data() + off, n, decayed,
                  metrics ? &local : nullptr);
    });
    if (metrics) {
      if (sharded_) {
        double v[5] = {local.unclipped, local.count, local.h_l1, local.h_sq, local.h_negative};
        dist_.comm->allreduce_sum(v, 5);
        local = SophiaMetrics{v[0], v[1], v[2], v[3], v[4]};
      }
      metrics->unclipped += local.unclipped;
      metrics->count += local.count;
      metrics->h_l1 += local.h_l1;
      metrics->h_sq += local.h_sq;
      metrics->h_negative += local.h_negative;
    }
    gather_params();
  }

  void hessian_ema(const HessianConsts& c) override {
    cpu::hessian_ema(ensure(state_["h"]).data(), grads_.data() + lo_, cnt_, c);
  }

  // Exact, through the model on dual numbers (cpu/hvp.h); u over the whole model on every rank.
  float hvp_micro(const int* inp, const int* tgt, int B, int T, float grad_scale, uint64_t seed,
                  uint32_t step, bool rademacher) override {
    check_T(T);
    if (!hvp_) hvp_ = std::make_unique<cpu::HessianVectorProduct<float>>(cfg_, model_.max_B(), model_.T());
    probe_.resize(layout_.total);
    for (size_t i = 0; i < layout_.total; ++i) probe_[i] = hutchinson_probe(seed, step, i, rademacher);
    return hvp_->accumulate(params_.data(), probe_.data(), inp, tgt, B, grad_scale, grads_.data());
  }
  void hutchinson_ema(const HessianConsts& c, uint64_t seed, uint32_t step, bool rademacher) override {
    cpu::hutchinson_ema(ensure(state_["h"]).data(), grads_.data() + lo_, cnt_, c, seed, step, lo_, rademacher);
  }

  double state_memory_mib() override {
    size_t n = 0;
    for (const auto& [name, v] : state_) n += v.size();
    return static_cast<double>(n) * sizeof(float) / (1 << 20);
  }

  void get(const std::string& slot, std::vector<float>& out) override {
    if (slot == "params" || slot == "grad") {
      const std::vector<float>& s = slot == "params" ? params_ : grads_;
      out.assign(s.begin(), s.begin() + static_cast<long>(layout_.total));
      return;
    }
    std::vector<float>& s = state(slot);
    ensure(s);
    if (!sharded_) {
      out = s;
      return;
    }
    std::vector<float> full(shard_.padded, 0.0f);
    std::copy(s.begin(), s.end(), full.begin() + static_cast<long>(lo_));
    dist_.comm->allgather(full.data(), shard_.shard);
    full.resize(layout_.total);
    out = std::move(full);
  }
  void set(const std::string& slot, const std::vector<float>& in) override {
    if (in.size() != layout_.total)
      throw std::invalid_argument("CpuBackend::set(" + slot + "): wrong size");
    if (slot == "params" || slot == "grad") {
      std::copy(in.begin(), in.end(), (slot == "params" ? params_ : grads_).begin());
      return;
    }
    std::vector<float>& s = state(slot);
    s.assign(state_size(), 0.0f);
    std::copy(in.begin() + static_cast<long>(lo_), in.begin() + static_cast<long>(lo_ + cnt_), s.begin());
  }

 private:
  void check_T(int T) const {
    if (T != model_.T()) throw std::invalid_argument("CpuBackend: sequence length differs from the allocated one");
  }
  size_t state_size() const { return sharded_ ? shard_.shard : layout_.total; }
  std::vector<float>& ensure(std::vector<float>& v) {
    if (v.size() != state_size()) v.assign(state_size(), 0.0f);
    return v;
  }
  // An optimizer state slot by name (any optimizer's: a run may switch optimizers between
  // benchmarks and tests); created empty at first use.
  std::vector<float>& state(const std::string& slot) {
    for (const OptimizerKind& k : optimizer_kinds())
      for (const std::string& s : k.slots)
        if (s == slot) return state_[slot];
    throw std::invalid_argument("CpuBackend: unknown state slot '" + slot + "'");
  }
  // The parts of the tensors inside this rank's range [lo_, lo_ + cnt_), as (global offset,
  // length, decayed).
  template <class Fn>
  void for_each_owned(Fn&& fn) {
    const size_t hi = lo_ + cnt_;
    for (int i = 0; i < kNumParamTensors; ++i) {
      const size_t b = std::max(layout_.offset[i], lo_);
      const size_t e = std::min(layout_.offset[i] + layout_.size[i], hi);
      if (b < e) fn(b, e - b, ParamLayout::decayed(i));
    }
  }
  void gather_params() {
    if (sharded_) dist_.comm->allgather(params_.data(), shard_.shard);
  }

  ModelConfig cfg_;
  ParamLayout layout_;
  DistOptions dist_;
  dist::ShardLayout shard_;
  bool sharded_ = false;
  size_t lo_ = 0, cnt_ = 0;  // this rank's range of the flat buffer (the whole buffer unsharded)
  cpu::Gpt2<float> model_;
  std::vector<float> params_, grads_;  // whole model, padded to shard_.padded
  std::map<std::string, std::vector<float>> state_;  // optimizer state by slot: this rank's range
  std::map<std::string, std::unique_ptr<CpuOptimizer>> optimizers_;
  std::unique_ptr<cpu::HessianVectorProduct<float>> hvp_;  // Sophia-H, made at its first use
  std::vector<float> probe_;
  std::vector<int> targets_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& cfg, int max_B, int T,
                                          const std::vector<float>& init_params,
                                          const DistOptions& dist) {
  return std::make_unique<CpuBackend>(cfg, max_B, T, init_params, dist);
}

}  // namespace sgpt
