// Decoding several sequences together (docs/sampling.md, "Batches"): a BatchDecoder holds
// `slots` independent KV caches, each with its own window and slide (the rules of
// sample/decoder.h, per slot), and advances every busy slot by one token per step, so the GPU
// reads the weights once for all of them.
//
// Equality with decoding alone: the GPU batch decoder (cuda/decode_batch.h) computes every row
// with kernels whose arithmetic for a row does not depend on the other rows (no cuBLASLt, whose
// algorithm choice depends on the row count), so a slot's logits are bit for bit the same
// whatever the other slots hold and however many there are; a batch of one is "alone".
//
// generate_batch draws prompt i's tokens with seeds[i] exactly as generate() (sample/decoder.h)
// does with that seed: the same tokens as decoding prompt i alone with seed seeds[i]. The
// command line gives prompt i (0-based, over all its prompts) the seed `--seed + i`.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/gpt2.h"
#include "sample/decoder.h"
#include "sample/sampling.h"

namespace sgpt {

class BatchDecoder {
 public:
  BatchDecoder(const ModelConfig& cfg, int slots);
  virtual ~BatchDecoder() = default;
  BatchDecoder(const BatchDecoder&) = delete;
  BatchDecoder& operator=(const BatchDecoder&) = delete;

  virtual std::string name() const = 0;
  const ModelConfig& config() const { return cfg_; }
  int slots() const { return slots_; }

  // Copies the fp32 parameters (ParamLayout order) and clears every slot.
  virtual void set_params(const float* params) = 0;

  // Output of each slot: its logits (k = 0, the default) or its first k candidates
  // (sample/sampling.h; 1 <= k <= vocab_size).
  void set_top_output(int k);
  int top_output() const { return top_k_out_; }

  // Clears slot b and prefills it with `prompt` (at least one token; a prompt longer than
  // block_size keeps its last block_size tokens).
  void start(int b, std::span<const int> prompt);
  // Appends tokens[b] to each slot b (slots() tokens); a negative token leaves slot b as it is
  // (an idle slot: its output stays). Slots that would overflow block_size slide.
  void step(std::span<const int> tokens);

  // The output of slot b after its last start or step: logits (vocab_size floats) or nullptr in
  // top-candidate mode, then top(b) holds its top_output() candidates.
  const float* logits(int b) const;
  std::span<const Candidate> top(int b) const;
  // The cached tokens of slot b (window()[i] at position i) and its number of slides.
  const std::vector<int>& window(int b) const { return window_.at(b); }
  int slides(int b) const { return slides_.at(b); }

 protected:
  // Runs tokens[0..n) of slot b at positions pos0.. (the slot's cache holding 0..pos0-1) and
  // writes the output of the last one into slot b's output (logits_ or top_). pos0 + n <=
  // block_size.
  virtual void forward_slot(int b, const int* tokens, int n, int pos0) = 0;
  // Runs tokens[b] at position pos[b] for every slot b with pos[b] >= 0 and writes their outputs;
  // the other slots (pos[b] < 0) and their outputs are left alone.
  virtual void forward_step(const int* tokens, const int* pos) = 0;
  // Whether the decoder fills top_ itself in top-candidate mode (else the base selects from
  // logits_ after each call).
  virtual bool selects_top() const { return false; }

  float* slot_logits(int b) { return logits_.data() + static_cast<size_t>(b) * cfg_.vocab_size; }
  Candidate* slot_top(int b) { return top_.data() + static_cast<size_t>(b) * top_k_out_; }

  ModelConfig cfg_;
  ParamLayout layout_;
  int slots_;
  bool have_params_ = false;
  int top_k_out_ = 0;
  std::vector<float> logits_;   // [slots, vocab_size]
  std::vector<Candidate> top_;  // [slots, top_output()]

 private:
  void host_select(int b);
  std::vector<std::vector<int>> window_;
  std::vector<int> slides_;
};

// The CPU batch decoder: one CPU decoder (cpu/decode_cpu.h) per slot, run one after the other
// (the same logits as decoding alone on the CPU; no speed-up; for tests and CPU fallbacks).
std::unique_ptr<BatchDecoder> make_cpu_batch_decoder(const ModelConfig& cfg, int slots);

// Generates n tokens for each prompt (at most slots() prompts, each at least one token) together:
// prompt i is drawn with the options `opt` and the seed seeds[i], draw index = token index, as
// generate() does. on_token(i, t) (optional) sees each token of prompt i as it is drawn (the
// prompts in turn at each step). Returns the tokens of each prompt.
std::vector<std::vector<int>> generate_batch(BatchDecoder& d, const std::vector<std::vector<int>>& prompts,
                                             int n, const SamplingOptions& opt,
                                             std::span<const uint64_t> seeds,
                                             const std::function<void(int, int)>& on_token = {});

}  // namespace sgpt
