// Host-side token sampling from logits: temperature, top-k, top-p (nucleus), seeded by Philox.
// Shared by every decoder (CPU and GPU: the GPU decoder downloads its logits and samples here),
// so for the same logits and the same options the same token comes out, whatever computed them.
//
// The distribution for one draw, from logits l[0..V):
//   1. candidates ordered by logit, largest first (ties: smaller token id first); NaN counts as
//      -infinity;
//   2. top-k: keep the first k candidates (k = 0 or k >= V: all);
//   3. weights w_i = exp((l_i - l_max) / temperature), in double;
//   4. top-p: keep the shortest prefix of the kept candidates whose weight is at least
//      p * (sum of the kept weights) (p >= 1: all of them); at least one candidate always stays;
//   5. probabilities = w_i / sum over the kept.
// The draw: u = uniform01_double(Philox(seed, counter = (draw, 0, 0), stream kTextSampling)),
// the token is the first kept candidate whose cumulative weight exceeds u * sum. `draw` is the
// index of the generated token (0 for the first), so a run is reproducible from its seed.
// Without truncation (k >= V and p >= 1) the candidates are walked in token-id order instead of
// sorted (same distribution, no O(V log V) sort per token).
// When no logit is finite (or the largest is +inf) the distribution is the single first
// candidate: a broken model still yields tokens instead of a crash.
// Greedy decoding is --top-k 1 (any temperature): the largest logit, the smaller id on ties.
//
// With a top-k cut (1 <= k < V) only the k first candidates enter steps 3-5, so a decoder may
// select them itself (the GPU decoders do, on the device: only k candidates then travel to the
// host) and sample_token_top() draws the same token from them as sample_token() from all logits.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace sgpt {

struct SamplingOptions {
  double temperature = 1.0;  // > 0
  int top_k = 0;             // 0: no top-k cut
  double top_p = 1.0;        // in (0, 1]; 1: no nucleus cut
  uint64_t seed = 1;
};

// Throws UserError naming the option (`prefix` + "temperature", ...) when out of range.
void validate_sampling_options(const SamplingOptions& o, const char* prefix = "--");

// The kept candidates and their probabilities (summing to 1), in the walk order described above.
std::vector<std::pair<int, double>> sampling_distribution(const float* logits, int V,
                                                          const SamplingOptions& o);

// One token from logits[0..V) with the uniform of draw number `draw`.
int sample_token(const float* logits, int V, const SamplingOptions& o, uint32_t draw);

// The uniform in [0, 1) that draw number `draw` of seed `seed` uses.
double sampling_uniform(uint64_t seed, uint32_t draw);

// One candidate of step 1: its token id and its ordering key (the logit, NaN as -infinity).
struct Candidate {
  int id;
  float key;
};

// How many first candidates sample_token needs for these options over V logits: top_k when
// 1 <= top_k < V, else 0 (every logit is needed: no top-k cut).
int candidates_needed(const SamplingOptions& o, int V);

// The first k candidates of step 1 (1 <= k <= V), in order.
std::vector<Candidate> top_candidates(const float* logits, int V, int k);

// sample_token from the first k = candidates_needed(o, V) > 0 candidates (top_candidates or a
// decoder's own selection of them): the same token as sample_token(logits, V, o, draw). A key of
// -0 may stand for +0 (they compare equal). std::invalid_argument when k does not match.
int sample_token_top(const Candidate* top, int k, int V, const SamplingOptions& o, uint32_t draw);

}  // namespace sgpt
