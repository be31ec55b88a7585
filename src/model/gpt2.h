// GPT-2 shapes and the flat parameter layout.
//
// All parameters live in one contiguous buffer in llm.c's tensor order, so that the optimizer is
// one pass (one kernel launch) over one buffer and a checkpoint is one write. Shapes, with
// L = n_layer, C = n_embd, Vp = padded vocabulary, maxT = block_size:
//
//   idx tensor      shape          decayed   notes
//   0   wte         [Vp, C]        no        token embedding, tied with the LM head
//   1   wpe         [maxT, C]      no        position embedding
//   2   ln1w        [L, C]         no        LayerNorm 1 weight (init 1)
//   3   ln1b        [L, C]         no        LayerNorm 1 bias   (size 0 when bias == false)
//   4   qkvw        [L, 3C, C]     yes       attention input projection (PyTorch Linear layout)
//   5   qkvb        [L, 3C]        no        (size 0 when bias == false)
//   6   attprojw    [L, C, C]      yes       attention output projection (residual, scaled init)
//   7   attprojb    [L, C]         no        (size 0 when bias == false)
//   8   ln2w        [L, C]         no
//   9   ln2b        [L, C]         no        (size 0 when bias == false)
//   10  fcw         [L, 4C, C]     yes       MLP up projection
//   11  fcb         [L, 4C]        no        (size 0 when bias == false)
//   12  fcprojw     [L, C, 4C]     yes       MLP down projection (residual, scaled init)
//   13  fcprojb     [L, C]         no        (size 0 when bias == false)
//   14  lnfw        [C]            no        final LayerNorm
//   15  lnfb        [C]            no        (size 0 when bias == false)
//
// With bias == false the bias tensors have size 0 in the flat buffer; the llm.c model file still
// stores them (as zeros), see src/model/checkpoint.h.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace sgpt {

struct ModelConfig {
  int n_layer = 12;
  int n_head = 12;
  int n_embd = 768;
  int block_size = 1024;
  int vocab_size = 50257;          // real tokens; the loss is over these
  int padded_vocab_size = 50304;   // rows of wte; multiple of 128
  bool bias = false;
  bool scale_attn_by_inverse_layer_idx = true;
};

constexpr int kNumParamTensors = 16;

enum ParamTensor : int {
  kWte = 0, kWpe, kLn1w, kLn1b, kQkvw, kQkvb, kAttprojw, kAttprojb,
  kLn2w, kLn2b, kFcw, kFcb, kFcprojw, kFcprojb, kLnfw, kLnfb
};

const char* param_tensor_name(int i);

struct ParamLayout {
  std::array<size_t, kNumParamTensors> offset{};
  std::array<size_t, kNumParamTensors> size{};
  // Sizes as llm.c's model file stores them (biases present even when bias == false).
  std::array<size_t, kNumParamTensors> file_size{};
  size_t total = 0;

  static ParamLayout make(const ModelConfig& cfg);
  // True for the Linear weight matrices (qkvw, attprojw, fcw, fcprojw): the only decayed tensors.
  static bool decayed(int tensor);
  // Per-layer stride and base of a layered tensor: element offset of layer l of tensor i.
  size_t layer_offset(int tensor, int layer, int n_layer) const {
    return offset[tensor] + (size[tensor] / static_cast<size_t>(n_layer)) * static_cast<size_t>(layer);
  }
};

// Round v up to a multiple of 128 (the padded vocabulary llm.c and the official model use).
int pad_vocab(int v);

// Multiplier of q.k in layer `layer`: 1/sqrt(head size), further divided by (layer + 1) when
// scale_attn_by_inverse_layer_idx is set. Computed in double; every backend uses this one.
double attention_scale(const ModelConfig& cfg, int layer);

// Number of parameters excluding position embeddings, as nanoGPT reports it.
size_t num_params_reported(const ModelConfig& cfg);

// Initialise parameters (fp32, flat layout) exactly as docs/design.md section 2: N(0, 0.02) for Linear
// and embedding weights, N(0, 0.02/sqrt(2 L)) for the two residual projections, zeros for biases,
// ones for LayerNorm weights, zero for the padded vocabulary rows. Deterministic in `seed`
// (Philox stream kInitWeights), identical on every platform.
void init_params(float* params, const ModelConfig& cfg, const ParamLayout& layout, uint64_t seed);

}  // namespace sgpt
