// Incremental GPT-2 decoding with a KV cache (docs/sampling.md).
//
// A Decoder holds, per layer, the keys and values of the tokens it has seen (the "window", at
// positions 0..length()-1 of the position embedding). prefill(tokens) appends several tokens at
// once, step(token) appends one; both run the model on the new tokens only (their queries attend
// to every cached key) and return the logits [vocab_size] of the last token appended.
//
// The slide. The window never exceeds block_size positions (the size of wpe). When appending
// would overflow it, the decoder restarts: it keeps the last W tokens of the token stream (the
// tokens seen so far followed by the new ones), W = max(block_size / 2, 1), or the number of new
// tokens when that is larger (a long prompt keeps its last block_size tokens), clears the cache
// and prefills those W tokens from position 0. Why half a block: each restart costs one prefill of
// W tokens, and after it block_size - W more tokens are cheap single steps, so the cost per token
// stays bounded (one W-token prefill per block_size - W steps), while every token still sees at
// least W tokens of context. Recomputing the whole block for every new token (full context, no
// cache) costs a block_size-token forward per token instead. The logits after a slide are exactly
// those of the model run on the kept window alone (the test checks this).
//
// Two decoders implement this interface: the fp32 CPU decoder (cpu/decode_cpu.h) and the GPU
// decoder (cuda/decode_cuda.h); generate() draws tokens from either with sample/sampling.h.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/gpt2.h"
#include "sample/sampling.h"

namespace sgpt {

class Decoder {
 public:
  explicit Decoder(const ModelConfig& cfg);
  virtual ~Decoder() = default;
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  virtual std::string name() const = 0;
  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }

  // Copies the fp32 parameters (ParamLayout::make(config()).total floats) and clears the cache.
  virtual void set_params(const float* params) = 0;
  // Forgets every cached token.
  void reset();
  // Appends the tokens (ids in [0, vocab_size), at least one) and returns the logits of the last.
  // std::invalid_argument / std::out_of_range on an empty list or a bad id.
  const float* prefill(std::span<const int> tokens);
  // Appends one token and returns its logits (vocab_size floats, valid until the next call).
  const float* step(int token);

  // Top-candidate output (sample/sampling.h): with k >= 1 (at most vocab_size), prefill and step
  // return nullptr instead of the logits and top() holds the first k candidates of the last
  // token's logits (sample_token_top draws from them); 0 (the default) returns to logits. The
  // GPU decoders select on the device and copy only the k candidates to the host; the others
  // select on the host from their logits.
  void set_top_output(int k);
  int top_output() const { return top_k_out_; }
  const std::vector<Candidate>& top() const { return top_; }

  // The cached tokens: window()[i] sits at position i.
  const std::vector<int>& window() const { return window_; }
  int length() const { return static_cast<int>(window_.size()); }
  // Number of restarts (slides) since construction.
  int slides() const { return slides_; }

 protected:
  // Runs the model on tokens[0..n) at positions pos0..pos0+n-1, the cache holding the keys and
  // values of positions 0..pos0-1; stores the new keys and values in the cache and writes the
  // logits [vocab_size] of the last token into logits_. Called with pos0 + n <= block_size.
  virtual void forward(const int* tokens, int n, int pos0) = 0;
  // Called by reset() (the cached keys and values become meaningless; most decoders need not act).
  virtual void on_reset() {}
  // What prefill/step return after forward(): the logits, or nullptr with top_ filled.
  const float* output();
  // Whether forward() fills top_ itself when top_output() > 0 (else the base selects from logits_).
  virtual bool selects_top() const { return false; }

  ModelConfig cfg_;
  ParamLayout layout_;
  std::vector<float> logits_;  // [vocab_size]
  std::vector<Candidate> top_;  // [top_output()] with top-candidate output
  int top_k_out_ = 0;
  bool have_params_ = false;

 private:
  std::vector<int> window_;
  int slides_ = 0;
};

// Autoregressive generation: reset, prefill the prompt (at least one token), then n tokens, token
// i drawn by sample_token(logits, vocab_size, opt, draw = i) from the logits of the token before
// it. on_token (optional) sees each token as it is drawn. Returns the n generated tokens.
// With a top-k cut (candidates_needed(opt, V) > 0) it asks the decoder for the top candidates
// only and draws with sample_token_top (the same tokens); the decoder's output mode is restored
// on return.
std::vector<int> generate(Decoder& d, std::span<const int> prompt, int n, const SamplingOptions& opt,
                          const std::function<void(int)>& on_token = {});

}  // namespace sgpt
