// libFuzzer target: the token-file reader (src/data/token_file.h). The input bytes are written to a
// file, which is opened as an llm.c shard and as a nanoGPT file; when it opens, every token is read
// (checked against GPT-2's vocabulary), in one piece and in odd-sized pieces, before and after
// close(). Acceptable: success or sgpt::UserError.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "data/token_file.h"
#include "fuzz_common.h"

namespace {
void exercise(const std::string& path, sgpt::TokenFormat format, const uint8_t* data, size_t size) {
  try {
    sgpt::TokenFile f(path, format);
    const uint64_t n = f.num_tokens();
    const uint64_t header = format == sgpt::TokenFormat::kLlmc ? sgpt::kLlmcHeaderBytes : 0;
    if (header + 2 * n != size) sgpt_fuzz::finding("TokenFile accepted a file whose size does not match its token count");
    std::vector<int> all(n);
    if (n) f.read(0, n, all.data(), 50257);
    for (uint64_t i = 0; i < n; ++i) {  // the values must be the file's bytes
      uint16_t t;
      std::memcpy(&t, data + header + 2 * i, 2);
      if (all[i] != t) sgpt_fuzz::finding("TokenFile::read returned a token that is not in the file");
    }
    f.close();
    std::vector<int> part(7);
    for (uint64_t first = 0; first < n; first += 7) {
      const uint64_t count = std::min<uint64_t>(7, n - first);
      f.read(first, count, part.data(), 50257);
      if (!std::equal(part.begin(), part.begin() + count, all.begin() + first))
        sgpt_fuzz::finding("TokenFile::read in pieces differs from one read");
    }
    // A tiny vocabulary: most tokens are out of range and must be refused with a UserError.
    if (n) f.read(0, n, all.data(), 3);
  } catch (const sgpt::UserError&) {
  } catch (const std::exception& e) {
    sgpt_fuzz::finding("TokenFile threw an unexpected exception", &e);
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = sgpt_fuzz::temp_path("tokens");
  sgpt_fuzz::write_bytes(path, data, size);
  exercise(path, sgpt::TokenFormat::kLlmc, data, size);
  exercise(path, sgpt::TokenFormat::kNanoGpt, data, size);
  return 0;
}
