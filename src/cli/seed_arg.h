// A seed given on the command line: a uint64 in decimal. CLI11 would read "-1" as 2^64 - 1, so the
// option is taken as text and parsed here (shared by sample and prepare).
#pragma once
#include <charconv>
#include <cstdint>
#include <string>

#include "common/error.h"

namespace sgpt {
inline uint64_t parse_seed(const std::string& text, const std::string& option) {
  uint64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [p, err] = std::from_chars(text.data(), end, v);
  if (text.empty() || err != std::errc() || p != end)
    throw UserError(option + " '" + text + "' is not a seed: a whole number from 0 to 18446744073709551615");
  return v;
}
}  // namespace sgpt
