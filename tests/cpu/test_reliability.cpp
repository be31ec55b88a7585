// Reliability (docs/reliability.md): checksummed checkpoints and the fallback to the newest good
// one, clean stops on SIGINT/SIGTERM (also with several ranks), restartable run directories,
// leftover temporary files, the file-size limit, the divergence guard, and config inputs that
// used to give raw library errors. Each test reproduces a failure of the issue "Reliability:
// checkpoints that cannot be silently corrupted, clean stops on signals, divergence guards"
// (numbered 1-6 and 8 there; the numbers are in the test comments).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "common/crc32c.h"
#include "common/error.h"
#include "data/loader.h"
#include "model/checkpoint.h"
#include "cpu/cpu_backend.h"
#include "train/trainer.h"
#include "test_corpus.h"
#include "test_files.h"
#include "test_mpirun.h"
#include "test_model.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using namespace sgpt;
using nlohmann::json;

namespace {

struct Exec {
  int code;  // exit status, or 128 + signal when killed by one
  std::string out;
};

Exec sh(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1, out};
}

// With SGPT_TEST_FAULT in `env`, the failure tests' build of the executable (tests/faults/) runs.
Exec run(const std::string& args, const std::string& env = "") {
  const std::string exe = env.find("SGPT_TEST_FAULT") != std::string::npos ? SGPT_FAULT_EXE : SGPT_EXE;
  return sh((env.empty() ? "" : "env " + env + " ") + exe + " " + args);
}

fs::path scratch(const std::string& name) { return sgpt_test::scratch_dir("rel", name); }

bool contains(const std::string& s, const std::string& n) { return s.find(n) != std::string::npos; }

std::string bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

using sgpt_test::flip_byte;

std::string name8(const char* kind, int64_t step) {
  char b[40];
  std::snprintf(b, sizeof b, "%s_%08lld.bin", kind, static_cast<long long>(step));
  return b;
}

// A tiny setup (data + config) for runs of the executable: 1 layer, 16 tokens a step.
fs::path tiny_setup(const std::string& name, int64_t max_steps = 3) {
  const fs::path d = scratch(name);
  sgpt_test::write_random_shard(d / "train.bin", 50, 5000, 1);
  std::ofstream(d / "cfg.json") << R"({"model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 50},
    "batch": {"micro_batch_size": 2, "total_batch_tokens": 16},
    "schedule": {"warmup_iters": 1, "lr_decay_iters": 30, "max_steps": )" + std::to_string(max_steps) + R"(},
    "optimizer": {"hessian_interval": 2},
    "checkpoint": {"every": 0},
    "eval": {"every": 0}, "data": {"train": ")" + (d / "train.bin").string() + R"("}})";
  return d;
}

std::string train_args(const fs::path& d, const std::string& run, const std::string& extra = "") {
  return "train --device cpu -q --config " + (d / "cfg.json").string() + " --out-dir " + (d / run).string() + " " + extra;
}

// log.jsonl records of one type, in file order.
std::vector<json> log_records(const fs::path& run, const std::string& type) {
  std::vector<json> v;
  std::ifstream f(run / "log.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);  // a line being written: skip
    if (!j.is_discarded() && j.value("type", "") == type) v.push_back(j);
  }
  return v;
}

ModelConfig small_model() { return sgpt_test::model_config(2, 2, 8, 6, 30, 128); }

std::string error_of(const std::function<void()>& f) {
  try { f(); } catch (const UserError& e) { return e.what(); }
  return "";
}

}  // namespace

// ---- CRC32C ----

TEST(ReliabilityCrc32c, KnownAnswersAndEveryImplementationAgrees) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  // RFC 3720 (iSCSI) B.4 test vectors.
  std::vector<unsigned char> b(32, 0);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x8A9136AAu);
  std::fill(b.begin(), b.end(), 0xFF);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) b[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x46DD794Eu);
  // Portable (slice-by-8) vs dispatched (SSE4.2 where present), odd lengths and alignments, and
  // chaining.
  std::mt19937 rng(5);
  std::vector<unsigned char> r(10000);
  for (auto& x : r) x = static_cast<unsigned char>(rng());
  for (size_t off : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 7, 8, 9, 63, 4096, 9993}) {
      EXPECT_EQ(crc32c_update_portable(0, r.data() + off, n), crc32c(r.data() + off, n)) << off << " " << n;
      const size_t h = n / 3;
      EXPECT_EQ(crc32c_update(crc32c(r.data() + off, h), r.data() + off + h, n - h), crc32c(r.data() + off, n));
    }
  }
}

// ---- 1: checksums ----

// Issue 1: a flipped byte in the data part of a model file used to load silently.
TEST(ReliabilityChecksum, FlippedByteInAModelFileIsDetected) {
  const ModelConfig m = small_model();
  const ParamLayout L = ParamLayout::make(m);
  std::vector<float> p(L.total);
  for (size_t i = 0; i < p.size(); ++i) p[i] = std::sin(static_cast<float>(i));
  const fs::path dir = scratch("crc_model");
  const fs::path path = dir / "m.bin";
  write_model_file(path.string(), m, p);
  bool verified = false;
  EXPECT_EQ(read_model_file(path.string(), m, &verified), p);
  EXPECT_TRUE(verified);
  const auto size = static_cast<std::streamoff>(fs::file_size(path));
  // The first, a middle and the last data byte; an unused header slot; a shape field (whose
  // damage shows as a wrong size for the shape, before any comparison with the config).
  for (std::streamoff at : {std::streamoff{1024}, size / 2, size - 1, std::streamoff{4 * 100}}) {
    const fs::path bad = dir / ("bad_" + std::to_string(at) + ".bin");
    fs::copy_file(path, bad, fs::copy_options::overwrite_existing);
    flip_byte(bad, at);
    const std::string e1 = error_of([&] { read_model_file(bad.string(), m); });
    EXPECT_TRUE(contains(e1, "fails its checksum") && contains(e1, bad.string())) << at << ": " << e1;
    const std::string e2 = error_of([&] { verify_checkpoint_file(bad.string()); });
    EXPECT_TRUE(contains(e2, "fails its checksum") && contains(e2, bad.string())) << at << ": " << e2;
  }
  const fs::path shape = dir / "shape.bin";
  fs::copy_file(path, shape, fs::copy_options::overwrite_existing);
  flip_byte(shape, 4 * 4);  // n_layer 2 -> 3
  EXPECT_TRUE(contains(error_of([&] { read_model_file(shape.string(), m); }), "bytes, expected"));
  // A damaged checksum tag is never read as "no checksum".
  const fs::path tag = dir / "tag.bin";
  fs::copy_file(path, tag, fs::copy_options::overwrite_existing);
  flip_byte(tag, 4 * 10);
  EXPECT_TRUE(contains(error_of([&] { read_model_file(tag.string(), m); }), "damaged header"));
}

TEST(ReliabilityChecksum, FlippedByteInAStateFileIsDetected) {
  TrainState s;
  s.meta = {{"step", 5}, {"optimizer", "sophiag"}, {"n_params", 1000}};
  s.slot_names = {"m", "h"};
  s.slots = {std::vector<float>(1000, 0.5f), std::vector<float>(1000, 0.25f)};
  const fs::path dir = scratch("crc_state");
  const fs::path path = dir / "s.bin";
  write_state_file(path.string(), s);
  bool verified = false;
  EXPECT_EQ(read_state_file(path.string(), &verified).slots, s.slots);
  EXPECT_TRUE(verified);
  const auto size = static_cast<std::streamoff>(fs::file_size(path));
  for (std::streamoff at : {std::streamoff{30}, size - 8000, size - 1}) {  // JSON, slot m, slot h
    const fs::path bad = dir / ("bad_" + std::to_string(at) + ".bin");
    fs::copy_file(path, bad, fs::copy_options::overwrite_existing);
    flip_byte(bad, at);
    const std::string e1 = error_of([&] { read_state_file(bad.string()); });
    EXPECT_TRUE(contains(e1, bad.string()) && (contains(e1, "checksum") || contains(e1, "malformed"))) << at << ": " << e1;
    const std::string e2 = error_of([&] { verify_checkpoint_file(bad.string()); });
    EXPECT_TRUE(contains(e2, bad.string()) && (contains(e2, "checksum") || contains(e2, "malformed"))) << at << ": " << e2;
  }
}

// Files written before checksums (model slots 10-11 zero; state version 1) still load, unverified.
TEST(ReliabilityChecksum, FilesWithoutChecksumStillLoad) {
  const ModelConfig m = small_model();
  const ParamLayout L = ParamLayout::make(m);
  std::vector<float> p(L.total, 0.125f);
  const fs::path dir = scratch("crc_old");
  const fs::path mp = dir / "m.bin", sp = dir / "s.bin";
  write_model_file(mp.string(), m, p);
  {  // as llm.c and sophiagpt before checksums wrote it
    std::fstream f(mp, std::ios::in | std::ios::out | std::ios::binary);
    const int32_t z[2] = {0, 0};
    f.seekp(40);
    f.write(reinterpret_cast<const char*>(z), 8);
  }
  bool verified = true;
  EXPECT_EQ(read_model_file(mp.string(), m, &verified), p);
  EXPECT_FALSE(verified);
  verified = true;
  verify_checkpoint_file(mp.string(), &verified);
  EXPECT_FALSE(verified);
  TrainState s;
  s.meta = {{"step", 1}, {"optimizer", "adamw"}, {"n_params", 4}};
  s.slot_names = {"m", "v"};
  s.slots = {{1, 2, 3, 4}, {5, 6, 7, 8}};
  write_state_file(sp.string(), s);
  {  // version 1, reserved 0
    std::fstream f(sp, std::ios::in | std::ios::out | std::ios::binary);
    const uint32_t v[2] = {1, 0};
    f.seekp(8);
    f.write(reinterpret_cast<const char*>(v), 8);
  }
  EXPECT_EQ(read_state_file(sp.string(), &verified).slots, s.slots);
  EXPECT_FALSE(verified);
  // Version 1 with a non-zero reserved field is damage, not an old file.
  flip_byte(sp, 12);
  EXPECT_TRUE(contains(error_of([&] { read_state_file(sp.string()); }), "damaged header"));
}

// The model file keeps llm.c's layout: the header's first 8 slots, then exactly the tensors.
TEST(ReliabilityChecksum, ModelFileKeepsLlmcLayout) {
  const ModelConfig m = small_model();
  const ParamLayout L = ParamLayout::make(m);
  const fs::path path = scratch("llmc") / "m.bin";
  write_model_file(path.string(), m, std::vector<float>(L.total, 1.0f));
  size_t file_params = 0;
  for (int i = 0; i < kNumParamTensors; ++i) file_params += L.file_size[i];
  EXPECT_EQ(fs::file_size(path), 1024 + 4 * file_params);
  std::ifstream f(path, std::ios::binary);
  int32_t h[256];
  f.read(reinterpret_cast<char*>(h), sizeof h);
  EXPECT_EQ(h[0], kModelMagic);
  EXPECT_EQ(h[1], 3);
  EXPECT_EQ(h[10], kModelChecksumTag);
  for (int i = 12; i < 256; ++i) EXPECT_EQ(h[i], 0) << i;
}

// ---- 1 and 5: resume verifies, falls back to the newest good checkpoint, names the bad file ----

TEST(ReliabilityResume, DamagedNewestCheckpointFallsBackToTheOlderOne) {
  const fs::path d = tiny_setup("fallback");
  ASSERT_EQ(run(train_args(d, "straight", "--set schedule.max_steps=6")).code, 0);
  struct Case {
    const char* name;
    const char* kind;
    bool truncate;
  };
  for (const Case& c : {Case{"model_flip", "model", false}, Case{"state_flip", "state", false},
                        Case{"state_cut", "state", true}}) {
    const std::string r = c.name;
    const Exec first = run(train_args(d, r, "--set schedule.max_steps=4 --set checkpoint.every=2 --set checkpoint.keep=2"));
    ASSERT_EQ(first.code, 0) << first.out;
    const fs::path bad = d / r / name8(c.kind, 4);
    if (c.truncate) fs::resize_file(bad, fs::file_size(bad) - 100);
    else flip_byte(bad, std::string(c.kind) == "model" ? 1024 + 101 : static_cast<std::streamoff>(fs::file_size(bad)) - 4);  // a weight; h
    // eval never reads damaged weights: it takes the newest checkpoint that verifies (the rule of
    // --resume) with a warning naming the damaged file, and --step naming it is an error.
    if (std::string(c.kind) == "model") {
      const std::string ev = "eval --device cpu --batches 1 --set data.val=" + (d / "train.bin").string() + " --run " + (d / r).string();
      const Exec e = run(ev);
      EXPECT_EQ(e.code, 0) << e.out;
      EXPECT_TRUE(contains(e.out, "warning: ") && contains(e.out, bad.string()) && contains(e.out, "step 2")) << e.out;
      const Exec e4 = run(ev + " --step 4");
      EXPECT_EQ(e4.code, 2) << e4.out;
      EXPECT_TRUE(contains(e4.out, bad.string())) << e4.out;
    }
    const Exec res = run(train_args(d, r, "--resume --set schedule.max_steps=6 --set checkpoint.every=2 --set checkpoint.keep=2"));
    ASSERT_EQ(res.code, 0) << c.name << ": " << res.out;
    EXPECT_TRUE(contains(res.out, "warning: ") && contains(res.out, bad.string())) << res.out;
    EXPECT_TRUE(contains(res.out, c.truncate ? "bytes, expected" : "fails its checksum")) << res.out;
    EXPECT_TRUE(contains(res.out, "resuming from the newest checkpoint that verifies, step 2")) << res.out;
    EXPECT_TRUE(fs::exists(bad.string() + ".bad")) << c.name;
    // Resumed from step 2, the run ends with the uninterrupted run's exact bytes.
    EXPECT_TRUE(bytes_of(d / r / name8("model", 6)) == bytes_of(d / "straight" / name8("model", 6))) << c.name;
    EXPECT_TRUE(bytes_of(d / r / name8("state", 6)) == bytes_of(d / "straight" / name8("state", 6))) << c.name;
    // keep = 2 kept the two newest, both written and verified after the damaged one was set aside.
    EXPECT_TRUE(fs::exists(d / r / name8("model", 4)));
    EXPECT_FALSE(fs::exists(d / r / name8("model", 2)));
  }
}

// A checkpoint that does not verify right after it was written stops the run before any older
// checkpoint is pruned.
TEST(ReliabilityResume, CheckpointThatDoesNotVerifyAfterWritingPrunesNothing) {
  const fs::path d = tiny_setup("verify_after_write", 6);
  const Exec r = run(train_args(d, "run", "--set checkpoint.every=2 --set checkpoint.keep=1"), "SGPT_TEST_FAULT=0:4:corrupt");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "checkpoint step 4 does not verify after writing it")) << r.out;
  EXPECT_TRUE(fs::exists(d / "run" / name8("model", 2))) << "the good checkpoint was pruned";
  EXPECT_TRUE(fs::exists(d / "run" / name8("state", 2)));
  // The next start sets the damaged one aside and continues from step 2.
  const Exec again = run(train_args(d, "run", "--resume --set checkpoint.every=2 --set checkpoint.keep=1"));
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_TRUE(contains(again.out, name8("model", 4))) << again.out;
  EXPECT_TRUE(fs::exists(d / "run" / name8("model", 6)));
}

// ---- 3: a run directory without a complete checkpoint ----

TEST(ReliabilityRunDir, RunWithoutACheckpointRestartsFromStepZero) {
  const fs::path d = tiny_setup("restart", 3);
  ASSERT_EQ(run(train_args(d, "straight")).code, 0);
  // A run that failed at step 2, before any checkpoint (checkpoint.every = 0): log + config only.
  const Exec failed = run(train_args(d, "run"), "SGPT_TEST_FAULT=0:2:throw");
  ASSERT_NE(failed.code, 0) << failed.out;
  ASSERT_TRUE(fs::exists(d / "run" / "log.jsonl"));
  ASSERT_TRUE(checkpoint_file_steps((d / "run").string()).empty());  // no model or state file at all
  // An incomplete checkpoint (a model file without its state file) is no checkpoint either.
  fs::copy_file(d / "straight" / name8("model", 3), d / "run" / name8("model", 3));
  const Exec plain = run(train_args(d, "run"));
  EXPECT_EQ(plain.code, 2) << plain.out;
  EXPECT_TRUE(contains(plain.out, "already holds a run") && contains(plain.out, "from step 0 when it has none")) << plain.out;
  const Exec resumed = run(train_args(d, "run", "--resume"));
  EXPECT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_TRUE(contains(resumed.out, "holds no complete checkpoint that verifies: the run restarts from step 0")) << resumed.out;
  EXPECT_TRUE(contains(resumed.out, "is incomplete")) << resumed.out;
  EXPECT_TRUE(bytes_of(d / "run" / name8("model", 3)) == bytes_of(d / "straight" / name8("model", 3)));
  EXPECT_TRUE(fs::exists(d / "run" / "config.resume_00000000.json"));
  // Nothing to resume at all is still an error.
  const Exec none = run(train_args(d, "empty", "--resume"));
  EXPECT_EQ(none.code, 2) << none.out;
  EXPECT_TRUE(contains(none.out, "holds no run to resume")) << none.out;
}

// ---- 4: leftover temporary files, the file-size limit ----

TEST(ReliabilityTempFiles, LeftoversOfDeadWritersAreRemovedAtTheNextStart) {
  const fs::path d = tiny_setup("tmpfiles", 3);
  ASSERT_EQ(run(train_args(d, "run")).code, 0);
  const pid_t dead = ::fork();  // a pid that no longer runs
  if (dead == 0) std::_Exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string dp = std::to_string(dead), live = std::to_string(::getpid());
  const fs::path r = d / "run";
  const std::vector<std::string> removed = {name8("model", 5) + ".tmp" + dp, name8("state", 5) + ".tmp" + dp,
                                            "config.json.tmp" + dp, "config.resume_00000003.json.tmp" + dp,
                                            "config.resume_00000003.1.json.tmp" + dp};
  const std::vector<std::string> kept = {name8("model", 5) + ".tmp" + live, "notes.tmp" + dp,
                                         name8("model", 5) + ".tmpx", "data.bin.tmp" + dp};
  for (const auto& n : removed) std::ofstream(r / n) << "partial";
  for (const auto& n : kept) std::ofstream(r / n) << "keep";
  const Exec res = run(train_args(d, "run", "--resume --set schedule.max_steps=4"));
  EXPECT_EQ(res.code, 0) << res.out;
  for (const auto& n : removed) {
    EXPECT_FALSE(fs::exists(r / n)) << n;
    EXPECT_TRUE(contains(res.out, n)) << res.out;
  }
  for (const auto& n : kept) EXPECT_TRUE(fs::exists(r / n)) << n;
}

// Issue 4: under `ulimit -f` the program died by SIGXFSZ with no message of its own.
TEST(ReliabilityDiskFull, FileSizeLimitIsAClearErrorAndTheCheckpointIsKept) {
  const fs::path d = tiny_setup("fsize", 3);
  ASSERT_EQ(run(train_args(d, "run")).code, 0);
  const std::string before = bytes_of(d / "run" / name8("model", 3));
  ASSERT_GT(before.size(), 16u * 1024);
  // 16 KiB (bash counts ulimit -f in KiB): the log and config fit, a model file does not.
  const Exec r = sh("bash -c 'ulimit -f 16; exec " + std::string(SGPT_EXE) + " " +
                    train_args(d, "run", "--resume --set schedule.max_steps=5") + "'");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "cannot write '" + (d / "run" / name8("model", 5)).string() + "'")) << r.out;
  EXPECT_TRUE(contains(r.out, "ulimit -f")) << r.out;
  EXPECT_FALSE(fs::exists(d / "run" / name8("model", 5)));
  for (const auto& e : fs::directory_iterator(d / "run")) EXPECT_FALSE(contains(e.path().string(), ".tmp")) << e.path();
  EXPECT_TRUE(bytes_of(d / "run" / name8("model", 3)) == before);
  const Exec again = run(train_args(d, "run", "--resume --set schedule.max_steps=5"));
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_TRUE(fs::exists(d / "run" / name8("model", 5)));
}

// ---- 2: signals ----

TEST(ReliabilitySignal, SigtermFinishesTheStepWritesACheckpointAndResumesExactly) {
  const fs::path d = tiny_setup("sigterm", 8);
  ASSERT_EQ(run(train_args(d, "straight")).code, 0);
  // SIGTERM arrives during step 3; checkpoint.every = 0, so only the stop writes one.
  const Exec r = run(train_args(d, "run"), "SGPT_TEST_FAULT=0:3:term");
  EXPECT_EQ(r.code, kExitStoppedBySignal) << r.out;
  const std::string ckpt = (d / "run" / name8("model", 4)).string();
  EXPECT_TRUE(contains(r.out, "stopped by SIGTERM after step 4 of 8: checkpoint written to '" + ckpt + "'")) << r.out;
  EXPECT_TRUE(fs::exists(ckpt));
  EXPECT_EQ(log_records(d / "run", "train").back().at("step"), 3);
  const Exec res = run(train_args(d, "run", "--resume"));
  EXPECT_EQ(res.code, 0) << res.out;
  EXPECT_TRUE(bytes_of(d / "run" / name8("model", 8)) == bytes_of(d / "straight" / name8("model", 8)));
  EXPECT_TRUE(bytes_of(d / "run" / name8("state", 8)) == bytes_of(d / "straight" / name8("state", 8)));
}

TEST(ReliabilitySignal, SigintFromOutsideStopsARunningTraining) {
  const fs::path d = tiny_setup("sigint", 100000000);
  const fs::path out = d / "out.txt";
  const std::string cmd = "exec " + std::string(SGPT_EXE) + " " + train_args(d, "run") + " > " + out.string() + " 2>&1";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  // Wait until it trains (a few steps logged), then Ctrl-C.
  const auto t0 = std::chrono::steady_clock::now();
  while (log_records(d / "run", "train").size() < 3 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(pid, SIGINT);
  int st = 0;
  ::waitpid(pid, &st, 0);
  const std::string text = bytes_of(out);
  ASSERT_TRUE(WIFEXITED(st)) << text;
  EXPECT_EQ(WEXITSTATUS(st), kExitStoppedBySignal) << text;
  const int64_t last = log_records(d / "run", "train").back().at("step").get<int64_t>();
  EXPECT_TRUE(contains(text, "stopped by SIGINT after step " + std::to_string(last + 1))) << text;
  EXPECT_TRUE(fs::exists(d / "run" / name8("model", last + 1))) << text;
  EXPECT_NO_THROW(verify_checkpoint_file((d / "run" / name8("state", last + 1)).string()));
}

TEST(ReliabilitySignal, SecondSignalExitsAtOnce) {
  const fs::path d = tiny_setup("int2", 8);
  const Exec r = run(train_args(d, "run"), "SGPT_TEST_FAULT=0:3:int2");
  EXPECT_EQ(r.code, 128 + SIGINT) << r.out;
  EXPECT_TRUE(contains(r.out, "second signal: exiting at once")) << r.out;
  EXPECT_TRUE(checkpoint_file_steps((d / "run").string()).empty());
}

// With several ranks the stop happens at the same step on every rank, even when only one rank
// got the signal, and the run resumes to the uninterrupted run's bytes.
TEST(ReliabilitySignal, TwoRanksStopAtTheSameStep) {
  const fs::path d = tiny_setup("sigdist", 8);
  const std::string mpi = mpirun_prefix(2);
  const std::string two = "--set batch.total_batch_tokens=32 --set dist.timeout_s=15";
  const Exec straight = sh(mpi + SGPT_EXE + " " + train_args(d, "straight", two));
  ASSERT_EQ(straight.code, 0) << straight.out;
  const Exec r = sh("env SGPT_TEST_FAULT=1:3:term " + mpi + SGPT_FAULT_EXE + " " + train_args(d, "run", two));
  EXPECT_EQ(r.code, kExitStoppedBySignal) << r.out;
  EXPECT_TRUE(contains(r.out, "stopped by a signal on another rank after step 4 of 8: checkpoint written")) << r.out;
  EXPECT_EQ(log_records(d / "run", "train").back().at("step"), 3);
  EXPECT_TRUE(fs::exists(d / "run" / name8("model", 4)));
  const Exec res = sh(mpi + SGPT_EXE + " " + train_args(d, "run", two + " --resume"));
  EXPECT_EQ(res.code, 0) << res.out;
  EXPECT_TRUE(bytes_of(d / "run" / name8("model", 8)) == bytes_of(d / "straight" / name8("model", 8)));
}

// ---- 6: the divergence guard ----

namespace {

// Forwards to a CPU backend; makes the loss (or the gradient norm) NaN in one step. One
// micro-step per step in the tests below, so train_micro calls count steps.
class PoisonBackend : public Backend {
 public:
  PoisonBackend(std::unique_ptr<Backend> b, int64_t step, bool poison_loss)
      : b_(std::move(b)), step_(step), loss_(poison_loss) {}
  std::string name() const override { return b_->name(); }
  const ModelConfig& model() const override { return b_->model(); }
  const ParamLayout& layout() const override { return b_->layout(); }
  void zero_grad() override { b_->zero_grad(); }
  float train_micro(const int* inp, const int* tgt, int B, int T, float s) override {
    cur_ = calls_++;
    first_norm_ = true;
    const float l = b_->train_micro(inp, tgt, B, T, s);
    return loss_ && cur_ == step_ ? std::nanf("") : l;
  }
  float gnb_micro(const int* inp, int B, int T, float s, uint64_t seed, uint32_t st, uint32_t q) override {
    return b_->gnb_micro(inp, B, T, s, seed, st, q);
  }
  float eval_micro(const int* inp, const int* tgt, int B, int T) override { return b_->eval_micro(inp, tgt, B, T); }
  double grad_sum_squares() override {
    const double v = b_->grad_sum_squares();
    const bool poison = !loss_ && cur_ == step_ && first_norm_;
    first_norm_ = false;
    return poison ? std::nan("") : v;
  }
  void scale_grad(float s) override { b_->scale_grad(s); }
  void optimizer_step(const OptimizerStep& s, SophiaMetrics* m) override { b_->optimizer_step(s, m); }
  void hessian_ema(const HessianConsts& c) override { b_->hessian_ema(c); }
  void get(const std::string& s, std::vector<float>& out) override { b_->get(s, out); }
  void set(const std::string& s, const std::vector<float>& in) override { b_->set(s, in); }
  double state_memory_mib() override { return b_->state_memory_mib(); }

 private:
  std::unique_ptr<Backend> b_;
  int64_t step_, calls_ = 0, cur_ = -1;
  bool loss_, first_norm_ = false;
};

Config guard_config(const std::string& train, const std::string& opt) {
  json j = json::parse(R"({
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 50},
    "batch": {"micro_batch_size": 2, "total_batch_tokens": 16},
    "schedule": {"warmup_iters": 1, "lr_decay_iters": 30, "max_steps": 3},
    "eval": {"every": 0}, "checkpoint": {"every": 0}, "seed": 5})");
  j["data"] = {{"train", train}};
  j["optimizer"] = {{"name", opt}, {"hessian_interval", 3}};  // a GNB pass after step 2
  return sgpt_test::validated_config(j, "guard");
}

}  // namespace

// Issue 6: a NaN gradient norm made the clip scale 1 and the step was applied. Now a step whose
// loss or gradient norm is not finite changes neither the weights nor the optimizer state (nor h,
// whose GNB pass it skips): after steps 0, 1 and a poisoned step 2 the state is that of steps 0, 1.
TEST(ReliabilityGuard, NonFiniteLossOrGradNormSkipsTheUpdate) {
  const fs::path d = tiny_setup("guard_unit");
  for (const std::string opt : {"sophiag", "adamw"}) {
    for (const bool poison_loss : {true, false}) {
      const std::string tag = opt + (poison_loss ? "_loss" : "_norm");
      Config two = guard_config((d / "train.bin").string(), opt);
      two.schedule.max_steps = 2;
      auto a = sgpt_test::fresh_cpu_backend(two);
      sgpt_test::train_new_run(two, *a, d / ("two_" + tag));

      const Config three = guard_config((d / "train.bin").string(), opt);
      PoisonBackend b(sgpt_test::fresh_cpu_backend(three), 2, poison_loss);
      const fs::path three_run = d / ("three_" + tag);
      const TrainResult r = sgpt_test::train_new_run(three, b, three_run);
      EXPECT_EQ(r.skipped_steps, 1) << tag;
      for (const std::string& slot : {std::string("params"), std::string("m"), std::string(opt == "sophiag" ? "h" : "v")}) {
        std::vector<float> x, y;
        a->get(slot, x);
        b.get(slot, y);
        EXPECT_EQ(x, y) << tag << " " << slot;
      }
      const auto skips = log_records(three_run, "skip");
      ASSERT_EQ(skips.size(), 1u) << tag;
      EXPECT_EQ(skips[0].at("step"), 2);
      EXPECT_EQ(log_records(three_run, "train").size(), 2u);
      // No checkpoint from the skipped (final) step.
      EXPECT_TRUE(checkpoint_file_steps(three_run.string()).empty()) << tag;
    }
  }
}

// Issue 6: divergence was "internal error", exit 3. Now optimizer.max_consecutive_skips skipped
// steps in a row stop the run with exit 2, and no checkpoint is written from a skipped step.
TEST(ReliabilityGuard, ConsecutiveSkipsStopTheRunWithExitCode2) {
  const fs::path d = tiny_setup("guard_e2e", 20);
  const Exec r = run(train_args(d, "run", "--set checkpoint.every=2 --set optimizer.max_consecutive_skips=4"),
                     "SGPT_TEST_FAULT=0:3:nan");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "error: training diverged")) << r.out;
  EXPECT_FALSE(contains(r.out, "internal error")) << r.out;
  EXPECT_TRUE(contains(r.out, "4 consecutive steps (steps 3 to 6; optimizer.max_consecutive_skips = 4)")) << r.out;
  EXPECT_TRUE(contains(r.out, "the newest checkpoint is step 2 ('" + (d / "run" / name8("model", 2)).string())) << r.out;
  EXPECT_TRUE(contains(r.out, "warning: step 3 skipped")) << r.out;
  EXPECT_EQ(log_records(d / "run", "skip").size(), 4u);
  EXPECT_TRUE(fs::exists(d / "run" / name8("model", 2)));
  EXPECT_FALSE(fs::exists(d / "run" / name8("model", 4)));
  EXPECT_FALSE(fs::exists(d / "run" / name8("model", 6)));
  // A learning rate that makes the run blow up for real ends the same way.
  const Exec blow = run(train_args(d, "lr", "--set optimizer.lr=1e38 --set optimizer.min_lr=0"));
  EXPECT_EQ(blow.code, 2) << blow.out;
  EXPECT_TRUE(contains(blow.out, "training diverged")) << blow.out;
}

// With several ranks, a NaN on one rank only skips the step on every rank (the decision is taken
// from global values) and the run stops on all of them.
TEST(ReliabilityGuard, NanOnOneRankSkipsOnAllRanks) {
  const fs::path d = tiny_setup("guard_dist", 20);
  const std::string mpi = "env SGPT_TEST_FAULT=1:3:nan " + mpirun_prefix(2);
  const Exec r = sh(mpi + SGPT_FAULT_EXE + " " +
                    train_args(d, "run", "--set batch.total_batch_tokens=32 --set dist.timeout_s=15 "
                                         "--set optimizer.max_consecutive_skips=3 --set checkpoint.every=2"));
  EXPECT_EQ(r.code, 2) << r.out;  // MPI_Abort(2): mpirun passes the code on
  EXPECT_TRUE(contains(r.out, "rank 0: training diverged")) << r.out;
  EXPECT_TRUE(contains(r.out, "rank 1: training diverged")) << r.out;
  EXPECT_EQ(log_records(d / "run", "skip").size(), 3u);
  EXPECT_TRUE(fs::exists(d / "run" / name8("model", 2)));
  EXPECT_FALSE(fs::exists(d / "run" / name8("model", 4)));
}

// ---- 8: config inputs ----

TEST(ReliabilityConfig, NumberOutOfRangeNamesTheKey) {
  const fs::path d = tiny_setup("cfg_range");
  std::ofstream(d / "big.json") << R"({"optimizer": {"lr": 1e400}})";
  const Exec r = run("train --device cpu --config " + (d / "big.json").string() + " --out-dir " + (d / "run").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "config key 'optimizer.lr'") && contains(r.out, "big.json")) << r.out;
  EXPECT_FALSE(contains(r.out, "internal error")) << r.out;
  const Exec s = run(train_args(d, "run", "--set optimizer.lr=1e400"));
  EXPECT_EQ(s.code, 2) << s.out;
  EXPECT_TRUE(contains(s.out, "--set 'optimizer.lr=1e400'")) << s.out;
}

TEST(ReliabilityConfig, DuplicateKeysAreErrors) {
  const fs::path d = tiny_setup("cfg_dup");
  std::ofstream(d / "dup.json") << R"({"optimizer": {"lr": 1e-3, "beta1": 0.9, "lr": 2e-3}})";
  const Exec r = run("train --device cpu --config " + (d / "dup.json").string() + " --out-dir " + (d / "run").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "config key 'optimizer.lr' appears twice")) << r.out;
  std::ofstream(d / "dup2.json") << R"({"seed": 1, "model": {"n_layer": 2}, "seed": 2})";
  const Exec t = run("train --device cpu --config " + (d / "dup2.json").string() + " --out-dir " + (d / "run").string());
  EXPECT_EQ(t.code, 2) << t.out;
  EXPECT_TRUE(contains(t.out, "config key 'seed' appears twice")) << t.out;
  // The same key in two different objects is fine.
  EXPECT_NO_THROW(read_json_file([&] {
    std::ofstream(d / "ok.json") << R"({"eval": {"every": 1}, "log": {"every": 1}})";
    return (d / "ok.json").string();
  }()));
  EXPECT_FALSE(fs::exists(d / "run"));
}

TEST(ReliabilityConfig, MissingConfigFileExitsWith2) {
  const Exec r = run("train --config /nonexistent/cfg.json --out-dir /nonexistent/run");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "cannot read config file '/nonexistent/cfg.json'")) << r.out;
  const Exec e = run("eval --config /nonexistent/cfg.json --model /nonexistent/m.bin");
  EXPECT_EQ(e.code, 2) << e.out;
  const Exec i = run("train --init-from /nonexistent/m.bin --out-dir /nonexistent/run");
  EXPECT_EQ(i.code, 2) << i.out;
}

TEST(ReliabilityConfig, SetTypeErrorNamesTheSetNotTheFile) {
  const fs::path d = tiny_setup("cfg_set");
  const Exec r = run(train_args(d, "run", "--set 'model.n_layer=\"two\"'"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--set 'model.n_layer=\"two\"': config key 'model.n_layer' must be an integer")) << r.out;
  EXPECT_FALSE(contains(r.out, "cfg.json")) << r.out;
  // A type error in the file itself still names the file.
  std::ofstream(d / "bad.json") << R"({"model": {"n_layer": "two"}})";
  const Exec f = run("train --device cpu --config " + (d / "bad.json").string() + " --out-dir " + (d / "run").string());
  EXPECT_TRUE(contains(f.out, "bad.json: config key 'model.n_layer'")) << f.out;
  // The new key is validated.
  const Exec k = run(train_args(d, "run", "--set optimizer.max_consecutive_skips=0"));
  EXPECT_EQ(k.code, 2) << k.out;
  EXPECT_TRUE(contains(k.out, "optimizer.max_consecutive_skips")) << k.out;
}
