// Host side of the deterministic encoder backward: group positions by token (counting sort).
#include <algorithm>
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
  // One host staging vector: the count, then the triples (an upload is one copy).
  staged_.resize(1 + tb.buckets.size());
  staged_[0] = tb.num_buckets;
  std::copy(tb.buckets.begin(), tb.buckets.end(), staged_.begin() + 1);
  if (positions.size() < tb.positions.size()) positions.resize(tb.positions.size());
  // Room for one bucket per position, so the pointer changes only when the positions grow.
  if (buckets.size() < 1 + 3 * tb.positions.size()) buckets.resize(1 + 3 * tb.positions.size());
  if (!tb.positions.empty()) positions.upload(tb.positions.data(), tb.positions.size(), stream);
  buckets.upload(staged_.data(), staged_.size(), stream);
  num_positions = static_cast<int>(tb.positions.size());
}

}  // namespace sgpt::cuda
