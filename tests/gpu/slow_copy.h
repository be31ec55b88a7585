// A test kernel for the batch decoder's dependent launches (tests/gpu/test_decode_fast.cpp): a copy
// that lets the next kernel on the stream start at once (griddepcontrol.launch_dependents, where
// compiled for sm_90 or later) and only then spins for spin_cycles clock cycles before writing.
// A kernel launched after it as a dependent launch reads dst before the copy lands unless it waits.
// Plain C++ header.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

namespace sgpt::test {

// dst[i] = src[i], i < n, on `stream` (4 blocks of 256 threads), after spinning spin_cycles.
// std::runtime_error when the launch fails.
void slow_copy(float* dst, const float* src, size_t n, long long spin_cycles, cudaStream_t stream);

}  // namespace sgpt::test
