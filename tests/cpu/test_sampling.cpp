// Host token sampling (sample/sampling.h): top-k = 1 is argmax, top-p keeps the smallest set with
// mass >= p, temperature scales the logits, the draws are reproducible from the seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "common/error.h"
#include "sample/sampling.h"

using namespace sgpt;

namespace {

std::vector<float> random_logits(int V, uint32_t seed, float stddev = 2.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> l(V);
  for (auto& x : l) x = d(rng);
  return l;
}

SamplingOptions opts(double temperature, int top_k, double top_p, uint64_t seed = 1) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.seed = seed;
  return o;
}

// Logits whose softmax is (0.5, 0.3, 0.15, 0.05), placed at shuffled token ids 7, 2, 9, 0 of V = 10
// (the other six at -inf: probability 0). Relative weights 1, 0.6, 0.3, 0.1 (sum 2).
std::vector<float> four_token_logits() {
  std::vector<float> l(10, -INFINITY);
  l[7] = std::log(0.5f);
  l[2] = std::log(0.3f);
  l[9] = std::log(0.15f);
  l[0] = std::log(0.05f);
  return l;
}

std::vector<int> ids_of(const std::vector<std::pair<int, double>>& d) {
  std::vector<int> r;
  for (auto& [id, p] : d) r.push_back(id);
  return r;
}

}  // namespace

TEST(Sampling, TopK1IsArgmax) {
  for (uint32_t s = 0; s < 20; ++s) {
    const std::vector<float> l = random_logits(1000, s);
    const int argmax = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
    for (double temp : {0.1, 1.0, 10.0})
      for (uint32_t draw = 0; draw < 5; ++draw)
        EXPECT_EQ(sample_token(l.data(), 1000, opts(temp, 1, 1.0, s), draw), argmax);
  }
  // Ties: the smaller token id.
  std::vector<float> tie(8, 0.0f);
  tie[3] = tie[5] = 4.0f;
  EXPECT_EQ(sample_token(tie.data(), 8, opts(1.0, 1, 1.0), 0), 3);
}

TEST(Sampling, TopPKeepsTheSmallestSetWithMassAtLeastP) {
  const std::vector<float> l = four_token_logits();
  const int V = static_cast<int>(l.size());
  // p = 0.45: the top token alone holds 0.5.
  EXPECT_EQ(ids_of(sampling_distribution(l.data(), V, opts(1.0, 0, 0.45))), (std::vector<int>{7}));
  // p = 0.75: 0.5 < 0.75 <= 0.8.
  auto d = sampling_distribution(l.data(), V, opts(1.0, 0, 0.75));
  ASSERT_EQ(ids_of(d), (std::vector<int>{7, 2}));
  EXPECT_NEAR(d[0].second, 0.625, 1e-6);  // renormalised over the kept set
  EXPECT_NEAR(d[1].second, 0.375, 1e-6);
  // p = 0.85: 0.8 < 0.85 <= 0.95.
  EXPECT_EQ(ids_of(sampling_distribution(l.data(), V, opts(1.0, 0, 0.85))), (std::vector<int>{7, 2, 9}));
  // p = 0.99: all four of non-zero probability (and tokens of probability 0 are never drawn).
  EXPECT_EQ(ids_of(sampling_distribution(l.data(), V, opts(1.0, 0, 0.99))), (std::vector<int>{7, 2, 9, 0}));
  // top-k first, then top-p over the k kept (mass relative to their sum, 0.95): k = 3, p = 0.8
  // -> 0.8 * 0.95 = 0.76 <= 0.8: two tokens.
  EXPECT_EQ(ids_of(sampling_distribution(l.data(), V, opts(1.0, 3, 0.8))), (std::vector<int>{7, 2}));
  // Draws only ever give kept tokens, each of them.
  std::map<int, int> seen;
  for (uint32_t draw = 0; draw < 2000; ++draw) seen[sample_token(l.data(), V, opts(1.0, 0, 0.75, 3), draw)]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[7], 0);
  EXPECT_GT(seen[2], 0);
}

// The nucleus over a whole large vocabulary (the growing sorted prefix) against a full sort.
TEST(Sampling, TopPOverTheWholeVocabularyMatchesAFullSort) {
  const int V = 20000;
  for (uint32_t s = 0; s < 4; ++s) {
    const std::vector<float> l = random_logits(V, 100 + s, 3.0f);
    for (double p : {0.1, 0.5, 0.9, 0.999}) {
      std::vector<int> order(V);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
      const float mx = l[order[0]];
      double total = 0;
      for (int i = 0; i < V; ++i) total += std::exp(double(l[i]) - mx);
      double cum = 0;
      size_t keep = 0;
      while (keep < order.size()) {
        cum += std::exp(double(l[order[keep]]) - mx);
        ++keep;
        if (cum >= p * total) break;
      }
      const auto d = sampling_distribution(l.data(), V, opts(1.0, 0, p));
      ASSERT_EQ(d.size(), keep) << "p " << p;
      for (size_t i = 0; i < keep; ++i) EXPECT_EQ(d[i].first, order[i]);
    }
  }
}

TEST(Sampling, TemperatureScalesTheLogits) {
  const int V = 50;
  const std::vector<float> l = random_logits(V, 7);
  for (double temp : {0.25, 1.0, 3.0}) {
    const auto d = sampling_distribution(l.data(), V, opts(temp, 0, 1.0));
    ASSERT_EQ(d.size(), size_t(V));
    double z = 0;
    for (float x : l) z += std::exp(double(x) / temp);
    for (int i = 0; i < V; ++i) {
      EXPECT_EQ(d[i].first, i);  // no truncation: token-id order
      EXPECT_NEAR(d[i].second, std::exp(double(l[i]) / temp) / z, 1e-12) << "T " << temp << " token " << i;
    }
  }
  // Lower temperature concentrates the mass on the argmax.
  const int argmax = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
  const double p_cold = sampling_distribution(l.data(), V, opts(0.25, 0, 1.0))[argmax].second;
  const double p_hot = sampling_distribution(l.data(), V, opts(3.0, 0, 1.0))[argmax].second;
  EXPECT_GT(p_cold, p_hot);
}

// The draws follow the distribution (frequencies over many draws), with and without truncation.
TEST(Sampling, DrawFrequenciesFollowTheDistribution) {
  const int V = 12, n = 40000;
  const std::vector<float> l = random_logits(V, 11, 1.0f);
  for (const SamplingOptions& o : {opts(1.0, 0, 1.0, 5), opts(0.7, 5, 1.0, 6), opts(1.3, 0, 0.8, 7)}) {
    const auto d = sampling_distribution(l.data(), V, o);
    std::vector<int> count(V, 0);
    for (int i = 0; i < n; ++i) count[sample_token(l.data(), V, o, static_cast<uint32_t>(i))]++;
    std::vector<double> want(V, 0.0);
    for (auto& [id, p] : d) want[id] = p;
    for (int v = 0; v < V; ++v) {
      const double f = double(count[v]) / n;
      // 5 standard deviations of a binomial frequency.
      EXPECT_NEAR(f, want[v], 5 * std::sqrt(want[v] * (1 - want[v]) / n) + 1e-9) << "token " << v;
    }
  }
}

TEST(Sampling, SeedDeterminism) {
  const int V = 500;
  const std::vector<float> l = random_logits(V, 3, 0.5f);
  auto draws = [&](uint64_t seed) {
    std::vector<int> r;
    for (uint32_t i = 0; i < 64; ++i) r.push_back(sample_token(l.data(), V, opts(1.0, 0, 1.0, seed), i));
    return r;
  };
  EXPECT_EQ(draws(42), draws(42));
  EXPECT_NE(draws(42), draws(43));
  // The draw index selects the uniform: the same (seed, draw) gives the same uniform.
  EXPECT_EQ(sampling_uniform(9, 4), sampling_uniform(9, 4));
  EXPECT_NE(sampling_uniform(9, 4), sampling_uniform(9, 5));
  EXPECT_NE(sampling_uniform(9, 4), sampling_uniform(10, 4));
}

TEST(Sampling, NonFiniteLogitsDoNotCrash) {
  std::vector<float> l(20, std::nanf(""));
  EXPECT_EQ(sample_token(l.data(), 20, opts(1.0, 5, 0.9), 0), 0);
  l[13] = 1.0f;  // NaN counts as -inf: the one finite logit wins
  EXPECT_EQ(sample_token(l.data(), 20, opts(1.0, 0, 1.0), 0), 13);
  l[4] = INFINITY;
  EXPECT_EQ(sample_token(l.data(), 20, opts(1.0, 0, 1.0), 0), 4);
  std::vector<float> ninf(20, -INFINITY);
  EXPECT_EQ(sample_token(ninf.data(), 20, opts(1.0, 0, 0.5), 0), 0);
}

TEST(Sampling, OptionsAreValidated) {
  EXPECT_NO_THROW(validate_sampling_options(opts(0.8, 40, 0.95)));
  auto msg = [](const SamplingOptions& o, const char* prefix) {
    try {
      validate_sampling_options(o, prefix);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg(opts(0.0, 0, 1.0), "--").find("--temperature"), std::string::npos);
  EXPECT_NE(msg(opts(1.0, -1, 1.0), "--").find("--top-k"), std::string::npos);
  EXPECT_NE(msg(opts(1.0, 0, 0.0), "--").find("--top-p"), std::string::npos);
  EXPECT_NE(msg(opts(1.0, 0, 1.5), "sample.").find("sample.top_p"), std::string::npos);
}

// ---- sampling from the top candidates (sample_token_top: what the GPU decoders use) ----

// Logits with ties, -0 beside +0, NaN, -inf and repeated values: the order of step 1 must hold
// for all of them.
static std::vector<float> awkward_logits(int V, uint32_t seed) {
  std::vector<float> l = random_logits(V, seed);
  std::mt19937 rng(seed + 100);
  for (int i = 0; i < V; i += 7) l[i] = l[(i * 13 + 5) % V];  // ties
  for (int i = 3; i < V; i += 11) l[i] = (i % 2) ? 0.0f : -0.0f;
  l[V / 2] = NAN;
  l[V / 3] = -INFINITY;
  return l;
}

TEST(Sampling, TopCandidatesGiveTheSameTokens) {
  const int V = 500;
  for (uint32_t s = 0; s < 6; ++s) {
    const std::vector<float> l = awkward_logits(V, s);
    for (int k : {1, 2, 40, 64, 499}) {
      const std::vector<Candidate> top = top_candidates(l.data(), V, k);
      ASSERT_EQ(static_cast<int>(top.size()), k);
      for (int i = 1; i < k; ++i)  // decreasing keys, smaller id first on ties
        EXPECT_TRUE(top[i - 1].key > top[i].key || (top[i - 1].key == top[i].key && top[i - 1].id < top[i].id));
      for (double temp : {0.5, 1.0, 3.0})
        for (double p : {1.0, 0.9, 0.3}) {
          const SamplingOptions o = opts(temp, k, p, 1000 + s);
          ASSERT_EQ(candidates_needed(o, V), k);
          for (uint32_t draw = 0; draw < 20; ++draw)
            EXPECT_EQ(sample_token_top(top.data(), k, V, o, draw), sample_token(l.data(), V, o, draw))
                << "k " << k << " temperature " << temp << " p " << p << " draw " << draw;
        }
    }
  }
}

TEST(Sampling, TopCandidatesOfNonFiniteLogits) {
  const int V = 50;
  std::vector<float> nan(V, NAN), ninf(V, -INFINITY), pinf = random_logits(V, 3);
  pinf[17] = INFINITY;
  pinf[30] = INFINITY;
  for (const auto* l : {&nan, &ninf, &pinf}) {
    const SamplingOptions o = opts(1.0, 5, 1.0, 9);
    const std::vector<Candidate> top = top_candidates(l->data(), V, 5);
    for (uint32_t draw = 0; draw < 5; ++draw)
      EXPECT_EQ(sample_token_top(top.data(), 5, V, o, draw), sample_token(l->data(), V, o, draw));
  }
  EXPECT_EQ(top_candidates(pinf.data(), V, 1)[0].id, 17);
  EXPECT_EQ(top_candidates(nan.data(), V, 1)[0].id, 0);
}

TEST(Sampling, CandidatesNeeded) {
  EXPECT_EQ(candidates_needed(opts(1.0, 0, 1.0), 100), 0);    // no cut: every logit
  EXPECT_EQ(candidates_needed(opts(1.0, 0, 0.9), 100), 0);    // nucleus over everything
  EXPECT_EQ(candidates_needed(opts(1.0, 100, 1.0), 100), 0);  // k >= V: no cut
  EXPECT_EQ(candidates_needed(opts(1.0, 40, 0.9), 100), 40);
  EXPECT_EQ(candidates_needed(opts(1.0, 1, 1.0), 100), 1);
  const std::vector<float> l = random_logits(100, 1);
  const std::vector<Candidate> top = top_candidates(l.data(), 100, 10);
  EXPECT_THROW(sample_token_top(top.data(), 10, 100, opts(1.0, 20, 1.0), 0), std::invalid_argument);
  EXPECT_THROW(top_candidates(l.data(), 100, 0), std::invalid_argument);
  EXPECT_THROW(top_candidates(l.data(), 100, 101), std::invalid_argument);
}
