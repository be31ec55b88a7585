// GPT-2 forward and backward on the GPU over the flat parameter layout: the same composition of
// ops as cpu::Gpt2 (src/cpu/gpt2_cpu.h), with the launchers of cuda/ops_cuda.h. T is float or
// __nv_bfloat16 (weights, activations and gradients in T; LayerNorm statistics, attention
// log-sum-exp and losses in fp32).
//
// Activations for max_B x T rows (N = max_B * T), per layer l ([L, N, ...], each layer's block
// starting 256-byte aligned): ln1 [C] + mean/rstd, qkv [3C], atty [C], lse [NH, T] (per
// sequence), res2 [C], ln2 [C] + mean/rstd, fch [4C], fch_gelu [4C], res3 [C]; shared: encoded
// [C], lnf [C] + mean/rstd, dln [C] and the arena. In bf16 the GELU runs in the cuBLASLt
// epilogues of the fc (forward) and fcproj (backward, dinp) matmuls.
//
// The arena is one allocation holding the logits [N, Vp] (overwritten in place by dlogits). The
// logits are dead during the layers of the forward (written at its end) and, once the tied head's
// backward has read the dlogits, during the layers of the backward; the arena therefore also holds,
// in disjoint 256-byte aligned regions after the logits' start, everything that lives only there:
// proj [C] (forward temporary), the gradient scratch dres [C], dqkv [3C], datty [C], dfch [4C]
// (and dfch_gelu [4C] without the GELU epilogue), the one-layer recompute buffers, and last the
// cuDNN attention workspace (forward and backward share it). Its size is the larger of the logits
// and the sum of those regions.
//
// Activation recompute (set_recompute; config key `recompute`), bit-identical to none:
//   1: fch_gelu is not kept per layer (one layer's buffer in the arena); the backward recomputes
//      it for layer l just before the fcproj backward. fp32 (and bf16 with SGPT_GELU_FUSION=0):
//      gelu_forward on the kept fch, the same kernel on the same input as the forward. bf16 with
//      the GELU epilogue: the epilogue applies GELU to the fp32 accumulator before rounding, which
//      no kernel on the stored bf16 fch can reproduce, so the backward re-runs the fc matmul with
//      the same epilogue on the same operands (the same cached algorithm: every activation pointer
//      is 256-byte aligned in every mode), which rewrites gelu and fch with the same bits. fch is
//      then not kept per layer either (one layer's buffer). Cost: one extra fc matmul (2 N C 4C
//      flops) per layer, about 6.6% of a 124M step's model flops.
//   2: also ln1 and ln2 (one layer's buffer in the arena), recomputed from the layer input / res2
//      and the saved mean/rstd with layernorm_recompute (the same arithmetic as the forward).
#pragma once
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cuda/attention_cudnn.h"
#include "cuda/buffer.h"
#include "cuda/ops_cuda.h"
#include "model/gpt2.h"
#include "backend/backend.h"

namespace sgpt::cuda {

template <class T>
class Gpt2Cuda {
 public:
  // Activations are allocated on the first forward (after set_recompute has had its say).
  Gpt2Cuda(const ModelConfig& cfg, int max_B, int T_, cudaStream_t stream,
           AttentionImpl attention = AttentionImpl::kAuto, int recompute = 0);

  // The lm head's forward product in FP8 (config key lm_head_precision "fp8"): lnf and wte are
  // each scaled by 448 / max|x| and rounded to E4M3 before every forward (kernels/fp8.cu), the
  // product accumulates in fp32 and is written as bf16 logits. The backward stays bf16 (it reads
  // the bf16 lnf and wte). Throws std::invalid_argument, with the reason, in fp32, on a GPU
  // before compute capability 8.9, or where n_embd is not a multiple of 16. Its buffers are
  // allocated by the next stage_inputs and freed when it is turned off.
  void set_lm_head_fp8(bool on);
  bool lm_head_fp8() const { return fp8_head_; }

  // Activation recompute level, 0, 1 or 2 (see the top of this file); throws
  // std::invalid_argument otherwise. Frees the activations (the next forward allocates them for
  // the new level): call it between steps, not between a forward and its backward.
  void set_recompute(int level);
  int recompute() const { return recompute_; }

  // Device memory this model holds, one entry per allocation (name, bytes as allocated; the
  // entries sum to the total), followed by `extra` (the backend's parameters, gradients and
  // optimizer state). Zero-byte entries are left out. Activations appear after the first forward.
  std::vector<std::pair<std::string, size_t>> memory_breakdown(
      const std::vector<std::pair<std::string, size_t>>& extra = {}) const;
  // The regions of the arena (name, bytes), for reports: logits, then the regions reused while the
  // logits are dead (they overlap the logits; the last is the cuDNN workspace region).
  std::vector<std::pair<std::string, size_t>> arena_layout() const;

  // Selects the attention implementation (backend/backend.h). kCudnn throws std::invalid_argument
  // when cuDNN attention cannot be used (fp32, no cuDNN in the build, unsupported head size, no
  // deterministic engine), with the reason; kAuto then falls back to our kernels silently.
  void set_attention(AttentionImpl attention);
  // "own" or "cuDNN <version>, forward engine <i>, backward engine <j>".
  std::string attention_name() const;

  // Forward to logits [B*T, Vp]. inp_host: B*T token ids (host memory). It is stage_inputs
  // followed by forward_launch.
  void forward_logits(const T* params, const int* inp_host, int B);
  // The host side of a forward: checks the ids, allocates on first use, selects the attention for
  // B and copies the tokens and the encoder backward's buckets to the device. Nothing it enqueues
  // may sit in a CUDA graph (pageable copies): a captured micro-step starts after it.
  void stage_inputs(const int* inp_host, int B);
  // The launches of the forward for the staged batch (capturable: no copy from the host, no
  // allocation once a forward of the same B has run).
  void forward_launch(const T* params);
  // Everything the launches of a forward, loss and backward read from this object: B, the
  // recompute level, the attention choice and the addresses of every buffer. A CUDA graph of
  // them stays valid while this is unchanged.
  std::vector<uintptr_t> launch_state() const;
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
  const T* logits() const { return logits_; }
  const int* targets() const { return targets_.get(); }
  const float* losses() const { return losses_.get(); }  // per position, after loss()

 private:
  template <class P>
  P* tensor(P* base, int i, int l = 0) const {
    if (layout_.size[i] == 0) return nullptr;
    const bool global = i == kWte || i == kWpe || i == kLnfw || i == kLnfb;
    return base + layout_.layer_offset(i, l, global ? 1 : cfg_.n_layer);
  }
  // Elements of P per layer block of a per-layer activation with per_row values per position:
  // max_B * T * per_row rounded up to 256 bytes, so every layer's block starts 256-byte aligned
  // (cuBLASLt picks its algorithm by pointer alignment: the same alignment in every recompute
  // mode means the same algorithm and the same bits).
  template <class P>
  size_t layer_stride(size_t per_row) const {
    constexpr size_t a = 256 / sizeof(P);
    return (static_cast<size_t>(max_B_) * T_ * per_row + a - 1) / a * a;
  }
  template <class P>
  P* act(const DeviceBuffer<P>& v, int l, size_t per_row) const {
    return v.get() + static_cast<size_t>(l) * layer_stride<P>(per_row);
  }
  // The activations that recompute may keep in one layer's buffer instead of per layer.
  T* ln1(int l) const { return keep_ln_ ? act(ln1_, l, cfg_.n_embd) : ln_buf_; }
  T* ln2(int l) const { return keep_ln_ ? act(ln2_, l, cfg_.n_embd) : ln_buf_; }
  T* fch(int l) const { return keep_fch_ ? act(fch_, l, 4 * size_t(cfg_.n_embd)) : fch_buf_; }
  T* fch_gelu(int l) const {
    return keep_gelu_ ? act(fch_gelu_, l, 4 * size_t(cfg_.n_embd)) : gelu_buf_;
  }
  float attention_scale(int layer) const;
  float* lse(int l) const { return lse_.get() + static_cast<size_t>(l) * lse_stride_; }
  // The per-position activation buffers in T and in fp32 (Self: this class, const or not): the
  // one list that release() frees and launch_state() reports.
  template <class Self>
  static auto activations(Self& m) {
    return std::array{&m.encoded_, &m.ln1_, &m.qkv_, &m.atty_, &m.res2_, &m.ln2_,
                      &m.fch_,     &m.fch_gelu_, &m.res3_, &m.lnf_, &m.dln_};
  }
  template <class Self>
  static auto float_activations(Self& m) {
    return std::array{&m.ln1_mean_, &m.ln1_rstd_, &m.ln2_mean_, &m.ln2_rstd_, &m.lnf_mean_,
                      &m.lnf_rstd_, &m.lse_,      &m.losses_,   &m.mean_loss_};
  }
  void allocate();  // every activation buffer for max_B rows, at the current recompute level
  void release();
  // fch = ln2 @ Wfc^T + b and fch_gelu = gelu(fch) of layer l (the forward's; in the backward
  // with `recompute`, only what the level dropped, with the forward's exact arithmetic).
  void fc_gelu(const T* params, int l, int N, bool recompute);
  void* cudnn_workspace(int B);  // the arena's cuDNN region, or cudnn_ws_ when a plan needs more

  ModelConfig cfg_;
  ParamLayout layout_;
  int max_B_, T_;
  size_t lse_stride_ = 0;  // floats per layer in lse_: max_B * T * NH rounded up to 256 bytes
  int B_ = 0;
  int recompute_ = 0;
  bool keep_gelu_ = true, keep_fch_ = true, keep_ln_ = true;  // per layer (from recompute_)
  bool allocated_ = false;
  bool fuse_gelu_ = false;  // bf16: GELU in the fc / fcproj matmul epilogues (matmul.cu)
  bool fp8_head_ = false;   // set_lm_head_fp8
  // The FP8 lm head's operands: E4M3 lnf [max_B*T, C] then E4M3 wte [Vp, C] (256-byte aligned),
  // and its scales: amax of lnf, amax of wte, then their descales.
  DeviceBuffer<unsigned char> head_q_;
  DeviceBuffer<float> head_scales_;
  size_t head_w_off_ = 0;  // byte offset of the wte copy in head_q_
  std::unique_ptr<CudnnAttention> cudnn_;  // created on first selection of cuDNN attention
  bool use_cudnn_ = false;        // cuDNN attention selected
  bool cudnn_required_ = false;   // selected explicitly ("cudnn"), not by "auto"
  bool cudnn_batch_ = false;      // the current batch (B_) runs on cuDNN
  void* cudnn_ws_ptr_ = nullptr;  // its workspace (cudnn_workspace(B_))
  std::set<int> cudnn_failed_;    // batch sizes without a cuDNN plan (auto: our kernels)
  bool cudnn_ready(int B);
  cudaStream_t stream_;
  MatmulContext matmul_;
  Scratch scratch_;
  TokenBuckets buckets_host_;
  DeviceTokenBuckets buckets_;
  DeviceBuffer<int> inp_, targets_;
  DeviceBuffer<T> encoded_, ln1_, qkv_, atty_, res2_, ln2_, fch_, fch_gelu_, res3_, lnf_, dln_;
  DeviceBuffer<float> ln1_mean_, ln1_rstd_, ln2_mean_, ln2_rstd_, lnf_mean_, lnf_rstd_, lse_,
      losses_, mean_loss_;
  // The arena (see the top of the file) and the pointers into it.
  DeviceBuffer<unsigned char> arena_;
  std::vector<std::pair<std::string, size_t>> arena_regions_;  // for arena_layout()
  size_t cudnn_off_ = 0;  // byte offset of the cuDNN region (it runs to the arena's end)
  T *logits_ = nullptr, *proj_ = nullptr, *gelu_buf_ = nullptr, *fch_buf_ = nullptr,
    *ln_buf_ = nullptr, *dres_ = nullptr, *dqkv_ = nullptr, *datty_ = nullptr, *dfch_ = nullptr,
    *dfch_gelu_ = nullptr;
  DeviceBuffer<unsigned char> cudnn_ws_;  // only when a batch's plans need more than the region
};

extern template class Gpt2Cuda<float>;
extern template class Gpt2Cuda<bf16>;

}  // namespace sgpt::cuda
