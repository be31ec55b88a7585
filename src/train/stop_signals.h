// SIGINT, SIGTERM and SIGHUP while training (docs/reliability.md, "Signals"): the first asks the
// loop to stop after the current step with a checkpoint, a second ends the process at once (128 +
// the signal). SIGPIPE is ignored meanwhile, so a closed stdout fails a write instead of killing
// the run. Installed by constructing a StopSignals, for its lifetime.
#pragma once
#include <signal.h>

namespace sgpt {

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {}, old_hup_ {}, old_pipe_ {};
};

// The signal received since the StopSignals was constructed (0: none).
int stop_signal();
const char* signal_name(int sig);

}  // namespace sgpt
