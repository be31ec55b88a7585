// A learnable token file for the GPU training tests: mostly a fixed recurrence
// (next = (7 * previous + 11) mod V), one token in 8 random. Header-only.
#pragma once
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "data/loader.h"

inline std::string pattern_shard(const std::filesystem::path& dir, const std::string& name, int V, size_t n,
                                 uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint16_t> toks(n);
  for (size_t i = 1; i < n; ++i)
    toks[i] = static_cast<uint16_t>((rng() % 8) ? (7 * toks[i - 1] + 11) % V : rng() % V);
  std::filesystem::create_directories(dir);
  const std::string p = (dir / name).string();
  sgpt::write_llmc_shard(p, toks);
  return p;
}
