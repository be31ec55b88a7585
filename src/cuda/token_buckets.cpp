// Host side of the deterministic encoder backward: group positions by token (counting sort).
#include <stdexcept>
#include <string>

#include "cuda/ops_cuda.h"

namespace sgpt::cuda {

void TokenBuckets::build(const int* inp_host, int N, int vocab_rows) {
  std::vector<int> count(vocab_rows, 0);
  for (int n = 0; n < N; ++n) {
    const int tok = inp_host[n];
    if (tok < 0 || tok >= vocab_rows)
      throw std::out_of_range("token id " + std::to_string(tok) + " at position " +
                              std::to_string(n) + " outside [0, " + std::to_string(vocab_rows) +
                              ")");
    ++count[tok];
  }
  std::vector<int> start(vocab_rows, 0);
  buckets.clear();
  int offset = 0;
  for (int v = 0; v < vocab_rows; ++v) {
    start[v] = offset;
    if (count[v] > 0) {
      buckets.insert(buckets.end(), {v, offset, count[v]});
      offset += count[v];
    }
  }
  num_buckets = static_cast<int>(buckets.size() / 3);
  positions.assign(N, 0);
  for (int n = 0; n < N; ++n) positions[start[inp_host[n]]++] = n;  // ascending n per token
}

void DeviceTokenBuckets::upload(const TokenBuckets& tb, cudaStream_t stream) {
  if (positions.size() < tb.positions.size()) positions.resize(tb.positions.size());
  if (buckets.size() < tb.buckets.size()) buckets.resize(tb.buckets.size());
  if (!tb.positions.empty()) positions.upload(tb.positions.data(), tb.positions.size(), stream);
  if (!tb.buckets.empty()) buckets.upload(tb.buckets.data(), tb.buckets.size(), stream);
  num_buckets = tb.num_buckets;
}

}  // namespace sgpt::cuda
