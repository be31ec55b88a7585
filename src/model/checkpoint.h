// Model and training-state files.
//
// Model file (llm.c's format, so models move to and from the llm.c ecosystem):
//   header: 256 int32, [0] = 20240326 (magic), [1] = 3 (fp32) or 5 (bf16; read only),
//           [2] = maxT (block_size), [3] = V (vocab_size), [4] = L, [5] = NH, [6] = C, [7] = Vp;
//           sophiagpt also stores [8] = 1 + bias and [9] = 1 + scale_attn_by_inverse_layer_idx
//           (0 = not recorded, as in files written by llm.c; llm.c ignores these slots),
//           [10] = kModelChecksumTag ("CRC1") and [11] = CRC32C of the whole file computed with
//           the 4 bytes of slot [11] read as zero (0 and 0 in files written by llm.c or by
//           sophiagpt before checksums: loaded unverified). llm.c reads slots [0, 8) only, so the
//           file stays an llm.c model file; the checksum travels inside it and is written in
//           the same atomic step (no sidecar file to keep in step with it).
//   then the 16 tensors in llm.c's order (ParamLayout), fp32, bias tensors always present (zeros
//   when the model has no biases).
//
// Training-state file (sophiagpt's own):
//   8 bytes magic "SGPTSTAT", uint32 version (2), uint32 CRC32C of the whole file computed with
//   these 4 bytes read as zero (version 1, written before checksums: 0, loaded unverified),
//   uint64 JSON length, the JSON
//   (step, optimizer name, parameter count, model shape, data loader positions), then the
//   optimizer slots named in the JSON's "slots" (fp32, ParamLayout::total elements each:
//   "m" and "h" for Sophia-G, "m" and "v" for AdamW).
//
// Both are written to a temporary name in the same directory (<name>.tmp<pid>) and renamed into
// place, so a crash never leaves a half-written file under the final name; a checksum mismatch, a
// wrong size or a damaged header is a UserError naming the file (docs/reliability.md).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/gpt2.h"

namespace sgpt {

constexpr int kModelMagic = 20240326;
constexpr int32_t kModelChecksumTag = 0x31435243;  // the bytes "CRC1"
constexpr uint32_t kStateVersion = 2;              // 1: no checksum (still read)

// Returns the CRC32C stored in the file's header slot [11] (what a state file binds to).
uint32_t write_model_file(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params);
// The checksum a model file's header records (slot [11]), read from its first 48 bytes; -1 when
// the file carries none (llm.c's files, older ones). UserError naming the file when unreadable.
int64_t read_model_crc(const std::string& path);
// The 256-slot header above for a model of shape cfg, version 3 (fp32) or 5 (bf16), checksum slot 0.
std::vector<int32_t> model_file_header(const ModelConfig& cfg, int version);
// Reads a model file, verifies its checksum and checks its header against cfg (UserError naming
// the file and the mismatching field). bf16 files (version 5) are widened to fp32. *verified (when
// given) tells whether the file carried a checksum (false: an llm.c file or an old one).
std::vector<float> read_model_file(const std::string& path, const ModelConfig& cfg, bool* verified = nullptr);

struct TrainState {
  nlohmann::json meta;  // step, optimizer, n_params, model, data
  std::vector<std::string> slot_names;
  std::vector<std::vector<float>> slots;
};
void write_state_file(const std::string& path, const TrainState& state);
TrainState read_state_file(const std::string& path, bool* verified = nullptr);
// The JSON of a state file alone (header and meta; the slots are not read). UserError when bad.
nlohmann::json read_state_meta(const std::string& path);

// Checks a model_*.bin or state_*.bin file without loading it (streamed: constant memory): its
// header, its size for the shape the header records and, when it carries one, its checksum.
// Throws UserError naming the file and the damage. *verified as for read_model_file.
void verify_checkpoint_file(const std::string& path, bool* verified = nullptr);

// Writes bytes to path atomically (temp file <path>.tmp<pid> in the same directory, fsync,
// rename). On failure the temporary file is removed and the error names path (a full disk or the
// file-size limit, ulimit -f, included: SIGXFSZ must be ignored, as main() does).
void write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces);

// Removes the temporary files write_file_atomic leaves behind when a process dies while writing
// (model_*.bin / state_*.bin / config*.json followed by .tmp<pid>) whose process no longer runs
// on this machine. Returns the names removed. Other files are never touched.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

}  // namespace sgpt
