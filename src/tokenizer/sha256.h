// SHA-256 (FIPS 180-4), used to verify the pinned GPT-2 vocabulary files and to fingerprint the
// tokenizer in prepare manifests. Streaming: update() any number of times, then hex().
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sgpt {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::array<uint8_t, 32> digest();  // finishes the hash; call once
  std::string hex();                 // digest() as 64 lowercase hex digits

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
// Hash of a whole file; throws UserError naming the file if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace sgpt
