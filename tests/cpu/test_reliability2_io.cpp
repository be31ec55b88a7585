// Reliability of what the subcommands read and write (docs/reliability.md, "Inputs and outputs of
// the subcommands"): export's --overwrite, the folder lock of prepare, the output paths of every
// subcommand, directories given where a file is expected, the checks of the data readers, small
// command-line values, and one rule for "the newest checkpoint". Each test reproduces a failure of
// the code before the fix (the failing line is quoted in the test's comment).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/paths.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/token_file.h"
#include "eval/hellaswag.h"
#include "model/checkpoint.h"
#include "tokenizer/vocab.h"
#include "test_corpus.h"
#include "test_files.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using namespace sgpt;
using nlohmann::json;

namespace {

struct Exec {
  int code;  // exit status, 124 when `timeout` ended it, -1 when killed by a signal
  std::string out;
};

std::string q(const std::string& s) {
  std::string r = "'";
  for (char c : s) {
    if (c == '\'') r += "'\\''";
    else r += c;
  }
  return r + "'";
}

// Runs the executable under `timeout` (a test that hangs on a FIFO must not hang the suite).
Exec run(const std::string& args) {
  const std::string cmd = "timeout -k 5 120 " + std::string(SGPT_EXE) + " " + args + " </dev/null 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

fs::path scratch(const std::string& name) { return sgpt_test::scratch_dir("rel2", name); }

bool has(const std::string& s, const std::string& n) { return s.find(n) != std::string::npos; }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void put(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Every file below dir (symbolic links as "-> target") with its bytes: "unchanged" means equal.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    if (e.is_symlink()) m[rel] = "-> " + fs::read_symlink(e.path()).string();
    else if (e.is_regular_file()) m[rel] = slurp(e.path());
    else if (e.is_directory()) m[rel] = "<dir>";
    else m[rel] = "<other>";
  }
  return m;
}

// What differs between two snapshots (names only: the contents can be megabytes of binary).
std::string changes(const std::map<std::string, std::string>& a, const std::map<std::string, std::string>& b) {
  std::string d;
  for (const auto& [k, v] : a) {
    const auto it = b.find(k);
    if (it == b.end()) d += " removed " + k + ";";
    else if (it->second != v) d += " changed " + k + ";";
  }
  for (const auto& [k, v] : b)
    if (!a.count(k)) d += " added " + k + ";";
  return d;
}
#define EXPECT_UNCHANGED(before, after) EXPECT_EQ(changes(before, after), "")

[[maybe_unused]] std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no UserError)";
}

[[maybe_unused]] std::string vocab() { return std::string(SGPT_SOURCE_DIR) + "/data/cache/gpt2"; }

// A tiny model with the GPT-2 vocabulary (so sample, logits --text and export hf work), trained
// by the executable for 3 steps with a checkpoint after every step: a run directory exactly as
// `train` leaves it. Trained once per process; each test gets its own copy.
const fs::path& fixture() {
  static const fs::path d = [] {
    const fs::path f = scratch("fixture");
    std::mt19937 rng(7);  // one stream: the validation tokens follow the training tokens
    sgpt_test::write_shard(f / "train.bin", sgpt_test::random_tokens(50, 4000, rng));
    sgpt_test::write_shard(f / "val.bin", sgpt_test::random_tokens(50, 1000, rng));
    std::ofstream(f / "cfg.json") << R"({"model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 50257},
      "batch": {"micro_batch_size": 2, "total_batch_tokens": 16},
      "schedule": {"warmup_iters": 1, "lr_decay_iters": 30, "max_steps": 3},
      "optimizer": {"hessian_interval": 2},
      "checkpoint": {"every": 1, "keep": 5},
      "eval": {"every": 0, "batches": 2},
      "data": {"train": ")" + (f / "train.bin").string() + R"(", "val": ")" + (f / "val.bin").string() + R"("}})";
    const Exec e = run("train --device cpu -q --config " + q((f / "cfg.json").string()) + " --out-dir " +
                       q((f / "run").string()));
    EXPECT_EQ(e.code, 0) << e.out;
    return f;
  }();
  return d;
}

// A copy of the fixture's run directory at scratch(name)/run.
fs::path trained_run(const std::string& name) {
  const fs::path to = scratch(name) / "run";
  fs::copy(fixture() / "run", to, fs::copy_options::recursive);
  return to;
}

std::string name8(const char* kind, int64_t step) {
  char b[40];
  std::snprintf(b, sizeof b, "%s_%08lld.bin", kind, static_cast<long long>(step));
  return b;
}

using sgpt_test::flip_byte;

bool fifo_at(const fs::path& p) { return fs::is_fifo(fs::symlink_status(p)); }

}  // namespace

// ==== 1. export --overwrite replaces only an earlier export ====

// Before: `export --run R --format hf --out R --overwrite` exited 0 and replaced the run directory
// by the export ("Expected equality of these values: e.code Which is: 0, 2").
TEST(ReliabilityExportOut, OverwriteNeverReplacesARunDirectory) {
  const fs::path r = trained_run("exp_run");
  const auto before = snapshot(r);
  Exec e = run("export --run " + q(r) + " --format hf --out " + q(r) + " --overwrite");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, r.string()) && has(e.out, "run directory")) << e.out;
  EXPECT_UNCHANGED(before, snapshot(r));

  // A folder that merely holds a config.json (not written by export) is not replaced either.
  const fs::path other = r.parent_path() / "mine";
  put(other / "config.json", "{\"mine\": true}");
  put(other / "notes.txt", "keep");
  const auto other_before = snapshot(other);
  e = run("export --run " + q(r) + " --format hf --out " + q(other) + " --overwrite");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, other.string()) && has(e.out, ".sophiagpt-export")) << e.out;
  EXPECT_UNCHANGED(other_before, snapshot(other));

  // An earlier export carries the marker and is replaced.
  const fs::path out = r.parent_path() / "hf";
  e = run("export --run " + q(r) + " --format hf --out " + q(out));
  ASSERT_EQ(e.code, 0) << e.out;
  const json marker = json::parse(slurp(out / ".sophiagpt-export"));
  EXPECT_EQ(marker.value("written_by", ""), "sophiagpt export");
  EXPECT_EQ(marker.value("format", ""), "hf");
  EXPECT_TRUE(marker.contains("time") && marker.contains("source")) << marker.dump();
  e = run("export --run " + q(r) + " --format hf --dtype bf16 --out " + q(out) + " --overwrite");
  EXPECT_EQ(e.code, 0) << e.out;
  EXPECT_EQ(json::parse(slurp(out / ".sophiagpt-export")).value("dtype", ""), "bf16");

  // A marker planted in a run directory does not make it replaceable.
  put(r / ".sophiagpt-export", marker.dump());
  const auto planted = snapshot(r);
  e = run("export --run " + q(r) + " --format hf --out " + q(r) + " --overwrite");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_UNCHANGED(planted, snapshot(r));
}

// Before: `export --format llmc --out R/model_00000002.bin --overwrite` exited 0 and replaced the
// run's checkpoint ("Expected equality of these values: e.code Which is: 0, 2").
TEST(ReliabilityExportOut, LlmcOverwriteReplacesOnlyARegularFileOutsideARun) {
  const fs::path r = trained_run("exp_llmc");
  const fs::path d = r.parent_path();
  const auto before = snapshot(r);
  const std::string exp = "export --run " + q(r) + " --format llmc --overwrite --out ";
  Exec e = run(exp + q(r / name8("model", 2)));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, name8("model", 2)) && has(e.out, "run directory")) << e.out;
  EXPECT_UNCHANGED(before, snapshot(r));

  // A symbolic link: neither the link nor its target is touched.
  put(d / "target.bin", "target bytes");
  fs::create_symlink(d / "target.bin", d / "link.bin");
  e = run(exp + q(d / "link.bin"));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "symbolic link")) << e.out;
  EXPECT_TRUE(fs::is_symlink(d / "link.bin"));
  EXPECT_EQ(slurp(d / "target.bin"), "target bytes");

  // A FIFO stands for a device: refused, not replaced, and nothing waits on it.
  ASSERT_EQ(::mkfifo((d / "fifo.bin").c_str(), 0644), 0);
  e = run(exp + q(d / "fifo.bin"));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(fifo_at(d / "fifo.bin"));

  // A regular file elsewhere is replaced (with --overwrite only).
  put(d / "old.bin", "old");
  e = run("export --run " + q(r) + " --format llmc --out " + q(d / "old.bin"));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "--overwrite")) << e.out;
  EXPECT_EQ(slurp(d / "old.bin"), "old");
  e = run(exp + q(d / "old.bin"));
  EXPECT_EQ(e.code, 0) << e.out;
  EXPECT_TRUE(slurp(d / "old.bin") == slurp(r / name8("model", 3)));  // the newest checkpoint, written again
}

// ==== 2. prepare locks its output folder ====

// Before: prepare wrote into a folder another process held ("Expected equality of these values:
// e.code Which is: 0, 2").
TEST(ReliabilityPrepareLock, SecondWriterOfTheSameFolderIsRefused) {
  const fs::path d = scratch("prep_lock");
  put(d / "in/a.txt", "Hello world");
  put(d / "in/b.txt", "hello world again");
  const fs::path out = d / "out";
  fs::create_directories(out);
  const std::string args = "prepare --vocab " + q(vocab()) + " --input " + q(d / "in") + " --output-dir " + q(out) +
                           " --val-fraction 0 --format nanogpt";
  {
    DirLock lock(out.string(), "test");
    const Exec e = run(args);
    EXPECT_EQ(e.code, 2) << e.out;
    EXPECT_TRUE(has(e.out, out.string()) && has(e.out, "pid " + std::to_string(::getpid()))) << e.out;
    EXPECT_FALSE(fs::exists(out / "train.bin"));
  }
  const Exec e = run(args);
  EXPECT_EQ(e.code, 0) << e.out;
  EXPECT_TRUE(fs::exists(out / "train.bin"));
  EXPECT_FALSE(fs::exists(out / kLockFileName)) << "prepare removes its lock file when done";
}

// ==== 3. output paths: existing files, links, devices ====

// Before: logits --out overwrote a checkpoint without being asked ("Expected equality of these
// values: e.code Which is: 0, 2"), and had no --overwrite.
TEST(ReliabilityOutputPaths, LogitsOutRefusesExistingFilesLinksAndDevices) {
  const fs::path r = trained_run("out_logits");
  const fs::path d = r.parent_path();
  const std::string lg = "logits --run " + q(r) + " --tokens 1,2,3 --out ";
  const auto before = snapshot(r);
  Exec e = run(lg + q(r / name8("model", 1)));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, name8("model", 1)) && has(e.out, "run directory")) << e.out;
  e = run(lg + q(r / name8("model", 1)) + " --overwrite");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "run directory")) << e.out;
  EXPECT_UNCHANGED(before, snapshot(r));

  // An ordinary existing file: refused, then replaced with --overwrite.
  put(d / "logits.bin", "old");
  e = run(lg + q(d / "logits.bin"));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_EQ(slurp(d / "logits.bin"), "old");
  e = run(lg + q(d / "logits.bin") + " --overwrite");
  EXPECT_EQ(e.code, 0) << e.out;
  EXPECT_EQ(fs::file_size(d / "logits.bin"), 3u * 50257u * 4u);

  // A symbolic link (also with --overwrite): the link and its target stay.
  put(d / "target", "target");
  fs::create_symlink(d / "target", d / "link");
  for (const char* ow : {"", " --overwrite"}) {
    e = run(lg + q(d / "link") + ow);
    EXPECT_EQ(e.code, 2) << e.out;
    EXPECT_TRUE(has(e.out, "symbolic link")) << e.out;
    EXPECT_TRUE(fs::is_symlink(d / "link"));
    EXPECT_EQ(fs::read_symlink(d / "link"), d / "target");
    EXPECT_EQ(slurp(d / "target"), "target");
  }

  // A FIFO (what a device looks like to this check): refused, still a FIFO, no hang.
  ASSERT_EQ(::mkfifo((d / "fifo").c_str(), 0644), 0);
  e = run(lg + q(d / "fifo") + " --overwrite");
  ASSERT_EQ(e.code, 2) << e.out;
  ASSERT_TRUE(has(e.out, "not a regular file")) << e.out;
  ASSERT_TRUE(fifo_at(d / "fifo"));

  // /dev/null itself, only once the FIFO case above has shown the check holds.
  e = run(lg + "/dev/null --overwrite");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "/dev/null")) << e.out;
  EXPECT_TRUE(fs::is_character_file(fs::symlink_status("/dev/null")));
  // A folder.
  e = run(lg + q(d));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "is a directory")) << e.out;
}

// Before: hf --out naming a file with --overwrite replaced the file by a folder ("Expected
// equality of these values: e.code Which is: 0, 2"); a link to an export was followed.
TEST(ReliabilityOutputPaths, ExportHfOutIsNeverAFileOrALink) {
  const fs::path r = trained_run("out_hf");
  const fs::path d = r.parent_path();
  const std::string exp = "export --run " + q(r) + " --format hf --overwrite --out ";
  put(d / "file", "a file");
  Exec e = run(exp + q(d / "file"));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_EQ(slurp(d / "file"), "a file");
  ASSERT_EQ(run("export --run " + q(r) + " --format hf --out " + q(d / "hf")).code, 0);
  const auto hf_before = snapshot(d / "hf");
  fs::create_directory_symlink(d / "hf", d / "hf_link");
  e = run(exp + q(d / "hf_link"));
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "symbolic link")) << e.out;
  EXPECT_TRUE(fs::is_symlink(d / "hf_link"));
  EXPECT_UNCHANGED(hf_before, snapshot(d / "hf"));
}

// Before: prepare --overwrite renamed its shard over a symbolic link in the output folder
// ("Value of: fs::is_symlink(out / \"train.bin\") Actual: false").
TEST(ReliabilityOutputPaths, PrepareNeverReplacesLinksOrFoldersInItsOutput) {
  const fs::path d = scratch("out_prep");
  put(d / "in/a.txt", "Hello world");
  const fs::path out = d / "out";
  put(d / "elsewhere.bin", "not mine");
  fs::create_directories(out);
  fs::create_symlink(d / "elsewhere.bin", out / "train.bin");
  const std::string args = "prepare --vocab " + q(vocab()) + " --input " + q(d / "in") + " --output-dir " + q(out) +
                           " --val-fraction 0 --format nanogpt --overwrite";
  Exec e = run(args);
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, (out / "train.bin").string()) && has(e.out, "symbolic link")) << e.out;
  EXPECT_TRUE(fs::is_symlink(out / "train.bin"));
  EXPECT_EQ(slurp(d / "elsewhere.bin"), "not mine");
  fs::remove(out / "train.bin");
  fs::create_directories(out / "manifest.json");
  e = run(args);
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, (out / "manifest.json").string())) << e.out;
  EXPECT_TRUE(fs::is_directory(out / "manifest.json"));
  EXPECT_FALSE(fs::exists(out / "train.bin"));
}

// ==== 4. a directory where a file is expected ====

// Before: `train --config DIR` ended in "internal error: basic_filebuf::underflow error reading
// the file: Is a directory" (exit 3), read_model_file(DIR) in std::bad_alloc.
TEST(ReliabilityInputPaths, DirectoryWhereAFileIsExpectedIsExit2NamingIt) {
  const fs::path r = trained_run("in_dirs");
  const fs::path d = r.parent_path();
  const fs::path dir = d / "a_folder";
  fs::create_directories(dir);
  put(d / "plain.txt", "not a folder");
  fs::create_directories(d / "novocab");
  fs::create_directories(d / "dirvocab/encoder.json");
  put(d / "dirvocab/vocab.bpe", slurp(vocab() + "/vocab.bpe"));
  fs::create_directories(d / "cfgdir/config.json");
  fs::copy_file(r / name8("model", 3), d / "cfgdir" / name8("model", 3));
  fs::copy_file(r / name8("state", 3), d / "cfgdir" / name8("state", 3));
  const std::string cfg = q(r / "config.json");
  struct Case {
    std::string args, named;
  };
  const std::vector<Case> cases = {
      {"train --device cpu -q --config " + q(dir) + " --out-dir " + q(d / "o1"), dir},
      {"train --device cpu -q --config " + cfg + " --init-from " + q(dir) + " --out-dir " + q(d / "o2"), dir},
      {"eval --device cpu --config " + cfg + " --model " + q(dir), dir},
      {"sample --device cpu --config " + cfg + " --model " + q(dir), dir},
      {"logits --config " + cfg + " --model " + q(dir) + " --tokens 1 --out " + q(d / "l.bin"), dir},
      {"eval --device cpu --run " + q(d / "cfgdir"), (d / "cfgdir/config.json").string()},
      {"eval --device cpu --run " + q(r) + " --hellaswag " + q(dir), dir},
      {"tokenize --file " + q(dir), dir},
      {"tokenize --decode --file " + q(dir), dir},
      {"tokenize --vocab " + q(d / "plain.txt") + " hi", d / "plain.txt"},
      {"tokenize --vocab " + q(d / "novocab") + " hi", d / "novocab"},
      {"tokenize --vocab " + q(d / "dirvocab") + " hi", d / "dirvocab/encoder.json"},
      {"sample --device cpu --run " + q(r) + " --vocab " + q(d / "plain.txt"), d / "plain.txt"},
      {"export --run " + q(r) + " --format hf --out " + q(d / "x") + " --vocab " + q(d / "plain.txt"), d / "plain.txt"},
  };
  for (const Case& c : cases) {
    const Exec e = run(c.args);
    EXPECT_EQ(e.code, 2) << c.args << "\n" << e.out;
    EXPECT_TRUE(has(e.out, c.named)) << c.args << "\n" << e.out;
    EXPECT_FALSE(has(e.out, "internal error") || has(e.out, "basic_filebuf") || has(e.out, "bad_alloc"))
        << c.args << "\n" << e.out;
  }
  // The readers themselves, so every caller is covered.
  const std::string ds = dir.string();
  EXPECT_TRUE(has(error_of([&] { load_config(ds, {}); }), ds));
  EXPECT_TRUE(has(error_of([&] { read_model_file(ds, ModelConfig{}); }), ds));
  EXPECT_TRUE(has(error_of([&] { read_state_file(ds); }), ds));
  EXPECT_TRUE(has(error_of([&] { verify_checkpoint_file(ds); }), ds));
  EXPECT_TRUE(has(error_of([&] { read_hellaswag(ds, 0); }), ds));
  EXPECT_TRUE(has(error_of([&] { load_vocab((d / "plain.txt").string()); }), (d / "plain.txt").string()));
  EXPECT_TRUE(has(error_of([&] { TokenFile(ds, TokenFormat::kLlmc); }), ds));
}

// ==== 5. data readers ====

// Before: a run whose data.val is one of its training files trained without a word ("Expected
// equality of these values: e.code Which is: 0, 2").
TEST(ReliabilityData, ValidationFilesSharedWithTrainingAreAnError) {
  const fs::path d = scratch("data_overlap");
  std::vector<uint16_t> toks(600);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>(i % 50);
  fs::create_directories(d / "shards");
  write_llmc_shard((d / "shards/train_000000.bin").string(), toks);
  write_llmc_shard((d / "shards/val_000000.bin").string(), toks);
  fs::create_symlink(d / "shards/train_000000.bin", d / "alias.bin");
  auto train_with = [&](const std::string& train, const std::string& val, const std::string& name) {
    std::ofstream(d / (name + ".json"))
        << R"({"model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 50},
      "batch": {"micro_batch_size": 2, "total_batch_tokens": 16},
      "schedule": {"warmup_iters": 1, "lr_decay_iters": 30, "max_steps": 1},
      "checkpoint": {"every": 0}, "eval": {"every": 1, "batches": 1},
      "data": {"train": ")" + train + R"(", "val": ")" + val + R"("}})";
    return run("train --device cpu -q --config " + q(d / (name + ".json")) + " --out-dir " + q(d / ("run_" + name)));
  };
  const std::string s = (d / "shards").string();
  struct Case {
    std::string train, val, shared;
  };
  for (const Case& c : std::vector<Case>{
           {s + "/*.bin", s + "/val_000000.bin", "val_000000.bin"},        // the glob takes the val shard too
           {s + "/train_000000.bin", s + "/train_000000.bin", "train_000000.bin"},  // the same path
           {s + "/train_*.bin", s + "/../shards/./train_000000.bin", "train_000000.bin"},  // spelled otherwise
           {s + "/train_*.bin", (d / "alias.bin").string(), "train_000000.bin"},            // through a link
       }) {
    const Exec e = train_with(c.train, c.val, "overlap");
    EXPECT_EQ(e.code, 2) << c.train << " / " << c.val << "\n" << e.out;
    EXPECT_TRUE(has(e.out, "data.train") && has(e.out, "data.val") && has(e.out, c.shared)) << e.out;
    fs::remove_all(d / "run_overlap");
  }
  const Exec ok = train_with(s + "/train_*.bin", s + "/val_*.bin", "disjoint");
  EXPECT_EQ(ok.code, 0) << ok.out;
}

// Before: an llm.c shard opened as a nanoGPT file was read as tokens, header and all ("Value of:
// has(e1, shard) && has(e1, \"looks like an llm.c shard; ...\") Actual: false", e1 being
// "(no UserError)").
TEST(ReliabilityData, ShardOfTheOtherFormatIsNamed) {
  const fs::path d = scratch("data_format");
  std::vector<uint16_t> toks(300, 7);
  write_llmc_shard((d / "shard.bin").string(), toks);
  const std::string shard = (d / "shard.bin").string();
  const std::string e1 = error_of([&] { TokenFile f(shard, TokenFormat::kNanoGpt); });
  EXPECT_TRUE(has(e1, shard) && has(e1, "looks like an llm.c shard; set data.format to llmc")) << e1;
  LoaderOptions lo;
  lo.pattern = shard;
  lo.format = TokenFormat::kNanoGpt;
  lo.T = 8;
  EXPECT_TRUE(has(error_of([&] { DataLoader l(lo); }), "set data.format to llmc"));
  // The reverse: headerless tokens opened as an llm.c shard.
  put(d / "nano.bin", std::string(600, '\x07'));
  const std::string e2 = error_of([&] { TokenFile f((d / "nano.bin").string(), TokenFormat::kLlmc); });
  EXPECT_TRUE(has(e2, "nano.bin") && has(e2, "nanogpt")) << e2;
}

// Before: a token id beyond the vocabulary was found only when training reached it ("Value of:
// has(e, lo.pattern) && has(e, \"60000\") && has(e, \"token 17321\") Actual: false", e being
// "(no UserError)": opening the file did not look at its tokens).
TEST(ReliabilityData, TokenOutsideTheVocabularyIsFoundWhenTheShardIsOpened) {
  const fs::path d = scratch("data_vocab");
  std::vector<uint16_t> toks(20000, 11);
  toks[17321] = 60000;
  write_llmc_shard((d / "train_000000.bin").string(), toks);
  put(d / "nano.bin", std::string(reinterpret_cast<const char*>(toks.data()), toks.size() * 2));
  for (const auto& [file, fmt] : std::vector<std::pair<std::string, TokenFormat>>{
           {"train_000000.bin", TokenFormat::kLlmc}, {"nano.bin", TokenFormat::kNanoGpt}}) {
    LoaderOptions lo;
    lo.pattern = (d / file).string();
    lo.format = fmt;
    lo.T = 8;
    lo.vocab_size = 50257;
    const std::string e = error_of([&] { DataLoader l(lo); });
    EXPECT_TRUE(has(e, lo.pattern) && has(e, "60000") && has(e, "token 17321")) << e;
    lo.vocab_size = 65536;  // every uint16 fits
    EXPECT_EQ(error_of([&] { DataLoader l(lo); }), "(no UserError)");
  }
}

// Before: prepare read the files of hidden folders (.git/...) as documents ("Expected equality of
// these values: m[\"documents\"][\"train\"] Which is: 2, 1").
TEST(ReliabilityPrepareInput, HiddenFilesAndFoldersAreIgnored) {
  const fs::path d = scratch("prep_hidden");
  put(d / "in/a.txt", "Hello world");
  put(d / "in/.hidden.txt", "secret");
  put(d / "in/.git/notes.txt", "git internals");
  put(d / "in/sub/.draft.txt", "draft");
  const Exec e = run("prepare --vocab " + q(vocab()) + " --input " + q(d / "in") + " --output-dir " + q(d / "out") +
                     " --val-fraction 0 --format nanogpt");
  ASSERT_EQ(e.code, 0) << e.out;
  const json m = json::parse(slurp(d / "out/manifest.json"));
  EXPECT_EQ(m["documents"]["train"], 1) << m.dump();
}

// Before: 64 KiB of random bytes named .txt were tokenized as text, with a warning ("Expected
// equality of these values: e.code Which is: 0, 2").
TEST(ReliabilityPrepareInput, BinaryInputIsRefusedUnlessAllowed) {
  const fs::path d = scratch("prep_binary");
  std::mt19937 rng(3);
  std::string noise(64 * 1024, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  put(d / "in/blob.txt", noise);
  put(d / "zeros/z.txt", std::string(4096, '\0') + "Hello");
  std::string latin1;
  for (int i = 0; i < 100; ++i) latin1 += "a few words of plain English text ";
  latin1 += "caf\xE9";  // one Latin-1 byte in 3.4 KB: repaired, as before
  put(d / "text/t.txt", latin1);
  auto prep = [&](const std::string& in, const std::string& extra) {
    return run("prepare --vocab " + q(vocab()) + " --input " + q(d / in) + " --output-dir " + q(d / ("out_" + in)) +
               " --val-fraction 0 --format nanogpt" + extra);
  };
  Exec e = prep("in", "");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, (d / "in/blob.txt").string()) && has(e.out, "--allow-binary")) << e.out;
  EXPECT_FALSE(fs::exists(d / "out_in/manifest.json"));
  e = prep("zeros", "");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "z.txt") && has(e.out, "NUL")) << e.out;
  e = prep("in", " --allow-binary");
  EXPECT_EQ(e.code, 0) << e.out;
  e = prep("text", "");
  EXPECT_EQ(e.code, 0) << e.out;
  EXPECT_TRUE(has(e.out, "1 ill-formed UTF-8 sequence(s) replaced")) << e.out;
}

// ==== 6. small command-line values, and the newest checkpoint ====

// Before: --step -1 meant "the newest", --batches 0 "the config's", --seed -1 wrapped to 2^64-1
// (all exit 0: "Expected equality of these values: e.code Which is: 0, 2").
TEST(ReliabilityCli, NegativeAndZeroValuesAreRefused) {
  const fs::path r = trained_run("cli_values");
  const fs::path d = r.parent_path();
  struct Case {
    std::string args, named;
  };
  const std::string R = " --run " + q(r);
  for (const Case& c : std::vector<Case>{
           {"eval --device cpu" + R + " --step -1", "--step"},
           {"sample --device cpu --tokens 2" + R + " --step -1", "--step"},
           {"export --format llmc --out " + q(d / "e.bin") + R + " --step -1", "--step"},
           {"logits --tokens 1 --out " + q(d / "l.bin") + R + " --step -1", "--step"},
           {"eval --device cpu" + R + " --batches 0", "--batches"},
           {"eval --device cpu" + R + " --batches -3", "--batches"},
           {"sample --device cpu --tokens 2" + R + " --seed -1", "--seed"},
       }) {
    const Exec e = run(c.args);
    EXPECT_EQ(e.code, 2) << c.args << "\n" << e.out;
    EXPECT_TRUE(has(e.out, c.named)) << c.args << "\n" << e.out;
  }
  // The ordinary values still work.
  EXPECT_EQ(run("eval --device cpu" + R + " --step 2 --batches 1").code, 0);
  EXPECT_EQ(run("sample --device cpu --tokens 2 --prompt '!'" + R + " --seed 18446744073709551615").code, 0);
}

// Before: "A subcommand is required" (exit 106), without the misspelt name.
TEST(ReliabilityCli, UnknownSubcommandIsNamed) {
  Exec e = run("trian --config x.json");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "unknown subcommand 'trian'") && has(e.out, "train") && has(e.out, "export")) << e.out;
  e = run("bench optimzer");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_TRUE(has(e.out, "unknown subcommand 'optimzer'") && has(e.out, "optimizer")) << e.out;
  EXPECT_EQ(run("--version").code, 0);
  EXPECT_EQ(run("tokenize --help").code, 0);
}

// Before: `bench` on a build without CUDA exited 106 ("A subcommand is required").
TEST(ReliabilityCli, BenchWithoutCudaIsExit2) {
  if (has(run("info").out, "cuda build: yes")) GTEST_SKIP() << "this build has CUDA";
  for (const char* a : {"bench", "bench optimizer", "bench train --steps 1"}) {
    const Exec e = run(a);
    EXPECT_EQ(e.code, 2) << a << "\n" << e.out;
    EXPECT_TRUE(has(e.out, "no CUDA")) << a << "\n" << e.out;
  }
}

// Before: a damaged newest checkpoint broke eval and sample ("Expected equality of these values:
// e.code Which is: 2, 0") while export and logits skipped it.
TEST(ReliabilityCli, EveryModelReaderSkipsADamagedNewestCheckpoint) {
  const fs::path r = trained_run("cli_newest");
  const fs::path d = r.parent_path();
  flip_byte(r / name8("model", 3), 2000);
  const std::string R = " --run " + q(r);
  const std::vector<std::string> readers = {
      "eval --device cpu --batches 1" + R,
      "sample --device cpu --tokens 2 --prompt '!'" + R,
      "export --format llmc --overwrite --out " + q(d / "e.bin") + R,
      "logits --tokens 1,2 --overwrite --out " + q(d / "l.bin") + R,
  };
  for (const std::string& a : readers) {
    const Exec e = run(a);
    EXPECT_EQ(e.code, 0) << a << "\n" << e.out;
    EXPECT_TRUE(has(e.out, "warning") && has(e.out, name8("model", 3))) << a << "\n" << e.out;
  }
  // The export is step 2's model.
  EXPECT_TRUE(slurp(d / "e.bin") == slurp(r / name8("model", 2)));
  // Naming the damaged step is an error that names its file.
  for (const std::string& a : readers) {
    const Exec e = run(a + " --step 3");
    EXPECT_EQ(e.code, 2) << a << "\n" << e.out;
    EXPECT_TRUE(has(e.out, name8("model", 3))) << a << "\n" << e.out;
  }
  // A damaged state file makes the checkpoint damaged too (the rule of --resume).
  fs::copy_file(fixture() / "run" / name8("model", 3), r / name8("model", 3), fs::copy_options::overwrite_existing);
  flip_byte(r / name8("state", 3), 100);
  for (const std::string& a : readers) {
    const Exec e = run(a);
    EXPECT_EQ(e.code, 0) << a << "\n" << e.out;
    EXPECT_TRUE(has(e.out, name8("state", 3))) << a << "\n" << e.out;
  }
}
