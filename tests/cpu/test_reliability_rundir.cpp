// The run directory as one guarded unit (docs/reliability.md, "Run directories"): one writer at a
// time (an OS lock), a start that fails leaves the folder as it found it, a checkpoint's two files
// bound to each other and to the run's config, ranks that must agree, a run that outlives its
// terminal and its stdout, and a log that never ends in a torn record. Each test runs the
// executable (SGPT_EXE, or $SGPT_TEST_EXE to try another build) the way a user would.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "test_corpus.h"
#include "test_mpirun.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string exe() {
  const char* e = std::getenv("SGPT_TEST_EXE");
  return e && *e ? e : SGPT_EXE;
}

struct Res {
  int code;  // exit status, or 128 + signal
  std::string out;
};

Res sh(const std::string& cmd) {
  FILE* p = popen(("bash -c '" + cmd + "' 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1, out};
}

Res cli(const std::string& args) { return sh(exe() + " " + args); }

bool has(const std::string& s, const std::string& n) { return s.find(n) != std::string::npos; }

std::string bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string ckpt(const char* kind, int64_t step) {
  char b[40];
  std::snprintf(b, sizeof b, "%s_%08lld.bin", kind, static_cast<long long>(step));
  return b;
}

// Data and a config for the executable: 2 layers, 64 tokens a step; `slow` makes each step take
// long enough (about 0.1-0.3 s on one busy core) for a second process to meet a live run.
fs::path setup(const std::string& name, int64_t max_steps, int64_t every, bool slow = false) {
  const fs::path d = sgpt_test::scratch_dir("rundir", name);
  sgpt_test::write_random_shard(d / "train.bin", 60, 20000, 7);
  const int embd = slow ? 256 : 16;
  std::ofstream(d / "cfg.json") << R"({"model": {"n_layer": 2, "n_head": 2, "n_embd": )" << embd
                                << R"(, "block_size": 16, "vocab_size": 64},
    "batch": {"micro_batch_size": 4, "total_batch_tokens": )" << (slow ? 256 : 64) << R"(},
    "schedule": {"warmup_iters": 1, "lr_decay_iters": 100, "max_steps": )" << max_steps << R"(},
    "optimizer": {"hessian_interval": 2},
    "checkpoint": {"every": )" << every << R"(, "keep": 5},
    "eval": {"every": 0}, "data": {"train": ")" << (d / "train.bin").string() << R"("}})";
  return d;
}

std::string train(const fs::path& d, const fs::path& run, const std::string& extra = "") {
  return "train --device cpu --config " + (d / "cfg.json").string() + " --out-dir " + run.string() + " " + extra;
}

// Starts `args` in the background with OMP_NUM_THREADS=1; returns its pid.
pid_t spawn(const std::string& args, const fs::path& out_file) {
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("OMP_NUM_THREADS", "1", 1);
    const std::string cmd = "exec " + exe() + " " + args + " > " + out_file.string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

int wait_code(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

// Waits (up to 60 s) until the run's log holds a train record.
bool wait_for_step(const fs::path& run) {
  for (int i = 0; i < 600; ++i) {
    if (has(bytes_of(run / "log.jsonl"), "\"type\":\"train\"")) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::directory_iterator(dir)) m[e.path().filename().string()] = bytes_of(e.path());
  return m;
}

std::vector<json> records(const fs::path& run) {
  std::vector<json> v;
  std::ifstream f(run / "log.jsonl");
  std::string line;
  while (std::getline(f, line)) v.push_back(json::parse(line));  // every line must parse
  return v;
}

}  // namespace

// A second writer of a live run's folder, new run or --resume, exits 2 naming the folder and the
// holder's pid; the live run is not disturbed and readers work beside it.
TEST(ReliabilityRunDir, SecondWriterOfALiveRunIsRefusedNamingThePid) {
  const fs::path d = setup("lock", 400, 2, /*slow=*/true);
  const fs::path run = d / "run";
  const pid_t a = spawn(train(d, run), d / "a.txt");
  ASSERT_TRUE(wait_for_step(run)) << bytes_of(d / "a.txt");
  for (const std::string extra : {"", "--resume"}) {
    const Res b = cli(train(d, run, extra));
    EXPECT_EQ(b.code, 2) << extra << ": " << b.out;
    EXPECT_TRUE(has(b.out, "is in use by another sophiagpt process") && has(b.out, run.string()) &&
                has(b.out, "pid " + std::to_string(a)))
        << extra << ": " << b.out;
  }
  // A reader beside the live run: the newest checkpoint that verifies.
  for (int i = 0; i < 600 && !fs::exists(run / ckpt("state", 2)); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const Res e = cli("eval --device cpu --run " + run.string() + " --batches 1 --set data.val=" + (d / "train.bin").string());
  EXPECT_EQ(e.code, 0) << e.out;
  kill(a, SIGTERM);
  EXPECT_EQ(wait_code(a), 5) << bytes_of(d / "a.txt");
  // One run's records only: the machine record once, steps strictly increasing.
  int64_t last = -1, machines = 0;
  for (const json& r : records(run)) {
    if (r["type"] == "machine") ++machines;
    if (r["type"] == "train") {
      EXPECT_GT(r["step"].get<int64_t>(), last);
      last = r["step"];
    }
  }
  EXPECT_EQ(machines, 1);
  // Once the holder has ended, --resume takes the folder.
  const Res c = cli(train(d, run, "--resume -q --set schedule.max_steps=" + std::to_string(last + 2)));
  EXPECT_EQ(c.code, 0) << c.out;
}

// A model too large for the machine is refused before anything is allocated (exit 2 naming the
// need and what is there), and the failed start leaves the folder as it found it, so a plain
// retry with a smaller model in the same folder works.
TEST(ReliabilityRunDir, ModelTooLargeIsRefusedAndTheFolderIsLeftAsFound) {
  const fs::path d = setup("oom", 2, 0);
  const std::string big = "--set model.n_layer=96 --set model.n_embd=16384 --set model.n_head=128 --set model.vocab_size=50257";
  Res r = cli(train(d, d / "new/deeper", big));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(has(r.out, "GiB of host memory") && has(r.out, "available")) << r.out;
  EXPECT_FALSE(fs::exists(d / "new")) << "the folders this start created are removed";
  fs::create_directories(d / "mine");
  std::ofstream(d / "mine" / "notes.txt") << "mine";
  const auto before = snapshot(d / "mine");
  r = cli(train(d, d / "mine", big));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(snapshot(d / "mine"), before);
  r = cli(train(d, d / "mine", "-q"));
  EXPECT_EQ(r.code, 0) << r.out;
}

// The two files of a checkpoint belong together: a model file of another step beside a state
// file is refused, the pair is set aside (never over an earlier .bad) and the resume falls back to
// the newest consistent checkpoint.
TEST(ReliabilityRunDir, ModelFileOfAnotherStepIsNotResumed) {
  const fs::path d = setup("bind", 6, 2);
  const fs::path run = d / "run";
  ASSERT_EQ(cli(train(d, run, "-q")).code, 0);
  const fs::path ref = d / "ref";
  ASSERT_EQ(cli(train(d, ref, "-q")).code, 0);
  // An earlier set-aside file that must survive.
  std::ofstream(run / (ckpt("model", 6) + ".bad")) << "an earlier set-aside";
  fs::copy_file(run / ckpt("model", 4), run / ckpt("model", 6), fs::copy_options::overwrite_existing);
  const Res r = cli(train(d, run, "-q --resume --set schedule.max_steps=8"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "is not the model file that") && has(r.out, "step 4")) << r.out;
  EXPECT_EQ(bytes_of(run / (ckpt("model", 6) + ".bad")), "an earlier set-aside");
  EXPECT_TRUE(fs::exists(run / (ckpt("model", 6) + ".bad.1")));
  EXPECT_TRUE(fs::exists(run / (ckpt("state", 6) + ".bad")));
  // Resumed from step 4, it retrains steps 4-5 to the uninterrupted run's bytes at step 6.
  ASSERT_EQ(cli(train(d, ref, "-q --resume --set schedule.max_steps=8")).code, 0);
  EXPECT_EQ(bytes_of(run / ckpt("model", 8)), bytes_of(ref / ckpt("model", 8)));
}

// --resume with another model shape or optimizer is refused naming the key; keys that may change
// are listed in a note; a second resume from one step keeps the first one's config record.
TEST(ReliabilityRunDir, ResumeRefusesAChangedModelOrOptimizerNamingTheKey) {
  const fs::path d = setup("resume_cfg", 4, 2);
  const fs::path run = d / "run";
  ASSERT_EQ(cli(train(d, run, "-q")).code, 0);
  const auto before = snapshot(run);
  for (const std::string set : {"model.n_layer=3", "optimizer.name=\"adamw\"", "seed=5"}) {
    const Res r = cli(train(d, run, "-q --resume --set " + set));
    EXPECT_EQ(r.code, 2) << set << ": " << r.out;
    EXPECT_TRUE(has(r.out, "config key '" + set.substr(0, set.find('=')) + "'") && has(r.out, "cannot change on resume"))
        << set << ": " << r.out;
    EXPECT_EQ(snapshot(run), before) << set;
  }
  Res r = cli(train(d, run, "-q --resume --set schedule.max_steps=6 --set optimizer.lr=0.001"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "resuming with config keys changed since the run's start") && has(r.out, "optimizer.lr")) << r.out;
  const std::string first = bytes_of(run / "config.resume_00000004.json");
  ASSERT_FALSE(first.empty());
  // Again from step 4: the set-aside of 6 is forced by removing its state file.
  fs::remove(run / ckpt("state", 6));
  r = cli(train(d, run, "-q --resume --set schedule.max_steps=5"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(bytes_of(run / "config.resume_00000004.json"), first);
  EXPECT_TRUE(fs::exists(run / "config.resume_00000004.1.json"));
  // --init-from and --resume together: one or the other.
  r = cli(train(d, run, "-q --resume --init-from " + (run / ckpt("model", 4)).string()));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(has(r.out, "--init-from") && has(r.out, "--resume")) << r.out;
}

// Ranks started with different settings stop before training, all with exit code 2, naming the
// first differing key.
TEST(ReliabilityRunDir, RanksWithDifferentConfigsAreRefused) {
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) GTEST_SKIP() << "no mpirun";
  const fs::path d = setup("ranks", 2, 0);
  const std::string base = train(d, d / "run", "-q --set batch.total_batch_tokens=128");
  const std::string cmd = mpirun_prefix(1) + "-x OMP_NUM_THREADS=1 " + exe() + " " + base + " : -np 1 -x OMP_NUM_THREADS=1 " +
                          exe() + " " + base + " --set optimizer.lr=0.02";
  const Res r = sh(cmd);
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "started with different settings") && has(r.out, "config.optimizer.lr")) << r.out;
  EXPECT_FALSE(has(r.out, "\"type\":\"train\""));
  EXPECT_FALSE(fs::exists(d / "run" / "log.jsonl"));
}

// A closed stdout pipe (`| head -1`) and SIGHUP (a closed terminal) do not kill a run: the first
// only ends the console output, the second stops it like SIGTERM, with a checkpoint.
TEST(ReliabilityRunDir, ClosedStdoutAndSighupDoNotLoseTheRun) {
  const fs::path d = setup("pipe", 30, 0);
  const Res r = sh("set -o pipefail; OMP_NUM_THREADS=1 " + exe() + " " + train(d, d / "run") +
                   " --set log.every=1 | head -c 10 > /dev/null; echo \"status ${PIPESTATUS[0]}\"");
  EXPECT_TRUE(has(r.out, "status 0")) << r.out;
  EXPECT_TRUE(fs::exists(d / "run" / ckpt("model", 30)));
  EXPECT_EQ(records(d / "run").back()["step"], 29);

  const fs::path d2 = setup("hup", 400, 0, /*slow=*/true);
  const pid_t a = spawn(train(d2, d2 / "run"), d2 / "a.txt");
  ASSERT_TRUE(wait_for_step(d2 / "run")) << bytes_of(d2 / "a.txt");
  kill(a, SIGHUP);
  EXPECT_EQ(wait_code(a), 5) << bytes_of(d2 / "a.txt");
  EXPECT_TRUE(has(bytes_of(d2 / "a.txt"), "SIGHUP")) << bytes_of(d2 / "a.txt");
  bool found = false;
  for (const auto& e : fs::directory_iterator(d2 / "run")) found |= e.path().filename().string().rfind("model_", 0) == 0;
  EXPECT_TRUE(found) << "a checkpoint was written";
}

// log.jsonl never ends in a torn record: one left by a crash is cut off at the next start, and a
// record that does not fit (the file-size limit) is not left half written.
TEST(ReliabilityRunDir, LogNeverEndsInATornRecord) {
  const fs::path d = setup("torn", 4, 2);
  const fs::path run = d / "run";
  ASSERT_EQ(cli(train(d, run, "-q --set schedule.max_steps=2")).code, 0);
  { std::ofstream(run / "log.jsonl", std::ios::app) << R"({"type":"train","step":2,"lo)"; }
  Res r = cli(train(d, run, "-q --resume"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "ended in an incomplete line")) << r.out;
  EXPECT_EQ(records(run).back()["step"], 3);  // every line parses (records() throws otherwise)

  // Fill the log to just under a 1 MiB file-size limit (ulimit -f counts KiB in bash) (checkpoints here are smaller), then resume:
  // the first record crosses the limit.
  {
    std::ofstream f(run / "log.jsonl", std::ios::app);
    const std::string pad(900, 'x');
    while (fs::file_size(run / "log.jsonl") < (1 << 20) - 1500) {
      f << json{{"type", "note"}, {"step", -1}, {"pad", pad}}.dump() << "\n";
      f.flush();
    }
  }
  const std::string before = bytes_of(run / "log.jsonl");
  r = sh("ulimit -f 1024; " + exe() + " " + train(d, run, "-q --resume --set schedule.max_steps=20"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(has(r.out, "cannot append to the log file")) << r.out;
  const std::string after = bytes_of(run / "log.jsonl");
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(after.back(), '\n');
  EXPECT_NO_THROW(records(run));
}
