// Fault injection for the failure tests (docs/reliability.md, docs/multi_gpu.md), read from the
// environment variable SGPT_TEST_FAULT="RANK:STEP:MODE" once per process. Unset, nothing happens.
#pragma once
#include <cstdint>
#include <string>

namespace sgpt {

struct TestFault {
  int rank = -1;
  long long step = -1;
  std::string mode;  // throw | kill | term | int2 | nan | corrupt
};
const TestFault& test_fault();

// The start-of-step faults (throw, kill, term, int2) of rank `rank` at `step`.
void inject_fault(int rank, int64_t step);

// "corrupt": flips a byte near the end of a file just written, before it is verified.
void flip_a_byte(const std::string& path);

}  // namespace sgpt
