// Errors caused by a user's input (config, data file, checkpoint, command line). The message names
// the input and what is wrong with it; main() prints it and exits with code 2.
#pragma once
#include <stdexcept>
#include <string>

namespace sgpt {
class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& what) : std::runtime_error(what) {}
};

// Too little host or device memory for what the config asks (a bad input: exit code 2), with the
// need and what the machine has in the message.
class OutOfMemory : public UserError {
 public:
  explicit OutOfMemory(const std::string& what) : UserError(what) {}
};

// Exit codes (docs/reliability.md): 0 done, 2 UserError (bad input, damaged file, divergence),
// 3 internal error, 4 a rank waited too long for the others (dist::kExitDistFailure),
// 5 stopped by SIGINT/SIGTERM after writing a checkpoint (resume with --resume); a second signal
// exits at once with 128 + the signal number (130, 143), as the default action would.
constexpr int kExitStoppedBySignal = 5;

// Ends the program with `code` after everything was said and done (main() returns it silently).
class ExitRequest : public std::runtime_error {
 public:
  explicit ExitRequest(int code) : std::runtime_error("exit " + std::to_string(code)), code_(code) {}
  int code() const { return code_; }
 private:
  int code_;
};
}  // namespace sgpt
