// Model and training-state files.
//
// Model file (llm.c's format, so models move to and from the llm.c ecosystem):
//   header: 256 int32, [0] = 20240326 (magic), [1] = 3 (fp32) or 5 (bf16; read only),
//           [2] = maxT (block_size), [3] = V (vocab_size), [4] = L, [5] = NH, [6] = C, [7] = Vp;
//           sophiagpt also stores [8] = 1 + bias and [9] = 1 + scale_attn_by_inverse_layer_idx
//           (0 = not recorded, as in files written by llm.c; llm.c ignores these slots).
//   then the 16 tensors in llm.c's order (ParamLayout), fp32, bias tensors always present (zeros
//   when the model has no biases).
//
// Training-state file (sophiagpt's own):
//   8 bytes magic "SGPTSTAT", uint32 version (1), uint32 reserved, uint64 JSON length, the JSON
//   (step, optimizer name, parameter count, model shape, data loader positions), then the
//   optimizer slots named in the JSON's "slots" (fp32, ParamLayout::total elements each:
//   "m" and "h" for Sophia-G, "m" and "v" for AdamW).
//
// Both are written to a temporary name in the same directory and renamed into place, so a crash
// never leaves a half-written file under the final name.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/gpt2.h"

namespace sgpt {

constexpr int kModelMagic = 20240326;

void write_model_file(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params);
// Reads a model file and checks its header against cfg (UserError naming the file and the
// mismatching field). bf16 files (version 5) are widened to fp32.
std::vector<float> read_model_file(const std::string& path, const ModelConfig& cfg);

struct TrainState {
  nlohmann::json meta;  // step, optimizer, n_params, model, data
  std::vector<std::string> slot_names;
  std::vector<std::vector<float>> slots;
};
void write_state_file(const std::string& path, const TrainState& state);
TrainState read_state_file(const std::string& path);

// Writes bytes to path atomically (temp file in the same directory, fsync, rename).
void write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces);

}  // namespace sgpt
