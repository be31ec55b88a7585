// Byte-pair merging of one pre-token (GPT-2's bpe() on one word), on token ids.
//
// Rule (GPT-2 encoder.py): repeatedly take the adjacent pair with the lowest merge rank and merge
// every occurrence of it, left to right without overlap, until no adjacent pair has a rank.
// Merging the leftmost lowest-rank pair one at a time gives the same result: a pair created by a
// merge always has a higher rank than the merge that created it, so the remaining occurrences of
// the current pair stay the lowest. Two implementations, tested against each other:
//   bpe_merge_small  O(n^2), for short words (almost all of them);
//   bpe_merge_heap   O(n log n) with a linked list and a priority queue, for long words (runs of
//                    spaces, digits or letters thousands of bytes long).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sgpt {

// Open-addressing hash table (left id, right id) -> (rank, merged id).
class MergeTable {
 public:
  struct Entry {
    uint64_t key = ~0ull;  // (left << 32) | right; ~0 marks an empty slot
    int32_t rank = 0;
    int32_t merged = 0;
  };
  void reserve(size_t n);  // before insert(); capacity is a power of two >= 2n
  void insert(int32_t left, int32_t right, int32_t rank, int32_t merged);  // later insert wins
  const Entry* find(int32_t left, int32_t right) const {
    const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      const Entry& e = table_[i];
      if (e.key == key) return &e;
      if (e.key == ~0ull) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  size_t slot(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<Entry> table_;
  size_t mask_ = 0, size_ = 0;
  int shift_ = 64;
};

// Both merge `ids` (the byte tokens of one word) in place.
void bpe_merge_small(const MergeTable& merges, std::vector<int>& ids);
void bpe_merge_heap(const MergeTable& merges, std::vector<int>& ids);

}  // namespace sgpt
