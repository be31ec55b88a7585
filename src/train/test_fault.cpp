#include "train/test_fault.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace sgpt {

// Test hooks for the failure tests (docs/multi_gpu.md, docs/reliability.md):
// SGPT_TEST_FAULT="RANK:STEP:MODE" acts on rank RANK at step STEP. MODE: "throw" (an exception at
// the start of the step), "kill" (SIGKILL there), "term" (SIGTERM there), "int2" (SIGINT twice
// there), "nan" (the rank's loss is NaN in every step from STEP on), "corrupt" (rank 0 flips a
// byte of model_<STEP>.bin right after writing it, before it is verified).
const TestFault& test_fault() {
  static const TestFault f = [] {
    TestFault t;
    const char* spec = std::getenv("SGPT_TEST_FAULT");
    char mode[16] = {};
    if (spec && *spec && std::sscanf(spec, "%d:%lld:%15s", &t.rank, &t.step, mode) == 3) t.mode = mode;
    return t;
  }();
  return f;
}

void flip_a_byte(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-5, std::ios::end);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  f.seekp(-5, std::ios::end);
  f.write(&c, 1);
}

// The start-of-step hooks of SGPT_TEST_FAULT (see TestFault).
void inject_fault(int rank, int64_t step) {
  const TestFault& f = test_fault();
  if (f.rank != rank || f.step != step) return;
  if (f.mode == "kill") std::raise(SIGKILL);
  if (f.mode == "term") std::raise(SIGTERM);
  if (f.mode == "int2") {
    std::raise(SIGINT);
    std::raise(SIGINT);
  }
  if (f.mode == "throw") throw std::runtime_error("injected fault (SGPT_TEST_FAULT) at step " + std::to_string(step));
}
}  // namespace sgpt
