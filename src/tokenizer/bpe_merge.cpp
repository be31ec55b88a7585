// Byte-pair merging of one word; see bpe_merge.h for the rule and why both versions agree.
#include "tokenizer/bpe_merge.h"

#include <climits>
#include <queue>

namespace sgpt {

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  shift_ = 60;
  while (cap < 2 * n) {
    cap *= 2;
    --shift_;
  }
  table_.assign(cap, Entry{});
  mask_ = cap - 1;
  size_ = 0;
}

void MergeTable::insert(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  if (2 * (size_ + 1) > table_.size()) {  // grow: rehash everything
    std::vector<Entry> old = std::move(table_);
    reserve(size_ + 1 > 8 ? 2 * (size_ + 1) : 8);
    for (const Entry& e : old)
      if (e.key != ~0ull) insert(int32_t(e.key >> 32), int32_t(e.key & 0xffffffffu), e.rank, e.merged);
  }
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  for (size_t i = slot(key);; i = (i + 1) & mask_) {
    Entry& e = table_[i];
    if (e.key == key || e.key == ~0ull) {
      if (e.key == ~0ull) ++size_;
      e = Entry{key, rank, merged};
      return;
    }
  }
}

void bpe_merge_small(const MergeTable& merges, std::vector<int>& ids) {
  if (ids.size() < 2) return;
  // rank[i], merged[i] describe the pair (ids[i], ids[i+1]); INT_MAX: not mergeable.
  std::vector<int32_t> rank(ids.size() - 1), merged(ids.size() - 1);
  auto lookup = [&](size_t i) {
    const MergeTable::Entry* e = merges.find(ids[i], ids[i + 1]);
    rank[i] = e ? e->rank : INT_MAX;
    merged[i] = e ? e->merged : -1;
  };
  for (size_t i = 0; i + 1 < ids.size(); ++i) lookup(i);
  while (!rank.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < rank.size(); ++i)
      if (rank[i] < rank[best]) best = i;
    if (rank[best] == INT_MAX) break;
    ids[best] = merged[best];
    ids.erase(ids.begin() + best + 1);
    rank.erase(rank.begin() + best);
    merged.erase(merged.begin() + best);
    if (best < rank.size()) lookup(best);
    if (best > 0) lookup(best - 1);
  }
}

void bpe_merge_heap(const MergeTable& merges, std::vector<int>& ids) {
  const int n = int(ids.size());
  if (n < 2) return;
  std::vector<int> next(n), prev(n);
  for (int i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  // Candidate merges ordered by (rank, position of the left node): the lowest rank, leftmost.
  struct Cand {
    int32_t rank;
    int left;
    int left_id, right_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    const int right = next[left];
    if (const MergeTable::Entry* e = merges.find(ids[left], ids[right]))
      heap.push(Cand{e->rank, left, ids[left], ids[right]});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    // Stale when the left node died or changed, or its right neighbour is no longer this pair's.
    if (!alive[c.left] || ids[c.left] != c.left_id) continue;
    const int right = next[c.left];
    if (right < 0 || ids[right] != c.right_id) continue;
    ids[c.left] = merges.find(c.left_id, c.right_id)->merged;
    alive[right] = 0;
    next[c.left] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.left;
    push(prev[c.left]);
    push(c.left);
  }
  int w = 0;
  for (int i = 0; i >= 0; i = next[i]) ids[w++] = ids[i];
  ids.resize(w);
}

}  // namespace sgpt
