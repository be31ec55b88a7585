// The GPU KV-cache decoder (see cuda/decode_cuda.h).
#include "cuda/decode_cuda.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda/buffer.h"
#include "cuda/step_graph.h"
#include "cuda/check.h"
#include "cuda/ops_cuda.h"

namespace sgpt {
namespace {

using cuda::DeviceBuffer;
using cuda::PinnedBuffer;
using cuda::StepGraph;

class CudaDecoder final : public Decoder {
 public:
  CudaDecoder(const ModelConfig& cfg, const CudaDecoderOptions& o) : Decoder(cfg), opt_(o) {
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
    step_io_dev_.resize(2);
    step_in_.resize(2);
    out_host_.resize(cfg.vocab_size);
    top_host_.resize(cuda::kSelectMaxK);
    top_dev_.resize(cuda::kSelectMaxK);
    matmul_ = std::make_unique<cuda::MatmulContext>();
  }

  ~CudaDecoder() override {
    graph_.clear();
  }

  std::string name() const override {
    const std::string what = opt_.graphs       ? "cuda fp32, graphs"
                             : graph_error_.empty() ? "cuda fp32"
                                                    : "cuda fp32, graph capture failed (" + graph_error_ + ")";
    int dev = 0;
    cudaDeviceProp p{};
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&p, dev) == cudaSuccess)
      return what + ", " + p.name;
    return what;
  }

  void set_params(const float* params) override {
    params_.upload(params, layout_.total, stream_.s);
    SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_.s));
    have_params_ = true;
    reset();
  }

 protected:
  bool selects_top() const override { return device_select(); }

  void forward(const int* tokens, int n, int pos0) override {
    cudaStream_t s = stream_.s;
    const int k = top_output();
    if (graph_.exec && graph_.top_k != k) graph_.clear();
    if (device_select()) {
      const size_t need = cuda::select_top_scratch(cfg_.vocab_size, k, 1);
      if (select_scratch_.size() < need) {
        graph_.clear();  // it holds the old pointer
        select_scratch_.resize(need);
      }
    }
    if (n == 1 && opt_.graphs && warmed_) {
      step_in_.get()[0] = tokens[0];
      step_in_.get()[1] = pos0;
      if (!graph_.exec) {
        try {
          capture_step();
        } catch (const std::runtime_error& e) {  // this device or library cannot: stay eager
          graph_error_ = e.what();
          opt_.graphs = false;
        }
      }
      if (graph_.exec) {
        SGPT_CUDA_CHECK(cudaGraphLaunch(graph_.exec, s));
        SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
        read_output();
        return;
      }
    }
    tokens_.upload(tokens, static_cast<size_t>(n), s);
    run(tokens_.get(), n, pos0, nullptr);
    SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
    read_output();
    if (n == 1) warmed_ = true;
  }

 private:
  // Whether the top candidates are selected on the device for the current output mode.
  bool device_select() const {
    return top_output() > 0 && cuda::select_top_supported(cfg_.vocab_size, top_output());
  }

  // Records the whole step on the stream: the model on tokens[0..n) (device) at pos0 (or
  // *pos0_dev), then the output (logits or top candidates) copied into pinned host memory.
  void run(const int* tokens, int n, int pos0, const int* pos0_dev) {
    const int C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer, T = cfg_.block_size;
    const size_t nC = static_cast<size_t>(n) * C;
    cudaStream_t s = stream_.s;
    cuda::MatmulContext& mm = *matmul_;
    cuda::decode_embed(x_.get(), tokens, tensor(kWte), tensor(kWpe), n, pos0, C, s, pos0_dev);
    cuda::layernorm_forward<float>(ln_.get(), mean_.get(), rstd_.get(), x_.get(), tensor(kLn1w, 0),
                                   tensor(kLn1b, 0), n, C, s);
    for (int l = 0; l < L; ++l) {
      float* kc = kcache_.get() + static_cast<size_t>(l) * T * C;
      float* vc = vcache_.get() + static_cast<size_t>(l) * T * C;
      // ln_ = LayerNorm1(x_) here: the embedding's, or the previous layer's fused one.
      cuda::matmul_forward<float>(mm, qkv_.get(), ln_.get(), tensor(kQkvw, l), tensor(kQkvb, l), n, C,
                                  3 * C, s);
      cuda::decode_store_kv(kc, vc, qkv_.get(), n, pos0, C, s, pos0_dev);
      cuda::decode_attention(atty_.get(), qkv_.get(), kc, vc, n, pos0, C, NH,
                             static_cast<float>(attention_scale(cfg_, l)), T, s, pos0_dev);
      cuda::matmul_forward<float>(mm, proj_.get(), atty_.get(), tensor(kAttprojw, l),
                                  tensor(kAttprojb, l), n, C, C, s);
      // res2 = x + proj and its LayerNorm in one launch (ops_cuda.h: the bits of
      // residual_forward then layernorm_forward, which the decoder ran before).
      cuda::residual_layernorm_forward<float>(res2_.get(), ln_.get(), mean_.get(), rstd_.get(), x_.get(),
                                              proj_.get(), tensor(kLn2w, l), tensor(kLn2b, l), n, C, s);
      cuda::matmul_forward<float>(mm, fch_.get(), ln_.get(), tensor(kFcw, l), tensor(kFcb, l), n, C,
                                  4 * C, s);
      cuda::gelu_forward<float>(fch_gelu_.get(), fch_.get(), nC * 4, s);
      cuda::matmul_forward<float>(mm, proj_.get(), fch_gelu_.get(), tensor(kFcprojw, l),
                                  tensor(kFcprojb, l), n, 4 * C, C, s);
      if (l + 1 < L) {  // x = res2 + proj and the next layer's LayerNorm1, fused likewise
        cuda::residual_layernorm_forward<float>(x_.get(), ln_.get(), mean_.get(), rstd_.get(), res2_.get(),
                                                proj_.get(), tensor(kLn1w, l + 1), tensor(kLn1b, l + 1),
                                                n, C, s);
      } else {
        cuda::residual_forward<float>(x_.get(), res2_.get(), proj_.get(), nC, s);
      }
    }
    // The last row only: final LayerNorm and the tied head.
    cuda::layernorm_forward<float>(lnf_.get(), mean_.get(), rstd_.get(),
                                   x_.get() + static_cast<size_t>(n - 1) * C, tensor(kLnfw),
                                   tensor(kLnfb), 1, C, s);
    cuda::matmul_forward<float>(mm, logits_dev_.get(), lnf_.get(), tensor(kWte),
                                static_cast<const float*>(nullptr), 1, C, cfg_.padded_vocab_size, s);
    const int k = top_output();
    if (device_select()) {
      cuda::decode_select_top(top_dev_.get(), logits_dev_.get(), 1, cfg_.vocab_size,
                              static_cast<size_t>(cfg_.padded_vocab_size), k,
                              select_scratch_.get(), s);
      SGPT_CUDA_CHECK(cudaMemcpyAsync(top_host_.get(), top_dev_.get(),
                                      static_cast<size_t>(k) * sizeof(unsigned long long),
                                      cudaMemcpyDeviceToHost, s));
    } else {
      SGPT_CUDA_CHECK(cudaMemcpyAsync(out_host_.get(), logits_dev_.get(),
                                      static_cast<size_t>(cfg_.vocab_size) * sizeof(float),
                                      cudaMemcpyDeviceToHost, s));
    }
  }

  // Captures one step (the token and position from step_in_) into graph_.
  void capture_step() {
    cudaStream_t s = stream_.s;
    graph_.capture(s, [&] {
      SGPT_CUDA_CHECK(cudaMemcpyAsync(step_io_dev_.get(), step_in_.get(), 2 * sizeof(int),
                                      cudaMemcpyHostToDevice, s));
      run(step_io_dev_.get(), 1, 0, step_io_dev_.get() + 1);
    });
    graph_.top_k = top_output();
  }

  // The output of the step just finished (the stream synchronized) into logits_ or top_.
  void read_output() {
    const int k = top_output();
    if (device_select()) {
      top_.resize(k);
      for (int i = 0; i < k; ++i) top_[i] = cuda::select_key_decode(top_host_.get()[i]);
    } else {
      std::memcpy(logits_.data(), out_host_.get(), static_cast<size_t>(cfg_.vocab_size) * sizeof(float));
    }
  }

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
  CudaDecoderOptions opt_;
  StepGraph graph_;      // destroyed before the stream
  std::string graph_error_;  // why capturing failed (then every step is eager); empty: it did not
  bool warmed_ = false;  // an eager single-token step has run (cuBLASLt's algorithms are cached)
  std::unique_ptr<cuda::MatmulContext> matmul_;
  DeviceBuffer<float> params_;
  DeviceBuffer<float> kcache_, vcache_;  // [L, block_size, C]
  DeviceBuffer<int> tokens_;
  DeviceBuffer<float> x_, ln_, mean_, rstd_, qkv_, atty_, proj_, res2_, fch_, fch_gelu_, lnf_,
      logits_dev_;
  DeviceBuffer<int> step_io_dev_;                 // [token, pos0] of a graph step
  DeviceBuffer<unsigned long long> top_dev_, select_scratch_;
  PinnedBuffer<int> step_in_;                     // [token, pos0], copied by the graph
  PinnedBuffer<float> out_host_;                  // [vocab_size] logits
  PinnedBuffer<unsigned long long> top_host_;     // [kSelectMaxK] candidate keys
};

}  // namespace

std::unique_ptr<Decoder> make_cuda_decoder(const ModelConfig& cfg, const CudaDecoderOptions& o) {
  return std::make_unique<CudaDecoder>(cfg, o);
}

std::unique_ptr<Decoder> make_cuda_decoder(const ModelConfig& cfg) {
  return make_cuda_decoder(cfg, CudaDecoderOptions{});
}

namespace cuda {

Candidate select_key_decode(unsigned long long key) {
  const auto o = static_cast<uint32_t>(key >> 32);
  const uint32_t bits = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  const int id = static_cast<int>(0xffffffffu - static_cast<uint32_t>(key & 0xffffffffu));
  return Candidate{id, f};
}

}  // namespace cuda

}  // namespace sgpt
