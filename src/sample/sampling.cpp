// Host-side token sampling (see sample/sampling.h for the distribution and the draw).
#include "sample/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "common/error.h"
#include "common/philox.h"

namespace sgpt {
namespace {

// The kept candidates in walk order with their (unnormalised) weights.
struct Kept {
  std::vector<int> ids;
  std::vector<double> w;
  double sum = 0;
};

// Steps 3-5 from the first k < V candidates in order (ids, keys: NaN already -infinity): the
// top-k cut, then top-p within it.
Kept kept_from_top(const int* ids, const float* keys, int k, const SamplingOptions& o) {
  Kept r;
  const float mx = keys[0];
  if (!std::isfinite(mx)) {  // every logit NaN / -inf, or a +inf: the first candidate alone
    r.ids = {ids[0]};
    r.w = {1.0};
    r.sum = 1.0;
    return r;
  }
  const double inv_t = 1.0 / o.temperature;
  std::vector<double> w(k);
  double sum_k = 0;
  for (int i = 0; i < k; ++i) sum_k += w[i] = std::exp((static_cast<double>(keys[i]) - mx) * inv_t);
  int keep = k;
  if (o.top_p < 1.0) {
    const double target = o.top_p * sum_k;
    double cum = 0;
    for (int i = 0; i < k; ++i) {
      cum += w[i];
      if (cum >= target) {
        keep = i + 1;
        break;
      }
    }
  }
  keep = std::max(keep, 1);
  r.ids.assign(ids, ids + keep);
  r.w.assign(w.begin(), w.begin() + keep);
  r.sum = 0;
  for (double x : r.w) r.sum += x;
  return r;
}

Kept kept_candidates(const float* logits, int V, const SamplingOptions& o) {
  if (V < 1) throw std::invalid_argument("sampling: need at least one logit");
  auto key = [logits](int i) {
    const float l = logits[i];
    return std::isnan(l) ? -INFINITY : l;
  };
  float mx = -INFINITY;
  int first_max = 0;
  for (int i = 0; i < V; ++i) {
    if (key(i) > mx) {
      mx = key(i);
      first_max = i;
    }
  }
  Kept r;
  if (!std::isfinite(mx)) {  // every logit NaN / -inf, or a +inf: the first candidate alone
    r.ids = {first_max};
    r.w = {1.0};
    r.sum = 1.0;
    return r;
  }
  const double inv_t = 1.0 / o.temperature;
  auto weight = [&](int i) { return std::exp((static_cast<double>(key(i)) - mx) * inv_t); };
  const int k = (o.top_k <= 0 || o.top_k >= V) ? V : o.top_k;
  const bool nucleus = o.top_p < 1.0;

  if (k == V && !nucleus) {  // no truncation: token-id order, no sort
    r.ids.resize(V);
    r.w.resize(V);
    for (int i = 0; i < V; ++i) {
      r.ids[i] = i;
      r.w[i] = weight(i);
      r.sum += r.w[i];
    }
    return r;
  }

  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  auto before = [&](int a, int b) {
    const float ka = key(a), kb = key(b);
    return ka > kb || (ka == kb && a < b);
  };
  // Sorts the first m candidates; returns their weights and their sum.
  auto top = [&](int m, std::vector<double>& w) {
    std::partial_sort(order.begin(), order.begin() + m, order.end(), before);
    w.resize(m);
    double s = 0;
    for (int i = 0; i < m; ++i) s += w[i] = weight(order[i]);
    return s;
  };

  if (k < V) {  // the top-k cut: steps 3-5 from the first k candidates alone
    std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
    std::vector<float> keys(k);
    for (int i = 0; i < k; ++i) keys[i] = key(order[i]);
    return kept_from_top(order.data(), keys.data(), k, o);
  }

  // Nucleus over the whole vocabulary: sort a growing prefix until it holds mass p.
  std::vector<double> w;
  int keep = 0;
  double sum_all = 0;
  for (int i = 0; i < V; ++i) sum_all += weight(i);
  const double target = o.top_p * sum_all;
  for (int m = std::min(V, 256);; m = std::min(V, 4 * m)) {
    top(m, w);
    double cum = 0;
    keep = 0;
    for (int i = 0; i < m; ++i) {
      cum += w[i];
      if (cum >= target) {
        keep = i + 1;
        break;
      }
    }
    if (keep > 0) break;
    if (m == V) {
      keep = V;  // rounding kept the prefix sums just below the target: keep everything
      break;
    }
  }
  keep = std::max(keep, 1);
  r.ids.assign(order.begin(), order.begin() + keep);
  r.w.assign(w.begin(), w.begin() + keep);
  r.sum = 0;
  for (double x : r.w) r.sum += x;
  return r;
}

}  // namespace

void validate_sampling_options(const SamplingOptions& o, const char* prefix) {
  const std::string p = prefix;
  if (!(o.temperature > 0) || !std::isfinite(o.temperature))
    throw UserError(p + "temperature must be a finite number > 0, got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw UserError(p + "top" + (p == "--" ? "-" : "_") + "k must be >= 0 (0: no cut), got " +
                                   std::to_string(o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1))
    throw UserError(p + "top" + (p == "--" ? "-" : "_") + "p must be in (0, 1] (1: no cut), got " +
                    std::to_string(o.top_p));
}

double sampling_uniform(uint64_t seed, uint32_t draw) {
  const Philox4 r = philox(seed, draw, 0, 0, kTextSampling);
  return uniform01_double(r.v[0], r.v[1]);
}

std::vector<std::pair<int, double>> sampling_distribution(const float* logits, int V,
                                                          const SamplingOptions& o) {
  const Kept k = kept_candidates(logits, V, o);
  std::vector<std::pair<int, double>> d(k.ids.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = {k.ids[i], k.w[i] / k.sum};
  return d;
}

namespace {

// The draw: where u * sum falls in the cumulative weights of the kept candidates.
int draw_from(const Kept& k, const SamplingOptions& o, uint32_t draw) {
  const double u = sampling_uniform(o.seed, draw) * k.sum;
  double cum = 0;
  for (size_t i = 0; i < k.ids.size(); ++i) {
    cum += k.w[i];
    if (u < cum) return k.ids[i];
  }
  return k.ids.back();
}

}  // namespace

int sample_token(const float* logits, int V, const SamplingOptions& o, uint32_t draw) {
  return draw_from(kept_candidates(logits, V, o), o, draw);
}

int candidates_needed(const SamplingOptions& o, int V) {
  return (o.top_k >= 1 && o.top_k < V) ? o.top_k : 0;
}

std::vector<Candidate> top_candidates(const float* logits, int V, int k) {
  if (k < 1 || k > V) throw std::invalid_argument("top_candidates: need 1 <= k <= V");
  auto key = [logits](int i) {
    const float l = logits[i];
    return std::isnan(l) ? -INFINITY : l;
  };
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    const float ka = key(a), kb = key(b);
    return ka > kb || (ka == kb && a < b);
  });
  std::vector<Candidate> top(k);
  for (int i = 0; i < k; ++i) top[i] = {order[i], key(order[i])};
  return top;
}

int sample_token_top(const Candidate* top, int k, int V, const SamplingOptions& o, uint32_t draw) {
  if (k < 1 || k != candidates_needed(o, V))
    throw std::invalid_argument("sample_token_top: " + std::to_string(k) +
                                " candidates given, the options need " +
                                std::to_string(candidates_needed(o, V)));
  std::vector<int> ids(k);
  std::vector<float> keys(k);
  for (int i = 0; i < k; ++i) {
    ids[i] = top[i].id;
    keys[i] = top[i].key;
  }
  return draw_from(kept_from_top(ids.data(), keys.data(), k, o), o, draw);
}

}  // namespace sgpt
