// The Decoder base (window, slide) and generate() (see sample/decoder.h).
#include "sample/decoder.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace sgpt {

Decoder::Decoder(const ModelConfig& cfg) : cfg_(cfg), layout_(ParamLayout::make(cfg)) {
  if (cfg.n_layer < 1 || cfg.n_head < 1 || cfg.n_embd < 1 || cfg.n_embd % cfg.n_head != 0)
    throw std::invalid_argument("Decoder: n_embd must be a positive multiple of n_head");
  if (cfg.vocab_size < 1 || cfg.padded_vocab_size < cfg.vocab_size)
    throw std::invalid_argument("Decoder: need 1 <= vocab_size <= padded_vocab_size");
  if (cfg.block_size < 1) throw std::invalid_argument("Decoder: block_size must be >= 1");
  logits_.assign(cfg.vocab_size, 0.0f);
  window_.reserve(cfg.block_size);
}

void Decoder::reset() {
  window_.clear();
  on_reset();
}

const float* Decoder::step(int token) { return prefill(std::span<const int>(&token, 1)); }

void Decoder::set_top_output(int k) {
  if (k < 0 || k > cfg_.vocab_size)
    throw std::invalid_argument("Decoder::set_top_output: k = " + std::to_string(k) + " outside [0, " +
                                std::to_string(cfg_.vocab_size) + "]");
  top_k_out_ = k;
  top_.clear();
}

const float* Decoder::output() {
  if (top_k_out_ == 0) return logits_.data();
  if (!selects_top()) top_ = top_candidates(logits_.data(), cfg_.vocab_size, top_k_out_);
  return nullptr;
}

const float* Decoder::prefill(std::span<const int> tokens) {
  if (!have_params_) throw std::logic_error("Decoder: set_params() was not called");
  if (tokens.empty()) throw std::invalid_argument("Decoder::prefill: no tokens");
  for (int t : tokens)
    if (t < 0 || t >= cfg_.vocab_size)
      throw std::out_of_range("Decoder: token id " + std::to_string(t) + " outside [0, " +
                              std::to_string(cfg_.vocab_size) + ")");
  const int T = cfg_.block_size, n = static_cast<int>(tokens.size()), len = length();
  if (len + n <= T) {
    forward(tokens.data(), n, len);
    window_.insert(window_.end(), tokens.begin(), tokens.end());
    return output();
  }
  // Slide: keep the last W tokens of (window, tokens) and prefill them from position 0.
  const int W = std::min(T, std::max({T / 2, 1, n}));
  std::vector<int> kept;
  kept.reserve(W);
  const int from_window = std::max(0, W - n);
  kept.insert(kept.end(), window_.end() - from_window, window_.end());
  kept.insert(kept.end(), tokens.end() - (W - from_window), tokens.end());
  reset();
  ++slides_;
  forward(kept.data(), W, 0);
  window_ = std::move(kept);
  return output();
}

std::vector<int> generate(Decoder& d, std::span<const int> prompt, int n, const SamplingOptions& opt,
                          const std::function<void(int)>& on_token) {
  std::vector<int> out;
  if (n <= 0) return out;
  out.reserve(n);
  const int V = d.config().vocab_size, k = candidates_needed(opt, V);
  struct Restore {  // the caller's output mode, also when a step throws
    Decoder& d;
    int k;
    ~Restore() { d.set_top_output(k); }
  } restore{d, d.top_output()};
  d.set_top_output(k);
  d.reset();
  const float* logits = d.prefill(prompt);
  for (int i = 0; i < n; ++i) {
    const int t = k > 0 ? sample_token_top(d.top().data(), k, V, opt, static_cast<uint32_t>(i))
                        : sample_token(logits, V, opt, static_cast<uint32_t>(i));
    out.push_back(t);
    if (on_token) on_token(t);
    if (i + 1 < n) logits = d.step(t);
  }
  return out;
}

}  // namespace sgpt
