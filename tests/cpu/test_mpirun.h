// The `mpirun ... -np N ` prefix the CPU tests start ranks with.
//
// Each test process gives Open MPI a session directory of its own (orte_tmpdir_base, through the
// environment so that an mpirun that does not know the parameter ignores it): ctest runs tests in
// parallel, and two mpiruns of Open MPI 4.x starting at the same moment under one shared /tmp race
// to create /tmp/ompi.<host>.<uid> and one of them fails in orte_init ("A call to mkdir was unable
// to create the desired directory ... File exists"; Open MPI issue 8510). The directory is short,
// since Open MPI puts Unix sockets under it, and is removed when the test process exits.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>

inline std::string mpirun_prefix(int ranks) {
  struct SessionBase {
    std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("sgpt_mpi_" + std::to_string(::getpid()));
    SessionBase() { std::filesystem::create_directories(dir); }
    ~SessionBase() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  };
  static const SessionBase base;
  return "env OMPI_MCA_orte_tmpdir_base=" + base.dir.string() +
         " mpirun --allow-run-as-root --oversubscribe --bind-to none -np " + std::to_string(ranks) + " ";
}
