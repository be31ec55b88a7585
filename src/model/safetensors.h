// Writing the safetensors format (the weights file of Hugging Face model folders).
//
// Layout of a file:
//   8 bytes   N, unsigned 64-bit little-endian: the length of the header
//   N bytes   the header: a UTF-8 JSON object, padded at the end with spaces (0x20) so that the
//             tensor data starts at a multiple of 8 bytes (N is a multiple of 8 here)
//   the rest  the byte buffer: every tensor's raw little-endian elements, row-major, one after the
//             other with no gap and no overlap
// The header maps each tensor name to {"dtype": "F32" | "BF16" | ..., "shape": [d0, d1, ...],
// "data_offsets": [begin, end]} with begin/end in bytes relative to the start of the byte buffer,
// end - begin = product(shape) * element size; the optional key "__metadata__" maps to an object of
// string values ({"format": "pt"} tells transformers the tensors come from PyTorch's layout).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sgpt {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;            // "F32" or "BF16" (the element size follows from it)
  std::vector<int64_t> shape;   // row-major
  const void* data = nullptr;   // product(shape) elements, little-endian
};

// Bytes per element of a safetensors dtype name (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL).
// Throws std::invalid_argument for another name.
size_t safetensors_dtype_size(const std::string& dtype);

// The first 8 + N bytes of the file: the length and the padded JSON header. Tensors are laid out in
// the order given. Throws std::invalid_argument on a duplicate or empty name, a negative dimension
// or an unknown dtype.
std::string safetensors_header(const std::vector<SafetensorsTensor>& tensors,
                               const std::map<std::string, std::string>& metadata);

// Writes the file atomically (write_file_atomic: temporary name, fsync, rename); a UserError
// naming path on failure.
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace sgpt
