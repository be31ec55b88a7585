// The GPU batch decoder (see cuda/decode_batch.h).
#include "cuda/decode_batch.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/buffer.h"
#include "cuda/check.h"
#include "cuda/decode_batch_ops.h"
#include "cuda/decode_cuda.h"
#include "cuda/ops_cuda.h"
#include "cuda/step_graph.h"

namespace sgpt {
namespace {

using cuda::DeviceBuffer;
using cuda::PinnedBuffer;
using cuda::StepGraph;

template <class W>
class CudaBatchDecoder final : public BatchDecoder {
 public:
  CudaBatchDecoder(const ModelConfig& cfg, int slots, const CudaBatchOptions& o)
      : BatchDecoder(cfg, slots), opt_(o) {
    const size_t T = cfg.block_size, C = cfg.n_embd, L = cfg.n_layer, V = cfg.vocab_size;
    const size_t S = static_cast<size_t>(slots);
    rows_ = std::max(T, S);
    const size_t R = rows_;
    pf_.resize(layout_.total);
    if constexpr (!std::is_same_v<W, float>) pw_.resize(layout_.total);
    kcache_.resize(S * L * T * C);
    vcache_.resize(S * L * T * C);
    io_dev_.resize(3 * R);
    io_host_.resize(3 * R);
    x_.resize(R * C);
    ln_.resize(R * C);
    mean_.resize(R);
    rstd_.resize(R);
    qkv_.resize(R * 3 * C);
    atty_.resize(R * C);
    res2_.resize(R * C);
    fch_.resize(R * 4 * C);
    lnf_.resize(S * C);
    logits_dev_.resize(S * V);
    out_host_.resize(S * V);
    top_dev_.resize(S * cuda::kSelectMaxK);
    top_host_.resize(S * cuda::kSelectMaxK);
  }

  ~CudaBatchDecoder() override { graph_.clear(); }

  std::string name() const override {
    std::string what = std::string("cuda batch ") + (opt_.bf16 ? "bf16" : "fp32") + ", " +
                       std::to_string(slots_) + (slots_ == 1 ? " slot" : " slots") +
                       (opt_.graphs ? ", graphs" : "") +
                       (opt_.dependent_launches && cuda::batch_dependent_launch_active()
                            ? ", dependent launches"
                            : "") +
                       (graph_error_.empty() ? "" : ", graph capture failed (" + graph_error_ + ")");
    int dev = 0;
    cudaDeviceProp p{};
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&p, dev) == cudaSuccess)
      what += std::string(", ") + p.name;
    return what;
  }

  void set_params(const float* params) override {
    cudaStream_t s = stream_.s;
    pf_.upload(params, layout_.total, s);
    if constexpr (!std::is_same_v<W, float>) cuda::batch_to_bf16(pw_.get(), pf_.get(), layout_.total, s);
    SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
    have_params_ = true;
  }

 protected:
  bool selects_top() const override { return device_select(); }

  void forward_slot(int b, const int* tokens, int n, int pos0) override {
    cudaStream_t s = stream_.s;
    prepare_select();
    int* in = io_host_.get();
    for (int r = 0; r < n; ++r) {
      in[r] = tokens[r];
      in[n + r] = b;
      in[2 * n + r] = pos0 + r;
    }
    SGPT_CUDA_CHECK(cudaMemcpyAsync(io_dev_.get(), in, 3 * static_cast<size_t>(n) * sizeof(int),
                                    cudaMemcpyHostToDevice, s));
    run(n, /*head_from=*/n - 1, /*out_slot=*/b);
    SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
    read_output(b);
  }

  void forward_step(const int* tokens, const int* pos) override {
    cudaStream_t s = stream_.s;
    const int n = slots_;
    prepare_select();
    int* in = io_host_.get();  // the graph copies it: written only while no step runs
    for (int b = 0; b < n; ++b) {
      in[b] = pos[b] >= 0 ? tokens[b] : 0;
      in[n + b] = b;
      in[2 * n + b] = pos[b] >= 0 ? pos[b] : -1;
    }
    if (opt_.graphs) {
      if (graph_.exec && graph_.top_k != top_output()) graph_.clear();
      if (!graph_.exec) {
        try {
          capture_step();
        } catch (const std::runtime_error& e) {  // this device or library cannot: stay eager
          graph_error_ = e.what();
          opt_.graphs = false;
        }
      }
    }
    if (graph_.exec) SGPT_CUDA_CHECK(cudaGraphLaunch(graph_.exec, s));
    else record_step();
    SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
    for (int b = 0; b < n; ++b)
      if (pos[b] >= 0) read_output(b);
  }

 private:
  bool device_select() const {
    return top_output() > 0 && cuda::select_top_supported(cfg_.vocab_size, top_output());
  }

  // Sizes the selection scratch for the current output mode (a new pointer drops the graph).
  void prepare_select() {
    if (!device_select()) return;
    const size_t need = cuda::select_top_scratch(cfg_.vocab_size, top_output(), slots_);
    if (select_scratch_.size() < need) {
      graph_.clear();
      select_scratch_.resize(need);
    }
  }

  const float* vec(int i, int l = 0) const {  // fp32 vector parameter; nullptr when absent
    if (layout_.size[i] == 0) return nullptr;
    return pf_.get() + offset(i, l);
  }
  const W* mat(int i, int l = 0) const {  // matrix parameter in W
    if constexpr (std::is_same_v<W, float>) return pf_.get() + offset(i, l);
    else return pw_.get() + offset(i, l);
  }
  size_t offset(int i, int l) const {
    const bool per_layer = !(i == kWte || i == kWpe || i == kLnfw || i == kLnfb);
    return layout_.layer_offset(i, l, per_layer ? cfg_.n_layer : 1);
  }

  // The step: the copy of the rows' tokens, slots and positions, then run() over all slots.
  void record_step() {
    const int n = slots_;
    SGPT_CUDA_CHECK(cudaMemcpyAsync(io_dev_.get(), io_host_.get(), 3 * static_cast<size_t>(n) * sizeof(int),
                                    cudaMemcpyHostToDevice, stream_.s));
    run(n, /*head_from=*/0, /*out_slot=*/0);
  }

  void capture_step() {
    graph_.capture(stream_.s, [&] { record_step(); });
    graph_.top_k = top_output();
  }

  // The model over n rows (io_dev_: tokens, slots, positions at stride n); the head for rows
  // head_from..n-1, whose outputs go to slots out_slot, out_slot + 1, ... and are copied into
  // pinned memory.
  void run(int n, int head_from, int out_slot) {
    const int C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer, T = cfg_.block_size;
    const int V = cfg_.vocab_size;
    cudaStream_t s = stream_.s;
    const int* tok = io_dev_.get();
    const int* slot = tok + n;
    const int* pos = tok + 2 * n;
    const size_t slot_stride = static_cast<size_t>(L) * T * C;
    const bool dep = opt_.dependent_launches;  // every launch below follows one of run()'s kernels
    cuda::batch_embed<W>(x_.get(), tok, pos, mat(kWte), mat(kWpe), n, C, s);
    // Each LayerNorm is part of the Linear that reads it (cuda::LinearPrologue): normalised in
    // that Linear's blocks, or by layernorm_forward into ln_ / lnf_ for widths it does not take.
    const auto prologue = [&](const float* weight, const float* bias, float* out) {
      cuda::LinearPrologue p;
      p.ln_weight = weight;
      p.ln_bias = bias;
      p.ln_out = out;
      p.mean = mean_.get();
      p.rstd = rstd_.get();
      return p;
    };
    for (int l = 0; l < L; ++l) {
      const size_t layer = static_cast<size_t>(l) * T * C;
      cuda::LinearEpilogue<W> qkv_ep;
      qkv_ep.bias = vec(kQkvb, l);
      qkv_ep.kcache = kcache_.get() + layer;
      qkv_ep.vcache = vcache_.get() + layer;
      qkv_ep.slot = slot;
      qkv_ep.pos = pos;
      qkv_ep.slot_stride = slot_stride;
      qkv_ep.C = C;
      cuda::batch_linear<W>(qkv_.get(), x_.get(), mat(kQkvw, l), n, C, 3 * C,
                            prologue(vec(kLn1w, l), vec(kLn1b, l), ln_.get()), qkv_ep, s, dep);
      cuda::batch_attention<W>(atty_.get(), qkv_.get(), kcache_.get() + layer, vcache_.get() + layer,
                               slot, pos, slot_stride, n, C, NH,
                               static_cast<float>(attention_scale(cfg_, l)), T, s, dep);
      cuda::LinearEpilogue<W> proj_ep;
      proj_ep.bias = vec(kAttprojb, l);
      proj_ep.residual = x_.get();
      cuda::batch_linear<W>(res2_.get(), atty_.get(), mat(kAttprojw, l), n, C, C, {}, proj_ep, s, dep);
      cuda::LinearEpilogue<W> fc_ep;
      fc_ep.bias = vec(kFcb, l);
      fc_ep.gelu = true;
      cuda::batch_linear<W>(fch_.get(), res2_.get(), mat(kFcw, l), n, C, 4 * C,
                            prologue(vec(kLn2w, l), vec(kLn2b, l), ln_.get()), fc_ep, s, dep);
      cuda::LinearEpilogue<W> fcproj_ep;
      fcproj_ep.bias = vec(kFcprojb, l);
      fcproj_ep.residual = res2_.get();
      cuda::batch_linear<W>(x_.get(), fch_.get(), mat(kFcprojw, l), n, 4 * C, C, {}, fcproj_ep, s, dep);
    }
    const int hn = n - head_from;
    float* logits = logits_dev_.get() + static_cast<size_t>(out_slot) * V;
    cuda::batch_linear<W>(logits, x_.get() + static_cast<size_t>(head_from) * C, mat(kWte), hn, C,
                          V, prologue(vec(kLnfw), vec(kLnfb), lnf_.get()),
                          cuda::LinearEpilogue<W>{}, s, dep);
    if (device_select()) {
      const int k = top_output();
      unsigned long long* top = top_dev_.get() + static_cast<size_t>(out_slot) * k;
      cuda::decode_select_top(top, logits, hn, V, static_cast<size_t>(V), k, select_scratch_.get(),
                              s, head_from == 0 ? pos : nullptr);
      SGPT_CUDA_CHECK(cudaMemcpyAsync(top_host_.get() + static_cast<size_t>(out_slot) * k, top,
                                      static_cast<size_t>(hn) * k * sizeof(unsigned long long),
                                      cudaMemcpyDeviceToHost, s));
    } else {
      SGPT_CUDA_CHECK(cudaMemcpyAsync(out_host_.get() + static_cast<size_t>(out_slot) * V, logits,
                                      static_cast<size_t>(hn) * V * sizeof(float),
                                      cudaMemcpyDeviceToHost, s));
    }
  }

  // Slot b's output from pinned memory into logits_ or top_ (the stream synchronized).
  void read_output(int b) {
    const int k = top_output(), V = cfg_.vocab_size;
    if (device_select()) {
      const unsigned long long* keys = top_host_.get() + static_cast<size_t>(b) * k;
      Candidate* t = slot_top(b);
      for (int i = 0; i < k; ++i) t[i] = cuda::select_key_decode(keys[i]);
    } else {
      std::memcpy(slot_logits(b), out_host_.get() + static_cast<size_t>(b) * V,
                  static_cast<size_t>(V) * sizeof(float));
    }
  }

  // Declared first: destroyed last, after the graph and the buffers (every call ends synchronized).
  struct Stream {
    cudaStream_t s = nullptr;
    Stream() { SGPT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
    ~Stream() {
      if (s) cudaStreamDestroy(s);  // not checked: may run during unwinding
    }
  } stream_;
  CudaBatchOptions opt_;
  StepGraph graph_;
  std::string graph_error_;        // why capturing failed (then every step is eager)
  size_t rows_ = 0;                // activation rows: max(block_size, slots)
  DeviceBuffer<float> pf_;         // every parameter, fp32
  DeviceBuffer<__nv_bfloat16> pw_;  // every parameter in bf16 (the matrices are read from it)
  DeviceBuffer<W> kcache_, vcache_;  // [slots, L, block_size, C]
  DeviceBuffer<int> io_dev_;       // tokens, slots, positions of the rows (stride: row count)
  DeviceBuffer<float> x_, ln_, mean_, rstd_, qkv_, atty_, res2_, fch_, lnf_, logits_dev_;
  DeviceBuffer<unsigned long long> top_dev_, select_scratch_;
  PinnedBuffer<int> io_host_;
  PinnedBuffer<float> out_host_;               // [slots, vocab_size]
  PinnedBuffer<unsigned long long> top_host_;  // [slots, kSelectMaxK]
};

}  // namespace

std::unique_ptr<BatchDecoder> make_cuda_batch_decoder(const ModelConfig& cfg, int slots,
                                                      const CudaBatchOptions& o) {
  if (o.bf16) return std::make_unique<CudaBatchDecoder<__nv_bfloat16>>(cfg, slots, o);
  return std::make_unique<CudaBatchDecoder<float>>(cfg, slots, o);
}

}  // namespace sgpt
