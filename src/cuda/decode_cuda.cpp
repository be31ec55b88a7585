// The GPU KV-cache decoder (see cuda/decode_cuda.h).
#include "cuda/decode_cuda.h"

#include <cuda_runtime_api.h>

#include <string>

#include "cuda/buffer.h"
#include "cuda/check.h"
#include "cuda/ops_cuda.h"

namespace sgpt {
namespace {

using cuda::DeviceBuffer;

class CudaDecoder final : public Decoder {
 public:
  explicit CudaDecoder(const ModelConfig& cfg) : Decoder(cfg) {
    const size_t T = cfg.block_size, C = cfg.n_embd, L = cfg.n_layer;
    params_.resize(layout_.total);
    kcache_.resize(L * T * C);
    vcache_.resize(L * T * C);
    tokens_.resize(T);
    x_.resize(T * C);
    ln_.resize(T * C);
    mean_.resize(T);
    rstd_.resize(T);
    qkv_.resize(T * 3 * C);
    atty_.resize(T * C);
    proj_.resize(T * C);
    res2_.resize(T * C);
    fch_.resize(T * 4 * C);
    fch_gelu_.resize(T * 4 * C);
    lnf_.resize(C);
    logits_dev_.resize(cfg.padded_vocab_size);
    matmul_ = std::make_unique<cuda::MatmulContext>();
  }

  std::string name() const override {
    int dev = 0;
    cudaDeviceProp p{};
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&p, dev) == cudaSuccess)
      return std::string("cuda fp32, ") + p.name;
    return "cuda fp32";
  }

  void set_params(const float* params) override {
    params_.upload(params, layout_.total, stream_.s);
    SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_.s));
    have_params_ = true;
    reset();
  }

 protected:
  void forward(const int* tokens, int n, int pos0) override {
    const int C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer, T = cfg_.block_size;
    const size_t nC = static_cast<size_t>(n) * C;
    cudaStream_t s = stream_.s;
    cuda::MatmulContext& mm = *matmul_;
    tokens_.upload(tokens, static_cast<size_t>(n), s);
    cuda::decode_embed(x_.get(), tokens_.get(), tensor(kWte), tensor(kWpe), n, pos0, C, s);
    for (int l = 0; l < L; ++l) {
      float* kc = kcache_.get() + static_cast<size_t>(l) * T * C;
      float* vc = vcache_.get() + static_cast<size_t>(l) * T * C;
      cuda::layernorm_forward<float>(ln_.get(), mean_.get(), rstd_.get(), x_.get(), tensor(kLn1w, l),
                                     tensor(kLn1b, l), n, C, s);
      cuda::matmul_forward<float>(mm, qkv_.get(), ln_.get(), tensor(kQkvw, l), tensor(kQkvb, l), n, C,
                                  3 * C, s);
      cuda::decode_store_kv(kc, vc, qkv_.get(), n, pos0, C, s);
      cuda::decode_attention(atty_.get(), qkv_.get(), kc, vc, n, pos0, C, NH,
                             static_cast<float>(attention_scale(cfg_, l)), T, s);
      cuda::matmul_forward<float>(mm, proj_.get(), atty_.get(), tensor(kAttprojw, l),
                                  tensor(kAttprojb, l), n, C, C, s);
      cuda::residual_forward<float>(res2_.get(), x_.get(), proj_.get(), nC, s);
      cuda::layernorm_forward<float>(ln_.get(), mean_.get(), rstd_.get(), res2_.get(),
                                     tensor(kLn2w, l), tensor(kLn2b, l), n, C, s);
      cuda::matmul_forward<float>(mm, fch_.get(), ln_.get(), tensor(kFcw, l), tensor(kFcb, l), n, C,
                                  4 * C, s);
      cuda::gelu_forward<float>(fch_gelu_.get(), fch_.get(), nC * 4, s);
      cuda::matmul_forward<float>(mm, proj_.get(), fch_gelu_.get(), tensor(kFcprojw, l),
                                  tensor(kFcprojb, l), n, 4 * C, C, s);
      cuda::residual_forward<float>(x_.get(), res2_.get(), proj_.get(), nC, s);
    }
    // The last row only: final LayerNorm and the tied head.
    cuda::layernorm_forward<float>(lnf_.get(), mean_.get(), rstd_.get(),
                                   x_.get() + static_cast<size_t>(n - 1) * C, tensor(kLnfw),
                                   tensor(kLnfb), 1, C, s);
    cuda::matmul_forward<float>(mm, logits_dev_.get(), lnf_.get(), tensor(kWte),
                                static_cast<const float*>(nullptr), 1, C, cfg_.padded_vocab_size, s);
    SGPT_CUDA_CHECK(cudaMemcpyAsync(logits_.data(), logits_dev_.get(),
                                    static_cast<size_t>(cfg_.vocab_size) * sizeof(float),
                                    cudaMemcpyDeviceToHost, s));
    SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
  }

 private:
  // Device pointer to layer l of tensor i; nullptr for an absent (size-0) bias.
  const float* tensor(int i, int l = 0) const {
    if (layout_.size[i] == 0) return nullptr;
    const bool per_layer = !(i == kWte || i == kWpe || i == kLnfw || i == kLnfb);
    return params_.get() + layout_.layer_offset(i, l, per_layer ? cfg_.n_layer : 1);
  }

  // Declared first: destroyed last, after the buffers (every forward ends synchronized).
  struct Stream {
    cudaStream_t s = nullptr;
    Stream() { SGPT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
    ~Stream() {
      if (s) cudaStreamDestroy(s);  // not checked: may run during unwinding
    }
  } stream_;
  std::unique_ptr<cuda::MatmulContext> matmul_;
  DeviceBuffer<float> params_;
  DeviceBuffer<float> kcache_, vcache_;  // [L, block_size, C]
  DeviceBuffer<int> tokens_;
  DeviceBuffer<float> x_, ln_, mean_, rstd_, qkv_, atty_, proj_, res2_, fch_, fch_gelu_, lnf_,
      logits_dev_;
};

}  // namespace

std::unique_ptr<Decoder> make_cuda_decoder(const ModelConfig& cfg) {
  return std::make_unique<CudaDecoder>(cfg);
}

}  // namespace sgpt
