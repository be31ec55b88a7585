#include "optim/optimizer.h"

#include <cmath>
#include <stdexcept>

namespace sgpt {

// Each optimizer's CPU implementation, defined in its own file (src/optim/<name>.cpp).
std::unique_ptr<CpuOptimizer> make_sophiag_cpu();
std::unique_ptr<CpuOptimizer> make_adamw_cpu();
std::unique_ptr<CpuOptimizer> make_lion_cpu();
std::unique_ptr<CpuOptimizer> make_sophiah_cpu();

namespace {
struct Entry {
  OptimizerKind kind;
  std::unique_ptr<CpuOptimizer> (*make_cpu)();
};
const std::vector<Entry>& table() {
  static const std::vector<Entry> t = {
      {{"sophiag", {"m", "h"}, "gnb"}, make_sophiag_cpu},
      {{"adamw", {"m", "v"}, ""}, make_adamw_cpu},
      {{"lion", {"m"}, ""}, make_lion_cpu},
      {{"sophiah", {"m", "h"}, "hutchinson"}, make_sophiah_cpu},
  };
  return t;
}
const Entry& entry(const std::string& name) {
  std::string known;
  for (const Entry& e : table()) {
    if (e.kind.name == name) return e;
    known += (known.empty() ? "" : ", ") + e.kind.name;
  }
  throw std::invalid_argument("unknown optimizer '" + name + "' (known: " + known + ")");
}
}  // namespace

const std::vector<OptimizerKind>& optimizer_kinds() {
  static const std::vector<OptimizerKind> kinds = [] {
    std::vector<OptimizerKind> k;
    for (const Entry& e : table()) k.push_back(e.kind);
    return k;
  }();
  return kinds;
}

const OptimizerKind& optimizer_kind(const std::string& name) { return entry(name).kind; }

double hessian_correction(const OptimizerStep& s) {
  const OptimizerConfig& o = *s.cfg;
  if (!o.hessian_bias_correction) return 1.0;
  const int64_t n = (s.t - 1) / o.hessian_interval;
  if (n < 1) return 1.0;
  return 1.0 / (1.0 - std::pow(o.beta2, static_cast<double>(n)));
}

std::unique_ptr<CpuOptimizer> make_cpu_optimizer(const std::string& name) {
  return entry(name).make_cpu();
}

}  // namespace sgpt
