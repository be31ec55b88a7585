#include "model/safetensors.h"

#include <bit>
#include <set>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "model/checkpoint.h"

namespace sgpt {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian elements; this writer copies memory as it is");

size_t safetensors_dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  throw std::invalid_argument("safetensors: unknown dtype '" + dtype + "'");
}

namespace {
size_t tensor_bytes(const SafetensorsTensor& t) {
  size_t n = safetensors_dtype_size(t.dtype);
  for (const int64_t d : t.shape) {
    if (d < 0) throw std::invalid_argument("safetensors: tensor '" + t.name + "' has a negative dimension");
    n *= static_cast<size_t>(d);
  }
  return n;
}
}  // namespace

std::string safetensors_header(const std::vector<SafetensorsTensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::set<std::string> seen;
  size_t offset = 0;
  for (const SafetensorsTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      throw std::invalid_argument("safetensors: bad tensor name '" + t.name + "'");
    if (!seen.insert(t.name).second) throw std::invalid_argument("safetensors: duplicate tensor '" + t.name + "'");
    const size_t n = tensor_bytes(t);
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string json = h.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  const uint64_t len = json.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + json;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = safetensors_header(tensors, metadata);
  std::vector<std::pair<const void*, size_t>> pieces{{header.data(), header.size()}};
  for (const SafetensorsTensor& t : tensors) {
    const size_t n = tensor_bytes(t);
    if (n > 0) pieces.push_back({t.data, n});
  }
  write_file_atomic(path, pieces);
}

}  // namespace sgpt
