// NcclComm over NCCL's C API (nccl.h). See nccl_comm.h.
#include "cuda/nccl_comm.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "cuda/check.h"

namespace sgpt::cuda {
namespace {

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress)
    throw std::runtime_error(std::string("NCCL ") + what + " failed: " + ncclGetErrorString(r) +
                             (r == ncclSystemError || r == ncclRemoteError
                                  ? " (another rank probably failed; see its output)"
                                  : ""));
}

ncclDataType_t nccl_type(CommType t) {
  switch (t) {
    case CommType::kFloat: return ncclFloat32;
    case CommType::kBf16: return ncclBfloat16;
    case CommType::kDouble: return ncclFloat64;
  }
  return ncclFloat32;
}

size_t type_size(CommType t) { return t == CommType::kBf16 ? 2 : t == CommType::kFloat ? 4 : 8; }

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

class NcclCommImpl final : public NcclComm {
 public:
  NcclCommImpl(int rank, int world, const std::vector<uint8_t>& id) : rank_(rank), world_(world) {
    if (id.size() != sizeof(ncclUniqueId))
      throw std::runtime_error("NCCL unique id of the wrong size (" + std::to_string(id.size()) + " bytes)");
    ncclUniqueId uid;
    std::memcpy(&uid, id.data(), sizeof uid);
    nccl_check(ncclCommInitRank(&comm_, world, uid, rank), "ncclCommInitRank");
    SGPT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~NcclCommImpl() override {
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_ && !aborted_) ncclCommDestroy(comm_);
    if (staging_) cudaFree(staging_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string name() const override { return "nccl"; }

  void allreduce_sum(double* x, size_t n) override { host_allreduce(x, n, CommType::kDouble); }
  void allreduce_sum(float* x, size_t n) override { host_allreduce(x, n, CommType::kFloat); }
  void reduce_scatter_sum(float* x, size_t shard) override {
    void* d = stage(x, shard * world_ * 4);
    reduce_scatter_dev(d, shard, CommType::kFloat, stream_);
    unstage(x, d, shard * world_ * 4);
  }
  void allgather(float* x, size_t shard) override {
    void* d = stage(x, shard * world_ * 4);
    allgather_dev(d, shard, CommType::kFloat, stream_);
    unstage(x, d, shard * world_ * 4);
  }
  void broadcast(void* bytes, size_t n, int root) override {
    void* d = stage(bytes, n);
    nccl_check(ncclBroadcast(d, d, n, ncclUint8, root, comm_, stream_), "ncclBroadcast");
    unstage(bytes, d, n);
  }
  void barrier() override {
    double x = 0;
    host_allreduce(&x, 1, CommType::kDouble);
  }
  void abort(int) noexcept override {
    if (comm_ && !aborted_) {
      aborted_ = true;
      ncclCommAbort(comm_);
    }
  }

  void allreduce_dev(void* buf, size_t n, CommType t, void* stream) override {
    nccl_check(ncclAllReduce(buf, buf, n, nccl_type(t), ncclSum, comm_, as_stream(stream)), "ncclAllReduce");
  }
  void reduce_dev(void* buf, size_t n, CommType t, int root, void* stream) override {
    nccl_check(ncclReduce(buf, buf, n, nccl_type(t), ncclSum, root, comm_, as_stream(stream)), "ncclReduce");
  }
  void reduce_scatter_dev(void* buf, size_t shard, CommType t, void* stream) override {
    char* b = static_cast<char*>(buf);
    nccl_check(ncclReduceScatter(b, b + rank_ * shard * type_size(t), shard, nccl_type(t), ncclSum,
                                 comm_, as_stream(stream)),
               "ncclReduceScatter");
  }
  void allgather_dev(void* buf, size_t shard, CommType t, void* stream) override {
    char* b = static_cast<char*>(buf);
    nccl_check(ncclAllGather(b + rank_ * shard * type_size(t), b, shard, nccl_type(t), comm_,
                             as_stream(stream)),
               "ncclAllGather");
  }
  void group_start() override { nccl_check(ncclGroupStart(), "ncclGroupStart"); }
  void group_end() override { nccl_check(ncclGroupEnd(), "ncclGroupEnd"); }

  void sync(void* stream) override {
    const cudaStream_t s = as_stream(stream);
    for (int spin = 0;; ++spin) {
      const cudaError_t e = cudaStreamQuery(s);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) SGPT_CUDA_CHECK(e);
      ncclResult_t async = ncclSuccess;
      nccl_check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
      nccl_check(async, "communication");
      if (spin > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  void* stage(const void* host, size_t bytes) {
    if (bytes > staging_bytes_) {
      if (staging_) SGPT_CUDA_CHECK(cudaFree(staging_));
      staging_ = nullptr;
      SGPT_CUDA_CHECK(cudaMalloc(&staging_, bytes));
      staging_bytes_ = bytes;
    }
    SGPT_CUDA_CHECK(cudaMemcpyAsync(staging_, host, bytes, cudaMemcpyHostToDevice, stream_));
    return staging_;
  }
  void unstage(void* host, const void* dev, size_t bytes) {
    SGPT_CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream_));
    sync(stream_);
  }
  void host_allreduce(void* x, size_t n, CommType t) {
    void* d = stage(x, n * type_size(t));
    allreduce_dev(d, n, t, stream_);
    unstage(x, d, n * type_size(t));
  }

  int rank_, world_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
  bool aborted_ = false;
};

}  // namespace

std::vector<uint8_t> NcclComm::unique_id() {
  ncclUniqueId id;
  nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  std::vector<uint8_t> v(sizeof id);
  std::memcpy(v.data(), &id, sizeof id);
  return v;
}

std::unique_ptr<NcclComm> NcclComm::create(int rank, int world, const std::vector<uint8_t>& id) {
  return std::make_unique<NcclCommImpl>(rank, world, id);
}

std::string NcclComm::version() {
  int v = 0;
  ncclGetVersion(&v);
  return "NCCL " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

}  // namespace sgpt::cuda
