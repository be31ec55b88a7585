// GPT-2's pre-tokenizer: splits text into the pieces that BPE then merges, with GPT-2's regex
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// matched leftmost-first, repeatedly, as Python's regex.findall does (every position matches
// one alternative, so the pieces tile the text). Implemented with PCRE2 (JIT when available) in
// UTF + UCP mode, so \p{L} and \p{N} are the Unicode letter and number classes of PCRE2's Unicode
// tables. \s is spelled out as the Unicode White_Space property (U+0009..U+000D, U+0020, U+0085,
// U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), which is what Python's
// `regex` module (GPT-2's encoder.py) and tiktoken mean by \s. (JavaScript's \s differs on two
// code points: it includes U+FEFF and excludes U+0085.)
#pragma once
#include <cstddef>
#include <memory>
#include <string_view>

namespace sgpt {

class Pretokenizer {
 public:
  Pretokenizer();  // compiles the pattern; throws std::runtime_error if PCRE2 refuses it
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;

  // Calls f(piece) for each piece of `text`, in order. `text` must be valid UTF-8 (checked by the
  // caller). Thread-safe: match data is per thread.
  template <class F>
  void split(std::string_view text, F&& f) const {
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t end = match_at(text, pos);
      f(text.substr(pos, end - pos));
      pos = end;
    }
  }
  // End of the piece that starts at byte `pos` (pos < text.size()).
  size_t match_at(std::string_view text, size_t pos) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sgpt
