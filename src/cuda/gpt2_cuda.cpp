#include "cuda/gpt2_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <type_traits>

namespace sgpt::cuda {

namespace {
constexpr size_t kAlign = 256;  // bytes: every activation block and arena region starts aligned
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

template <class T>
Gpt2Cuda<T>::Gpt2Cuda(const ModelConfig& cfg, int max_B, int T_, cudaStream_t stream,
                      AttentionImpl attention, int recompute)
    : cfg_(cfg), layout_(ParamLayout::make(cfg)), max_B_(max_B), T_(T_), stream_(stream) {
  // bf16: GELU in the cuBLASLt epilogues (SGPT_GELU_FUSION=0 turns it off, for measurements).
  const char* fuse = std::getenv("SGPT_GELU_FUSION");
  fuse_gelu_ = std::is_same_v<T, bf16> && !(fuse && std::strcmp(fuse, "0") == 0);
  if (max_B < 1 || T_ < 1 || T_ > cfg.block_size)
    throw std::invalid_argument("Gpt2Cuda: need max_B >= 1 and 1 <= T <= block_size");
  set_recompute(recompute);
  set_attention(attention);
}

template <class T>
void Gpt2Cuda<T>::set_recompute(int level) {
  if (level < 0 || level > 2)
    throw std::invalid_argument("Gpt2Cuda: recompute must be 0, 1 or 2, got " +
                                std::to_string(level));
  release();
  recompute_ = level;
  keep_gelu_ = level < 1;
  keep_fch_ = !(level >= 1 && fuse_gelu_);  // the epilogue recompute rewrites fch too
  keep_ln_ = level < 2;
}

template <class T>
void Gpt2Cuda<T>::set_lm_head_fp8(bool on) {
  if (on) {
    if constexpr (std::is_same_v<T, float>)
      throw std::invalid_argument("the FP8 lm head needs precision \"bf16\"");
    if (!fp8_matmul_usable())
      throw std::invalid_argument("the FP8 lm head needs a GPU of compute capability 8.9 or later "
                                  "(Ada, Hopper, Blackwell)");
    if (cfg_.n_embd % 16 != 0)
      throw std::invalid_argument("the FP8 lm head needs n_embd a multiple of 16, got " +
                                  std::to_string(cfg_.n_embd));
  }
  if (!on && head_q_.size() > 0) {  // its buffers go (no launch in flight may read them)
    SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    head_q_.release();
    head_scales_.release();
  }
  fp8_head_ = on;  // stage_inputs allocates the buffers
}

template <class T>
void Gpt2Cuda<T>::release() {
  if (allocated_) SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  allocated_ = false;
  for (DeviceBuffer<T>* b : activations(*this)) b->release();
  for (DeviceBuffer<float>* b : float_activations(*this)) b->release();
  inp_.release();
  targets_.release();
  head_q_.release();
  head_scales_.release();
  head_w_off_ = 0;
  arena_.release();
  cudnn_ws_.release();
  arena_regions_.clear();
  logits_ = proj_ = gelu_buf_ = fch_buf_ = ln_buf_ = dres_ = dqkv_ = datty_ = dfch_ = dfch_gelu_ =
      nullptr;
  cudnn_off_ = 0;
}

template <class T>
void Gpt2Cuda<T>::allocate() {
  release();
  const size_t N = static_cast<size_t>(max_B_) * T_, C = cfg_.n_embd, L = cfg_.n_layer;
  const size_t NH = cfg_.n_head, Vp = cfg_.padded_vocab_size;
  inp_.resize(N);
  targets_.resize(N);
  encoded_.resize(N * C);
  if (keep_ln_) {
    ln1_.resize(L * layer_stride<T>(C));
    ln2_.resize(L * layer_stride<T>(C));
  }
  qkv_.resize(L * layer_stride<T>(3 * C));
  atty_.resize(L * layer_stride<T>(C));
  res2_.resize(L * layer_stride<T>(C));
  if (keep_fch_) fch_.resize(L * layer_stride<T>(4 * C));
  if (keep_gelu_) fch_gelu_.resize(L * layer_stride<T>(4 * C));
  res3_.resize(L * layer_stride<T>(C));
  lnf_.resize(N * C);
  dln_.resize(N * C);
  for (DeviceBuffer<float>* b : {&ln1_mean_, &ln1_rstd_, &ln2_mean_, &ln2_rstd_})
    b->resize(L * layer_stride<float>(1));
  lnf_mean_.resize(N);
  lnf_rstd_.resize(N);
  // Per-layer lse blocks start 256-byte aligned (cuDNN's stats tensor needs 16).
  lse_stride_ = layer_stride<float>(NH);
  lse_.resize(L * lse_stride_);
  losses_.resize(N);
  mean_loss_.resize(1);

  // The arena: the logits, and over them the regions used only while the logits are dead.
  struct Region {
    const char* name;
    size_t elems;
    T** ptr;
  };
  std::vector<Region> regions = {{"proj (forward temporary) [N,C]", N * C, &proj_}};
  if (!keep_gelu_) regions.push_back({"fch_gelu, one layer (recompute) [N,4C]", N * 4 * C, &gelu_buf_});
  if (!keep_fch_) regions.push_back({"fch, one layer (recompute) [N,4C]", N * 4 * C, &fch_buf_});
  if (!keep_ln_) regions.push_back({"ln1/ln2, one layer (recompute) [N,C]", N * C, &ln_buf_});
  regions.push_back({"dres [N,C]", N * C, &dres_});
  regions.push_back({"dqkv [N,3C]", N * 3 * C, &dqkv_});
  regions.push_back({"datty [N,C]", N * C, &datty_});
  regions.push_back({"dfch [N,4C]", N * 4 * C, &dfch_});
  if (!fuse_gelu_) regions.push_back({"dfch_gelu [N,4C]", N * 4 * C, &dfch_gelu_});
  std::vector<size_t> offsets;
  size_t off = 0;
  for (const Region& r : regions) {
    offsets.push_back(off);
    off = align_up(off + r.elems * sizeof(T));
  }
  cudnn_off_ = off;
  const size_t cudnn_need =
      use_cudnn_ ? cudnn_->workspace_bytes(max_B_, T_, cfg_.n_embd, cfg_.n_head) : 0;
  const size_t logits_bytes = align_up(N * Vp * sizeof(T));
  arena_.resize(std::max(logits_bytes, cudnn_off_ + cudnn_need));
  logits_ = reinterpret_cast<T*>(arena_.get());
  arena_regions_ = {{"logits / dlogits [N,Vp]", N * Vp * sizeof(T)}};
  for (size_t i = 0; i < regions.size(); ++i) {
    *regions[i].ptr = reinterpret_cast<T*>(arena_.get() + offsets[i]);
    arena_regions_.push_back({regions[i].name, regions[i].elems * sizeof(T)});
  }
  arena_regions_.push_back({"cuDNN workspace region (to the arena's end)",
                            arena_.bytes() - cudnn_off_});
  allocated_ = true;
}

template <class T>
void* Gpt2Cuda<T>::cudnn_workspace(int B) {
  const size_t need = cudnn_->workspace_bytes(B, T_, cfg_.n_embd, cfg_.n_head);
  if (need <= arena_.bytes() - cudnn_off_) return arena_.get() + cudnn_off_;
  if (cudnn_ws_.size() < need) cudnn_ws_.resize(need);
  return cudnn_ws_.get();
}

template <class T>
std::vector<std::pair<std::string, size_t>> Gpt2Cuda<T>::memory_breakdown(
    const std::vector<std::pair<std::string, size_t>>& extra) const {
  std::vector<std::pair<std::string, size_t>> v;
  auto add = [&](const std::string& name, size_t bytes) {
    if (bytes > 0) v.emplace_back(name, bytes);
  };
  add("activations: encoded [N,C]", encoded_.bytes());
  add("activations: ln1 [L,N,C]", ln1_.bytes());
  add("activations: qkv [L,N,3C]", qkv_.bytes());
  add("activations: atty [L,N,C]", atty_.bytes());
  add("activations: res2 [L,N,C]", res2_.bytes());
  add("activations: ln2 [L,N,C]", ln2_.bytes());
  add("activations: fch (pre-GELU) [L,N,4C]", fch_.bytes());
  add("activations: fch_gelu [L,N,4C]", fch_gelu_.bytes());
  add("activations: res3 [L,N,C]", res3_.bytes());
  add("activations: LayerNorm mean+rstd fp32 [L,N] x4", ln1_mean_.bytes() + ln1_rstd_.bytes() +
                                                              ln2_mean_.bytes() + ln2_rstd_.bytes());
  add("activations: attention lse fp32 [L,NH,N]", lse_.bytes());
  add("activations: lnf [N,C] + mean+rstd", lnf_.bytes() + lnf_mean_.bytes() + lnf_rstd_.bytes());
  if (arena_.bytes() > 0) {  // the name lists what the arena holds (regions after the logits overlap them)
    std::string name = "arena:";
    char b[160];
    for (size_t i = 0; i < arena_regions_.size(); ++i) {
      std::snprintf(b, sizeof b, "%s %s %.1f MiB", i == 0 ? "" : i == 1 ? "; reused while dead:" : ",",
                    arena_regions_[i].first.c_str(), arena_regions_[i].second / 1048576.0);
      name += b;
    }
    add(name, arena_.bytes());
  }
  add("FP8 lm head: E4M3 lnf [N,C] and wte [Vp,C], scales", head_q_.bytes() + head_scales_.bytes());
  add("gradient scratch: dln [N,C]", dln_.bytes());
  add("cuDNN workspace outside the arena", cudnn_ws_.bytes());
  add("cuDNN workspace owned by CudnnAttention", cudnn_ ? cudnn_->own_workspace_bytes() : 0);
  add("cuBLASLt workspace", matmul_.workspace_bytes());
  add("scratch fp32 (largest request so far)", scratch_.bytes());
  add("tokens, targets, token buckets, losses",
      inp_.bytes() + targets_.bytes() + buckets_.positions.bytes() + buckets_.buckets.bytes() +
          losses_.bytes() + mean_loss_.bytes());
  for (const auto& [name, bytes] : extra) add(name, bytes);
  return v;
}

template <class T>
std::vector<std::pair<std::string, size_t>> Gpt2Cuda<T>::arena_layout() const {
  return arena_regions_;
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
void Gpt2Cuda<T>::fc_gelu(const T* params, int l, int N, bool recompute) {
  const int C = cfg_.n_embd;
  if constexpr (std::is_same_v<T, bf16>) {
    if (fuse_gelu_) {  // the same call in the forward and in the recompute: the same bits
      matmul_forward_gelu(matmul_, fch_gelu(l), fch(l), ln2(l), tensor(params, kFcw, l),
                          tensor(params, kFcb, l), N, C, 4 * C, stream_);
      return;
    }
  }
  if (!recompute)
    matmul_forward(matmul_, fch(l), ln2(l), tensor(params, kFcw, l), tensor(params, kFcb, l), N, C,
                   4 * C, stream_);
  gelu_forward(fch_gelu(l), fch(l), 4 * static_cast<size_t>(N) * C, stream_);
}

template <class T>
void Gpt2Cuda<T>::forward_logits(const T* params, const int* inp_host, int B) {
  stage_inputs(inp_host, B);
  forward_launch(params);
}

template <class T>
void Gpt2Cuda<T>::stage_inputs(const int* inp_host, int B) {
  if (B < 1 || B > max_B_) throw std::invalid_argument("Gpt2Cuda: B must be in [1, max_B]");
  const int N = B * T_;
  for (int n = 0; n < N; ++n)
    if (inp_host[n] < 0 || inp_host[n] >= cfg_.vocab_size)
      throw std::out_of_range("Gpt2Cuda: token id out of range");
  if (!allocated_) allocate();
  if (fp8_head_ && head_q_.size() == 0) {
    const size_t rows = static_cast<size_t>(max_B_) * T_, C = cfg_.n_embd;
    head_w_off_ = align_up(rows * C);
    head_q_.resize(head_w_off_ + static_cast<size_t>(cfg_.padded_vocab_size) * C);
    head_scales_.resize(4);
  }
  B_ = B;
  cudnn_batch_ = use_cudnn_ && cudnn_ready(B);
  cudnn_ws_ptr_ = cudnn_batch_ ? cudnn_workspace(B) : nullptr;
  inp_.upload(inp_host, N, stream_);
  buckets_host_.build(inp_host, N, cfg_.padded_vocab_size);  // for the encoder backward
  buckets_.upload(buckets_host_, stream_);
}

template <class T>
std::vector<uintptr_t> Gpt2Cuda<T>::launch_state() const {
  std::vector<uintptr_t> v{static_cast<uintptr_t>(B_), static_cast<uintptr_t>(recompute_),
                           static_cast<uintptr_t>(cudnn_batch_),
                           reinterpret_cast<uintptr_t>(cudnn_ws_ptr_),
                           reinterpret_cast<uintptr_t>(scratch_.data()),
                           reinterpret_cast<uintptr_t>(buckets_.positions.get()),
                           reinterpret_cast<uintptr_t>(buckets_.buckets.get()),
                           static_cast<uintptr_t>(buckets_.num_positions),
                           reinterpret_cast<uintptr_t>(inp_.get()),
                           reinterpret_cast<uintptr_t>(targets_.get()),
                           reinterpret_cast<uintptr_t>(arena_.get()),
                           static_cast<uintptr_t>(fp8_head_),
                           reinterpret_cast<uintptr_t>(head_q_.get()),
                           reinterpret_cast<uintptr_t>(head_scales_.get())};
  for (const DeviceBuffer<T>* b : activations(*this)) v.push_back(reinterpret_cast<uintptr_t>(b->get()));
  for (const DeviceBuffer<float>* b : float_activations(*this))
    v.push_back(reinterpret_cast<uintptr_t>(b->get()));
  return v;
}

template <class T>
void Gpt2Cuda<T>::forward_launch(const T* params) {
  const int B = B_, C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer;
  const int Vp = cfg_.padded_vocab_size, N = B * T_;
  encoder_forward(encoded_.get(), inp_.get(), tensor(params, kWte), tensor(params, kWpe), B, T_, C,
                  stream_);
  for (int l = 0; l < L; ++l) {
    const T* x = l == 0 ? encoded_.get() : act(res3_, l - 1, C);
    T* qkv = act(qkv_, l, 3 * C);
    T* atty = act(atty_, l, C);
    T* res2 = act(res2_, l, C);
    // ln1 of later layers was computed with the previous layer's residual add (below).
    if (l == 0)
      layernorm_forward(ln1(l), act(ln1_mean_, l, 1), act(ln1_rstd_, l, 1), x,
                        tensor(params, kLn1w, l), tensor(params, kLn1b, l), N, C, stream_);
    matmul_forward(matmul_, qkv, ln1(l), tensor(params, kQkvw, l), tensor(params, kQkvb, l), N, C,
                   3 * C, stream_);
    if constexpr (std::is_same_v<T, bf16>) {
      if (cudnn_batch_)
        cudnn_->forward(atty, lse(l), qkv, B, T_, C, NH, attention_scale(l), stream_,
                        cudnn_ws_ptr_);
    }
    if (!cudnn_batch_)
      attention_forward(atty, lse(l), qkv, B, T_, C, NH, attention_scale(l), stream_);
    matmul_forward(matmul_, proj_, atty, tensor(params, kAttprojw, l),
                   tensor(params, kAttprojb, l), N, C, C, stream_);
    // (with recompute 2, ln2 overwrites this layer's ln1: the qkv matmul has read it)
    residual_layernorm_forward(res2, ln2(l), act(ln2_mean_, l, 1), act(ln2_rstd_, l, 1), x, proj_,
                               tensor(params, kLn2w, l), tensor(params, kLn2b, l), N, C, stream_);
    fc_gelu(params, l, N, /*recompute=*/false);
    matmul_forward(matmul_, proj_, fch_gelu(l), tensor(params, kFcprojw, l),
                   tensor(params, kFcprojb, l), N, 4 * C, C, stream_);
    // res3 = res2 + proj, with the next LayerNorm fused: ln1 of layer l+1, or the final one.
    if (l + 1 < L)
      residual_layernorm_forward(act(res3_, l, C), ln1(l + 1), act(ln1_mean_, l + 1, 1),
                                 act(ln1_rstd_, l + 1, 1), res2, proj_,
                                 tensor(params, kLn1w, l + 1), tensor(params, kLn1b, l + 1), N, C,
                                 stream_);
    else
      residual_layernorm_forward(act(res3_, l, C), lnf_.get(), lnf_mean_.get(), lnf_rstd_.get(),
                                 res2, proj_, tensor(params, kLnfw), tensor(params, kLnfb), N, C,
                                 stream_);
  }
  // The logits overwrite the arena's other regions (proj, ...): all dead from here on.
  if constexpr (std::is_same_v<T, bf16>) {
    if (fp8_head_) {
      uint8_t* xq = head_q_.get();
      uint8_t* wq = head_q_.get() + head_w_off_;
      float* s = head_scales_.get();  // amax lnf, amax wte, descale lnf, descale wte
      absmax(s, lnf_.get(), size_t(N) * C, stream_);
      quantize_e4m3(xq, s + 2, lnf_.get(), size_t(N) * C, s, stream_);
      absmax(s + 1, tensor(params, kWte), size_t(Vp) * C, stream_);
      quantize_e4m3(wq, s + 3, tensor(params, kWte), size_t(Vp) * C, s + 1, stream_);
      matmul_forward_fp8(matmul_, logits_, xq, wq, s + 2, s + 3, N, C, Vp, stream_);
      return;
    }
  }
  matmul_forward(matmul_, logits_, lnf_.get(), tensor(params, kWte),
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
  sample_labels(targets_.get(), logits_, B_ * T_, T_, cfg_.vocab_size,
                cfg_.padded_vocab_size, seed, step, seq0, scratch_, stream_);
}

template <class T>
void Gpt2Cuda<T>::gnb_loss(float grad_scale, uint64_t seed, uint32_t step, uint32_t seq0) {
  const int N = B_ * T_;
  const float dloss = grad_scale / static_cast<float>(N);  // as loss()
  if (!sample_labels_crossentropy(losses_.get(), targets_.get(), logits_, dloss, N, T_,
                                  cfg_.vocab_size, cfg_.padded_vocab_size, seed, step, seq0,
                                  stream_)) {
    sample_targets(seed, step, seq0);
    crossentropy_forward_backward(losses_.get(), logits_, targets_.get(), dloss, N,
                                  cfg_.vocab_size, cfg_.padded_vocab_size, true, stream_);
  }
  mean_loss(mean_loss_.get(), losses_.get(), N, stream_);
}

template <class T>
void Gpt2Cuda<T>::loss(float grad_scale, bool write_dlogits) {
  const int N = B_ * T_;
  const float dloss = grad_scale / static_cast<float>(N);  // as the CPU reference
  crossentropy_forward_backward(losses_.get(), logits_, targets_.get(), dloss, N,
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
  auto zero = [&](T* v, size_t n) {
    SGPT_CUDA_CHECK(cudaMemsetAsync(v, 0, n * sizeof(T), stream_));
  };
  constexpr bool kOverwrite = false;  // matmul dinp into a fresh buffer: beta = 0, no memset

  // Tied head: logits = lnf @ wte^T (dlogits are in logits_). After it the arena's other regions
  // (dres, dqkv, ..., overlapping the dlogits) are free for the layers.
  matmul_backward(matmul_, dln_.get(), tensor(grads, kWte), static_cast<T*>(nullptr), logits_,
                  lnf_.get(), tensor(params, kWte), N, C, Vp, scratch_, stream_, kOverwrite);
  zero(dres_, NC);
  layernorm_backward(dres_, tensor(grads, kLnfw), tensor(grads, kLnfb), dln_.get(),
                     act(res3_, L - 1, C), tensor(params, kLnfw), lnf_mean_.get(),
                     lnf_rstd_.get(), N, C, scratch_, stream_);
  for (int l = L - 1; l >= 0; --l) {
    const T* x = l == 0 ? encoded_.get() : act(res3_, l - 1, C);
    const T* res2 = act(res2_, l, C);
    // Recompute what the level dropped, from this layer's own saved tensors.
    if (!keep_ln_)
      layernorm_recompute(ln2(l), res2, act(ln2_mean_, l, 1), act(ln2_rstd_, l, 1),
                          tensor(params, kLn2w, l), tensor(params, kLn2b, l), N, C, stream_);
    if (!keep_gelu_) fc_gelu(params, l, N, /*recompute=*/true);
    if constexpr (std::is_same_v<T, bf16>) {
      if (fuse_gelu_) {  // dfch = (dres @ Wfcproj) * gelu'(fch), overwritten
        matmul_backward_dgelu(matmul_, dfch_, tensor(grads, kFcprojw, l),
                              tensor(grads, kFcprojb, l), dres_, fch_gelu(l),
                              tensor(params, kFcprojw, l), fch(l), N, 4 * C, C, scratch_,
                              stream_);
      }
    }
    if (!fuse_gelu_) {
      matmul_backward(matmul_, dfch_gelu_, tensor(grads, kFcprojw, l), tensor(grads, kFcprojb, l),
                      dres_, fch_gelu(l), tensor(params, kFcprojw, l), N, 4 * C, C, scratch_,
                      stream_, kOverwrite);
      zero(dfch_, 4 * NC);
      gelu_backward(dfch_, fch(l), dfch_gelu_, 4 * NC, stream_);
    }
    matmul_backward(matmul_, dln_.get(), tensor(grads, kFcw, l), tensor(grads, kFcb, l), dfch_,
                    ln2(l), tensor(params, kFcw, l), N, C, 4 * C, scratch_, stream_, kOverwrite);
    layernorm_backward(dres_, tensor(grads, kLn2w, l), tensor(grads, kLn2b, l), dln_.get(), res2,
                       tensor(params, kLn2w, l), act(ln2_mean_, l, 1), act(ln2_rstd_, l, 1), N, C,
                       scratch_, stream_);
    matmul_backward(matmul_, datty_, tensor(grads, kAttprojw, l), tensor(grads, kAttprojb, l),
                    dres_, act(atty_, l, C), tensor(params, kAttprojw, l), N, C, C, scratch_,
                    stream_, kOverwrite);
    if constexpr (std::is_same_v<T, bf16>) {
      if (cudnn_batch_)
        cudnn_->backward(dqkv_, datty_, act(qkv_, l, 3 * C), act(atty_, l, C), lse(l), B, T_, C,
                         NH, attention_scale(l), stream_, cudnn_ws_ptr_);
    }
    if (!cudnn_batch_)
      attention_backward(dqkv_, datty_, act(qkv_, l, 3 * C), act(atty_, l, C), lse(l), B, T_, C,
                         NH, attention_scale(l), scratch_, stream_, /*accumulate=*/false);
    if (!keep_ln_)  // ln1 from this layer's input (ln2 there is no longer needed)
      layernorm_recompute(ln1(l), x, act(ln1_mean_, l, 1), act(ln1_rstd_, l, 1),
                          tensor(params, kLn1w, l), tensor(params, kLn1b, l), N, C, stream_);
    matmul_backward(matmul_, dln_.get(), tensor(grads, kQkvw, l), tensor(grads, kQkvb, l), dqkv_,
                    ln1(l), tensor(params, kQkvw, l), N, C, 3 * C, scratch_, stream_, kOverwrite);
    layernorm_backward(dres_, tensor(grads, kLn1w, l), tensor(grads, kLn1b, l), dln_.get(), x,
                       tensor(params, kLn1w, l), act(ln1_mean_, l, 1), act(ln1_rstd_, l, 1), N, C,
                       scratch_, stream_);
    if (layer_done) (*layer_done)(l);
  }
  encoder_backward(tensor(grads, kWte), tensor(grads, kWpe), dres_, buckets_, B, T_, C, stream_);
  if (layer_done) (*layer_done)(-1);
}

template class Gpt2Cuda<float>;
template class Gpt2Cuda<bf16>;

}  // namespace sgpt::cuda
