// Where a process stands in a multi-process launch, and the rendezvous that hands rank 0's bytes
// (the NCCL unique id) to every rank. docs/multi_gpu.md describes both for users.
//
// Launchers recognised (first match wins), each giving rank, world size and local rank:
//   Open MPI           OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   MPICH / Hydra      PMI_RANK, PMI_SIZE, MPI_LOCALRANKID (local rank 0 when absent)
//   Slurm (srun)       SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
//   torchrun style     RANK, WORLD_SIZE, LOCAL_RANK (local rank 0 when absent)
// None of these: one process (rank 0 of 1, launcher "none").
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sgpt::dist {

struct LaunchInfo {
  int rank = 0, world = 1, local_rank = 0;
  std::string launcher = "none";  // "none" | "openmpi" | "mpich" | "slurm" | "torchrun"
  bool by_mpi() const { return launcher == "openmpi" || launcher == "mpich"; }
};

// Reads the launcher's variables through `getenv` (std::getenv by default). Throws sgpt::UserError
// naming the variable when a value is not a non-negative integer, when rank >= world size, when
// world size < 1, or when local rank >= world size.
using GetEnv = std::function<const char*(const char*)>;
LaunchInfo detect_launch(const GetEnv& getenv = nullptr);

// The rendezvous address: `init` when non-empty, else "tcp://$MASTER_ADDR:$MASTER_PORT" with
// defaults 127.0.0.1 and 29500 for absent variables. Accepted forms: "tcp://HOST:PORT" (HOST a
// name or IPv4 address, PORT in 1..65535) and "file:///absolute/path". Anything else throws
// sgpt::UserError naming the config key dist.init and the value.
std::string resolve_init(const std::string& init, const GetEnv& getenv = nullptr);

// Every rank calls this with the same `init` (already resolved), rank and world; on return every
// rank's `bytes` holds rank 0's `bytes` (rank 0's input is unchanged; the size travels too). It is
// also a barrier: no rank returns before every rank has arrived. world == 1 returns at once.
//   tcp://HOST:PORT  rank 0 listens on PORT (all interfaces, SO_REUSEADDR); the other ranks
//                    connect to HOST:PORT, retrying until the deadline. Each connection carries a
//                    magic word, the world size and the rank (a mismatch is an error naming both
//                    values); rank 0 answers every rank once all world-1 have connected.
//   file:///path     rank 0 writes the file atomically (temporary name in the same folder, then
//                    rename); the other ranks poll for it, ignore a file older than their own
//                    start minus 120 s (left by a crashed run), read it, then create
//                    "<path>.ack.<rank>"; rank 0 waits for every ack, then removes the file and
//                    the acks.
// Throws sgpt::UserError naming the address and what is missing when `timeout_s` passes first
// (for example "rank 0 saw 2 of 4 ranks within 300 s at tcp://...").
void rendezvous(const std::string& init, int rank, int world, std::vector<uint8_t>& bytes,
                double timeout_s);

}  // namespace sgpt::dist
