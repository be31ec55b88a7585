// Philox4x32-10 counter-based random number generator (Salmon et al., SC'11), usable from host and
// device code. The same (key, counter) gives the same four 32-bit words on the CPU and the GPU, so
// both backends draw identical GNB labels, initial weights and data positions.
//
// Keying used by the project (one place, so CPU and GPU agree):
//   key     = (seed low 32 bits, seed high 32 bits)
//   counter = (c0, c1, c2, stream)  with stream one of the Stream tags below.
//   GNB labels: c0 = position t in the sequence, c1 = global sequence index in the step's batch,
//               c2 = optimizer step, stream = kGnbLabels.
//   Hutchinson probes (Sophia-H): c0, c1 = low and high 32 bits of (global flat parameter index
//               / 2) for Gaussian probes, (index / 4) for Rademacher ones; c2 = optimizer step,
//               stream = kHutchinson.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SGPT_HD __host__ __device__ __forceinline__
#else
#define SGPT_HD inline
#endif

namespace sgpt {

enum PhiloxStream : uint32_t {
  kGnbLabels = 1,
  kInitWeights = 2,
  kDataSampler = 3,
  kStochasticRounding = 4,
  kTextSampling = 5,
  kHutchinson = 6,
};

struct Philox4 {
  uint32_t v[4];
};

SGPT_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Ten rounds of Philox4x32 on counter (c0..c3) with key (k0, k1).
SGPT_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                              uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  const uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(M0, c0, hi0, lo0);
    philox_mulhilo(M1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

SGPT_HD Philox4 philox(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t stream) {
  return philox4x32_10(c0, c1, c2, stream, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

// Uniform float in [0, 1) from the top 24 bits of a word (exactly representable, never 1.0).
SGPT_HD float uniform01(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

// Uniform double in [0, 1) from two words (53 bits).
SGPT_HD double uniform01_double(uint32_t a, uint32_t b) {
  const uint64_t bits = (static_cast<uint64_t>(a) << 21) ^ static_cast<uint64_t>(b >> 11);
  return static_cast<double>(bits & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// The uniform that selects the GNB label of position t of global sequence `seq` at `step`.
SGPT_HD float gnb_uniform(uint64_t seed, uint32_t step, uint32_t seq, uint32_t t) {
  return uniform01(philox(seed, t, seq, step, kGnbLabels).v[0]);
}

// Element `index` of Sophia-H's probe vector u at `step` (the Hutchinson estimator, src/train/
// hutchinson.cpp): Rademacher (+1 or -1 from bit 31 of word index % 4 of counter index / 4), or
// a standard normal (Box-Muller in double on the two 53-bit uniforms of counter index / 2: the
// cosine branch for even indices, the sine branch for odd ones), rounded to float. The same on
// every backend and for any number of ranks.
SGPT_HD float hutchinson_probe(uint64_t seed, uint32_t step, uint64_t index, bool rademacher) {
  if (rademacher) {
    const uint64_t q = index >> 2;
    const Philox4 r = philox(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32), step, kHutchinson);
    return (r.v[index & 3] >> 31) ? -1.0f : 1.0f;
  }
  const uint64_t q = index >> 1;
  const Philox4 r = philox(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32), step, kHutchinson);
  const double u1 = 1.0 - uniform01_double(r.v[0], r.v[1]);  // (0, 1]: the log is finite
  const double u2 = uniform01_double(r.v[2], r.v[3]);
  const double radius = sqrt(-2.0 * log(u1));
  const double angle = 6.283185307179586 * u2;
  return static_cast<float>(radius * ((index & 1) ? sin(angle) : cos(angle)));
}
}  // namespace sgpt
