// The BatchDecoder base (per-slot windows and slides), the CPU batch decoder and
// generate_batch() (see sample/batch.h).
#include "sample/batch.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cpu/decode_cpu.h"

namespace sgpt {

BatchDecoder::BatchDecoder(const ModelConfig& cfg, int slots)
    : cfg_(cfg), layout_(ParamLayout::make(cfg)), slots_(slots) {
  if (slots < 1) throw std::invalid_argument("BatchDecoder: need at least one slot, got " + std::to_string(slots));
  if (cfg.n_layer < 1 || cfg.n_head < 1 || cfg.n_embd < 1 || cfg.n_embd % cfg.n_head != 0)
    throw std::invalid_argument("BatchDecoder: n_embd must be a positive multiple of n_head");
  if (cfg.vocab_size < 1 || cfg.padded_vocab_size < cfg.vocab_size)
    throw std::invalid_argument("BatchDecoder: need 1 <= vocab_size <= padded_vocab_size");
  if (cfg.block_size < 1) throw std::invalid_argument("BatchDecoder: block_size must be >= 1");
  logits_.assign(static_cast<size_t>(slots) * cfg.vocab_size, 0.0f);
  window_.resize(slots);
  slides_.assign(slots, 0);
}

void BatchDecoder::set_top_output(int k) {
  if (k < 0 || k > cfg_.vocab_size)
    throw std::invalid_argument("BatchDecoder::set_top_output: k = " + std::to_string(k) + " outside [0, " +
                                std::to_string(cfg_.vocab_size) + "]");
  top_k_out_ = k;
  top_.assign(static_cast<size_t>(slots_) * k, Candidate{0, 0.0f});
}

void BatchDecoder::host_select(int b) {
  if (top_k_out_ == 0 || selects_top()) return;
  const std::vector<Candidate> t = top_candidates(slot_logits(b), cfg_.vocab_size, top_k_out_);
  std::copy(t.begin(), t.end(), slot_top(b));
}

const float* BatchDecoder::logits(int b) const {
  if (b < 0 || b >= slots_) throw std::out_of_range("BatchDecoder: no slot " + std::to_string(b));
  if (top_k_out_ > 0) return nullptr;
  return logits_.data() + static_cast<size_t>(b) * cfg_.vocab_size;
}

std::span<const Candidate> BatchDecoder::top(int b) const {
  if (b < 0 || b >= slots_) throw std::out_of_range("BatchDecoder: no slot " + std::to_string(b));
  return std::span<const Candidate>(top_.data() + static_cast<size_t>(b) * top_k_out_,
                                    static_cast<size_t>(top_k_out_));
}

namespace {

void check_ids(std::span<const int> tokens, int V, bool allow_idle) {
  for (int t : tokens) {
    if (allow_idle && t < 0) continue;
    if (t < 0 || t >= V)
      throw std::out_of_range("BatchDecoder: token id " + std::to_string(t) + " outside [0, " +
                              std::to_string(V) + ")");
  }
}

}  // namespace

void BatchDecoder::start(int b, std::span<const int> prompt) {
  if (!have_params_) throw std::logic_error("BatchDecoder: set_params() was not called");
  if (b < 0 || b >= slots_) throw std::out_of_range("BatchDecoder: no slot " + std::to_string(b));
  if (prompt.empty()) throw std::invalid_argument("BatchDecoder::start: no tokens");
  check_ids(prompt, cfg_.vocab_size, false);
  const int T = cfg_.block_size, n = static_cast<int>(prompt.size());
  std::vector<int>& w = window_[b];
  w.clear();
  if (n <= T) {
    forward_slot(b, prompt.data(), n, 0);
    w.assign(prompt.begin(), prompt.end());
  } else {  // the slide of Decoder::prefill on an empty window: the last block_size tokens
    w.assign(prompt.end() - T, prompt.end());
    ++slides_[b];
    forward_slot(b, w.data(), T, 0);
  }
  host_select(b);
}

void BatchDecoder::step(std::span<const int> tokens) {
  if (!have_params_) throw std::logic_error("BatchDecoder: set_params() was not called");
  if (static_cast<int>(tokens.size()) != slots_)
    throw std::invalid_argument("BatchDecoder::step: " + std::to_string(tokens.size()) + " tokens for " +
                                std::to_string(slots_) + " slots");
  check_ids(tokens, cfg_.vocab_size, true);
  const int T = cfg_.block_size;
  std::vector<int> pos(slots_, -1);
  bool any = false;
  for (int b = 0; b < slots_; ++b) {
    if (tokens[b] < 0) continue;
    std::vector<int>& w = window_[b];
    if (static_cast<int>(w.size()) + 1 <= T) {
      pos[b] = static_cast<int>(w.size());
      any = true;
      continue;
    }
    // The slide of Decoder::prefill for one new token: keep the last W = max(T / 2, 1) tokens
    // of (window, token) and prefill them from position 0, alone (before the batched step).
    const int W = std::min(T, std::max(T / 2, 1));
    std::vector<int> kept(w.end() - (W - 1), w.end());
    kept.push_back(tokens[b]);
    w = std::move(kept);
    ++slides_[b];
    forward_slot(b, w.data(), W, 0);
    host_select(b);
  }
  if (!any) return;
  forward_step(tokens.data(), pos.data());
  for (int b = 0; b < slots_; ++b) {
    if (pos[b] < 0) continue;
    window_[b].push_back(tokens[b]);
    host_select(b);
  }
}

namespace {

class CpuBatchDecoder final : public BatchDecoder {
 public:
  CpuBatchDecoder(const ModelConfig& cfg, int slots) : BatchDecoder(cfg, slots) {
    for (int b = 0; b < slots; ++b) dec_.push_back(make_cpu_decoder(cfg));
  }
  std::string name() const override { return dec_.front()->name() + ", one slot after another"; }
  void set_params(const float* params) override {
    for (auto& d : dec_) d->set_params(params);
    have_params_ = true;
  }

 protected:
  void forward_slot(int b, const int* tokens, int n, int pos0) override {
    Decoder& d = *dec_[b];
    if (pos0 == 0) d.reset();
    if (d.length() != pos0) throw std::logic_error("CpuBatchDecoder: slot window out of step");
    copy_out(b, d.prefill(std::span<const int>(tokens, static_cast<size_t>(n))));
  }
  void forward_step(const int* tokens, const int* pos) override {
    for (int b = 0; b < slots_; ++b)
      if (pos[b] >= 0) forward_slot(b, tokens + b, 1, pos[b]);
  }

 private:
  void copy_out(int b, const float* l) {
    std::copy(l, l + cfg_.vocab_size, slot_logits(b));
  }
  std::vector<std::unique_ptr<Decoder>> dec_;
};

}  // namespace

std::unique_ptr<BatchDecoder> make_cpu_batch_decoder(const ModelConfig& cfg, int slots) {
  return std::make_unique<CpuBatchDecoder>(cfg, slots);
}

std::vector<std::vector<int>> generate_batch(BatchDecoder& d, const std::vector<std::vector<int>>& prompts,
                                             int n, const SamplingOptions& opt,
                                             std::span<const uint64_t> seeds,
                                             const std::function<void(int, int)>& on_token) {
  const int P = static_cast<int>(prompts.size());
  if (P > d.slots())
    throw std::invalid_argument("generate_batch: " + std::to_string(P) + " prompts for " +
                                std::to_string(d.slots()) + " slots");
  if (seeds.size() != prompts.size())
    throw std::invalid_argument("generate_batch: one seed per prompt needed");
  std::vector<std::vector<int>> out(P);
  if (n <= 0 || P == 0) return out;
  const int V = d.config().vocab_size, k = candidates_needed(opt, V);
  struct Restore {  // the caller's output mode, also when a step throws
    BatchDecoder& d;
    int k;
    ~Restore() { d.set_top_output(k); }
  } restore{d, d.top_output()};
  d.set_top_output(k);
  for (int i = 0; i < P; ++i) {
    out[i].reserve(n);
    d.start(i, prompts[i]);
  }
  std::vector<int> next(d.slots(), -1);
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < P; ++i) {
      SamplingOptions o = opt;
      o.seed = seeds[i];
      const int t = k > 0 ? sample_token_top(d.top(i).data(), k, V, o, static_cast<uint32_t>(j))
                          : sample_token(d.logits(i), V, o, static_cast<uint32_t>(j));
      out[i].push_back(t);
      next[i] = t;
      if (on_token) on_token(i, t);
    }
    if (j + 1 < n) d.step(next);
  }
  return out;
}

}  // namespace sgpt
