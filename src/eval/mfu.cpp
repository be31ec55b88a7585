#include "eval/mfu.h"

#include <algorithm>
#include <cctype>

namespace sgpt {

double training_flops_per_token(const ModelConfig& m, size_t n_params, int T) {
  return 6.0 * static_cast<double>(n_params) + 12.0 * m.n_layer * static_cast<double>(m.n_embd) * T;
}

double detect_peak_tflops(const std::string& device_name, const std::string& precision) {
  std::string n = device_name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
  const bool bf16 = precision == "bf16";
  // NVL variants (different clocks and power) are not in the table: unknown.
  if (has("NVL")) return 0;
  if (has("H100")) {
    if (has("PCIE")) return bf16 ? 756 : 51;
    return bf16 ? 989 : 67;  // SXM5 ("NVIDIA H100 80GB HBM3")
  }
  if (has("H200")) return bf16 ? 989 : 67;
  if (has("A100")) return bf16 ? 312 : 19.5;
  return 0;
}

double mfu(double flops_per_token, double tokens_per_s, double peak_tflops, int devices) {
  if (!(peak_tflops > 0) || devices < 1) return -1;
  return flops_per_token * tokens_per_s / (peak_tflops * 1e12 * devices);
}

}  // namespace sgpt
