// Token corpora for the training tests of the CPU and GPU suites, written as llm.c shards with the
// project's own writer (sgpt::write_llmc_shard). Header-only.
//
// pattern_tokens: a learnable corpus. Token 0 first; after it each token is, with probability
// 1 - 1/one_in, (mul * previous + add) mod V, else uniform. With the default recurrence (5t + 3,
// one token in 10 random) the best achievable loss is about 0.1 ln(V) + H(0.9) ~ 0.75 nats for
// V = 64, far below the ln(V) = 4.16 of a fresh model.
// random_tokens: uniform tokens, nothing to learn (for runs that only have to run).
#pragma once
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "data/loader.h"

namespace sgpt_test {

struct Recurrence {
  int mul = 5, add = 3, one_in = 10;
};

// The recurrence of the GPU training tests: (7t + 11) mod V, one token in 8 random.
inline constexpr Recurrence kGpuRecurrence{7, 11, 8};

inline std::vector<uint16_t> pattern_tokens(int V, size_t n, uint32_t seed, Recurrence r = {}) {
  std::mt19937 rng(seed);
  std::vector<uint16_t> toks(n);
  for (size_t i = 1; i < n; ++i)
    toks[i] = static_cast<uint16_t>(rng() % r.one_in ? (r.mul * toks[i - 1] + r.add) % V : rng() % V);
  return toks;
}

// n tokens, each rng() % V, drawn from `rng` (so that several files can continue one stream).
inline std::vector<uint16_t> random_tokens(int V, size_t n, std::mt19937& rng) {
  std::vector<uint16_t> toks(n);
  for (auto& t : toks) t = static_cast<uint16_t>(rng() % V);
  return toks;
}

inline std::vector<uint16_t> random_tokens(int V, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  return random_tokens(V, n, rng);
}

// Writes `tokens` as an llm.c shard at `path`, creating its folder; returns the path.
inline std::string write_shard(const std::filesystem::path& path, const std::vector<uint16_t>& tokens) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  sgpt::write_llmc_shard(path.string(), tokens);
  return path.string();
}

// The learnable corpus as a shard at `path` (folder created); returns the path.
inline std::string write_pattern_shard(const std::filesystem::path& path, int V, size_t n, uint32_t seed,
                                       Recurrence r = {}) {
  return write_shard(path, pattern_tokens(V, n, seed, r));
}

// Uniform tokens as a shard at `path` (folder created); returns the path.
inline std::string write_random_shard(const std::filesystem::path& path, int V, size_t n, uint32_t seed) {
  return write_shard(path, random_tokens(V, n, seed));
}

}  // namespace sgpt_test
