#include "train/stop_signals.h"

#include <unistd.h>

#include <csignal>
#include <cstddef>

namespace sgpt {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {
    static const char msg[] = "\nsophiagpt: second signal: exiting at once, without a checkpoint\n";
    [[maybe_unused]] const ssize_t n = ::write(2, msg, sizeof msg - 1);
    ::_exit(128 + sig);
  }
  g_stop_signal = sig;
  static const char msg_int[] =
      "\nsophiagpt: SIGINT: finishing the current step, then writing a checkpoint (again: exit at once)\n";
  static const char msg_term[] =
      "\nsophiagpt: SIGTERM: finishing the current step, then writing a checkpoint (again: exit at once)\n";
  static const char msg_hup[] =
      "\nsophiagpt: SIGHUP (the terminal went away): finishing the current step, then writing a checkpoint\n";
  const char* m = sig == SIGINT ? msg_int : sig == SIGHUP ? msg_hup : msg_term;
  const size_t len = (sig == SIGINT ? sizeof msg_int : sig == SIGHUP ? sizeof msg_hup : sizeof msg_term) - 1;
  [[maybe_unused]] const ssize_t n = ::write(2, m, len);
}

}  // namespace

StopSignals::StopSignals() {
  g_stop_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, &old_int_);
  ::sigaction(SIGTERM, &sa, &old_term_);
  ::sigaction(SIGHUP, &sa, &old_hup_);  // a closed terminal or ssh session: like SIGTERM
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  ::sigaction(SIGPIPE, &ign, &old_pipe_);  // a closed stdout pipe: the write fails, the run goes on
}

StopSignals::~StopSignals() {
  ::sigaction(SIGINT, &old_int_, nullptr);
  ::sigaction(SIGTERM, &old_term_, nullptr);
  ::sigaction(SIGHUP, &old_hup_, nullptr);
  ::sigaction(SIGPIPE, &old_pipe_, nullptr);
}

int stop_signal() { return g_stop_signal; }

const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "a signal";
}

}  // namespace sgpt
