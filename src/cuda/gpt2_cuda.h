// GPT-2 forward and backward on the GPU over the flat parameter layout: the same composition of
// ops as cpu::Gpt2 (src/cpu/gpt2_cpu.h), with the launchers of cuda/ops_cuda.h. T is float or
// __nv_bfloat16 (weights, activations and gradients in T; LayerNorm statistics, attention
// log-sum-exp and losses in fp32).
//
// Activations for max_B x T rows, per layer l ([L, N, ...]): ln1 [C] + mean/rstd, qkv [3C],
// atty [C], lse [NH, T] (per sequence), res2 [C], ln2 [C] + mean/rstd, fch [4C], fch_gelu [4C],
// res3 [C]; shared: encoded [C], proj [C], lnf [C] + mean/rstd, logits [Vp], losses. The backward
// reuses one layer's worth of gradient scratch and writes dlogits over the logits. In bf16 the GELU
// runs in the cuBLASLt epilogues of the fc (forward) and fcproj (backward, dinp) matmuls.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "cuda/attention_cudnn.h"
#include "cuda/buffer.h"
#include "cuda/ops_cuda.h"
#include "model/gpt2.h"
#include "train/backend.h"

namespace sgpt::cuda {

template <class T>
class Gpt2Cuda {
 public:
  Gpt2Cuda(const ModelConfig& cfg, int max_B, int T_, cudaStream_t stream,
           AttentionImpl attention = AttentionImpl::kAuto);

  // Selects the attention implementation (train/backend.h). kCudnn throws std::invalid_argument
  // when cuDNN attention cannot be used (fp32, no cuDNN in the build, unsupported head size, no
  // deterministic engine), with the reason; kAuto then falls back to our kernels silently.
  void set_attention(AttentionImpl attention);
  // "own" or "cuDNN <version>, forward engine <i>, backward engine <j>".
  std::string attention_name() const;

  // Forward to logits [B*T, Vp]. inp_host: B*T token ids (host memory).
  void forward_logits(const T* params, const int* inp_host, int B);
  // Targets for the loss: from the host, or sampled from the logits (GNB, cpu::sample_labels).
  void set_targets(const int* tgt_host);
  void sample_targets(uint64_t seed, uint32_t step, uint32_t seq0);
  // The GNB classifier: sample_targets + loss(grad_scale, write_dlogits = true), in one kernel
  // where sample_labels_crossentropy applies (bf16), else as those two calls.
  void gnb_loss(float grad_scale, uint64_t seed, uint32_t step, uint32_t seq0);
  // Per-position losses and their device mean; with write_dlogits the logits are replaced by
  // d(mean loss * grad_scale)/dlogits (dloss = grad_scale / N).
  void loss(float grad_scale, bool write_dlogits);
  float read_mean_loss();  // synchronizes the stream
  // Backward of the last loss(write_dlogits = true); ACCUMULATES into grads (flat layout). When
  // `layer_done` is given it is called (host side, in stream order) once layer l's gradients are
  // all enqueued, for l = L-1 down to 0, and with -1 once the rest (wte, wpe, lnf) are: the data-
  // parallel backend starts reducing each layer there while the layers below run.
  void backward(const T* params, T* grads, const std::function<void(int)>* layer_done = nullptr);

  int B() const { return B_; }
  const T* logits() const { return logits_.get(); }
  const int* targets() const { return targets_.get(); }

 private:
  template <class P>
  P* tensor(P* base, int i, int l = 0) const {
    if (layout_.size[i] == 0) return nullptr;
    const bool global = i == kWte || i == kWpe || i == kLnfw || i == kLnfb;
    return base + layout_.layer_offset(i, l, global ? 1 : cfg_.n_layer);
  }
  template <class P>
  P* act(DeviceBuffer<P>& v, int l, size_t per_row) const {
    return v.get() + static_cast<size_t>(l) * max_B_ * T_ * per_row;
  }
  float attention_scale(int layer) const;
  float* lse(int l) const { return lse_.get() + static_cast<size_t>(l) * lse_stride_; }

  ModelConfig cfg_;
  ParamLayout layout_;
  int max_B_, T_;
  size_t lse_stride_ = 0;  // floats per layer in lse_: max_B * T * NH rounded up to 4
  int B_ = 0;
  bool fuse_gelu_ = false;  // bf16: GELU in the fc / fcproj matmul epilogues (matmul.cu)
  std::unique_ptr<CudnnAttention> cudnn_;  // created on first selection of cuDNN attention
  bool use_cudnn_ = false;        // cuDNN attention selected
  bool cudnn_required_ = false;   // selected explicitly ("cudnn"), not by "auto"
  bool cudnn_batch_ = false;      // the current batch (B_) runs on cuDNN
  std::set<int> cudnn_failed_;    // batch sizes without a cuDNN plan (auto: our kernels)
  bool cudnn_ready(int B);
  cudaStream_t stream_;
  MatmulContext matmul_;
  Scratch scratch_;
  TokenBuckets buckets_host_;
  DeviceTokenBuckets buckets_;
  DeviceBuffer<int> inp_, targets_;
  DeviceBuffer<T> encoded_, ln1_, qkv_, atty_, res2_, ln2_, fch_, fch_gelu_, res3_, proj_, lnf_,
      logits_;
  DeviceBuffer<float> ln1_mean_, ln1_rstd_, ln2_mean_, ln2_rstd_, lnf_mean_, lnf_rstd_, lse_,
      losses_, mean_loss_;
  DeviceBuffer<T> dres_, dln_, dqkv_, datty_, dfch_gelu_, dfch_;
};

extern template class Gpt2Cuda<float>;
extern template class Gpt2Cuda<bf16>;

}  // namespace sgpt::cuda
