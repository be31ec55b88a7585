// libFuzzer target: the GPT-2 tokenizer (src/tokenizer/tokenizer.h) on arbitrary bytes, with the
// vocabulary of data/cache/gpt2 (scripts/fetch_assets.sh gpt2; SGPT_FUZZ_VOCAB overrides the
// directory). Invalid UTF-8 must be refused with sgpt::UserError; valid UTF-8 must round-trip,
// decode(encode(x)) == x, with and without allow_special, and every id must be in range. The
// input is also decoded as a sequence of little-endian uint16 ids (UserError for ids >= 50257).
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

#ifndef SGPT_SOURCE_DIR
#define SGPT_SOURCE_DIR "."
#endif

namespace {
const sgpt::Tokenizer& tokenizer() {
  static const sgpt::Tokenizer t = [] {
    const char* dir = std::getenv("SGPT_FUZZ_VOCAB");
    return sgpt::Tokenizer::load(dir && *dir ? dir : SGPT_SOURCE_DIR "/data/cache/gpt2");
  }();
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizer();  // load once, outside the timed inputs (a missing vocabulary aborts here)
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const sgpt::Tokenizer& tok = tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid = sgpt::utf8_valid(text);
  for (bool special : {false, true}) {
    std::vector<int> ids;
    try {
      ids = tok.encode(text, special);
    } catch (const sgpt::UserError&) {
      if (valid) sgpt_fuzz::finding("encode refused valid UTF-8");
      continue;
    } catch (const std::exception& e) {
      sgpt_fuzz::finding("encode threw an unexpected exception", &e);
    }
    if (!valid) sgpt_fuzz::finding("encode accepted invalid UTF-8");
    for (int id : ids)
      if (id < 0 || id >= tok.vocab_size()) sgpt_fuzz::finding("encode produced an id out of range");
    if (!special)
      for (int id : ids)
        if (id == tok.eot()) sgpt_fuzz::finding("encode without allow_special produced <|endoftext|>");
    std::string back;
    try {
      back = tok.decode(ids);
    } catch (const std::exception& e) {
      sgpt_fuzz::finding("decode of encode's own ids threw", &e);
    }
    if (back != text) sgpt_fuzz::finding("decode(encode(x)) != x");
  }
  // The bytes as ids.
  std::vector<int> ids(size / 2);
  for (size_t i = 0; i < ids.size(); ++i) {
    uint16_t v;
    std::memcpy(&v, data + 2 * i, 2);
    ids[i] = v;
  }
  try {
    (void)tok.decode(ids);
  } catch (const sgpt::UserError&) {
  } catch (const std::exception& e) {
    sgpt_fuzz::finding("decode threw an unexpected exception", &e);
  }
  return 0;
}
