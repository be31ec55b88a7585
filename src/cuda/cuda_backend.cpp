// CudaBackend: the Backend contract (src/backend/backend.h) on one GPU.
//
// State on the device: fp32 master parameters (in kFp32 they are also the working weights), the
// working weights in T (kBf16 only; written from the master by the optimizer with stochastic
// rounding, or rounded to nearest by set("params")), the gradient buffer in T, and the optimizer
// state m, h (Sophia) / v (AdamW) in fp32, allocated on first use and zero-initialised. The model
// (activations, kernels) is Gpt2Cuda<W>; the optimizer, norm and cast kernels are those of
// cuda/optim_cuda.h, each one launch over the whole flat buffer. Sophia-H's Hessian-vector
// products run on cuda::HvpCuda<W> (cuda/hvp_cuda.h), made at the first hvp_micro.
//
// Stochastic rounding of the bf16 weights is keyed by (rounding seed, optimizer step counter of
// this backend) and the global flat index, so two identical runs produce identical bits, with any
// number of ranks and with ZeRO-1 on or off. The seed comes from the run's `seed`
// (set_rounding); the counter and the bf16 working weights themselves (slot "working") are saved
// in checkpoints, so a resumed bf16 run continues with the same bits (docs/reliability.md).
//
// Gradient accumulation in bf16 mode (set_grad_accum_fp32): by default each micro-step's
// backward adds into the bf16 gradient buffer. With fp32 accumulation the backward writes each
// micro-step's gradient into the (zeroed) bf16 buffer and it is added into an fp32 buffer, which
// is what the optimizer, the norm, the Hessian EMA and the reduction over ranks then use - the
// arithmetic of PyTorch autocast with fp32 parameters (docs/decisions.md).
//
// Data parallel (DistOptions with an NcclComm of W > 1 ranks; docs/multi_gpu.md). The gradient
// and working-weight buffers are padded to dist::ShardLayout::padded. On the last micro-step of a
// step the backward hands each finished layer to reduce_layer(): an event on the compute stream,
// the communication stream waits for it and reduces that layer's gradient slices (all-reduce; with
// ZeRO-1 a reduce of each slice's part to the rank owning it), so communication overlaps the
// backward of the layers below. reduce_grad() makes the compute stream wait for the last of it.
// With ZeRO-1 the fp32 master (bf16), m, h and v hold this rank's shard only; the optimizer
// kernels run on the shard (index_base = its first global index) and the updated working weights
// are all-gathered on the compute stream, after the optimizer kernel in stream order.
#include "cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <type_traits>
#include <stdexcept>

#include "cuda/buffer.h"
#include "cuda/check.h"
#include "cuda/gpt2_cuda.h"
#include "cuda/hvp_cuda.h"
#include "cuda/nccl_comm.h"
#include "cuda/optim_cuda.h"
#include "cuda/optimizer.h"
#include "cuda/step_graph.h"

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

int cuda_select_device(int local_rank) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return -1;
  }
  const int dev = local_rank % count;
  SGPT_CUDA_CHECK(cudaSetDevice(dev));
  return dev;
}

namespace {

using cuda::DeviceBuffer;
using cuda::CommType;
using cuda::NcclComm;
constexpr uint64_t kRoundingSeed = 0x5EED5EEDull;

template <class W>  // working type of weights, activations and gradients
class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& cfg, int max_B, int T, const std::vector<float>& init,
              AttentionImpl attention, const DistOptions& dist)
      : cfg_(cfg), layout_(ParamLayout::make(cfg)), T_(T), stream_(make_stream()),
        model_(cfg, max_B, T, stream_, attention), decay_(cuda::DecayRanges::from_layout(layout_)),
        dist_(dist), shard_(dist::ShardLayout::make(layout_.total, dist.world())) {
    if (init.size() != layout_.total)
      throw std::invalid_argument("CudaBackend: initial parameters have the wrong size");
    if (dist_.world() > 1) {
      nccl_ = dynamic_cast<NcclComm*>(dist_.comm);
      if (!nccl_) throw std::invalid_argument("CudaBackend: several ranks need an NCCL communicator");
      comm_stream_ = make_stream();
      SGPT_CUDA_CHECK(cudaEventCreateWithFlags(&ev_compute_, cudaEventDisableTiming));
      SGPT_CUDA_CHECK(cudaEventCreateWithFlags(&ev_comm_, cudaEventDisableTiming));
      const char* ov = std::getenv("SGPT_DIST_OVERLAP");
      overlap_ = !(ov && std::string(ov) == "0");
    }
    sharded_ = dist_.world() > 1 && dist_.zero;
    lo_ = sharded_ ? shard_.begin(dist_.rank()) : 0;
    cnt_ = sharded_ ? shard_.owned(dist_.rank()) : layout_.total;
    master_.resize(kFp32 ? shard_.padded : state_size());
    rounding_seed_ = kRoundingSeed;
    if constexpr (!kFp32) weights_.resize(shard_.padded);
    grads_.resize(shard_.padded);
    SGPT_CUDA_CHECK(cudaMemsetAsync(master_.get(), 0, master_.bytes(), stream_));
    if constexpr (!kFp32) SGPT_CUDA_CHECK(cudaMemsetAsync(weights_.get(), 0, weights_.bytes(), stream_));
    set("params", init);
    zero_grad();
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    // The Hessian-vector product works on stream_ (its destructor synchronizes it and destroys a
    // cuBLAS handle bound to it): it goes before the stream does.
    for (auto& h : hvp_) h.reset();
    cudaStreamDestroy(stream_);
    if (comm_stream_) {
      cudaStreamSynchronize(comm_stream_);
      cudaStreamDestroy(comm_stream_);
      cudaEventDestroy(ev_compute_);
      cudaEventDestroy(ev_comm_);
    }
  }

  std::string name() const override {
    return std::string(kFp32 ? "cuda-fp32" : "cuda-bf16") + ", attention " + model_.attention_name();
  }
  void set_attention(AttentionImpl attention) override {
    drop_graphs();
    model_.set_attention(attention);
  }
  void set_hvp_fused_attention(bool on) override { hvp_path_ = on ? 0 : 1; }
  void set_recompute(int level) override {
    drop_graphs();
    model_.set_recompute(level);
  }
  void set_lm_head_fp8(bool on) override {
    drop_graphs();
    model_.set_lm_head_fp8(on);
  }
  std::vector<std::pair<std::string, size_t>> memory_breakdown() const override {
    return model_.memory_breakdown({{"params fp32 master", master_.bytes()}, {"params working (bf16)", weights_.bytes()}, {"grads", grads_.bytes()}, {"grads fp32 accumulation", acc_.bytes()}, {"optimizer m", slot_bytes("m")}, {"optimizer h", slot_bytes("h")}, {"optimizer v", slot_bytes("v")},
                                    {"Sophia-H probe u", probe_.bytes()}, {"Sophia-H Hessian-vector product (activations, tangents, attention)", (hvp_[0] ? hvp_[0]->device_bytes() : 0) + (hvp_[1] ? hvp_[1]->device_bytes() : 0)}});
  }
  const ModelConfig& model() const override { return cfg_; }
  const ParamLayout& layout() const override { return layout_; }

  void zero_grad() override {
    if (acc32_) SGPT_CUDA_CHECK(cudaMemsetAsync(acc_.get(), 0, acc_.bytes(), stream_));
    else SGPT_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
  }

  void set_grad_accum_fp32(bool on) override {
    if constexpr (kFp32) return;  // fp32 gradients accumulate in fp32 already
    if (on == acc32_) return;
    acc32_ = on;
    if (on) {
      acc_.resize(shard_.padded);
      SGPT_CUDA_CHECK(cudaMemsetAsync(acc_.get(), 0, acc_.bytes(), stream_));
    } else {
      acc_ = DeviceBuffer<float>();
    }
    zero_grad();
  }
  bool grad_accum_fp32() const override { return kFp32 || acc32_; }

  bool has_working_weights() const override { return !kFp32; }
  uint32_t rounding_counter() const override { return opt_step_; }
  void set_rounding(uint64_t seed, uint32_t counter) override {
    rounding_seed_ = seed;
    opt_step_ = counter;
  }

  float train_micro(const int* inp, const int* tgt, int B, int T, float grad_scale) override {
    check_T(T);
    model_.stage_inputs(inp, B);
    model_.set_targets(tgt);
    const auto launches = [&] {
      model_.forward_launch(weights());
      model_.loss(grad_scale, /*write_dlogits=*/true);
      backward();
    };
    // The overlapped reduction of a data-parallel step's last micro-step hands layers to the
    // communication stream from the host: that one stays eager.
    if (graphs_ && !(reduce_in_backward_ && overlap_)) run_graphed(grad_scale, launches);
    else launches();
    return model_.read_mean_loss();
  }

  void set_cuda_graphs(bool on) override {
    graphs_ = on;
    graph_error_.clear();
    micro_graphs_.clear();
    warm_keys_.clear();
  }
  std::string cuda_graphs_status() const override {
    if (!graphs_) return graph_error_.empty() ? "off" : "off (capture failed: " + graph_error_ + ")";
    return "on, " + std::to_string(micro_graphs_.size()) + " micro-step graph(s), " +
           std::to_string(graph_launches_) + " replays";
  }

  float gnb_micro(const int* inp, int B, int T, float grad_scale, uint64_t seed, uint32_t step,
                  uint32_t seq0) override {
    check_T(T);
    model_.forward_logits(weights(), inp, B);
    model_.gnb_loss(grad_scale, seed, step, seq0);  // sampling + loss + dlogits
    backward();
    return model_.read_mean_loss();
  }

  float eval_micro(const int* inp, const int* tgt, int B, int T) override {
    check_T(T);
    model_.forward_logits(weights(), inp, B);
    model_.set_targets(tgt);
    model_.loss(1.0f, /*write_dlogits=*/false);
    return model_.read_mean_loss();
  }

  // Per-position losses (HellaSwag): positions with tgt < 0 are scored against token 0 and
  // reported as 0.
  void eval_losses(const int* inp, const int* tgt, int B, int T, float* losses_out) override {
    check_T(T);
    const size_t n = static_cast<size_t>(B) * T;
    std::vector<int> t(tgt, tgt + n);
    for (int& x : t) x = std::max(x, 0);
    model_.forward_logits(weights(), inp, B);
    model_.set_targets(t.data());
    model_.loss(1.0f, /*write_dlogits=*/false);
    SGPT_CUDA_CHECK(cudaMemcpyAsync(losses_out, model_.losses(), n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t i = 0; i < n; ++i)
      if (tgt[i] < 0) losses_out[i] = 0.0f;
  }

  std::string device_name() const override {
    int dev = 0;
    cudaDeviceProp p{};
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) return "";
    return p.name;
  }
  nlohmann::json machine_info() const override {
    int dev = 0, driver = 0, runtime = 0;
    cudaGetDevice(&dev);
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    cudaDeviceProp p{};
    cudaGetDeviceProperties(&p, dev);
    auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
    nlohmann::json j{{"device", p.name}, {"device_memory_mib", p.totalGlobalMem >> 20},
                     {"compute_capability", std::to_string(p.major) + "." + std::to_string(p.minor)},
                     {"cuda_driver", ver(driver)}, {"cuda_runtime", ver(runtime)},
                     {"attention", model_.attention_name()}, {"world", dist_.world()},
                     {"cuda_graphs", graphs_ ? "on" : "off"}};
    if (cuda::CudnnAttention::built()) j["cudnn"] = cuda::CudnnAttention::runtime_version();
#ifdef SGPT_WITH_NCCL
    j["nccl"] = NcclComm::version();
#endif
    return j;
  }

  void begin_last_micro() override { reduce_in_backward_ = dist_.world() > 1; }

  void reduce_grad() override {
    if (dist_.world() == 1) return;
    reduce_in_backward_ = false;
    if (!reduced_) {  // no overlap: the whole buffer at once, on the compute stream
      if (sharded_) nccl_->reduce_scatter_dev(grad_buf(), shard_.shard, grad_type(), stream_);
      else nccl_->allreduce_dev(grad_buf(), layout_.total, grad_type(), stream_);
    } else {
      SGPT_CUDA_CHECK(cudaEventRecord(ev_comm_, comm_stream_));
      SGPT_CUDA_CHECK(cudaStreamWaitEvent(stream_, ev_comm_, 0));
    }
    reduced_ = false;
  }

  // On the compute stream, like every other collective of this backend outside the per-layer
  // reductions: NCCL operations of one communicator then run in the order they were issued.
  void average(double* x, size_t n) override {
    if (dist_.world() == 1) return;
    if (avg_.size() < n) avg_.resize(n);
    avg_.upload(x, n, stream_);
    nccl_->allreduce_dev(avg_.get(), n, CommType::kDouble, stream_);
    SGPT_CUDA_CHECK(cudaMemcpyAsync(x, avg_.get(), n * sizeof(double), cudaMemcpyDeviceToHost, stream_));
    SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t i = 0; i < n; ++i) x[i] /= dist_.world();
  }

  // Without ZeRO every rank holds the same whole gradient: its own sum is the global one.
  double grad_sum_squares() override {
    if (cnt_ == 0) SGPT_CUDA_CHECK(cudaMemsetAsync(reduce_.results(), 0, sizeof(double), stream_));
    else with_grad([&](auto* g) { cuda::grad_sum_squares(g + lo_, cnt_, reduce_, stream_); });
    if (sharded_) nccl_->allreduce_dev(reduce_.results(), 1, CommType::kDouble, stream_);
    return cuda::read_sum_squares(reduce_, stream_);
  }
  void scale_grad(float s) override {
    with_grad([&](auto* g) { cuda::scale_grad(g + lo_, cnt_, s, stream_); });
  }

  void optimizer_step(const OptimizerStep& s, SophiaMetrics* metrics) override {
    const OptimizerKind& kind = optimizer_kind(s.cfg->name);
    std::unique_ptr<cuda::Optimizer>& opt = optimizers_[kind.name];
    if (!opt) opt = cuda::make_optimizer(kind.name);
    std::vector<float*> slots;
    for (const std::string& name : kind.slots) slots.push_back(ensure(state(name)).get());
    if (cnt_ == 0) {  // a rank that owns nothing still advances its rounding counter
      if (metrics) SGPT_CUDA_CHECK(cudaMemsetAsync(reduce_.results(), 0, 4 * sizeof(double), stream_));
      next_key();
    } else {
      cuda::UpdateTarget t;
      t.master = master();
      t.weights = weights_out();
      t.weights_type = kFp32 ? cuda::Storage::kF32 : cuda::Storage::kBf16;
      with_grad([&](auto* g) {
        t.grad = g + lo_;
        t.grad_type = std::is_same_v<std::remove_cv_t<std::remove_pointer_t<decltype(g)>>, float>
                          ? cuda::Storage::kF32 : cuda::Storage::kBf16;
      });
      t.n = cnt_;
      t.decay = decay_;
      t.key = next_key();
      t.stream = stream_;
      opt->update(s, slots.data(), t, metrics ? &reduce_ : nullptr);
    }
    if (metrics) {
      if (sharded_) nccl_->allreduce_dev(reduce_.results(), 4, CommType::kDouble, stream_);
      cuda::read_sophia_metrics(reduce_, layout_.total, metrics, stream_);
    }
    gather_weights();
  }

  void hessian_ema(const HessianConsts& c) override {
    float* h = ensure(state("h")).get();
    with_grad([&](auto* g) { cuda::hessian_ema(h, g + lo_, cnt_, c, stream_); });
  }

  // Sophia-H's Hutchinson pass (src/train/hutchinson.cpp): grad_scale * H u into the gradient
  // buffer, exact (cuda::HvpCuda: forward mode over the reverse pass), u over the whole model on
  // every rank (the probe is keyed by global index), drawn once per (seed, step, distribution).
  // The product runs on this micro-batch's B sequences with their real targets; its buffers are
  // sized for the largest B seen. In bf16 the probe is rounded to bf16 for the product (the EMA
  // below recomputes it in fp32). The whole gradient buffer is reduced by reduce_grad() (no
  // per-layer overlap for this pass).
  float hvp_micro(const int* inp, const int* tgt, int B, int T, float grad_scale, uint64_t seed,
                  uint32_t step, bool rademacher) override {
    check_T(T);
    auto& hvp = hvp_[hvp_path_];
    if (!hvp || hvp_B_[hvp_path_] < B) {
      hvp.reset();
      hvp = std::make_unique<cuda::HvpCuda<W>>(
          cfg_, B, T_, stream_,
          hvp_path_ == 0 ? cuda::HvpAttention::kAuto : cuda::HvpAttention::kMaterialized);
      hvp_B_[hvp_path_] = B;
    }
    if (!probe_valid_ || probe_seed_ != seed || probe_step_ != step || probe_rademacher_ != rademacher) {
      probe_.resize(layout_.total);
      cuda::hutchinson_probe_fill(probe_.get(), layout_.total, seed, step, 0, rademacher, stream_);
      probe_valid_ = true;
      probe_seed_ = seed;
      probe_step_ = step;
      probe_rademacher_ = rademacher;
    }
    // As backward(): with fp32 accumulation the product goes into the zeroed W buffer first and
    // is then added into the fp32 one.
    if (acc32_) SGPT_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
    const float loss = hvp->accumulate(weights(), probe_.get(), inp, tgt, B, grad_scale, grads_.get());
    if (acc32_) cuda::accumulate_float(grads_.get(), acc_.get(), layout_.total, stream_);
    return loss;
  }
  void hutchinson_ema(const HessianConsts& c, uint64_t seed, uint32_t step, bool rademacher) override {
    float* h = ensure(state("h")).get();
    with_grad([&](auto* g) {
      cuda::hutchinson_ema(h, g + lo_, cnt_, c, seed, step, lo_, rademacher, stream_);
    });
  }

  double device_memory_mib() override {
    size_t free_b = 0, total_b = 0;
    SGPT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return static_cast<double>(total_b - free_b) / (1 << 20);
  }
  double state_memory_mib() override {
    size_t n = kFp32 ? 0 : master_.size();
    for (const auto& [name, b] : state_) n += b.size();
    return static_cast<double>(n) * sizeof(float) / (1 << 20);
  }

  // "grad": the whole buffer as it is (under ZeRO-1 after reduce_grad() only this rank's shard
  // holds the reduced sums). Sharded state is all-gathered (collective).
  void get(const std::string& slot, std::vector<float>& out) override {
    if (slot == "grad") {
      if (acc32_) {
        out = acc_.download(stream_);
        out.resize(layout_.total);
      } else {
        out = to_host_float(grads_.get());
      }
      return;
    }
    if constexpr (kFp32) {
      if (slot == "params" || slot == "working") {
        out = to_host_float(master_.get());
        return;
      }
    }
    if constexpr (!kFp32) {
      if (slot == "working") {  // the bf16 working weights (whole on every rank), widened exactly
        out = to_host_float(weights_.get());
        return;
      }
    }
    DeviceBuffer<float>& b = state(slot);
    ensure(b);
    if (!sharded_) {
      out = b.download(stream_);
      out.resize(layout_.total);
      return;
    }
    DeviceBuffer<float> full(shard_.padded);
    SGPT_CUDA_CHECK(cudaMemcpyAsync(full.get() + lo_, b.get(), shard_.shard * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream_));
    nccl_->allgather_dev(full.get(), shard_.shard, CommType::kFloat, stream_);
    out = full.download(stream_);
    out.resize(layout_.total);
  }

  void set(const std::string& slot, const std::vector<float>& in) override {
    if (in.size() != layout_.total)
      throw std::invalid_argument("CudaBackend::set(" + slot + "): wrong size");
    DeviceBuffer<float> tmp(shard_.padded);
    SGPT_CUDA_CHECK(cudaMemsetAsync(tmp.get(), 0, tmp.bytes(), stream_));
    tmp.upload(in.data(), in.size(), stream_);
    if (slot == "grad" && acc32_) {
      SGPT_CUDA_CHECK(cudaMemcpyAsync(acc_.get(), tmp.get(), tmp.bytes(), cudaMemcpyDeviceToDevice, stream_));
      SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return;
    }
    if (slot == "working") {  // bf16 values held exactly in fp32: rounding them is the identity
      if constexpr (kFp32) throw std::invalid_argument("CudaBackend: no separate working weights in fp32");
      else cuda::cast_rn(tmp.get(), weights_.get(), in.size(), stream_);
      SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return;
    }
    if (slot == "grad" || (slot == "params" && !kFp32)) {
      W* dst = slot == "grad" ? grads_.get() : weights_.get();
      if constexpr (kFp32) SGPT_CUDA_CHECK(cudaMemcpyAsync(dst, tmp.get(), tmp.bytes(), cudaMemcpyDeviceToDevice, stream_));
      else cuda::cast_rn(tmp.get(), dst, in.size(), stream_);
    }
    if (slot != "grad") {
      DeviceBuffer<float>& b = state(slot);
      const size_t n = slot == "params" && kFp32 ? shard_.padded : state_size();
      const size_t from = slot == "params" && kFp32 ? 0 : lo_;
      if (b.size() != n) b.resize(n);
      SGPT_CUDA_CHECK(cudaMemcpyAsync(b.get(), tmp.get() + from, n * sizeof(float),
                                      cudaMemcpyDeviceToDevice, stream_));
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
  // The optimizer's view: this rank's part of the fp32 master and of the working weights.
  float* master() { return kFp32 ? master_.get() + lo_ : master_.get(); }
  W* weights_out() {
    if constexpr (kFp32) return nullptr;  // the master is the working weight buffer
    else return weights_.get() + lo_;
  }
  size_t state_size() const { return sharded_ ? shard_.shard : layout_.total; }
  static constexpr CommType comm_type() { return kFp32 ? CommType::kFloat : CommType::kBf16; }
  // The gradient the optimizer sees: the fp32 accumulator when there is one, else the W buffer.
  template <class F>
  void with_grad(F&& f) {
    if constexpr (!kFp32) {
      if (acc32_) {
        f(acc_.get());
        return;
      }
    }
    f(grads_.get());
  }
  void* grad_buf() { return acc32_ ? static_cast<void*>(acc_.get()) : static_cast<void*>(grads_.get()); }
  CommType grad_type() const { return acc32_ ? CommType::kFloat : comm_type(); }

  std::vector<float> to_host_float(const W* p) {
    std::vector<float> out;
    if constexpr (kFp32) {
      out.resize(layout_.total);
      SGPT_CUDA_CHECK(cudaMemcpyAsync(out.data(), p, out.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
      SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    } else {
      DeviceBuffer<float> tmp(layout_.total);
      cuda::to_float(p, tmp.get(), layout_.total, stream_);
      out = tmp.download(stream_);
    }
    return out;
  }

  // ---- CUDA graphs of the training micro-step (set_cuda_graphs) ----
  // A graph holds the launches of one micro-step's forward, loss and backward for one launch
  // state: the model's (B, recompute, attention, every buffer address; Gpt2Cuda::launch_state)
  // and the backend's (weights, gradients, fp32 accumulation, grad_scale). The token and target
  // copies stay outside it (stage_inputs, set_targets, before the replay on the same stream).
  // The first micro-step of a state runs eagerly (it allocates what it needs), the second is
  // captured, later ones replay. A capture that fails turns graphs off with the reason and runs
  // the micro-step eagerly.
  std::vector<uintptr_t> graph_key(float grad_scale) const {
    std::vector<uintptr_t> k = model_.launch_state();
    uint32_t gs = 0;
    static_assert(sizeof(gs) == sizeof(grad_scale));
    std::memcpy(&gs, &grad_scale, sizeof(gs));
    k.insert(k.end(), {reinterpret_cast<uintptr_t>(weights()), reinterpret_cast<uintptr_t>(grads_.get()),
                       reinterpret_cast<uintptr_t>(acc_.get()), static_cast<uintptr_t>(acc32_),
                       static_cast<uintptr_t>(gs)});
    return k;
  }

  template <class F>
  void run_graphed(float grad_scale, const F& launches) {
    const std::vector<uintptr_t> key = graph_key(grad_scale);
    auto it = micro_graphs_.find(key);
    if (it == micro_graphs_.end() && warm_keys_.count(key) > 0) {
      if (micro_graphs_.size() >= kMaxMicroGraphs) micro_graphs_.clear();
      auto g = std::make_unique<cuda::StepGraph>();
      try {
        g->capture(stream_, launches);
      } catch (const std::exception& e) {
        graphs_ = false;
        graph_error_ = e.what();
        micro_graphs_.clear();
        std::fprintf(stderr, "warning: cuda_graphs: capturing the micro-step failed (%s); it runs eagerly\n",
                     graph_error_.c_str());
        launches();
        return;
      }
      it = micro_graphs_.emplace(key, std::move(g)).first;
    }
    if (it != micro_graphs_.end()) {
      SGPT_CUDA_CHECK(cudaGraphLaunch(it->second->exec, stream_));
      ++graph_launches_;
      return;
    }
    launches();
    if (warm_keys_.size() >= 4 * kMaxMicroGraphs) warm_keys_.clear();
    warm_keys_.insert(graph_key(grad_scale));  // the state after its allocations
  }

  void drop_graphs() {
    micro_graphs_.clear();
    warm_keys_.clear();
  }

  // The model's backward; on the last micro-step of a data-parallel step each finished layer is
  // handed to reduce_layer (overlap), unless SGPT_DIST_OVERLAP=0 (then reduce_grad() reduces the
  // whole buffer after the backward).
  void backward() {
    if (acc32_) SGPT_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
    if (!(reduce_in_backward_ && overlap_)) {
      model_.backward(weights(), grads_.get());
      if (acc32_) cuda::accumulate_float(grads_.get(), acc_.get(), layout_.total, stream_);
      return;
    }
    const std::function<void(int)> hook = [this](int l) { reduce_layer(l); };
    model_.backward(weights(), grads_.get(), &hook);
    reduced_ = true;
  }

  // Reduces the gradient slices of layer l (l = -1: the tensors outside the layers) on the
  // communication stream, after the compute stream's work so far.
  // With fp32 accumulation the layer's micro-step gradient is first added into the fp32 buffer
  // (compute stream) and the fp32 sums are reduced.
  void reduce_layer(int l) {
    std::pair<size_t, size_t> ranges[kNumParamTensors];
    int nr = 0;
    for (int i = 0; i < kNumParamTensors; ++i) {
      if (layout_.size[i] == 0) continue;
      const bool global = i == kWte || i == kWpe || i == kLnfw || i == kLnfb;
      if (global != (l < 0)) continue;
      const size_t b = global ? layout_.offset[i] : layout_.layer_offset(i, l, cfg_.n_layer);
      ranges[nr++] = {b, b + (global ? layout_.size[i] : layout_.size[i] / cfg_.n_layer)};
    }
    if (acc32_)
      for (int r = 0; r < nr; ++r)
        cuda::accumulate_float(grads_.get() + ranges[r].first, acc_.get() + ranges[r].first,
                               ranges[r].second - ranges[r].first, stream_);
    SGPT_CUDA_CHECK(cudaEventRecord(ev_compute_, stream_));
    SGPT_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, ev_compute_, 0));
    const size_t esz = acc32_ ? sizeof(float) : sizeof(W);
    char* base = static_cast<char*>(grad_buf());
    nccl_->group_start();
    for (int r = 0; r < nr; ++r) {
      const auto [b, e] = ranges[r];
      if (!sharded_) {
        nccl_->allreduce_dev(base + b * esz, e - b, grad_type(), comm_stream_);
        continue;
      }
      for (int q = 0; q < dist_.world(); ++q) {  // the part of [b, e) that rank q owns
        const size_t qb = std::max(b, shard_.begin(q)), qe = std::min(e, shard_.begin(q) + shard_.owned(q));
        if (qb < qe) nccl_->reduce_dev(base + qb * esz, qe - qb, grad_type(), q, comm_stream_);
      }
    }
    nccl_->group_end();
  }

  // ZeRO-1: every rank's updated shard of the working weights to every rank (after the optimizer
  // kernel: same stream).
  void gather_weights() {
    if (!sharded_) return;
    if constexpr (kFp32) nccl_->allgather_dev(master_.get(), shard_.shard, CommType::kFloat, stream_);
    else nccl_->allgather_dev(weights_.get(), shard_.shard, CommType::kBf16, stream_);
  }
  cuda::RoundingKey next_key() {
    cuda::RoundingKey k;
    k.seed = rounding_seed_;
    k.step = opt_step_++;
    k.index_base = lo_;  // the optimizer runs on this rank's range: decay mask and rounding by global index
    return k;
  }
  DeviceBuffer<float>& ensure(DeviceBuffer<float>& b) {
    if (b.size() != state_size()) {
      b.resize(state_size());
      SGPT_CUDA_CHECK(cudaMemsetAsync(b.get(), 0, b.bytes(), stream_));
    }
    return b;
  }
  // "params" (the fp32 master) or an optimizer state slot by name (any optimizer's: benchmarks
  // and tests switch optimizers on one backend), created empty at first use.
  DeviceBuffer<float>& state(const std::string& slot) {
    if (slot == "params") return master_;
    for (const OptimizerKind& k : optimizer_kinds())
      for (const std::string& s : k.slots)
        if (s == slot) return state_[slot];
    throw std::invalid_argument("CudaBackend: unknown state slot '" + slot + "'");
  }
  size_t slot_bytes(const std::string& slot) const {
    const auto it = state_.find(slot);
    return it == state_.end() ? 0 : it->second.bytes();
  }

  ModelConfig cfg_;
  ParamLayout layout_;
  int T_;
  cudaStream_t stream_;
  cuda::Gpt2Cuda<W> model_;
  cuda::DecayRanges decay_;
  cuda::ReduceScratch reduce_;
  DeviceBuffer<float> master_;
  std::map<std::string, DeviceBuffer<float>> state_;  // optimizer state by slot: this rank's range
  std::map<std::string, std::unique_ptr<cuda::Optimizer>> optimizers_;
  DeviceBuffer<W> weights_, grads_;
  DeviceBuffer<float> acc_;  // fp32 gradient accumulation (bf16 mode, set_grad_accum_fp32)
  bool acc32_ = false;
  uint64_t rounding_seed_ = 0;
  uint32_t opt_step_ = 0;
  DistOptions dist_;
  dist::ShardLayout shard_;
  NcclComm* nccl_ = nullptr;
  bool sharded_ = false, overlap_ = true;
  size_t lo_ = 0, cnt_ = 0;  // this rank's range of the flat buffer (the whole buffer unsharded)
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t ev_compute_ = nullptr, ev_comm_ = nullptr;
  DeviceBuffer<double> avg_;
  // Sophia-H: the Hessian-vector product (made at the first hvp_micro) and the step's probe.
  // [0]: HvpAttention::kAuto (the default), [1]: kMaterialized (set_hvp_fused_attention(false)).
  std::unique_ptr<cuda::HvpCuda<W>> hvp_[2];
  int hvp_B_[2] = {0, 0};
  int hvp_path_ = 0;
  DeviceBuffer<W> probe_;
  bool probe_valid_ = false, probe_rademacher_ = false;
  uint64_t probe_seed_ = 0;
  uint32_t probe_step_ = 0;
  bool reduce_in_backward_ = false;  // the next backward is the last micro-step's
  bool reduced_ = false;             // its layers went to the communication stream
  // CUDA graphs of the micro-step (set_cuda_graphs; run_graphed).
  static constexpr size_t kMaxMicroGraphs = 8;
  bool graphs_ = false;
  std::string graph_error_;
  std::map<std::vector<uintptr_t>, std::unique_ptr<cuda::StepGraph>> micro_graphs_;
  std::set<std::vector<uintptr_t>> warm_keys_;
  uint64_t graph_launches_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& cfg, int max_B, int T,
                                           Precision precision,
                                           const std::vector<float>& init_params,
                                           AttentionImpl attention, const DistOptions& dist) {
  if (precision == Precision::kFp32)
    return std::make_unique<CudaBackend<float>>(cfg, max_B, T, init_params, attention, dist);
  return std::make_unique<CudaBackend<cuda::bf16>>(cfg, max_B, T, init_params, attention, dist);
}

}  // namespace sgpt
