// A random permutation of [0, n) that is computed, not stored: a 4-round Feistel network over the
// smallest even number of bits covering n, with cycle walking (re-apply until the value is < n;
// fewer than 4 tries on average). Round function: Philox4x32-10 (common/philox.h) keyed by the
// seed, counter (x, tweak_a, tweak_b * 8 + round, kDataSampler). The same (n, seed, tweaks) gives
// the same permutation on every machine, and shuffling a shard of a billion sequences costs no
// memory.
#pragma once
#include <cstdint>

#include "common/philox.h"

namespace sgpt {

class FeistelPermutation {
 public:
  FeistelPermutation(uint64_t n, uint64_t seed, uint32_t tweak_a, uint32_t tweak_b)
      : n_(n), seed_(seed), a_(tweak_a), b_(tweak_b) {
    int bits = 2;
    while (bits < 64 && (uint64_t(1) << bits) < n) bits += 2;
    half_ = bits / 2;
    mask_ = (uint64_t(1) << half_) - 1;
  }
  // The image of i (i < n).
  uint64_t operator()(uint64_t i) const {
    if (n_ <= 1) return 0;
    uint64_t x = i;
    do x = encrypt(x);
    while (x >= n_);
    return x;
  }

 private:
  uint64_t encrypt(uint64_t x) const {
    uint64_t l = x >> half_, r = x & mask_;
    for (uint32_t round = 0; round < 4; ++round) {
      const uint64_t f = philox(seed_, uint32_t(r), a_, b_ * 8u + round, kDataSampler).v[0] & mask_;
      const uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    return (l << half_) | r;
  }
  uint64_t n_, seed_;
  uint32_t a_, b_;
  int half_;
  uint64_t mask_;
};

}  // namespace sgpt
