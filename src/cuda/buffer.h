// Owning device allocations (cudaMalloc; never managed memory) and a growable scratch area.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "cuda/check.h"

namespace sgpt::cuda {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  // Reallocates (contents lost) when n differs from the current size. A failed cudaMalloc (out
  // of memory) throws with the buffer left empty and CUDA's last-error state cleared, so the
  // process can free memory and carry on (cudaGetLastError would otherwise report it at the next
  // kernel launch check).
  void resize(size_t n) {
    if (n == n_) return;
    release();
    if (n == 0) return;
    const cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T));
    if (e != cudaSuccess) {
      cudaGetLastError();
      ptr_ = nullptr;
      SGPT_CUDA_CHECK(e);
    }
    n_ = n;
  }
  void release() {
    if (ptr_) cudaFree(ptr_);  // not checked: may run during unwinding
    ptr_ = nullptr;
    n_ = 0;
  }

  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

  void upload(const T* host, size_t n, cudaStream_t s = nullptr) {
    SGPT_CUDA_CHECK(cudaMemcpyAsync(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
  }
  void upload(const std::vector<T>& host, cudaStream_t s = nullptr) {
    resize(host.size());
    upload(host.data(), host.size(), s);
  }
  std::vector<T> download(cudaStream_t s = nullptr) const {
    std::vector<T> out(n_);
    if (n_ == 0) return out;
    SGPT_CUDA_CHECK(cudaMemcpyAsync(out.data(), ptr_, bytes(), cudaMemcpyDeviceToHost, s));
    SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
    return out;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// Scratch memory that grows to the largest request seen (the first step allocates; later steps
// reuse). Callers must not hold two pointers from it at once.
class Scratch {
 public:
  float* floats(size_t n) {
    if (buf_.size() < n) buf_.resize(n);
    return buf_.get();
  }
  size_t bytes() const { return buf_.bytes(); }
  const float* data() const { return buf_.get(); }  // the current allocation (nullptr: none yet)

 private:
  DeviceBuffer<float> buf_;
};

}  // namespace sgpt::cuda
