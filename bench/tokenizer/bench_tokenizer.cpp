// Tokenizer encode throughput on one core (and, with --threads, on several).
//
//   bench_tokenizer [--vocab DIR] [--repeat N] [--threads N] [FILE|DIR ...]
//
// Default input: the demo corpus data/cache/sotu/*.txt (fetch with scripts/fetch_assets.sh).
// Every file is one document, encoded with Tokenizer::encode (ordinary text, no special tokens).
// Reports MB/s of UTF-8 input for the first pass (the per-thread piece cache starts empty) and the
// best of --repeat later passes (warm cache, as in a long prepare run). With --threads N > 1 the
// documents are shared among N threads and the figure is the aggregate.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

static std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int main(int argc, char** argv) try {
  std::string vocab;
  int repeat = 3, threads = 1;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--vocab" && i + 1 < argc) vocab = argv[++i];
    else if (a == "--repeat" && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
    else if (a == "--threads" && i + 1 < argc) threads = std::max(1, std::atoi(argv[++i]));
    else if (a == "-h" || a == "--help") {
      std::printf("usage: bench_tokenizer [--vocab DIR] [--repeat N] [--threads N] [FILE|DIR ...]\n");
      return 0;
    } else inputs.push_back(a);
  }
  const sgpt::Tokenizer tok = sgpt::Tokenizer::load(sgpt::find_vocab_dir(vocab));
  if (inputs.empty()) inputs.push_back((fs::path(tok.dir()).parent_path() / "sotu").string());
  std::vector<std::string> docs;
  for (const auto& in : inputs) {
    if (fs::is_directory(in)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::recursive_directory_iterator(in))
        if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) docs.push_back(slurp(f));
    } else if (fs::exists(in)) {
      docs.push_back(slurp(in));
    } else {
      throw sgpt::UserError(in + ": not found (fetch the demo corpus with scripts/fetch_assets.sh sotu)");
    }
  }
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  if (bytes == 0) throw sgpt::UserError("no input text");

  // One pass over all documents on `threads` threads; returns (seconds, tokens).
  auto pass = [&] {
    std::atomic<size_t> next{0}, tokens{0};
    auto work = [&] {
      size_t n = 0;
      for (size_t i; (i = next.fetch_add(1)) < docs.size();) n += tok.encode(docs[i]).size();
      tokens += n;
    };
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    for (auto& t : pool) t.join();
    return std::make_pair(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                          size_t(tokens));
  };
  const auto [cold_s, ntok] = pass();
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) best = std::min(best, pass().first);
  std::printf("input: %zu documents, %.2f MB, %zu tokens (%.2f bytes/token)\n", docs.size(), bytes / 1e6, ntok,
              double(bytes) / double(ntok));
  std::printf("threads: %d\n", threads);
  std::printf("first pass (empty cache): %.2f MB/s, %.2f Mtokens/s\n", bytes / 1e6 / cold_s, ntok / 1e6 / cold_s);
  std::printf("warm, best of %d:         %.2f MB/s, %.2f Mtokens/s\n", repeat, bytes / 1e6 / best, ntok / 1e6 / best);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 2;
}
