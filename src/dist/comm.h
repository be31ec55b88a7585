// The communicator the data-parallel training is written over (docs/multi_gpu.md).
//
// One process per device. A Comm joins the `world()` processes of a launch; every collective must
// be called by every rank in the same order (the training loop guarantees it: all ranks run the
// same steps). Implementations:
//   LocalComm   world 1: every collective is the identity (the single-process path).
//   MpiComm     host memory over MPI (the CPU reference backend's data parallelism); MPI is
//               reached through a plugin library loaded at run time (src/dist/mpi/plugin.cpp), so
//               the program itself never needs libmpi.
//   NcclComm    device memory over NCCL (src/cuda/nccl_comm.h), host calls staged through a
//               small device buffer.
// Host collectives below take host pointers. A collective that does not complete within the
// watchdog's timeout ends the process (see Watchdog) so that no rank hangs when another failed.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <condition_variable>

namespace sgpt::dist {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual std::string name() const = 0;

  virtual void allreduce_sum(double* x, size_t n) = 0;
  virtual void allreduce_sum(float* x, size_t n) = 0;
  // In place over x[0, world*shard): afterwards x[rank*shard, (rank+1)*shard) holds the sum over
  // ranks of that range (the rest of x is unspecified).
  virtual void reduce_scatter_sum(float* x, size_t shard) = 0;
  // In place over x[0, world*shard): afterwards every range [q*shard, (q+1)*shard) holds rank q's.
  virtual void allgather(float* x, size_t shard) = 0;
  virtual void broadcast(void* bytes, size_t n, int root) = 0;
  virtual void barrier() = 0;
  // Best effort to make every rank stop (MPI_Abort, ncclCommAbort); never throws.
  virtual void abort(int code) noexcept { (void)code; }
};

std::unique_ptr<Comm> make_local_comm();

// MPI through the plugin (libsophiagpt_mpi.so next to the executable, or $SGPT_MPI_PLUGIN).
// Returns nullptr and the reason in *why when the plugin or libmpi cannot be loaded. The process
// must have been started by an MPI launcher.
std::unique_ptr<Comm> make_mpi_comm(std::string* why);

// Ends the process when an armed phase runs longer than the timeout: prints "rank R: <what> did
// not complete within <t> s ..." to stderr and exits with kExitDistFailure at once. One per
// process; the training loop arms it per phase (a step, an evaluation, a checkpoint); arm()
// restarts the clock. timeout_s <= 0 disables it.
constexpr int kExitDistFailure = 4;
class Watchdog {
 public:
  static Watchdog& instance();
  void configure(int rank, double timeout_s);
  void arm(const char* what);
  void disarm();
  double timeout_s() const { return timeout_s_; }
  ~Watchdog();

 private:
  Watchdog() = default;
  void loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  bool stop_ = false;
  int rank_ = 0;
  double timeout_s_ = 0;
  const char* what_ = nullptr;
  double armed_at_ = 0;
};

// RAII arming of the watchdog around one blocking operation.
class Guarded {
 public:
  explicit Guarded(const char* what) { Watchdog::instance().arm(what); }
  ~Guarded() { Watchdog::instance().disarm(); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
};

// Shard arithmetic of ZeRO-1 over a flat buffer of n elements: padded to a multiple of
// world * align elements so every rank owns the same `shard` count; rank r owns the global range
// [r*shard, r*shard + owned(r)), where owned(r) = clamp(n - r*shard, 0, shard).
struct ShardLayout {
  size_t n = 0, padded = 0, shard = 0;
  int world = 1;
  static ShardLayout make(size_t n, int world, size_t align = 64);
  size_t begin(int r) const { return static_cast<size_t>(r) * shard; }
  size_t owned(int r) const {
    const size_t b = begin(r);
    return b >= n ? 0 : (n - b < shard ? n - b : shard);
  }
};

}  // namespace sgpt::dist
