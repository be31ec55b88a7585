// DataLoader: every sequence of an epoch exactly once, deterministic shuffling by seed, disjoint
// per-rank slices that add up to the single-process batch, reset/state/restore, nanoGPT random
// windows, 64-bit offsets, and one test per kind of corrupt file (message names file and offset).
// Shards are written by the tests themselves (test_data_helpers.h) with tokens that encode their
// own file and position: file f, token i holds f * 10000 + i.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <set>

#include "common/error.h"
#include "data/loader.h"
#include "test_data_helpers.h"

using namespace sgpt;
using sgpt_test::TempDir;

namespace {

std::vector<uint16_t> position_tokens(int file, int n, int stride = 10000) {
  std::vector<uint16_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[size_t(i)] = uint16_t(file * stride + i);
  return t;
}

// Shards (default: three of different lengths) with file f, token i = f * stride + i; returns the glob.
std::string make_shards(const TempDir& d, std::vector<int> sizes = {301, 157, 64}, int stride = 10000) {
  for (size_t f = 0; f < sizes.size(); ++f) {
    char name[32];
    std::snprintf(name, sizeof name, "train_%06zu.bin", f);
    sgpt_test::write_file(d / name, sgpt_test::llmc_shard_bytes(position_tokens(int(f), sizes[f], stride)));
  }
  return d / "train_*.bin";
}

LoaderOptions opts(const std::string& pattern, int B, int T, uint64_t seed = 1, bool shuffle = true) {
  LoaderOptions o;
  o.pattern = pattern;
  o.B = B;
  o.T = T;
  o.seed = seed;
  o.shuffle = shuffle;
  return o;
}

// Starts (first input token) of the next `n` batches' sequences; checks each sequence is T+1
// consecutive tokens of one file.
std::vector<int> next_starts(DataLoader& dl, int B, int T, int n) {
  std::vector<int> inp(size_t(B * T)), tgt(size_t(B * T)), starts;
  for (int k = 0; k < n; ++k) {
    dl.next(inp.data(), tgt.data());
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t < T; ++t) {
        EXPECT_EQ(inp[size_t(b * T + t)], inp[size_t(b * T)] + t);
        EXPECT_EQ(tgt[size_t(b * T + t)], inp[size_t(b * T + t)] + 1);
      }
      starts.push_back(inp[size_t(b * T)]);
    }
  }
  return starts;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(DataLoader, EpochVisitsEverySequenceOnce) {
  TempDir d;
  const int T = 16;
  const std::vector<int> sizes = {301, 157, 64};
  const std::string pat = make_shards(d, sizes);
  // Per the llm.c layout: file f holds (N_f - 1) / T sequences starting at tokens j*T.
  std::multiset<int> want;
  for (size_t f = 0; f < sizes.size(); ++f)
    for (int j = 0; j < (sizes[f] - 1) / T; ++j) want.insert(int(f) * 10000 + j * T);
  for (bool shuffle : {false, true}) {
    DataLoader dl(opts(pat, 1, T, 5, shuffle));
    ASSERT_EQ(dl.sequences_per_epoch(), want.size());
    EXPECT_EQ(dl.num_tokens(), 301u + 157u + 64u);
    const std::vector<int> e0 = next_starts(dl, 1, T, int(want.size()));
    const std::vector<int> e1 = next_starts(dl, 1, T, int(want.size()));
    EXPECT_EQ(std::multiset<int>(e0.begin(), e0.end()), want);
    EXPECT_EQ(std::multiset<int>(e1.begin(), e1.end()), want);
    if (shuffle) {
      EXPECT_NE(e0, e1) << "epoch 1 should be reshuffled";
      EXPECT_FALSE(std::is_sorted(e0.begin(), e0.end()));
    } else {
      EXPECT_EQ(e0, std::vector<int>(want.begin(), want.end()));  // file order, then position
      EXPECT_EQ(e0, e1);
    }
  }
}

TEST(DataLoader, ManyShardsKeepFewDescriptorsOpen) {
  TempDir d;
  std::vector<int> sizes(100, 21);  // 100 shards of 5 sequences (T = 4)
  const std::string pat = make_shards(d, sizes, 100);
  auto open_fds = [] { return std::distance(std::filesystem::directory_iterator("/proc/self/fd"), {}); };
  const auto before = open_fds();
  DataLoader dl(opts(pat, 1, 4, 2));
  ASSERT_EQ(dl.sequences_per_epoch(), 500u);
  std::multiset<int> want;
  for (int f = 0; f < 100; ++f)
    for (int j = 0; j < 5; ++j) want.insert(f * 100 + j * 4);
  for (int epoch = 0; epoch < 2; ++epoch) {
    const auto s = next_starts(dl, 1, 4, 500);
    EXPECT_EQ(std::multiset<int>(s.begin(), s.end()), want);
  }
  EXPECT_LE(open_fds() - before, 64);
}

TEST(DataLoader, ShuffleIsDeterministicBySeed) {
  TempDir d;
  const std::string pat = make_shards(d);
  DataLoader a(opts(pat, 2, 8, 42)), b(opts(pat, 2, 8, 42)), c(opts(pat, 2, 8, 43));
  const auto sa = next_starts(a, 2, 8, 20), sb = next_starts(b, 2, 8, 20), sc = next_starts(c, 2, 8, 20);
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(DataLoader, RanksReadDisjointSlicesOfTheGlobalBatch) {
  TempDir d;
  const std::string pat = make_shards(d);
  const int B = 2, T = 8, W = 3, steps = 25;  // 25 global batches of 6 sequences: past one epoch
  DataLoader single(opts(pat, B * W, T, 9));
  const auto all = next_starts(single, B * W, T, steps);
  std::vector<std::vector<int>> per_rank;
  for (int r = 0; r < W; ++r) {
    LoaderOptions o = opts(pat, B, T, 9);
    o.rank = r;
    o.world = W;
    DataLoader dl(o);
    per_rank.push_back(next_starts(dl, B, T, steps));
  }
  for (int g = 0; g < steps; ++g)
    for (int r = 0; r < W; ++r)
      for (int b = 0; b < B; ++b)
        ASSERT_EQ(per_rank[size_t(r)][size_t(g * B + b)], all[size_t(g * B * W + r * B + b)])
            << "global batch " << g << " rank " << r;
}

TEST(DataLoader, ResetStateRestore) {
  TempDir d;
  const std::string pat = make_shards(d);
  DataLoader dl(opts(pat, 3, 8, 11));
  const auto first = next_starts(dl, 3, 8, 2);
  next_starts(dl, 3, 8, 7);
  const nlohmann::json st = nlohmann::json::parse(dl.state().dump());  // as a checkpoint stores it
  const auto after = next_starts(dl, 3, 8, 10);
  dl.reset();
  EXPECT_EQ(next_starts(dl, 3, 8, 2), first);

  DataLoader again(opts(pat, 3, 8, 11));
  again.restore(st);
  EXPECT_EQ(next_starts(again, 3, 8, 10), after);

  DataLoader other_seed(opts(pat, 3, 8, 12));
  EXPECT_NE(error_of([&] { other_seed.restore(st); }).find("seed differs"), std::string::npos);
  EXPECT_NE(error_of([&] { again.restore(nlohmann::json::array()); }).find("not a JSON object"), std::string::npos);
  nlohmann::json broken = st;
  broken.erase("batch");
  EXPECT_NE(error_of([&] { again.restore(broken); }).find("missing or invalid 'batch'"), std::string::npos);
  DataLoader other_T(opts(pat, 3, 4, 11));
  EXPECT_NE(error_of([&] { other_T.restore(st); }).find("sequence length T differs"), std::string::npos);
}

// data.order = "global": one permutation over the sequences of all files per epoch. Every sequence
// once per epoch, reshuffled per epoch, deterministic by seed; batches mix the files where the
// shards order reads one file whole before the next; ranks split each global batch as with shards;
// state/restore continues the same stream and refuses the other order (a state without "order",
// as checkpoints before the key wrote, counts as the shards order).
TEST(DataLoader, GlobalOrderMixesFilesInEveryBatch) {
  TempDir d;
  const int T = 4;
  std::vector<int> sizes(20, 41);  // 20 files of 10 sequences: 200 per epoch
  sizes[3] = 3;                    // a file too short for one sequence (an empty range)
  const std::string pat = make_shards(d, sizes, 100);
  std::multiset<int> want;
  for (int f = 0; f < 20; ++f)
    for (int j = 0; j < (sizes[size_t(f)] - 1) / T; ++j) want.insert(f * 100 + j * T);
  auto global = [&](uint64_t seed, int B) {
    LoaderOptions o = opts(pat, B, T, seed);
    o.order = LoaderOrder::kGlobal;
    return o;
  };
  DataLoader g(global(7, 10)), g_again(global(7, 10)), g_seed(global(8, 10)), shards(opts(pat, 10, T, 7));
  ASSERT_EQ(g.sequences_per_epoch(), want.size());
  const auto e0 = next_starts(g, 10, T, 19), e1 = next_starts(g, 10, T, 19);  // 190 = one epoch
  EXPECT_EQ(std::multiset<int>(e0.begin(), e0.end()), want);
  EXPECT_EQ(std::multiset<int>(e1.begin(), e1.end()), want);
  EXPECT_NE(e0, e1) << "epoch 1 should be reshuffled";
  EXPECT_EQ(next_starts(g_again, 10, T, 19), e0);
  EXPECT_NE(next_starts(g_seed, 10, T, 19), e0);
  const auto s0 = next_starts(shards, 10, T, 19);
  EXPECT_EQ(std::multiset<int>(s0.begin(), s0.end()), want);
  // Files per batch of 10: the shards order reads a file's 10 sequences together (1 or 2 files per
  // batch); a random order over 19 files of 10 puts about 7.5 files in a batch of 10.
  auto files_per_batch = [](const std::vector<int>& starts) {
    double total = 0;
    for (size_t b = 0; b + 10 <= starts.size(); b += 10) {
      std::set<int> f;
      for (size_t i = b; i < b + 10; ++i) f.insert(starts[i] / 100);
      total += double(f.size());
    }
    return total / double(starts.size() / 10);
  };
  EXPECT_LE(files_per_batch(s0), 2.0);
  EXPECT_GE(files_per_batch(e0), 5.0);

  // Ranks: W processes with micro-batch B see what one process with micro-batch W*B sees.
  const int B = 2, W = 5;
  DataLoader single(global(3, B * W));
  const auto all = next_starts(single, B * W, T, 25);
  for (int r = 0; r < W; ++r) {
    LoaderOptions o = global(3, B);
    o.rank = r;
    o.world = W;
    DataLoader dl(o);
    const auto mine = next_starts(dl, B, T, 25);
    for (int k = 0; k < 25; ++k)
      for (int b = 0; b < B; ++b)
        ASSERT_EQ(mine[size_t(k * B + b)], all[size_t(k * B * W + r * B + b)]) << "batch " << k << " rank " << r;
  }

  // State and restore.
  DataLoader a(global(5, 4));
  next_starts(a, 4, T, 30);
  const nlohmann::json st = nlohmann::json::parse(a.state().dump());
  EXPECT_EQ(st.value("order", ""), "global");
  const auto after = next_starts(a, 4, T, 40);
  DataLoader b(global(5, 4));
  b.restore(st);
  EXPECT_EQ(next_starts(b, 4, T, 40), after);
  DataLoader as_shards(opts(pat, 4, T, 5));
  EXPECT_NE(error_of([&] { as_shards.restore(st); }).find("data order differs"), std::string::npos);
  nlohmann::json old = nlohmann::json::parse(as_shards.state().dump());
  old.erase("order");  // a checkpoint from before data.order: the shards order
  EXPECT_EQ(error_of([&] { as_shards.restore(old); }), "(no error)");
  DataLoader g2(global(5, 4));
  EXPECT_NE(error_of([&] { g2.restore(old); }).find("data order differs"), std::string::npos);
  EXPECT_EQ(parse_loader_order("global"), LoaderOrder::kGlobal);
  EXPECT_NE(error_of([] { parse_loader_order("random"); }).find("'random'"), std::string::npos);
}

TEST(DataLoader, NanoGptRandomWindows) {
  TempDir d;
  const int N = 5000, T = 32;
  const std::vector<uint16_t> toks = position_tokens(0, N);
  sgpt_test::write_file(d / "train.bin", std::string(reinterpret_cast<const char*>(toks.data()), toks.size() * 2));
  LoaderOptions o = opts(d / "train.bin", 4, T, 3);
  o.format = TokenFormat::kNanoGpt;
  DataLoader dl(o);
  EXPECT_EQ(dl.num_tokens(), uint64_t(N));
  const auto s = next_starts(dl, 4, T, 500);
  int lo = N, hi = 0;
  double mean = 0;
  for (int v : s) {
    ASSERT_GE(v, 0);
    ASSERT_LE(v, N - T - 1);  // a window of T+1 tokens fits: start in [0, N - T)
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    mean += v;
  }
  mean /= double(s.size());
  EXPECT_LT(lo, 50);
  EXPECT_GT(hi, N - T - 50);
  EXPECT_NEAR(mean, (N - T - 1) / 2.0, 200.0);  // 2000 uniform draws: sd of the mean ~ 32
  dl.reset();
  EXPECT_EQ(next_starts(dl, 4, T, 500), s);
}

TEST(DataLoader, SixtyFourBitOffsets) {
  // A sparse shard of 2^31 - 1 tokens (4.29 GB): its last sequences sit past byte offset 2^32.
  TempDir d;
  const std::string path = d / "big.bin";
  const int32_t N = INT32_MAX;
  sgpt_test::write_file(path, sgpt_test::llmc_shard_bytes({}, 20240520, 1, N));
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const uint64_t size = 1024 + 2 * uint64_t(N);
  ASSERT_EQ(::ftruncate(fd, off_t(size)), 0);
  const uint16_t tail[4] = {101, 102, 103, 104};  // tokens N-4 .. N-1
  ASSERT_EQ(::pwrite(fd, tail, sizeof tail, off_t(size - sizeof tail)), ssize_t(sizeof tail));
  ::close(fd);
  const int T = 2;
  // A vocabulary of 65536 (every uint16) skips the scan of every token at open, which would read
  // the 4.29 GB of zeros of the sparse file (17 s on a 2-core machine); that scan is tested with
  // small files (DataLoaderErrors.TokenIdOutOfVocabulary, ReliabilityData.*).
  LoaderOptions o = opts(path, 1, T, 0, /*shuffle=*/false);
  o.vocab_size = 65536;
  DataLoader dl(o);
  const uint64_t last = (uint64_t(N) - 1) / T - 1;  // the last sequence starts at token last*T = N-3
  ASSERT_EQ(last * T, uint64_t(N) - 3);
  ASSERT_GT(1024 + 2 * last * T, uint64_t(1) << 32);
  dl.restore({{"format", "llmc"}, {"batch", last}, {"sequences_per_batch", 1}, {"T", T}, {"seed", 0},
              {"shuffle", false}, {"files", 1}, {"num_tokens", N}});
  int inp[2], tgt[2];
  dl.next(inp, tgt);
  EXPECT_EQ(inp[0], 102);
  EXPECT_EQ(inp[1], 103);
  EXPECT_EQ(tgt[1], 104);
  dl.next(inp, tgt);  // the next epoch starts again at token 0 (zeros of the sparse file)
  EXPECT_EQ(inp[0], 0);
}

TEST(DataLoaderErrors, BadMagic) {
  TempDir d;
  sgpt_test::write_file(d / "a.bin", sgpt_test::llmc_shard_bytes(position_tokens(0, 100), 20240326));
  const std::string m = error_of([&] { DataLoader dl(opts(d / "a.bin", 1, 8)); });
  EXPECT_NE(m.find(d / "a.bin" + ": bad magic 20240326 at byte offset 0"), std::string::npos) << m;
}

TEST(DataLoaderErrors, BadVersion) {
  TempDir d;
  sgpt_test::write_file(d / "a.bin", sgpt_test::llmc_shard_bytes(position_tokens(0, 100), 20240520, 2));
  const std::string m = error_of([&] { DataLoader dl(opts(d / "a.bin", 1, 8)); });
  EXPECT_NE(m.find(d / "a.bin" + ": unsupported version 2 at byte offset 4"), std::string::npos) << m;
}

TEST(DataLoaderErrors, TruncatedAndTrailingData) {
  TempDir d;
  sgpt_test::write_file(d / "short.bin", sgpt_test::llmc_shard_bytes(position_tokens(0, 100), 20240520, 1, 150));
  std::string m = error_of([&] { DataLoader dl(opts(d / "short.bin", 1, 8)); });
  EXPECT_NE(m.find(d / "short.bin" + ": header says 150 tokens (1324 bytes) but the file has 1224 bytes (truncated)"),
            std::string::npos)
      << m;
  sgpt_test::write_file(d / "long.bin", sgpt_test::llmc_shard_bytes(position_tokens(0, 100), 20240520, 1, 90));
  m = error_of([&] { DataLoader dl(opts(d / "long.bin", 1, 8)); });
  EXPECT_NE(m.find("(trailing data)"), std::string::npos) << m;
  sgpt_test::write_file(d / "tiny.bin", std::string(100, '\0'));
  m = error_of([&] { DataLoader dl(opts(d / "tiny.bin", 1, 8)); });
  EXPECT_NE(m.find(d / "tiny.bin" + ": 100 bytes is shorter than the 1024-byte llm.c header"), std::string::npos) << m;
}

TEST(DataLoaderErrors, TokenIdOutOfVocabulary) {
  TempDir d;
  std::vector<uint16_t> t = position_tokens(0, 100);
  t[37] = 60000;
  sgpt_test::write_file(d / "a.bin", sgpt_test::llmc_shard_bytes(t));
  // Found when the loader opens the file (every token is read once then), not when a batch
  // reaches it; a read checks its tokens again.
  const std::string m = error_of([&] { DataLoader dl(opts(d / "a.bin", 1, 8, 0, false)); });
  EXPECT_NE(m.find(d / "a.bin" + ": token id 60000 at token 37 (byte offset 1098) is not below the vocabulary size 50257"),
            std::string::npos)
      << m;
  std::vector<int> inp(9), tgt(9);
  const TokenFile f(d / "a.bin", TokenFormat::kLlmc);
  f.read(0, 9, inp.data(), 50257);  // tokens 0..8
  const std::string mr = error_of([&] { f.read(30, 8, inp.data(), 50257); });
  EXPECT_NE(mr.find(d / "a.bin" + ": token id 60000 at token 37 (byte offset 1098) is not below the vocabulary size 50257"),
            std::string::npos)
      << mr;
  // The same check against a smaller vocabulary, in nanoGPT format.
  sgpt_test::write_file(d / "n.bin", std::string(reinterpret_cast<const char*>(t.data()), 40));  // tokens 0..19
  LoaderOptions o = opts(d / "n.bin", 1, 4);
  o.format = TokenFormat::kNanoGpt;
  o.vocab_size = 10;
  const std::string m2 = error_of([&] {
    DataLoader n(o);
    for (int i = 0; i < 50; ++i) n.next(inp.data(), tgt.data());
  });
  EXPECT_NE(m2.find("is not below the vocabulary size 10"), std::string::npos) << m2;
}

TEST(DataLoaderErrors, NanoGptOddSizeAndTooShort) {
  TempDir d;
  sgpt_test::write_file(d / "odd.bin", std::string(101, '\0'));
  LoaderOptions o = opts(d / "odd.bin", 1, 8);
  o.format = TokenFormat::kNanoGpt;
  std::string m = error_of([&] { DataLoader dl(o); });
  EXPECT_NE(m.find(d / "odd.bin" + ": size 101 bytes is odd"), std::string::npos) << m;
  sgpt_test::write_file(d / "short.bin", std::string(16, '\0'));  // 8 tokens < T+1
  o.pattern = d / "short.bin";
  m = error_of([&] { DataLoader dl(o); });
  EXPECT_NE(m.find("no file holds a sequence of T+1 = 9 tokens"), std::string::npos) << m;
}

TEST(DataLoaderErrors, PatternsAndOptions) {
  TempDir d;
  std::string m = error_of([&] { DataLoader dl(opts(d / "train_*.bin", 1, 8)); });
  EXPECT_NE(m.find("no token files match '" + d / "train_*.bin" + "'"), std::string::npos) << m;
  m = error_of([&] { DataLoader dl(opts(d / "missing.bin", 1, 8)); });
  EXPECT_NE(m.find(d / "missing.bin" + ": token file not found"), std::string::npos) << m;
  m = error_of([&] { DataLoader dl(opts(d.path(), 1, 8)); });
  EXPECT_NE(m.find("is a directory"), std::string::npos) << m;
  const std::string pat = make_shards(d);
  LoaderOptions o = opts(pat, 1, 8);
  o.rank = 2;
  o.world = 2;
  m = error_of([&] { DataLoader dl(o); });
  EXPECT_NE(m.find("rank 2 is not in [0, world=2)"), std::string::npos) << m;
  EXPECT_EQ(parse_token_format("nanogpt"), TokenFormat::kNanoGpt);
  m = error_of([&] { parse_token_format("bin"); });
  EXPECT_NE(m.find("unknown token file format 'bin'"), std::string::npos) << m;
}

TEST(DataLoader, WriteLlmcShardRoundTrip) {
  TempDir d;
  const std::vector<uint16_t> t = {50256, 15496, 995, 50256, 31373, 995};
  write_llmc_shard(d / "s.bin", t);
  EXPECT_EQ(sgpt_test::parse_llmc_shard(sgpt_test::read_file(d / "s.bin")), t);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(d.path()), {}), 1);  // no temp left
  DataLoader dl(opts(d / "s.bin", 1, 5, 0, false));
  std::vector<int> inp(5), tgt(5);
  dl.next(inp.data(), tgt.data());
  EXPECT_EQ(inp, (std::vector<int>{50256, 15496, 995, 50256, 31373}));
  EXPECT_EQ(tgt, (std::vector<int>{15496, 995, 50256, 31373, 995}));
}
