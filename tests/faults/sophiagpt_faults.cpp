// The failure tests' build of sophiagpt (docs/reliability.md, docs/multi_gpu.md): the same
// command line, plus faults read from SGPT_TEST_FAULT="RANK:STEP:MODE", acting on rank RANK at
// step STEP through the trainer's hooks (src/train/train_hooks.h). MODE: "throw" (an exception at
// the start of the step), "kill" (SIGKILL there), "term" (SIGTERM there), "int2" (SIGINT twice
// there), "nan" (the rank's loss is NaN in every step from STEP on), "corrupt" (a byte of
// model_<STEP>.bin flipped right after it is written, before it is verified). Unset: none.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "train/train_hooks.h"

namespace {

class Faults final : public sgpt::TrainHooks {
 public:
  explicit Faults(const char* spec) {
    char mode[16] = {};
    if (spec && *spec && std::sscanf(spec, "%d:%lld:%15s", &rank_, &step_, mode) == 3) mode_ = mode;
  }
  void step_start(int rank, int64_t step) override {
    if (rank != rank_ || step != step_) return;
    if (mode_ == "kill") std::raise(SIGKILL);
    if (mode_ == "term") std::raise(SIGTERM);
    if (mode_ == "int2") {
      std::raise(SIGINT);
      std::raise(SIGINT);
    }
    if (mode_ == "throw") throw std::runtime_error("injected fault (SGPT_TEST_FAULT) at step " + std::to_string(step));
  }
  bool poison_loss(int rank, int64_t step) override { return mode_ == "nan" && rank == rank_ && step >= step_; }
  void checkpoint_written(const std::string& model_file, int64_t step) override {
    if (mode_ != "corrupt" || step != step_) return;
    std::fstream f(model_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-5, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(-5, std::ios::end);
    f.write(&c, 1);
  }

 private:
  int rank_ = -1;
  long long step_ = -1;
  std::string mode_;
};

}  // namespace

int main(int argc, char** argv) {
  static Faults faults(std::getenv("SGPT_TEST_FAULT"));
  sgpt::set_train_hooks(&faults);
  return sgpt::run_sophiagpt(argc, argv);
}
