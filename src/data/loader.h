// Batches of token sequences for training and evaluation, from llm.c shards or nanoGPT files.
//
// The global stream. Sequences are numbered s = 0, 1, 2, ... independently of B and of the number
// of processes. Global batch g is sequences [g*W*B, (g+1)*W*B) for W = world; process `rank` takes
// [g*W*B + rank*B, g*W*B + (rank+1)*B). So ranks read disjoint parts of every global batch, and
// W processes with micro-batch B see exactly the sequences one process with micro-batch W*B sees.
// Each sequence is T+1 consecutive tokens of one file: inp = the first T, tgt = the last T.
//
// llmc (sampled in epochs). File k holds n_k = (N_k - 1) / T sequences, sequence j starting at
// token j*T (consecutive sequences share one token, as in llm.c); an epoch is every sequence of
// every file once, E = sum n_k. Sequence s is in epoch e = s / E. With shuffle, epoch e visits the
// files in the order of a permutation P_e and, inside file k, its sequences in the order of a
// permutation Q_{e,k}; without shuffle both are the identity. Permutations are Feistel networks on
// Philox (data/permutation.h), stream kDataSampler, key = seed:
//   P_e:      tweak (e, 0x1FFFFFFF)          Q_{e,k}: tweak (e, k)     (k < 2^29 files)
// So a file is read whole before the next one starts: with files in document order (prepare's
// shards), each pass has one phase per file. Order kGlobal (config data.order = "global") instead
// permutes all E sequences of the epoch at once: position i of epoch e is sequence G_e(i) of the
// files taken in index order (file k holds numbers prefix_k .. prefix_k + n_k - 1), with
//   G_e:      tweak (e, 0x1FFFFFFE)
// so every batch draws from the whole split. Without shuffle, order is ignored (identity).
// nanogpt (random windows, like the official trainer's get_batch). The W_k = N_k - T windows of
// every file are numbered across files; sequence s starts at window floor(u * sum W_k) with
// u = (v0 * 2^32 + v1) / 2^64 from philox(seed, s mod 2^32, s / 2^32, 0xFFFFFFFE, kDataSampler).
//
// Checks. Opening validates every file's header and size (data/token_file.h) and reads every
// token once to check it against vocab_size (TokenFile::check_vocab; cached per process, so the
// same files opened again are not read again); every token read is checked again. Errors are
// sgpt::UserError naming the file, and the offset where there is one.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/token_file.h"

namespace sgpt {

// How an llmc epoch is shuffled (see above): kShards, files in a random order, each read whole in a
// random order of its sequences (llm.c's order); kGlobal, one random order over all sequences.
enum class LoaderOrder { kShards, kGlobal };
const char* loader_order_name(LoaderOrder);         // "shards" | "global"
LoaderOrder parse_loader_order(const std::string&);  // UserError naming the value otherwise

struct LoaderOptions {
  std::string pattern;        // glob (or a single path) of token files
  TokenFormat format = TokenFormat::kLlmc;
  int B = 1, T = 64;          // micro-batch: B sequences of T tokens (reads T+1 per sequence)
  int rank = 0, world = 1;    // process `rank` of `world` reads a disjoint slice of every global batch
  uint64_t seed = 0;
  bool shuffle = true;        // shard order + sequence positions (llmc); nanogpt is always random windows
  LoaderOrder order = LoaderOrder::kShards;  // llmc with shuffle: per file (llm.c) or over all files
  int vocab_size = 50257;     // every token id must be < vocab_size
};

class DataLoader {
 public:
  explicit DataLoader(const LoaderOptions&);   // throws sgpt::UserError naming the file (and offset) and the problem
  void next(int* inp, int* tgt);               // next micro-batch: B*T ids each, tgt[i] = the token after inp[i]
  void reset();                                // back to the first batch (eval uses it so every eval sees the same batches)
  nlohmann::json state() const;                // position, for checkpoints
  void restore(const nlohmann::json&);         // restore(state()) continues with exactly the same batches; bad state -> UserError
  uint64_t num_tokens() const;                 // tokens across all files

  // Introspection (tests, logs).
  const std::vector<std::string>& files() const { return paths_; }
  uint64_t sequences_per_epoch() const { return epoch_seqs_; }  // llmc: E; nanogpt: number of windows
  // Where global sequence s starts: (file index, first token).
  std::pair<size_t, uint64_t> locate(uint64_t s);

 private:
  void prepare_epoch(uint64_t epoch);
  LoaderOptions opt_;
  std::vector<std::string> paths_;
  std::vector<TokenFile> files_;
  std::vector<uint64_t> count_;    // per file: sequences (llmc) or windows (nanogpt)
  std::vector<uint64_t> index_prefix_;  // llmc, kGlobal: sequences before file k, files in index order
  uint64_t epoch_seqs_ = 0;        // sum of count_
  uint64_t tokens_ = 0;
  uint64_t batch_ = 0;             // global batches consumed
  // llmc: file order of the current epoch and prefix sums of count_ in that order.
  uint64_t epoch_ = ~uint64_t(0);
  std::vector<uint32_t> order_;
  std::vector<uint64_t> prefix_;   // prefix_[i] = sequences before the i-th file in order_
  std::vector<int> buf_;
  std::vector<size_t> open_;       // files with an open descriptor, least recently opened first
};

// Refuses validation files that are also training files: the two patterns are expanded and the
// files compared by identity (device and inode, so another spelling of a path, a symbolic link or
// a hard link counts). UserError naming both config keys, both patterns and the shared files.
void check_train_val_disjoint(const std::string& train_pattern, const std::string& val_pattern);

void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens);  // header 256 int32 [0]=20240520 [1]=1 [2]=count, then uint16; atomic (temp + rename)

}  // namespace sgpt
