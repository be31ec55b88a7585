// What the decoders' CUDA graphs share (cuda/decode_cuda.h, cuda/decode_batch.h): page-locked
// host buffers (the host side of the copies a graph holds) and an instantiated graph of one
// decoding step.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "cuda/check.h"

namespace sgpt::cuda {

// Page-locked host memory (cudaHostAlloc): the copies a graph captures must use it.
template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (p_) cudaFreeHost(p_);  // not checked: may run during unwinding
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void resize(size_t n) {
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    if (n == 0) return;
    const cudaError_t e = cudaHostAlloc(reinterpret_cast<void**>(&p_), n * sizeof(T), cudaHostAllocDefault);
    if (e != cudaSuccess) {
      cudaGetLastError();
      p_ = nullptr;
      SGPT_CUDA_CHECK(e);
    }
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

// An instantiated CUDA graph of one decoding step.
struct StepGraph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  int top_k = -1;  // the output mode it was captured for
  ~StepGraph() { clear(); }
  void clear() {
    if (exec) cudaGraphExecDestroy(exec);  // not checked: may run during unwinding
    if (graph) cudaGraphDestroy(graph);
    exec = nullptr;
    graph = nullptr;
    top_k = -1;
  }
  // Records `record()` (the launches of one step on `stream`) as this graph and instantiates it.
  // Where recording throws, the capture is ended and dropped and the exception passes on.
  template <class F>
  void capture(cudaStream_t stream, F&& record) {
    clear();
    SGPT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      record();
    } catch (...) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(stream, &g);  // not checked: the first error is the one to report
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    SGPT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    SGPT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  }
};

}  // namespace sgpt::cuda
