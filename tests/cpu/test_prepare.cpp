// `sophiagpt prepare`: every input kind (txt, jsonl, xz, tar, OpenWebText's tar of xz'd tars),
// llm.c shards and nanoGPT files with <|endoftext|> before every document, the seeded validation
// split, the manifest, and every bad input: a clear message naming it, exit code 2, and nothing
// written or overwritten. Expected token ids come from docs/design.md section 6's test vectors.
#include <cstring>
#include <cstdio>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/sources.h"
#include "test_data_helpers.h"
#include "test_files.h"
#include "tokenizer/tokenizer.h"

using namespace sgpt;
using sgpt_test::read_file;
using sgpt_test::run_exe;
using sgpt_test::TempDir;
using sgpt_test::write_file;
namespace fs = std::filesystem;
using U16 = std::vector<uint16_t>;

namespace {

// docs/design.md section 6.
const std::string kHello = "Hello world";   // 15496 995
const std::string kHello2 = "hello world";  // 31373 995
constexpr uint16_t E = 50256;

using sgpt_test::xz_compress;

// A ustar archive written by hand (POSIX.1-1988 layout: 512-byte header per member, octal fields,
// the header checksum over the header with its checksum field read as spaces, data padded to 512
// bytes, two zero blocks at the end): independent of the libarchive reader under test.
std::string tar(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out;
  for (const auto& [name, data] : entries) {
    char h[512] = {};
    std::snprintf(h, 100, "%s", name.c_str());
    std::snprintf(h + 100, 8, "%07o", 0644);
    std::snprintf(h + 108, 8, "%07o", 0);
    std::snprintf(h + 116, 8, "%07o", 0);
    std::snprintf(h + 124, 12, "%011llo", static_cast<unsigned long long>(data.size()));
    std::snprintf(h + 136, 12, "%011o", 0);
    h[156] = '0';  // regular file
    std::memcpy(h + 257, "ustar", 6);
    std::memcpy(h + 263, "00", 2);
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    std::snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
    out.append(h, 512);
    out += data;
    out.append((512 - data.size() % 512) % 512, '\0');
  }
  out.append(1024, '\0');
  return out;
}

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::load(sgpt_test::vocab_dir());
  return t;
}

PrepareOptions popts(std::vector<std::string> inputs, const std::string& out, TokenFormat f = TokenFormat::kNanoGpt) {
  PrepareOptions o;
  o.inputs = std::move(inputs);
  o.output_dir = out;
  o.format = f;
  o.val_fraction = 0;
  return o;
}

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

void expect_error(const sgpt_test::RunResult& r, const std::string& text) {
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(text), std::string::npos) << "expected '" << text << "' in:\n" << r.output;
}

}  // namespace

TEST(Prepare, LlmcShardsAndManifest) {
  TempDir d;
  write_file(d / "in/a.txt", kHello);
  write_file(d / "in/b.txt", kHello2);
  write_file(d / "in/notes.json", "{}");  // not an input kind: skipped and counted
  const auto r = run_exe({"prepare", "--vocab", sgpt_test::vocab_dir(), "--input", d / "in", "--output-dir",
                          d / "out", "--val-fraction", "0", "--shard-tokens", "4"});
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("2 documents (2 train, 0 val), 6 tokens"), std::string::npos) << r.output;
  EXPECT_EQ(listing(d / "out"), (std::vector<std::string>{"manifest.json", "train_000000.bin", "train_000001.bin"}));
  EXPECT_EQ(sgpt_test::parse_llmc_shard(read_file(d / "out/train_000000.bin")), (U16{E, 15496, 995, E}));
  EXPECT_EQ(sgpt_test::parse_llmc_shard(read_file(d / "out/train_000001.bin")), (U16{31373, 995}));
  const auto m = nlohmann::json::parse(read_file(d / "out/manifest.json"));
  EXPECT_EQ(m["format"], "llmc");
  EXPECT_EQ(m["documents"]["train"], 2);
  EXPECT_EQ(m["documents"]["val"], 0);
  EXPECT_EQ(m["tokens"]["train"], 6);
  EXPECT_EQ(m["inputs"][0]["path"], d / "in");
  EXPECT_EQ(m["inputs"][0]["documents"], 2);
  EXPECT_EQ(m["inputs"][0]["skipped"], 1);
  EXPECT_EQ(m["shards"].size(), 2u);
  EXPECT_EQ(m["shards"][1]["file"], "train_000001.bin");
  EXPECT_EQ(m["shards"][1]["tokens"], 2);
  EXPECT_EQ(m["tokenizer"]["encoder_json_sha256"], "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783");
  EXPECT_EQ(m["tokenizer"]["vocab_bpe_sha256"], "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5");
  EXPECT_EQ(m["invalid_utf8_replacements"], 0);

  // The shards load for training.
  LoaderOptions lo;
  lo.pattern = d / "out/train_*.bin";
  lo.B = 1;
  lo.T = 2;
  lo.shuffle = false;
  DataLoader dl(lo);
  EXPECT_EQ(dl.num_tokens(), 6u);
}

TEST(Prepare, EveryInputKind) {
  if (!sgpt::libarchive_available()) GTEST_SKIP() << "built without libarchive (SGPT_LIBARCHIVE=OFF): no tar input";
  TempDir d;
  write_file(d / "a.txt", kHello);
  write_file(d / "b.jsonl", "{\"text\": \"hello world\", \"id\": 1}\n\n{\"text\": \"0\"}\n");
  write_file(d / "c.jsonl", "{\"body\": \"000\"}\n");
  write_file(d / "d.txt.xz", xz_compress(kHello2));
  write_file(d / "e.jsonl.xz", xz_compress("{\"text\": \"00000000\"}\n{\"text\": \"Hello world\"}"));  // no final newline
  write_file(d / "f.tar", tar({{"dir/one.txt", kHello}, {"dir/two.jsonl", "{\"text\":\"0\"}\n"}, {"dir/x.bin", "??"}}));
  // OpenWebText as distributed: openwebtext.tar.xz = tar of urlsf_subset*.xz, each an xz'd tar of .txt.
  const std::string inner1 = xz_compress(tar({{"0001.txt", kHello}, {"0002.txt", kHello2}}));
  const std::string inner2 = xz_compress(tar({{"0003.txt", "000"}}));
  write_file(d / "owt.tar.xz", xz_compress(tar({{"openwebtext/urlsf_subset00-1_data.xz", inner1},
                                                {"openwebtext/urlsf_subset00-2_data.xz", inner2}})));
  PrepareOptions o = popts({d / "a.txt", d / "b.jsonl", d / "d.txt.xz", d / "e.jsonl.xz", d / "f.tar", d / "owt.tar.xz"},
                           d / "out");
  run_prepare(o, tok());
  EXPECT_EQ(sgpt_test::parse_u16(read_file(d / "out/train.bin")),
            (U16{E, 15496, 995,                         // a.txt
                 E, 31373, 995, E, 15,                  // b.jsonl (blank line skipped)
                 E, 31373, 995,                         // d.txt.xz
                 E, 8269, E, 15496, 995,                // e.jsonl.xz
                 E, 15496, 995, E, 15,                  // f.tar (x.bin skipped)
                 E, 15496, 995, E, 31373, 995, E, 830}));  // owt.tar.xz
  EXPECT_EQ(listing(d / "out"), (std::vector<std::string>{"manifest.json", "train.bin"}));  // no val.bin: fraction 0
  // A custom JSON field.
  PrepareOptions o2 = popts({d / "c.jsonl"}, d / "out2");
  o2.text_field = "body";
  run_prepare(o2, tok());
  EXPECT_EQ(sgpt_test::parse_u16(read_file(d / "out2/train.bin")), (U16{E, 830}));
}

TEST(Prepare, ValidationSplitIsSeededAndThreadIndependent) {
  TempDir d;
  // 400 documents "0" x k (k = 1..8): each is <|endoftext|> + one token (docs/design.md section 6).
  std::string jsonl;
  for (int i = 0; i < 400; ++i) jsonl += "{\"text\": \"" + std::string(size_t(1 + i % 8), '0') + "\"}\n";
  write_file(d / "docs.jsonl", jsonl);
  auto run = [&](const std::string& out, uint64_t seed, int threads) {
    PrepareOptions o = popts({d / "docs.jsonl"}, d / out);
    o.val_fraction = 0.25;
    o.seed = seed;
    o.threads = threads;
    return run_prepare(o, tok());
  };
  const auto m1 = run("s1", 7, 1);
  run("s1b", 7, 2);
  run("s2", 8, 2);
  const uint64_t val_docs = m1["documents"]["val"];
  EXPECT_GT(val_docs, 60u);  // Binomial(400, 0.25): mean 100, sd 8.7
  EXPECT_LT(val_docs, 140u);
  EXPECT_EQ(m1["documents"]["train"].get<uint64_t>() + val_docs, 400u);
  EXPECT_EQ(m1["tokens"]["val"].get<uint64_t>(), 2 * val_docs);
  EXPECT_EQ(read_file(d / "s1/val.bin"), read_file(d / "s1b/val.bin"));
  EXPECT_EQ(read_file(d / "s1/train.bin"), read_file(d / "s1b/train.bin"));
  EXPECT_NE(read_file(d / "s1/val.bin"), read_file(d / "s2/val.bin"));
  const U16 v = sgpt_test::parse_u16(read_file(d / "s1/val.bin"));
  const std::set<uint16_t> zeros = {15, 405, 830, 2388, 20483, 10535, 24598, 8269};
  for (size_t i = 0; i < v.size(); i += 2) {
    EXPECT_EQ(v[i], E);
    EXPECT_TRUE(zeros.count(v[i + 1])) << v[i + 1];
  }
}

TEST(Prepare, SmallCorpusStillGetsAValidationDocument) {
  // With a tiny fraction the seeded choice picks nothing; the last document becomes validation.
  TempDir d;
  write_file(d / "in/a.txt", kHello);
  write_file(d / "in/b.txt", "0");
  write_file(d / "in/c.txt", kHello2);
  PrepareOptions o = popts({d / "in"}, d / "out");
  o.val_fraction = 1e-9;
  const auto m = run_prepare(o, tok());
  EXPECT_EQ(m["documents"]["val"], 1);
  EXPECT_EQ(sgpt_test::parse_u16(read_file(d / "out/val.bin")), (U16{E, 31373, 995}));
  EXPECT_EQ(sgpt_test::parse_u16(read_file(d / "out/train.bin")), (U16{E, 15496, 995, E, 15}));
}

TEST(Prepare, InvalidUtf8IsReplacedAndCounted) {
  TempDir d;
  write_file(d / "bad.txt", "Hello world\xFF\xFE");
  write_file(d / "bad.jsonl", "{\"text\": \"hello world\xC0\"}\n");
  const auto r = run_exe({"prepare", "--vocab", sgpt_test::vocab_dir(), "--input", d / "bad.txt", d / "bad.jsonl",
                          "--output-dir", d / "out", "--val-fraction", "0", "--format", "nanogpt"});
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("3 ill-formed UTF-8 sequence(s) replaced by U+FFFD"), std::string::npos) << r.output;
  const auto m = nlohmann::json::parse(read_file(d / "out/manifest.json"));
  EXPECT_EQ(m["invalid_utf8_replacements"], 3);
  const std::string fffd = "\xEF\xBF\xBD";
  const std::vector<int> a = tok().encode("Hello world" + fffd + fffd), b = tok().encode("hello world" + fffd);
  U16 want{E};
  want.insert(want.end(), a.begin(), a.end());
  want.push_back(E);
  want.insert(want.end(), b.begin(), b.end());
  EXPECT_EQ(sgpt_test::parse_u16(read_file(d / "out/train.bin")), want);
  EXPECT_EQ(want[1], 15496);
}

TEST(PrepareErrors, MissingEmptyAndUnknownInputs) {
  TempDir d;
  const std::string v = sgpt_test::vocab_dir();
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "nope.txt", "--output-dir", d / "out"}),
               d / "nope.txt" + ": input not found");
  fs::create_directories(d / "empty");
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "empty", "--output-dir", d / "out"}),
               d / "empty" + ": holds no documents");
  write_file(d / "e.txt", "");
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "e.txt", "--output-dir", d / "out"}),
               d / "e.txt" + ": holds no documents (1 empty)");
  write_file(d / "data.csv", "a,b\n");
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "data.csv", "--output-dir", d / "out"}),
               d / "data.csv" + ": unknown input type");
  // Unreadable even for root: reading /proc/self/mem at offset 0 fails with EIO.
  fs::create_symlink("/proc/self/mem", d / "mem.txt");
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "mem.txt", "--output-dir", d / "out"}),
               d / "mem.txt" + ": read error");
  expect_error(run_exe({"prepare", "--vocab", d / "novocab", "--input", d / "e.txt", "--output-dir", d / "out"}),
               "GPT-2 vocabulary file not found");
  EXPECT_FALSE(fs::exists(d / "out/manifest.json"));
}

TEST(PrepareErrors, CorruptCompressedAndArchivedInputs) {
  TempDir d;
  const std::string v = sgpt_test::vocab_dir();
  auto prep = [&](const std::string& in) {
    return run_exe({"prepare", "--vocab", v, "--input", in, "--output-dir", d / "out", "--val-fraction", "0"});
  };
  write_file(d / "garbage.txt.xz", "this is not xz");
  expect_error(prep(d / "garbage.txt.xz"), d / "garbage.txt.xz" + ": not xz data");
  const std::string good = xz_compress(std::string(2000, 'a') + " Hello world");
  write_file(d / "cut.txt.xz", good.substr(0, good.size() / 2));
  expect_error(prep(d / "cut.txt.xz"), d / "cut.txt.xz" + ": truncated xz data");
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x55;
  write_file(d / "flip.txt.xz", flipped);
  expect_error(prep(d / "flip.txt.xz"), d / "flip.txt.xz" + ": corrupt xz data");
  if (!sgpt::libarchive_available()) return;  // built without libarchive: no tar input
  const std::string t = tar({{"a.txt", std::string(5000, 'x')}, {"b.txt", kHello}});
  write_file(d / "cut.tar", t.substr(0, 3000));
  expect_error(prep(d / "cut.tar"), d / "cut.tar" + ": corrupt tar archive");
  // A damaged member inside OpenWebText-style nesting names the whole path.
  write_file(d / "owt.tar", tar({{"openwebtext/urlsf_subset00-1_data.xz", "not xz at all, but named .xz"}}));
  expect_error(prep(d / "owt.tar"), d / "owt.tar" + " > openwebtext/urlsf_subset00-1_data.xz: not xz data");
  write_file(d / "x.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  expect_error(prep(d / "x.jsonl"), d / "x.jsonl" + ":2: not a valid JSON line");
  write_file(d / "y.jsonl", "{\"content\": \"ok\"}\n");
  expect_error(prep(d / "y.jsonl"), d / "y.jsonl" + ":1: no string field 'text'");
  EXPECT_FALSE(fs::exists(d / "out/manifest.json"));
}

TEST(PrepareErrors, FailureLeavesNothingBehind) {
  TempDir d;
  write_file(d / "good.txt", std::string(200000, 'a') + " Hello world");
  write_file(d / "zbad.txt.xz", "corrupt");
  const auto r = run_exe({"prepare", "--vocab", sgpt_test::vocab_dir(), "--input", d / "good.txt", d / "zbad.txt.xz",
                          "--output-dir", d / "out", "--shard-tokens", "1000", "--val-fraction", "0"});
  expect_error(r, d / "zbad.txt.xz" + ": not xz data");
  EXPECT_FALSE(fs::exists(d / "out")) << "the output folder this run created should be gone";
  // In a folder that existed before, nothing is left either; stale temporaries of dead runs go.
  fs::create_directories(d / "out2");
  write_file(d / "out2/.tmp-999999999-train_000000.bin", "stale");
  write_file(d / "out2/keep.txt", "mine");
  const auto r2 = run_exe({"prepare", "--vocab", sgpt_test::vocab_dir(), "--input", d / "good.txt", d / "zbad.txt.xz",
                           "--output-dir", d / "out2", "--shard-tokens", "1000", "--val-fraction", "0"});
  EXPECT_EQ(r2.code, 2);
  EXPECT_EQ(listing(d / "out2"), std::vector<std::string>{"keep.txt"});
}

TEST(PrepareErrors, ExistingOutputIsRefusedUnlessOverwrite) {
  TempDir d;
  const std::string v = sgpt_test::vocab_dir();
  write_file(d / "in/a.txt", kHello);
  write_file(d / "in/b.txt", kHello2);
  auto prep = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"prepare", "--vocab", v, "--input", d / "in", "--output-dir", d / "out",
                                     "--val-fraction", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_exe(args);
  };
  ASSERT_EQ(prep({"--shard-tokens", "2"}).code, 0);  // 3 shards
  const std::string before = read_file(d / "out/train_000000.bin");
  const std::string manifest_before = read_file(d / "out/manifest.json");
  expect_error(prep({"--shard-tokens", "100"}), d / "out" + ": already holds prepared data (manifest.json, train_000000.bin");
  EXPECT_EQ(read_file(d / "out/train_000000.bin"), before);
  EXPECT_EQ(read_file(d / "out/manifest.json"), manifest_before);
  EXPECT_EQ(listing(d / "out").size(), 4u);
  // --overwrite replaces them, and removes the stale shards the new run does not write.
  ASSERT_EQ(prep({"--shard-tokens", "100", "--overwrite"}).code, 0);
  EXPECT_EQ(listing(d / "out"), (std::vector<std::string>{"manifest.json", "train_000000.bin"}));
  EXPECT_EQ(sgpt_test::parse_llmc_shard(read_file(d / "out/train_000000.bin")), (U16{E, 15496, 995, E, 31373, 995}));
}

TEST(PrepareErrors, EmptyValidationSplitAndBadOptions) {
  TempDir d;
  const std::string v = sgpt_test::vocab_dir();
  write_file(d / "a.txt", kHello);
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "a.txt", "--output-dir", d / "out", "--val-fraction",
                        "0.000001"}),
               "a single document cannot be split into training and validation data");
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "a.txt", "--output-dir", d / "out", "--val-fraction", "1"}),
               "--val-fraction must be in [0, 1)");
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "a.txt", "--output-dir", d / "out", "--shard-tokens", "0"}),
               "--shard-tokens must be in [1, 2^31-1]");
  write_file(d / "file", "x");
  expect_error(run_exe({"prepare", "--vocab", v, "--input", d / "a.txt", "--output-dir", d / "file"}),
               d / "file" + ": output path exists and is not a directory");
  const auto r = run_exe({"prepare", "--vocab", v, "--input", d / "a.txt", "--output-dir", d / "out", "--format", "bin"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--format"), std::string::npos) << r.output;
  EXPECT_TRUE(!fs::exists(d / "out") || listing(d / "out").empty());
}
