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
}  // namespace sgpt
