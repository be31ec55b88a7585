// LocalComm, MpiComm (through the run-time plugin), the watchdog and the shard arithmetic.
#include "dist/comm.h"

#include <dlfcn.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "common/error.h"

namespace sgpt::dist {
namespace {

double now_s() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  std::string name() const override { return "local"; }
  void allreduce_sum(double*, size_t) override {}
  void allreduce_sum(float*, size_t) override {}
  void reduce_scatter_sum(float*, size_t) override {}
  void allgather(float*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
};

// The plugin's C interface (src/dist/mpi/plugin.cpp). Each returns 0 on success, else an MPI
// error code.
struct MpiApi {
  int (*init)(int*, int*);
  int (*allreduce_f64)(double*, size_t);
  int (*allreduce_f32)(float*, size_t);
  int (*reduce_scatter_f32)(float*, size_t);
  int (*allgather_f32)(float*, size_t);
  int (*bcast)(void*, size_t, int);
  int (*barrier)();
  void (*abort)(int);
  void (*finalize)();
};

std::string exe_dir() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

class MpiComm final : public Comm {
 public:
  MpiComm(const MpiApi& api) : api_(api) {
    check(api_.init(&rank_, &world_), "MPI_Init");
  }
  ~MpiComm() override {
    if (!aborted_) api_.finalize();
  }
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string name() const override { return "mpi"; }
  void allreduce_sum(double* x, size_t n) override {
    check(api_.allreduce_f64(x, n), "MPI_Allreduce");
  }
  void allreduce_sum(float* x, size_t n) override {
    check(api_.allreduce_f32(x, n), "MPI_Allreduce");
  }
  void reduce_scatter_sum(float* x, size_t shard) override {
    check(api_.reduce_scatter_f32(x, shard), "MPI_Reduce_scatter_block");
  }
  void allgather(float* x, size_t shard) override {
    check(api_.allgather_f32(x, shard), "MPI_Allgather");
  }
  void broadcast(void* bytes, size_t n, int root) override {
    check(api_.bcast(bytes, n, root), "MPI_Bcast");
  }
  void barrier() override {
    check(api_.barrier(), "MPI_Barrier");
  }
  void abort(int code) noexcept override {
    aborted_ = true;
    api_.abort(code);
  }

 private:
  void check(int rc, const char* what) {
    if (rc != 0) throw std::runtime_error(std::string(what) + " failed with MPI error " + std::to_string(rc));
  }
  MpiApi api_;
  int rank_ = 0, world_ = 1;
  bool aborted_ = false;
};

}  // namespace

std::unique_ptr<Comm> make_local_comm() { return std::make_unique<LocalComm>(); }

std::unique_ptr<Comm> make_mpi_comm(std::string* why) {
  const char* env = std::getenv("SGPT_MPI_PLUGIN");
  const std::string path = env && *env ? std::string(env) : exe_dir() + "/libsophiagpt_mpi.so";
  // RTLD_GLOBAL: Open MPI loads its own components with dlopen and they resolve libmpi's symbols
  // globally.
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    if (why) *why = "cannot load the MPI plugin '" + path + "': " + dlerror();
    return nullptr;
  }
  MpiApi api{};
  bool ok = true;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
    if (!fn) ok = false;
  };
  sym(api.init, "sgpt_mpi_init");
  sym(api.allreduce_f64, "sgpt_mpi_allreduce_f64");
  sym(api.allreduce_f32, "sgpt_mpi_allreduce_f32");
  sym(api.reduce_scatter_f32, "sgpt_mpi_reduce_scatter_f32");
  sym(api.allgather_f32, "sgpt_mpi_allgather_f32");
  sym(api.bcast, "sgpt_mpi_bcast");
  sym(api.barrier, "sgpt_mpi_barrier");
  sym(api.abort, "sgpt_mpi_abort");
  sym(api.finalize, "sgpt_mpi_finalize");
  if (!ok) {
    if (why) *why = "the MPI plugin '" + path + "' lacks a symbol (built from another version?)";
    return nullptr;
  }
  return std::make_unique<MpiComm>(api);
}

// ---- watchdog ----

Watchdog& Watchdog::instance() {
  static Watchdog w;
  return w;
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::configure(int rank, double timeout_s) {
  std::lock_guard<std::mutex> l(mu_);
  rank_ = rank;
  timeout_s_ = timeout_s;
  if (timeout_s > 0 && !thread_.joinable()) thread_ = std::thread([this] { loop(); });
}

void Watchdog::arm(const char* what) {
  std::lock_guard<std::mutex> l(mu_);
  what_ = what;
  armed_at_ = now_s();
}

void Watchdog::disarm() {
  std::lock_guard<std::mutex> l(mu_);
  what_ = nullptr;
}

void Watchdog::loop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    cv_.wait_for(l, std::chrono::milliseconds(200));
    if (stop_ || !what_ || timeout_s_ <= 0) continue;
    if (now_s() - armed_at_ > timeout_s_) {
      std::fprintf(stderr,
                   "error: rank %d: %s did not complete within dist.timeout_s = %g s; another rank "
                   "probably failed or was killed (see its output). Stopping this rank.\n",
                   rank_, what_, timeout_s_);
      std::fflush(stderr);
      // No ncclCommAbort or MPI_Abort from here: called on this thread while the main thread is
      // blocked inside the hung operation they can crash or hang the process (seen with NCCL).
      // Ending the process frees its GPU memory and connections; mpirun then stops the others.
      std::_Exit(kExitDistFailure);
    }
  }
}

// ---- shards ----

ShardLayout ShardLayout::make(size_t n, int world, size_t align) {
  if (world < 1 || align < 1) throw std::invalid_argument("ShardLayout: world and align must be >= 1");
  ShardLayout s;
  s.n = n;
  s.world = world;
  const size_t unit = static_cast<size_t>(world) * align;
  s.padded = (n + unit - 1) / unit * unit;
  if (s.padded == 0) s.padded = unit;
  s.shard = s.padded / static_cast<size_t>(world);
  return s;
}

}  // namespace sgpt::dist
