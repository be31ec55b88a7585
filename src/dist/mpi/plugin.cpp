// The MPI plugin: a small shared library (libsophiagpt_mpi.so) that links libmpi and exposes the
// few collectives sophiagpt uses through a C interface. The executable loads it with dlopen only
// when it was started by an MPI launcher (src/dist/comm.cpp), so sophiagpt itself does not need
// libmpi to start, and a binary built against one Open MPI runs under another's mpirun as long as
// the plugin finds a compatible libmpi (or, for the NCCL path, without MPI at all).
#include <mpi.h>

#include <climits>
#include <cstddef>
#include <cstring>

namespace {

// MPI counts are int: larger buffers go in pieces.
constexpr size_t kChunk = size_t(1) << 30;

template <class Fn>
int chunked(size_t n, Fn&& fn) {
  for (size_t off = 0; off < n; off += kChunk) {
    const size_t c = n - off < kChunk ? n - off : kChunk;
    if (int rc = fn(off, static_cast<int>(c))) return rc;
  }
  return 0;
}

}  // namespace

extern "C" {

int sgpt_mpi_init(int* rank, int* world) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    if (int rc = MPI_Init(nullptr, nullptr)) return rc;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (int rc = MPI_Comm_rank(MPI_COMM_WORLD, rank)) return rc;
  return MPI_Comm_size(MPI_COMM_WORLD, world);
}

int sgpt_mpi_allreduce_f64(double* x, size_t n) {
  return chunked(n, [&](size_t off, int c) {
    return MPI_Allreduce(MPI_IN_PLACE, x + off, c, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  });
}

int sgpt_mpi_allreduce_f32(float* x, size_t n) {
  return chunked(n, [&](size_t off, int c) {
    return MPI_Allreduce(MPI_IN_PLACE, x + off, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  });
}

// x[0, world*shard) in place; rank r's reduced range ends up at x + r*shard.
int sgpt_mpi_reduce_scatter_f32(float* x, size_t shard) {
  if (shard > size_t(INT_MAX)) return MPI_ERR_COUNT;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // With MPI_IN_PLACE the result lands at the start of the buffer.
  if (int rc = MPI_Reduce_scatter_block(MPI_IN_PLACE, x, static_cast<int>(shard), MPI_FLOAT, MPI_SUM,
                                        MPI_COMM_WORLD))
    return rc;
  if (rank != 0) std::memmove(x + size_t(rank) * shard, x, shard * sizeof(float));
  return 0;
}

int sgpt_mpi_allgather_f32(float* x, size_t shard) {
  if (shard > size_t(INT_MAX)) return MPI_ERR_COUNT;
  return MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, static_cast<int>(shard), MPI_FLOAT,
                       MPI_COMM_WORLD);
}

int sgpt_mpi_bcast(void* bytes, size_t n, int root) {
  char* p = static_cast<char*>(bytes);
  return chunked(n, [&](size_t off, int c) { return MPI_Bcast(p + off, c, MPI_BYTE, root, MPI_COMM_WORLD); });
}

int sgpt_mpi_barrier() { return MPI_Barrier(MPI_COMM_WORLD); }

void sgpt_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

void sgpt_mpi_finalize() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
}

}  // extern "C"
