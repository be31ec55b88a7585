#include "cuda/check.h"

#include <stdexcept>

namespace sgpt::cuda {

void throw_error(const char* library, const std::string& detail, const char* expr,
                 const char* file, int line) {
  throw std::runtime_error(std::string(library) + " error at " + file + ":" +
                           std::to_string(line) + ": " + expr + ": " + detail);
}

}  // namespace sgpt::cuda
