// Launcher detection, rendezvous addresses, and the TCP and file rendezvous with ranks as threads
// of this process (see src/dist/launch.h).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "dist/launch.h"

namespace {

namespace fs = std::filesystem;
using sgpt::dist::detect_launch;
using sgpt::dist::LaunchInfo;
using sgpt::dist::rendezvous;
using sgpt::dist::resolve_init;
using Env = std::map<std::string, std::string>;
using Clock = std::chrono::steady_clock;

// A getenv over a fixed map, so the tests see neither the real environment nor each other.
sgpt::dist::GetEnv fake_env(const Env& env) {
  return [env](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
}

// The UserError message of fn(), or "(no error)" / "(other exception)" so a check on it fails.
std::string user_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const sgpt::UserError& e) {
    return e.what();
  } catch (...) {
    return "(other exception)";
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = uint8_t(gen());
  return v;
}

// A port nobody listens on right now: the kernel's choice for a throwaway socket bound to port 0.
int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (s >= 0) ::close(s);
    return 0;
  }
  ::close(s);
  return ntohs(a.sin_port);
}

std::string tcp_init() {
  const int port = free_port();
  EXPECT_GT(port, 0);
  return "tcp://127.0.0.1:" + std::to_string(port);
}

struct Rank {
  int rank = 0, world = 1;
  std::vector<uint8_t> bytes;  // in: rank 0's payload (others: junk); out: what arrived
  std::string error;           // the UserError message, empty on success
  std::atomic<bool> done{false};

  Rank() = default;
  // Copied only before its thread starts (std::atomic itself does not copy).
  Rank(const Rank& o) : rank(o.rank), world(o.world), bytes(o.bytes), error(o.error), done(o.done.load()) {}
  Rank& operator=(const Rank& o) {
    rank = o.rank;
    world = o.world;
    bytes = o.bytes;
    error = o.error;
    done = o.done.load();
    return *this;
  }
};

// Runs rendezvous() for one rank on its own thread.
std::thread start(const std::string& init, Rank& r, double timeout_s) {
  return std::thread([&r, init, timeout_s] {
    r.error = user_error([&] { rendezvous(init, r.rank, r.world, r.bytes, timeout_s); });
    if (r.error == "(no error)") r.error.clear();
    r.done = true;
  });
}

// Runs every rank on its own thread and waits for all of them.
void run_all(const std::string& init, std::vector<Rank>& ranks, double timeout_s) {
  std::vector<std::thread> threads;
  for (Rank& r : ranks) threads.push_back(start(init, r, timeout_s));
  for (std::thread& t : threads) t.join();
}

std::vector<Rank> make_ranks(int count, int world, const std::vector<uint8_t>& payload) {
  std::vector<Rank> ranks(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    ranks[size_t(i)].rank = i;
    ranks[size_t(i)].world = world;
    ranks[size_t(i)].bytes = i == 0 ? payload : std::vector<uint8_t>{uint8_t(i)};
  }
  return ranks;
}

// A fresh folder under the system temp folder, removed when the test ends.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("sgpt_dist_" + std::to_string(::getpid()) + "_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  size_t entries() const {
    return size_t(std::distance(fs::directory_iterator(path), fs::directory_iterator()));
  }
  // The file rendezvous address of a file "rdzv" in this folder.
  std::string init() const { return "file://" + (path / "rdzv").string(); }
};

// `count` ranks of a world of `count` meet at `init`: every one succeeds and holds rank 0's
// payload (200 random bytes from `seed`).
void expect_all_receive(const std::string& init, int count, uint32_t seed) {
  const std::vector<uint8_t> payload = random_bytes(200, seed);
  std::vector<Rank> ranks = make_ranks(count, count, payload);
  run_all(init, ranks, 10);
  for (const Rank& r : ranks) {
    EXPECT_EQ(r.error, "") << "rank " << r.rank;
    EXPECT_EQ(r.bytes, payload) << "rank " << r.rank;
  }
}

// Three ranks at `init`: while rank 2 has not come (not arrived at rank 0's server, or not
// acknowledged rank 0's file), ranks 0 and 1 wait; then all three hold rank 0's payload.
void expect_barrier(const std::string& init, uint32_t seed) {
  const std::vector<uint8_t> payload = random_bytes(16, seed);
  std::vector<Rank> ranks = make_ranks(3, 3, payload);
  std::thread t0 = start(init, ranks[0], 10), t1 = start(init, ranks[1], 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(ranks[0].done);
  EXPECT_FALSE(ranks[1].done);
  std::thread t2 = start(init, ranks[2], 10);
  t0.join();
  t1.join();
  t2.join();
  for (const Rank& r : ranks) EXPECT_EQ(r.bytes, payload) << "rank " << r.rank << ": " << r.error;
}

// The file format rank 0 writes (launch.cpp): big-endian magic, world, size, then the bytes.
void write_rendezvous_file(const fs::path& p, uint32_t world, const std::vector<uint8_t>& bytes) {
  std::vector<uint8_t> out;
  const auto put = [&out](uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out.push_back(uint8_t(v >> (8 * i)));
  };
  put(0x53475054, 4);
  put(world, 4);
  put(bytes.size(), 8);
  out.insert(out.end(), bytes.begin(), bytes.end());
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size()));
}

// ---- detect_launch ----

// What detect_launch should find in an environment.
struct Detected {
  std::string launcher;
  int rank, world, local_rank;
  bool by_mpi;
};

void expect_detected(const Env& env, const Detected& want) {
  const LaunchInfo info = detect_launch(fake_env(env));
  EXPECT_EQ(info.launcher, want.launcher);
  EXPECT_EQ(info.rank, want.rank) << want.launcher;
  EXPECT_EQ(info.world, want.world) << want.launcher;
  EXPECT_EQ(info.local_rank, want.local_rank) << want.launcher;
  EXPECT_EQ(info.by_mpi(), want.by_mpi) << want.launcher;
}

TEST(DistLaunch, DetectNone) { expect_detected({{"HOME", "/root"}}, {"none", 0, 1, 0, false}); }

TEST(DistLaunch, DetectOpenMpi) {
  expect_detected({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}},
                  {"openmpi", 5, 8, 1, true});
}

TEST(DistLaunch, DetectMpich) {
  expect_detected({{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "2"}}, {"mpich", 3, 4, 2, true});
  const LaunchInfo info = detect_launch(fake_env({{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}}));
  EXPECT_EQ(info.local_rank, 0);
}

TEST(DistLaunch, DetectSlurm) {
  expect_detected({{"SLURM_PROCID", "7"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "3"}}, {"slurm", 7, 16, 3, false});
}

TEST(DistLaunch, DetectTorchrun) {
  expect_detected({{"RANK", "2"}, {"WORLD_SIZE", "3"}, {"LOCAL_RANK", "2"}}, {"torchrun", 2, 3, 2, false});
  const LaunchInfo info = detect_launch(fake_env({{"RANK", "1"}, {"WORLD_SIZE", "2"}}));
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.local_rank, 0);
}

TEST(DistLaunch, DetectPrecedence) {
  LaunchInfo info = detect_launch(fake_env({{"RANK", "0"},
                                            {"WORLD_SIZE", "2"},
                                            {"OMPI_COMM_WORLD_RANK", "3"},
                                            {"OMPI_COMM_WORLD_SIZE", "4"},
                                            {"OMPI_COMM_WORLD_LOCAL_RANK", "3"}}));
  EXPECT_EQ(info.launcher, "openmpi");
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world, 4);
  info = detect_launch(fake_env({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"PMI_RANK", "0"}, {"PMI_SIZE", "3"}}));
  EXPECT_EQ(info.launcher, "mpich");
  EXPECT_EQ(info.world, 3);
  // A complete pair further down wins over a half-set one above it.
  info = detect_launch(fake_env({{"SLURM_PROCID", "0"}, {"RANK", "1"}, {"WORLD_SIZE", "2"}}));
  EXPECT_EQ(info.launcher, "torchrun");
  EXPECT_EQ(info.rank, 1);
}

TEST(DistLaunch, DetectBadValues) {
  struct Case {
    Env env;
    std::string names;  // must appear in the message
  };
  const std::vector<Case> cases = {
      {{{"RANK", "x"}, {"WORLD_SIZE", "2"}}, "RANK"},
      {{{"RANK", "-1"}, {"WORLD_SIZE", "2"}}, "RANK"},
      {{{"RANK", ""}, {"WORLD_SIZE", "2"}}, "RANK"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "2x"}}, "WORLD_SIZE"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "99999999999"}}, "WORLD_SIZE"},
      {{{"RANK", "2"}, {"WORLD_SIZE", "2"}}, "RANK=2"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "0"}}, "WORLD_SIZE"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}}, "LOCAL_RANK"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", " 1"}}, "LOCAL_RANK"},
      {{{"RANK", "1"}}, "WORLD_SIZE"},
      {{{"WORLD_SIZE", "4"}}, "RANK"},
      {{{"SLURM_NTASKS", "4"}}, "SLURM_PROCID"},
      {{{"OMPI_COMM_WORLD_RANK", "9"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}},
       "OMPI_COMM_WORLD_RANK"},
      {{{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}, {"MPI_LOCALRANKID", "z"}}, "MPI_LOCALRANKID"},
      {{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}, "SLURM_LOCALID"},
  };
  for (const Case& c : cases) {
    const std::string msg = user_error([&] { detect_launch(fake_env(c.env)); });
    EXPECT_TRUE(contains(msg, c.names)) << "expected '" << c.names << "' in: " << msg;
  }
}

// ---- resolve_init ----

TEST(DistLaunch, ResolveDefaults) {
  EXPECT_EQ(resolve_init("", fake_env({})), "tcp://127.0.0.1:29500");
  EXPECT_EQ(resolve_init("", fake_env({{"MASTER_ADDR", "node7"}})), "tcp://node7:29500");
  EXPECT_EQ(resolve_init("", fake_env({{"MASTER_PORT", "1234"}})), "tcp://127.0.0.1:1234");
  EXPECT_EQ(resolve_init("", fake_env({{"MASTER_ADDR", "10.0.0.2"}, {"MASTER_PORT", "40000"}})),
            "tcp://10.0.0.2:40000");
}

TEST(DistLaunch, ResolveExplicit) {
  const Env env = {{"MASTER_ADDR", "ignored"}, {"MASTER_PORT", "1"}};
  EXPECT_EQ(resolve_init("tcp://host-a.example:65535", fake_env(env)), "tcp://host-a.example:65535");
  EXPECT_EQ(resolve_init("tcp://192.168.1.5:1", fake_env(env)), "tcp://192.168.1.5:1");
  EXPECT_EQ(resolve_init("file:///tmp/x", fake_env(env)), "file:///tmp/x");
  EXPECT_EQ(resolve_init("file:///shared/runs/a/rdzv", fake_env(env)), "file:///shared/runs/a/rdzv");
}

TEST(DistLaunch, ResolveBadValues) {
  for (const std::string bad : {"ftp://x", "tcp://host", "tcp://:1", "tcp://h:0", "tcp://h:70000",
                                "tcp://h:-1", "tcp://h:12x", "tcp://h:", "file://relative", "file://",
                                "file:///tmp/", "127.0.0.1:29500"}) {
    const std::string msg = user_error([&] { resolve_init(bad, fake_env({})); });
    EXPECT_TRUE(contains(msg, "dist.init")) << bad << ": " << msg;
    EXPECT_TRUE(contains(msg, bad)) << bad << ": " << msg;
  }
  // A bad MASTER_PORT is reported too, with where the address came from.
  const std::string msg = user_error([] { resolve_init("", fake_env({{"MASTER_PORT", "0"}})); });
  EXPECT_TRUE(contains(msg, "dist.init")) << msg;
  EXPECT_TRUE(contains(msg, "MASTER_PORT")) << msg;
}

// ---- rendezvous ----

TEST(DistLaunch, WorldOneReturnsAtOnce) {
  std::vector<uint8_t> bytes = {1, 2, 3};
  const auto t0 = Clock::now();
  // Neither address is usable; world 1 must not touch them.
  rendezvous("tcp://no-such-host.invalid:1", 0, 1, bytes, 10);
  rendezvous("file:///no/such/folder/x", 0, 1, bytes, 10);
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(100));
  EXPECT_EQ(bytes, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_FALSE(fs::exists("/no/such/folder"));
}

TEST(DistLaunch, TcpFourRanks) { expect_all_receive(tcp_init(), 4, 1); }

TEST(DistLaunch, TcpEmptyPayload) {
  const std::string init = tcp_init();
  std::vector<Rank> ranks = make_ranks(2, 2, {});
  run_all(init, ranks, 10);
  EXPECT_EQ(ranks[0].error + ranks[1].error, "");
  EXPECT_TRUE(ranks[1].bytes.empty());  // it held one byte before
}

TEST(DistLaunch, TcpIsABarrier) { expect_barrier(tcp_init(), 2); }

TEST(DistLaunch, TcpWorldMismatch) {
  const std::string init = tcp_init();
  std::vector<Rank> ranks = make_ranks(2, 2, random_bytes(8, 3));
  ranks[1].world = 3;
  const auto t0 = Clock::now();
  run_all(init, ranks, 5);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(4));  // fails at once, not at the timeout
  EXPECT_TRUE(contains(ranks[0].error, "world size 3")) << ranks[0].error;
  EXPECT_TRUE(contains(ranks[0].error, "world size 2")) << ranks[0].error;
  EXPECT_TRUE(contains(ranks[1].error, init)) << ranks[1].error;
}

TEST(DistLaunch, TcpDuplicateRank) {
  const std::string init = tcp_init();
  std::vector<Rank> ranks = make_ranks(3, 3, random_bytes(8, 4));
  ranks[2].rank = 1;
  run_all(init, ranks, 5);
  EXPECT_TRUE(contains(ranks[0].error, "two processes connected as rank 1")) << ranks[0].error;
  EXPECT_NE(ranks[1].error, "");
  EXPECT_NE(ranks[2].error, "");
}

TEST(DistLaunch, TcpMissingRank) {
  const std::string init = tcp_init();
  std::vector<Rank> ranks = make_ranks(3, 4, random_bytes(8, 5));  // rank 3 never comes
  const auto t0 = Clock::now();
  run_all(init, ranks, 1);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  EXPECT_TRUE(contains(ranks[0].error, "saw 3 of 4 ranks")) << ranks[0].error;
  EXPECT_TRUE(contains(ranks[0].error, "missing ranks 3")) << ranks[0].error;
  EXPECT_TRUE(contains(ranks[0].error, init)) << ranks[0].error;
  EXPECT_NE(ranks[1].error, "");  // released by rank 0's failure
  EXPECT_NE(ranks[2].error, "");
}

TEST(DistLaunch, TcpNoServer) {
  const std::string init = tcp_init();
  std::vector<uint8_t> bytes;
  const auto t0 = Clock::now();
  const std::string msg = user_error([&] { rendezvous(init, 1, 2, bytes, 0.5); });
  const auto took = Clock::now() - t0;
  EXPECT_TRUE(contains(msg, "could not reach rank 0 at " + init)) << msg;
  EXPECT_GE(took, std::chrono::milliseconds(400));
  EXPECT_LT(took, std::chrono::seconds(3));
}

// A raw client socket connected to `init`'s port on 127.0.0.1.
int raw_connect(const std::string& init) {
  const int port = std::stoi(init.substr(init.rfind(':') + 1));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(uint16_t(port));
  for (int i = 0; i < 100; ++i) {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
    ::close(s);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

TEST(DistLaunch, TcpSilentClientTimesOut) {
  const std::string init = tcp_init();
  Rank r0;
  r0.world = 2;
  std::thread t = start(init, r0, 1);
  const int s = raw_connect(init);  // connects, never says hello
  EXPECT_GE(s, 0);
  t.join();
  if (s >= 0) ::close(s);
  EXPECT_TRUE(contains(r0.error, "saw 1 of 2 ranks")) << r0.error;
  EXPECT_TRUE(contains(r0.error, "1 connection(s) sent no hello")) << r0.error;
}

TEST(DistLaunch, TcpIgnoresStrayConnection) {
  const std::string init = tcp_init();
  const std::vector<uint8_t> payload = random_bytes(32, 6);
  std::vector<Rank> ranks = make_ranks(2, 2, payload);
  std::thread t0 = start(init, ranks[0], 5);
  const int s = raw_connect(init);
  ASSERT_GE(s, 0);
  const char junk[12] = "GET / HTTP/";  // not the magic word: dropped, not fatal
  EXPECT_EQ(::send(s, junk, sizeof junk, MSG_NOSIGNAL), ssize_t(sizeof junk));
  std::thread t1 = start(init, ranks[1], 5);
  t0.join();
  t1.join();
  ::close(s);
  EXPECT_EQ(ranks[0].error, "");
  EXPECT_EQ(ranks[1].bytes, payload) << ranks[1].error;
}

TEST(DistLaunch, TcpPortInUse) {
  const std::string init = tcp_init();
  Rank a, b;
  a.world = b.world = 2;
  std::thread ta = start(init, a, 1);
  const int s = raw_connect(init);  // once it connects, `a` is listening
  EXPECT_GE(s, 0);
  std::thread tb = start(init, b, 1);
  ta.join();
  tb.join();
  if (s >= 0) ::close(s);
  EXPECT_TRUE(contains(b.error, "cannot listen on port " + init.substr(init.rfind(':') + 1))) << b.error;
}

TEST(DistLaunch, FileThreeRanks) {
  TempDir dir("three");
  expect_all_receive(dir.init(), 3, 7);
  EXPECT_EQ(dir.entries(), 0u);  // neither the file, nor its temporary, nor the acks remain
}

TEST(DistLaunch, FileIsABarrier) {
  TempDir dir("barrier");
  expect_barrier(dir.init(), 8);
}

TEST(DistLaunch, FileStaleIgnored) {
  TempDir dir("stale");
  const fs::path path = dir.path / "rdzv";
  const std::string init = "file://" + path.string();
  // A complete file for the same world, as a crashed run would leave it, but an hour old.
  write_rendezvous_file(path, 2, random_bytes(200, 9));
  fs::last_write_time(path, fs::file_time_type::clock::now() - std::chrono::hours(1));
  const std::vector<uint8_t> payload = random_bytes(200, 10);
  std::vector<Rank> ranks = make_ranks(2, 2, payload);
  std::thread t1 = start(init, ranks[1], 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(ranks[1].done);  // still waiting for a fresh file
  std::thread t0 = start(init, ranks[0], 10);
  t0.join();
  t1.join();
  EXPECT_EQ(ranks[0].error + ranks[1].error, "");
  EXPECT_EQ(ranks[1].bytes, payload);
  EXPECT_EQ(dir.entries(), 0u);
}

TEST(DistLaunch, FileFormatMatchesTest) {
  // The stale-file test is only meaningful if a fresh file in that format is accepted.
  TempDir dir("format");
  const fs::path path = dir.path / "rdzv";
  const std::vector<uint8_t> payload = random_bytes(50, 11);
  write_rendezvous_file(path, 2, payload);
  Rank r1;
  r1.rank = 1;
  r1.world = 2;
  std::thread t = start("file://" + path.string(), r1, 0.5);
  // Stand in for rank 0: wait for the ack, then remove it to release the reader.
  const fs::path ack = path.string() + ".ack.1";
  for (int i = 0; i < 100 && !fs::exists(ack); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(fs::exists(ack));
  fs::remove(ack);
  t.join();
  EXPECT_EQ(r1.error, "");
  EXPECT_EQ(r1.bytes, payload);
}

TEST(DistLaunch, FileWorldMismatch) {
  TempDir dir("mismatch");
  const std::string init = dir.init();
  std::vector<Rank> ranks = make_ranks(2, 3, random_bytes(8, 12));
  ranks[1].world = 2;
  run_all(init, ranks, 1);
  EXPECT_TRUE(contains(ranks[1].error, "world size 3")) << ranks[1].error;
  EXPECT_TRUE(contains(ranks[1].error, "world size 2")) << ranks[1].error;
  EXPECT_TRUE(contains(ranks[0].error, "saw 1 of 3 ranks")) << ranks[0].error;
}

TEST(DistLaunch, FileNoRankZero) {
  TempDir dir("norank0");
  const std::string init = dir.init();
  std::vector<Rank> ranks = make_ranks(3, 3, {});
  ranks.erase(ranks.begin());  // ranks 1 and 2 only
  const auto t0 = Clock::now();
  run_all(init, ranks, 0.5);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  for (const Rank& r : ranks) {
    EXPECT_TRUE(contains(r.error, "found no rendezvous file from rank 0 at " + init)) << r.error;
    EXPECT_EQ(r.bytes, std::vector<uint8_t>{uint8_t(r.rank)});  // untouched
  }
  EXPECT_EQ(dir.entries(), 0u);  // no ack for a file never read
}

TEST(DistLaunch, FileMissingRank) {
  TempDir dir("missing");
  const std::string init = dir.init();
  std::vector<Rank> ranks = make_ranks(2, 3, random_bytes(8, 13));  // rank 2 never comes
  run_all(init, ranks, 1);
  EXPECT_TRUE(contains(ranks[0].error, "saw 2 of 3 ranks")) << ranks[0].error;
  EXPECT_TRUE(contains(ranks[0].error, "no ack from ranks 2")) << ranks[0].error;
  EXPECT_TRUE(contains(ranks[1].error, "did not see all 3 ranks")) << ranks[1].error;
  EXPECT_FALSE(fs::exists(dir.path / "rdzv"));
}

}  // namespace
