// CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78; init and final xor 0xFFFFFFFF),
// the checksum of the model and training-state files (src/model/checkpoint.h, docs/reliability.md).
// Known answer: crc32c("123456789") = 0xE3069283. Software slice-by-8, and the SSE4.2 crc32
// instruction on x86-64 when the CPU has it (the same values: tests/cpu/test_reliability.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

namespace sgpt {

// Continues a CRC: crc32c_update(crc32c_update(0, a, n), b, m) == crc32c of a followed by b.
// Start with 0.
uint32_t crc32c_update(uint32_t crc, const void* data, size_t n);
inline uint32_t crc32c(const void* data, size_t n) { return crc32c_update(0, data, n); }

// The portable implementation alone (tests compare it with the dispatched one).
uint32_t crc32c_update_portable(uint32_t crc, const void* data, size_t n);

}  // namespace sgpt
