#include "cuda/gpt2_cuda.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <type_traits>

namespace sgpt::cuda {

template <class T>
Gpt2Cuda<T>::Gpt2Cuda(const ModelConfig& cfg, int max_B, int T_, cudaStream_t stream,
                      AttentionImpl attention)
    : cfg_(cfg), layout_(ParamLayout::make(cfg)), max_B_(max_B), T_(T_), stream_(stream) {
  // bf16: GELU in the cuBLASLt epilogues (SGPT_GELU_FUSION=0 turns it off, for measurements).
  const char* fuse = std::getenv("SGPT_GELU_FUSION");
  fuse_gelu_ = std::is_same_v<T, bf16> && !(fuse && std::strcmp(fuse, "0") == 0);
  if (max_B < 1 || T_ < 1 || T_ > cfg.block_size)
    throw std::invalid_argument("Gpt2Cuda: need max_B >= 1 and 1 <= T <= block_size");
  const size_t N = static_cast<size_t>(max_B) * T_, C = cfg.n_embd, L = cfg.n_layer;
  const size_t NH = cfg.n_head, Vp = cfg.padded_vocab_size;
  inp_.resize(N);
  targets_.resize(N);
  encoded_.resize(N * C);
  ln1_.resize(L * N * C);
  qkv_.resize(L * N * 3 * C);
  atty_.resize(L * N * C);
  res2_.resize(L * N * C);
  ln2_.resize(L * N * C);
  fch_.resize(L * N * 4 * C);
  fch_gelu_.resize(L * N * 4 * C);
  res3_.resize(L * N * C);
  proj_.resize(N * C);
  lnf_.resize(N * C);
  logits_.resize(N * Vp);
  ln1_mean_.resize(L * N);
  ln1_rstd_.resize(L * N);
  ln2_mean_.resize(L * N);
  ln2_rstd_.resize(L * N);
  lnf_mean_.resize(N);
  lnf_rstd_.resize(N);
  // Per-layer lse blocks start 16-byte aligned (cuDNN's stats tensor is declared so).
  lse_stride_ = (N * NH + 3) / 4 * 4;
  lse_.resize(L * lse_stride_);
  losses_.resize(N);
  mean_loss_.resize(1);
  dres_.resize(N * C);
  dln_.resize(N * C);
  dqkv_.resize(N * 3 * C);
  datty_.resize(N * C);
  if (!fuse_gelu_) dfch_gelu_.resize(N * 4 * C);
  dfch_.resize(N * 4 * C);
  set_attention(attention);
}

template <class T>
void Gpt2Cuda<T>::set_attention(AttentionImpl attention) {
  use_cudnn_ = false;
  if (attention == AttentionImpl::kOwn) return;
  const bool want = attention == AttentionImpl::kCudnn;
  cudnn_required_ = want;
  std::string why;
  if (!std::is_same_v<T, bf16>)
    why = "it needs precision bf16 (cuDNN's fused attention has no fp32 mode)";
  else if (!CudnnAttention::built())
    why = "this build has no cuDNN (CMake did not find libcudnn)";
  else if (!CudnnAttention::supports(cfg_.n_embd, cfg_.n_head))
    why = "head size n_embd/n_head = " + std::to_string(cfg_.n_embd / cfg_.n_head) +
          " is not a multiple of 8 up to 128";
  if (why.empty()) {
    try {
      if (!cudnn_) cudnn_ = std::make_unique<CudnnAttention>();
      cudnn_->prepare(max_B_, T_, cfg_.n_embd, cfg_.n_head);
      use_cudnn_ = true;
      return;
    } catch (const std::exception& e) {
      why = e.what();
    }
  }
  if (want) throw std::invalid_argument("attention \"cudnn\" cannot be used: " + why);
}

// The plans for batch size B (built once per B). Under "auto", a batch size cuDNN has no
// deterministic engine for runs on our kernels (their saved lse means the same, so the two can mix
// across batches); under "cudnn" that is an error.
template <class T>
bool Gpt2Cuda<T>::cudnn_ready(int B) {
  if (cudnn_failed_.count(B)) return false;
  try {
    cudnn_->prepare(B, T_, cfg_.n_embd, cfg_.n_head);
    return true;
  } catch (const std::exception& e) {
    if (cudnn_required_) throw;
    cudnn_failed_.insert(B);
    std::fprintf(stderr, "note: cuDNN attention unavailable for batch size %d, using our kernels: %s\n",
                 B, e.what());
    return false;
  }
}

template <class T>
std::string Gpt2Cuda<T>::attention_name() const {
  return use_cudnn_ ? cudnn_->describe() : "own";
}

template <class T>
float Gpt2Cuda<T>::attention_scale(int layer) const {
  return static_cast<float>(sgpt::attention_scale(cfg_, layer));
}

template <class T>
void Gpt2Cuda<T>::forward_logits(const T* params, const int* inp_host, int B) {
  if (B < 1 || B > max_B_) throw std::invalid_argument("Gpt2Cuda: B must be in [1, max_B]");
  const int C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer, Vp = cfg_.padded_vocab_size;
  const int N = B * T_;
  for (int n = 0; n < N; ++n)
    if (inp_host[n] < 0 || inp_host[n] >= cfg_.vocab_size)
      throw std::out_of_range("Gpt2Cuda: token id out of range");
  B_ = B;
  cudnn_batch_ = use_cudnn_ && cudnn_ready(B);
  inp_.upload(inp_host, N, stream_);
  buckets_host_.build(inp_host, N, Vp);  // for the encoder backward
  buckets_.upload(buckets_host_, stream_);

  const size_t NC = static_cast<size_t>(N) * C;
  encoder_forward(encoded_.get(), inp_.get(), tensor(params, kWte), tensor(params, kWpe), B, T_, C,
                  stream_);
  for (int l = 0; l < L; ++l) {
    const T* x = l == 0 ? encoded_.get() : act(res3_, l - 1, C);
    T* ln1 = act(ln1_, l, C);
    T* qkv = act(qkv_, l, 3 * C);
    T* atty = act(atty_, l, C);
    T* res2 = act(res2_, l, C);
    T* ln2 = act(ln2_, l, C);
    T* fch = act(fch_, l, 4 * C);
    T* fch_gelu = act(fch_gelu_, l, 4 * C);
    // ln1 of later layers was computed with the previous layer's residual add (below).
    if (l == 0)
      layernorm_forward(ln1, act(ln1_mean_, l, 1), act(ln1_rstd_, l, 1), x,
                        tensor(params, kLn1w, l), tensor(params, kLn1b, l), N, C, stream_);
    matmul_forward(matmul_, qkv, ln1, tensor(params, kQkvw, l), tensor(params, kQkvb, l), N, C,
                   3 * C, stream_);
    if constexpr (std::is_same_v<T, bf16>) {
      if (cudnn_batch_)
        cudnn_->forward(atty, lse(l), qkv, B, T_, C, NH, attention_scale(l), stream_);
    }
    if (!cudnn_batch_)
      attention_forward(atty, lse(l), qkv, B, T_, C, NH, attention_scale(l), stream_);
    matmul_forward(matmul_, proj_.get(), atty, tensor(params, kAttprojw, l),
                   tensor(params, kAttprojb, l), N, C, C, stream_);
    residual_layernorm_forward(res2, ln2, act(ln2_mean_, l, 1), act(ln2_rstd_, l, 1), x,
                               proj_.get(), tensor(params, kLn2w, l), tensor(params, kLn2b, l),
                               N, C, stream_);
    if constexpr (std::is_same_v<T, bf16>) {
      if (fuse_gelu_) {
        matmul_forward_gelu(matmul_, fch_gelu, fch, ln2, tensor(params, kFcw, l),
                            tensor(params, kFcb, l), N, C, 4 * C, stream_);
      }
    }
    if (!fuse_gelu_) {
      matmul_forward(matmul_, fch, ln2, tensor(params, kFcw, l), tensor(params, kFcb, l), N, C,
                     4 * C, stream_);
      gelu_forward(fch_gelu, fch, 4 * NC, stream_);
    }
    matmul_forward(matmul_, proj_.get(), fch_gelu, tensor(params, kFcprojw, l),
                   tensor(params, kFcprojb, l), N, 4 * C, C, stream_);
    // res3 = res2 + proj, with the next LayerNorm fused: ln1 of layer l+1, or the final one.
    if (l + 1 < L)
      residual_layernorm_forward(act(res3_, l, C), act(ln1_, l + 1, C), act(ln1_mean_, l + 1, 1),
                                 act(ln1_rstd_, l + 1, 1), res2, proj_.get(),
                                 tensor(params, kLn1w, l + 1), tensor(params, kLn1b, l + 1), N, C,
                                 stream_);
    else
      residual_layernorm_forward(act(res3_, l, C), lnf_.get(), lnf_mean_.get(), lnf_rstd_.get(),
                                 res2, proj_.get(), tensor(params, kLnfw), tensor(params, kLnfb),
                                 N, C, stream_);
  }
  matmul_forward(matmul_, logits_.get(), lnf_.get(), tensor(params, kWte),
                 static_cast<const T*>(nullptr), N, C, Vp, stream_);
}

template <class T>
void Gpt2Cuda<T>::set_targets(const int* tgt_host) {
  const int N = B_ * T_;
  for (int n = 0; n < N; ++n)
    if (tgt_host[n] < 0 || tgt_host[n] >= cfg_.vocab_size)
      throw std::out_of_range("Gpt2Cuda: target id out of range");
  targets_.upload(tgt_host, N, stream_);
}

template <class T>
void Gpt2Cuda<T>::sample_targets(uint64_t seed, uint32_t step, uint32_t seq0) {
  sample_labels(targets_.get(), logits_.get(), B_ * T_, T_, cfg_.vocab_size,
                cfg_.padded_vocab_size, seed, step, seq0, scratch_, stream_);
}

template <class T>
void Gpt2Cuda<T>::gnb_loss(float grad_scale, uint64_t seed, uint32_t step, uint32_t seq0) {
  const int N = B_ * T_;
  const float dloss = grad_scale / static_cast<float>(N);  // as loss()
  if (!sample_labels_crossentropy(losses_.get(), targets_.get(), logits_.get(), dloss, N, T_,
                                  cfg_.vocab_size, cfg_.padded_vocab_size, seed, step, seq0,
                                  stream_)) {
    sample_targets(seed, step, seq0);
    crossentropy_forward_backward(losses_.get(), logits_.get(), targets_.get(), dloss, N,
                                  cfg_.vocab_size, cfg_.padded_vocab_size, true, stream_);
  }
  mean_loss(mean_loss_.get(), losses_.get(), N, stream_);
}

template <class T>
void Gpt2Cuda<T>::loss(float grad_scale, bool write_dlogits) {
  const int N = B_ * T_;
  const float dloss = grad_scale / static_cast<float>(N);  // as the CPU reference
  crossentropy_forward_backward(losses_.get(), logits_.get(), targets_.get(), dloss, N,
                                cfg_.vocab_size, cfg_.padded_vocab_size, write_dlogits, stream_);
  mean_loss(mean_loss_.get(), losses_.get(), N, stream_);
}

template <class T>
float Gpt2Cuda<T>::read_mean_loss() {
  float v = 0.0f;
  SGPT_CUDA_CHECK(cudaMemcpyAsync(&v, mean_loss_.get(), sizeof(float), cudaMemcpyDeviceToHost,
                                  stream_));
  SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return v;
}

template <class T>
void Gpt2Cuda<T>::backward(const T* params, T* grads, const std::function<void(int)>* layer_done) {
  const int B = B_, C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer;
  const int Vp = cfg_.padded_vocab_size, N = B * T_;
  const size_t NC = static_cast<size_t>(N) * C;
  auto zero = [&](DeviceBuffer<T>& v, size_t n) {
    SGPT_CUDA_CHECK(cudaMemsetAsync(v.get(), 0, n * sizeof(T), stream_));
  };
  constexpr bool kOverwrite = false;  // matmul dinp into a fresh buffer: beta = 0, no memset

  // Tied head: logits = lnf @ wte^T (dlogits are in logits_).
  matmul_backward(matmul_, dln_.get(), tensor(grads, kWte), static_cast<T*>(nullptr),
                  logits_.get(), lnf_.get(), tensor(params, kWte), N, C, Vp, scratch_, stream_,
                  kOverwrite);
  zero(dres_, NC);
  layernorm_backward(dres_.get(), tensor(grads, kLnfw), tensor(grads, kLnfb), dln_.get(),
                     act(res3_, L - 1, C), tensor(params, kLnfw), lnf_mean_.get(),
                     lnf_rstd_.get(), N, C, scratch_, stream_);
  for (int l = L - 1; l >= 0; --l) {
    const T* x = l == 0 ? encoded_.get() : act(res3_, l - 1, C);
    if constexpr (std::is_same_v<T, bf16>) {
      if (fuse_gelu_) {  // dfch = (dres @ Wfcproj) * gelu'(fch), overwritten
        matmul_backward_dgelu(matmul_, dfch_.get(), tensor(grads, kFcprojw, l),
                              tensor(grads, kFcprojb, l), dres_.get(), act(fch_gelu_, l, 4 * C),
                              tensor(params, kFcprojw, l), act(fch_, l, 4 * C), N, 4 * C, C,
                              scratch_, stream_);
      }
    }
    if (!fuse_gelu_) {
      matmul_backward(matmul_, dfch_gelu_.get(), tensor(grads, kFcprojw, l),
                      tensor(grads, kFcprojb, l), dres_.get(), act(fch_gelu_, l, 4 * C),
                      tensor(params, kFcprojw, l), N, 4 * C, C, scratch_, stream_, kOverwrite);
      zero(dfch_, 4 * NC);
      gelu_backward(dfch_.get(), act(fch_, l, 4 * C), dfch_gelu_.get(), 4 * NC, stream_);
    }
    matmul_backward(matmul_, dln_.get(), tensor(grads, kFcw, l), tensor(grads, kFcb, l),
                    dfch_.get(), act(ln2_, l, C), tensor(params, kFcw, l), N, C, 4 * C, scratch_,
                    stream_, kOverwrite);
    layernorm_backward(dres_.get(), tensor(grads, kLn2w, l), tensor(grads, kLn2b, l), dln_.get(),
                       act(res2_, l, C), tensor(params, kLn2w, l), act(ln2_mean_, l, 1),
                       act(ln2_rstd_, l, 1), N, C, scratch_, stream_);
    matmul_backward(matmul_, datty_.get(), tensor(grads, kAttprojw, l),
                    tensor(grads, kAttprojb, l), dres_.get(), act(atty_, l, C),
                    tensor(params, kAttprojw, l), N, C, C, scratch_, stream_, kOverwrite);
    if constexpr (std::is_same_v<T, bf16>) {
      if (cudnn_batch_)
        cudnn_->backward(dqkv_.get(), datty_.get(), act(qkv_, l, 3 * C), act(atty_, l, C),
                         lse(l), B, T_, C, NH, attention_scale(l), stream_);
    }
    if (!cudnn_batch_)
      attention_backward(dqkv_.get(), datty_.get(), act(qkv_, l, 3 * C), act(atty_, l, C),
                         lse(l), B, T_, C, NH, attention_scale(l), scratch_, stream_,
                         /*accumulate=*/false);
    matmul_backward(matmul_, dln_.get(), tensor(grads, kQkvw, l), tensor(grads, kQkvb, l),
                    dqkv_.get(), act(ln1_, l, C), tensor(params, kQkvw, l), N, C, 3 * C, scratch_,
                    stream_, kOverwrite);
    layernorm_backward(dres_.get(), tensor(grads, kLn1w, l), tensor(grads, kLn1b, l), dln_.get(),
                       x, tensor(params, kLn1w, l), act(ln1_mean_, l, 1), act(ln1_rstd_, l, 1), N,
                       C, scratch_, stream_);
    if (layer_done) (*layer_done)(l);
  }
  encoder_backward(tensor(grads, kWte), tensor(grads, kWpe), dres_.get(), buckets_, B, T_, C,
                   stream_);
  if (layer_done) (*layer_done)(-1);
}

template class Gpt2Cuda<float>;
template class Gpt2Cuda<bf16>;

}  // namespace sgpt::cuda
