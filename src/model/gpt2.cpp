// GPT-2 flat parameter layout and initialisation (see model/gpt2.h for the tensor table).
//
// Init (docs/design.md section 2), element e of the flat buffer (global index, so the value of an
// element does not depend on how the buffer is split over threads or ranks):
//   (w0, w1, w2, w3) = philox(seed, lo32(e), hi32(e), 0, kInitWeights)
//   u1 = uniform01_double(w0, w1), u2 = uniform01_double(w2, w3)          (both in [0, 1))
//   z  = sqrt(-2 ln(1 - u1)) * cos(2 pi u2)                                (Box-Muller, in double)
//   param = float(std * z)
// std = 0.02 for wte rows < vocab_size, wpe, qkvw, fcw; 0.02/sqrt(2 n_layer) for attprojw and
// fcprojw. Padded wte rows, biases and LayerNorm biases are 0; LayerNorm weights are 1.
#include "model/gpt2.h"

#include <cmath>
#include <numbers>
#include <stdexcept>

#include "common/philox.h"

namespace sgpt {

const char* param_tensor_name(int i) {
  static const char* const names[kNumParamTensors] = {
      "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
      "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"};
  if (i < 0 || i >= kNumParamTensors) throw std::out_of_range("param_tensor_name: bad index");
  return names[i];
}

ParamLayout ParamLayout::make(const ModelConfig& cfg) {
  const size_t L = static_cast<size_t>(cfg.n_layer);
  const size_t C = static_cast<size_t>(cfg.n_embd);
  const size_t Vp = static_cast<size_t>(cfg.padded_vocab_size);
  const size_t maxT = static_cast<size_t>(cfg.block_size);
  ParamLayout p;
  p.file_size = {Vp * C,     maxT * C,  L * C,     L * C,     L * 3 * C * C, L * 3 * C,
                 L * C * C,  L * C,     L * C,     L * C,     L * 4 * C * C, L * 4 * C,
                 L * 4 * C * C, L * C,  C,         C};
  size_t off = 0;
  for (int i = 0; i < kNumParamTensors; ++i) {
    const bool is_bias = i == kLn1b || i == kQkvb || i == kAttprojb || i == kLn2b || i == kFcb ||
                         i == kFcprojb || i == kLnfb;
    p.size[i] = (is_bias && !cfg.bias) ? 0 : p.file_size[i];
    p.offset[i] = off;
    off += p.size[i];
  }
  p.total = off;
  return p;
}

bool ParamLayout::decayed(int tensor) {
  return tensor == kQkvw || tensor == kAttprojw || tensor == kFcw || tensor == kFcprojw;
}

int pad_vocab(int v) { return (v + 127) / 128 * 128; }

size_t num_params_reported(const ModelConfig& cfg) {
  const ParamLayout p = ParamLayout::make(cfg);
  return p.total - p.size[kWpe];
}

void init_params(float* params, const ModelConfig& cfg, const ParamLayout& layout, uint64_t seed) {
  const double std_base = 0.02;
  const double std_resid = 0.02 / std::sqrt(2.0 * cfg.n_layer);
  for (int i = 0; i < kNumParamTensors; ++i) {
    const size_t off = layout.offset[i], n = layout.size[i];
    double sd = 0.0;
    double fill = 0.0;
    size_t n_random = 0;  // the first n_random elements are random, the rest get `fill`
    switch (i) {
      case kWte:
        sd = std_base;
        n_random = static_cast<size_t>(cfg.vocab_size) * static_cast<size_t>(cfg.n_embd);
        break;
      case kWpe: case kQkvw: case kFcw:
        sd = std_base;
        n_random = n;
        break;
      case kAttprojw: case kFcprojw:
        sd = std_resid;
        n_random = n;
        break;
      case kLn1w: case kLn2w: case kLnfw:
        fill = 1.0;
        break;
      default:  // biases
        break;
    }
    if (n_random > n) throw std::invalid_argument("init_params: vocab_size > padded_vocab_size");
#pragma omp parallel for if (n > (1u << 16))
    for (std::ptrdiff_t j = 0; j < static_cast<std::ptrdiff_t>(n); ++j) {
      const size_t e = off + static_cast<size_t>(j);
      if (static_cast<size_t>(j) >= n_random) {
        params[e] = static_cast<float>(fill);
        continue;
      }
      const Philox4 r = philox(seed, static_cast<uint32_t>(e), static_cast<uint32_t>(e >> 32), 0,
                               kInitWeights);
      const double u1 = uniform01_double(r.v[0], r.v[1]);
      const double u2 = uniform01_double(r.v[2], r.v[3]);
      const double z = std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * std::numbers::pi * u2);
      params[e] = static_cast<float>(sd * z);
    }
  }
}

double attention_scale(const ModelConfig& cfg, int layer) {
  double s = 1.0 / std::sqrt(static_cast<double>(cfg.n_embd / cfg.n_head));
  if (cfg.scale_attn_by_inverse_layer_idx) s /= static_cast<double>(layer + 1);
  return s;
}

}  // namespace sgpt
