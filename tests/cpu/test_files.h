// File helpers of the CPU tests: one damaged byte in a file, xz compression. Header-only.
#pragma once
#include <lzma.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace sgpt_test {

// Flips the lowest bit of the byte at offset `at` of the file `p`, in place (a damaged checkpoint,
// say). A file that cannot be opened throws, which fails the test.
inline void flip_byte(const std::filesystem::path& p, std::streamoff at) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + p.string());
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x01);
  f.seekp(at);
  f.write(&c, 1);
}

// `in` as one .xz stream (preset 6, CRC64 check), made with liblzma independently of the reader
// under test.
inline std::string xz_compress(const std::string& in) {
  std::string out(lzma_stream_buffer_bound(in.size()), '\0');
  size_t pos = 0;
  const lzma_ret r = lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const uint8_t*>(in.data()),
                                             in.size(), reinterpret_cast<uint8_t*>(out.data()), &pos, out.size());
  if (r != LZMA_OK) throw std::runtime_error("xz encoding failed");
  out.resize(pos);
  return out;
}

}  // namespace sgpt_test
