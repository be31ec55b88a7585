// Exporting a trained model: a Hugging Face transformers folder (GPT2LMHeadModel) or an llm.c model
// file, fp32 or bf16. `sophiagpt export` (src/cli/export_command.cpp) drives these; docs/export.md
// describes the files.
//
// Hugging Face folder:
//   config.json              GPT2Config: shape, vocab_size = V (the real vocabulary, not Vp),
//                            gelu_new, layer_norm_epsilon 1e-5, scale_attn_by_inverse_layer_idx as
//                            trained, no dropout, tied embeddings; when the layer scaling is on,
//                            "attn_implementation": "eager" (transformers' SDPA and flash-attention
//                            paths ignored that scaling before transformers PR #44397)
//   generation_config.json   bos/eos 50256, sampling (top-k 40, temperature 1), max_length = block_size
//   model.safetensors        the GPT2LMHeadModel state dict (names below), lm_head tied to wte and
//                            so not stored (transformers ties it on load)
//   vocab.json, merges.txt   encoder.json and vocab.bpe, byte for byte
//   tokenizer_config.json, special_tokens_map.json   GPT2Tokenizer, <|endoftext|> as unk/bos/eos,
//                            model_max_length = block_size
//
// Tensor mapping (L layers, C = n_embd, V = vocab_size, maxT = block_size). transformers' Conv1D
// computes x @ W + b with W stored [in, out]; our matmuls compute x @ W^T + b with W stored
// [out, in] (cpu/ops.h matmul_forward), so every Linear weight is transposed:
//   transformer.wte.weight               [V, C]      wte rows 0..V-1 (padding rows dropped)
//   transformer.wpe.weight               [maxT, C]   wpe
//   transformer.h.{l}.ln_1.weight/bias   [C]         ln1w[l] / ln1b[l]
//   transformer.h.{l}.attn.c_attn.weight [C, 3C]     qkvw[l]^T      (.bias [3C] qkvb[l])
//   transformer.h.{l}.attn.c_proj.weight [C, C]      attprojw[l]^T  (.bias [C] attprojb[l])
//   transformer.h.{l}.ln_2.weight/bias   [C]         ln2w[l] / ln2b[l]
//   transformer.h.{l}.mlp.c_fc.weight    [C, 4C]     fcw[l]^T       (.bias [4C] fcb[l])
//   transformer.h.{l}.mlp.c_proj.weight  [4C, C]     fcprojw[l]^T   (.bias [C] fcprojb[l])
//   transformer.ln_f.weight/bias         [C]         lnfw / lnfb
// A model trained without biases (model.bias = false) gets zero biases, which compute the same.
//
// llm.c file: version 3 (fp32) as write_model_file writes it, or version 5 (bf16): the same
// 1024-byte header with [1] = 5 (our slots [8]..[11] included, the checksum over the bf16 file),
// then the same 16 tensors (padded vocabulary, zero biases when bias = false) as bf16.
//
// bf16 values are the fp32 values rounded to the nearest bf16, ties to even (NaN stays NaN).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/gpt2.h"

namespace sgpt {

enum class ExportDtype { kFp32, kBf16 };

// fp32 -> bf16 bits, round to nearest even.
uint16_t float_to_bf16_rne(float f);

// One tensor of the Hugging Face state dict, as fp32 in the exported layout (transposed weights).
struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};
std::vector<HfTensor> hf_gpt2_tensors(const ModelConfig& cfg, const std::vector<float>& params);

nlohmann::ordered_json hf_gpt2_config(const ModelConfig& cfg, ExportDtype dtype);
nlohmann::ordered_json hf_generation_config(const ModelConfig& cfg);
nlohmann::ordered_json hf_tokenizer_config(const ModelConfig& cfg);
nlohmann::ordered_json hf_special_tokens_map();

// Writes the Hugging Face folder into `dir`, which must exist and be empty (the caller makes it a
// temporary folder and renames it into place). vocab_dir holds encoder.json and vocab.bpe (they
// are verified as load_vocab does). Throws UserError naming the file on failure.
void write_hf_folder(const std::string& dir, const ModelConfig& cfg, const std::vector<float>& params,
                     ExportDtype dtype, const std::string& vocab_dir);

// llm.c model file, version 5 (bf16); atomically, like write_model_file.
void write_model_file_bf16(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params);

}  // namespace sgpt
