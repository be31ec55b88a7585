#include "backend/backend.h"

#include <stdexcept>

namespace sgpt {

AttentionImpl attention_impl_from_name(const std::string& name) {
  if (name == "auto") return AttentionImpl::kAuto;
  if (name == "own") return AttentionImpl::kOwn;
  if (name == "cudnn") return AttentionImpl::kCudnn;
  throw std::invalid_argument("attention must be \"auto\", \"own\" or \"cudnn\", got \"" + name +
                              "\"");
}

}  // namespace sgpt
