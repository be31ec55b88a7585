// CudaBackend: the Backend contract (src/train/backend.h) on one GPU.
//
// State on the device: fp32 master parameters (in kFp32 they are also the working weights), the
// working weights in T (kBf16 only; written from the master by the optimizer with stochastic
// rounding, or rounded to nearest by set("params")), the gradient buffer in T, and the optimizer
// state m, h (Sophia) / v (AdamW) in fp32, allocated on first use and zero-initialised. The model
// (activations, kernels) is Gpt2Cuda<W>; the optimizer, norm and cast kernels are those of
// cuda/optim_cuda.h, each one launch over the whole flat buffer.
//
// Stochastic rounding of the bf16 weights is keyed by (kRoundingSeed, optimizer step counter of
// this backend), so two identical runs produce identical bits.
#include "cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <stdexcept>

#include "cuda/buffer.h"
#include "cuda/check.h"
#include "cuda/gpt2_cuda.h"
#include "cuda/optim_cuda.h"

namespace sgpt {

bool cuda_usable(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    if (why) *why = std::string("no usable CUDA driver/device: ") + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error state
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device";
    return false;
  }
  const cudaError_t f = cudaFree(nullptr);  // creates the context
  if (f != cudaSuccess) {
    if (why) *why = std::string("cannot create a CUDA context: ") + cudaGetErrorString(f);
    cudaGetLastError();
    return false;
  }
  return true;
}

namespace {

using cuda::DeviceBuffer;
constexpr uint64_t kRoundingSeed = 0x5EED5EEDull;

template <class W>  // working type of weights, activations and gradients
class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& cfg, int max_B, int T, const std::vector<float>& init,
              AttentionImpl attention)
      : cfg_(cfg), layout_(ParamLayout::make(cfg)), T_(T), stream_(make_stream()),
        model_(cfg, max_B, T, stream_, attention), decay_(cuda::DecayRanges::from_layout(layout_)) {
    if (init.size() != layout_.total)
      throw std::invalid_argument("CudaBackend: initial parameters have the wrong size");
    const size_t n = layout_.total;
    master_.resize(n);
    if constexpr (!kFp32) weights_.resize(n);
    grads_.resize(n);
    set("params", init);
    zero_grad();
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override {
    return std::string(kFp32 ? "cuda-fp32" : "cuda-bf16") + ", attention " + model_.attention_name();
  }
  void set_attention(AttentionImpl attention) override { model_.set_attention(attention); }
  const ModelConfig& model() const override { return cfg_; }
  const ParamLayout& layout() const override { return layout_; }

  void zero_grad() override {
    SGPT_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
  }

  float train_micro(const int* inp, const int* tgt, int B, int T, float grad_scale) override {
    check_T(T);
    model_.forward_logits(weights(), inp, B);
    model_.set_targets(tgt);
    model_.loss(grad_scale, /*write_dlogits=*/true);
    model_.backward(weights(), grads_.get());
    return model_.read_mean_loss();
  }

  float gnb_micro(const int* inp, int B, int T, float grad_scale, uint64_t seed, uint32_t step,
                  uint32_t seq0) override {
    check_T(T);
    model_.forward_logits(weights(), inp, B);
    model_.gnb_loss(grad_scale, seed, step, seq0);  // sampling + loss + dlogits
    model_.backward(weights(), grads_.get());
    return model_.read_mean_loss();
  }

  float eval_micro(const int* inp, const int* tgt, int B, int T) override {
    check_T(T);
    model_.forward_logits(weights(), inp, B);
    model_.set_targets(tgt);
    model_.loss(1.0f, /*write_dlogits=*/false);
    return model_.read_mean_loss();
  }

  double grad_sum_squares() override {
    cuda::grad_sum_squares(grads_.get(), grads_.size(), reduce_, stream_);
    return cuda::read_sum_squares(reduce_, stream_);
  }
  void scale_grad(float s) override { cuda::scale_grad(grads_.get(), grads_.size(), s, stream_); }

  void sophia_step(const SophiaConsts& c, SophiaMetrics* metrics) override {
    ensure(m_);
    ensure(h_);
    const size_t n = layout_.total;
    cuda::sophia_step(master_.get(), m_.get(), h_.get(), grads_.get(), weights_out(), n, decay_, c,
                      next_key(), metrics ? &reduce_ : nullptr, stream_);
    if (metrics) cuda::read_sophia_metrics(reduce_, n, metrics, stream_);
  }

  void hessian_ema(const HessianConsts& c) override {
    ensure(h_);
    cuda::hessian_ema(h_.get(), grads_.get(), layout_.total, c, stream_);
  }

  void adamw_step(const AdamWConsts& c) override {
    ensure(m_);
    ensure(v_);
    cuda::adamw_step(master_.get(), m_.get(), v_.get(), grads_.get(), weights_out(),
                     layout_.total, decay_, c, next_key(), stream_);
  }

  void get(const std::string& slot, std::vector<float>& out) override {
    if (slot == "grad") {
      if constexpr (kFp32) {
        out = grads_.download(stream_);
      } else {
        DeviceBuffer<float> tmp(grads_.size());
        cuda::to_float(grads_.get(), tmp.get(), grads_.size(), stream_);
        out = tmp.download(stream_);
      }
      return;
    }
    DeviceBuffer<float>& b = state(slot);
    ensure(b);
    out = b.download(stream_);
  }

  void set(const std::string& slot, const std::vector<float>& in) override {
    if (in.size() != layout_.total)
      throw std::invalid_argument("CudaBackend::set(" + slot + "): wrong size");
    if (slot == "grad") {
      if constexpr (kFp32) {
        grads_.upload(in.data(), in.size(), stream_);
      } else {
        DeviceBuffer<float> tmp(in.size());
        tmp.upload(in.data(), in.size(), stream_);
        cuda::cast_rn(tmp.get(), grads_.get(), in.size(), stream_);
      }
    } else {
      DeviceBuffer<float>& b = state(slot);
      if (b.size() != layout_.total) b.resize(layout_.total);
      b.upload(in.data(), in.size(), stream_);
      if (slot == "params" && !kFp32) cuda::cast_rn(master_.get(), weights_.get(), in.size(), stream_);
    }
    SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));  // temporaries die here
  }

 private:
  static constexpr bool kFp32 = std::is_same_v<W, float>;

  static cudaStream_t make_stream() {
    cudaStream_t s;
    SGPT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }
  void check_T(int T) const {
    if (T != T_)
      throw std::invalid_argument("CudaBackend: sequence length differs from the allocated one");
  }
  const W* weights() const {
    if constexpr (kFp32) return master_.get();
    else return weights_.get();
  }
  W* weights_out() {
    if constexpr (kFp32) return nullptr;  // the master is the working weight buffer
    else return weights_.get();
  }
  cuda::RoundingKey next_key() {
    cuda::RoundingKey k;
    k.seed = kRoundingSeed;
    k.step = opt_step_++;
    return k;
  }
  void ensure(DeviceBuffer<float>& b) {
    if (b.size() != layout_.total) {
      b.resize(layout_.total);
      SGPT_CUDA_CHECK(cudaMemsetAsync(b.get(), 0, b.bytes(), stream_));
    }
  }
  DeviceBuffer<float>& state(const std::string& slot) {
    if (slot == "params") return master_;
    if (slot == "m") return m_;
    if (slot == "h") return h_;
    if (slot == "v") return v_;
    throw std::invalid_argument("CudaBackend: unknown state slot '" + slot + "'");
  }

  ModelConfig cfg_;
  ParamLayout layout_;
  int T_;
  cudaStream_t stream_;
  cuda::Gpt2Cuda<W> model_;
  cuda::DecayRanges decay_;
  cuda::ReduceScratch reduce_;
  DeviceBuffer<float> master_, m_, h_, v_;
  DeviceBuffer<W> weights_, grads_;
  uint32_t opt_step_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& cfg, int max_B, int T,
                                           Precision precision,
                                           const std::vector<float>& init_params,
                                           AttentionImpl attention) {
  if (precision == Precision::kFp32)
    return std::make_unique<CudaBackend<float>>(cfg, max_B, T, init_params, attention);
  return std::make_unique<CudaBackend<cuda::bf16>>(cfg, max_B, T, init_params, attention);
}

}  // namespace sgpt
