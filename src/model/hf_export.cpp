#include "model/hf_export.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/crc32c.h"
#include "common/error.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "tokenizer/sha256.h"
#include "tokenizer/vocab.h"

namespace sgpt {

uint16_t float_to_bf16_rne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

namespace {

// rows x cols matrix (row-major) -> its transpose, cols x rows.
std::vector<float> transposed(const float* m, size_t rows, size_t cols) {
  std::vector<float> t(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) t[c * rows + r] = m[r * cols + c];
  return t;
}

}  // namespace

std::vector<HfTensor> hf_gpt2_tensors(const ModelConfig& cfg, const std::vector<float>& params) {
  const ParamLayout L = ParamLayout::make(cfg);
  if (params.size() != L.total) throw std::invalid_argument("hf_gpt2_tensors: parameter count mismatch");
  const int64_t C = cfg.n_embd, V = cfg.vocab_size, T = cfg.block_size;
  const size_t c = static_cast<size_t>(C);
  // Layer l of tensor i as a pointer (nullptr when the tensor is absent: no biases).
  auto at = [&](int i, int l, int n_layer) -> const float* {
    return L.size[i] == 0 ? nullptr : params.data() + L.layer_offset(i, l, n_layer);
  };
  auto copy = [](const float* p, size_t n) { return p ? std::vector<float>(p, p + n) : std::vector<float>(n, 0.0f); };

  std::vector<HfTensor> out;
  out.push_back({"transformer.wte.weight", {V, C}, copy(at(kWte, 0, 1), static_cast<size_t>(V) * c)});
  out.push_back({"transformer.wpe.weight", {T, C}, copy(at(kWpe, 0, 1), static_cast<size_t>(T) * c)});
  const int nl = cfg.n_layer;
  for (int l = 0; l < nl; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    out.push_back({p + "ln_1.weight", {C}, copy(at(kLn1w, l, nl), c)});
    out.push_back({p + "ln_1.bias", {C}, copy(at(kLn1b, l, nl), c)});
    out.push_back({p + "attn.c_attn.weight", {C, 3 * C}, transposed(at(kQkvw, l, nl), 3 * c, c)});
    out.push_back({p + "attn.c_attn.bias", {3 * C}, copy(at(kQkvb, l, nl), 3 * c)});
    out.push_back({p + "attn.c_proj.weight", {C, C}, transposed(at(kAttprojw, l, nl), c, c)});
    out.push_back({p + "attn.c_proj.bias", {C}, copy(at(kAttprojb, l, nl), c)});
    out.push_back({p + "ln_2.weight", {C}, copy(at(kLn2w, l, nl), c)});
    out.push_back({p + "ln_2.bias", {C}, copy(at(kLn2b, l, nl), c)});
    out.push_back({p + "mlp.c_fc.weight", {C, 4 * C}, transposed(at(kFcw, l, nl), 4 * c, c)});
    out.push_back({p + "mlp.c_fc.bias", {4 * C}, copy(at(kFcb, l, nl), 4 * c)});
    out.push_back({p + "mlp.c_proj.weight", {4 * C, C}, transposed(at(kFcprojw, l, nl), c, 4 * c)});
    out.push_back({p + "mlp.c_proj.bias", {C}, copy(at(kFcprojb, l, nl), c)});
  }
  out.push_back({"transformer.ln_f.weight", {C}, copy(at(kLnfw, 0, 1), c)});
  out.push_back({"transformer.ln_f.bias", {C}, copy(at(kLnfb, 0, 1), c)});
  return out;
}

nlohmann::ordered_json hf_gpt2_config(const ModelConfig& cfg, ExportDtype dtype) {
  nlohmann::ordered_json j;
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  j["vocab_size"] = cfg.vocab_size;
  j["n_positions"] = cfg.block_size;
  j["n_ctx"] = cfg.block_size;
  j["n_embd"] = cfg.n_embd;
  j["n_layer"] = cfg.n_layer;
  j["n_head"] = cfg.n_head;
  j["n_inner"] = nullptr;  // 4 * n_embd
  j["activation_function"] = "gelu_new";  // the tanh approximation (cpu/ops.h gelu_forward)
  j["layer_norm_epsilon"] = 1e-5;
  j["initializer_range"] = 0.02;
  // sophiagpt trains without dropout.
  j["resid_pdrop"] = 0.0;
  j["embd_pdrop"] = 0.0;
  j["attn_pdrop"] = 0.0;
  j["scale_attn_weights"] = true;
  j["scale_attn_by_inverse_layer_idx"] = cfg.scale_attn_by_inverse_layer_idx;
  j["reorder_and_upcast_attn"] = false;
  if (cfg.scale_attn_by_inverse_layer_idx) j["attn_implementation"] = "eager";
  j["bos_token_id"] = kEndOfText;
  j["eos_token_id"] = kEndOfText;
  j["tie_word_embeddings"] = true;
  j["use_cache"] = true;
  j["torch_dtype"] = dtype == ExportDtype::kBf16 ? "bfloat16" : "float32";
  return j;
}

nlohmann::ordered_json hf_generation_config(const ModelConfig& cfg) {
  nlohmann::ordered_json j;
  j["bos_token_id"] = kEndOfText;
  j["eos_token_id"] = kEndOfText;
  j["pad_token_id"] = kEndOfText;  // GPT-2 has no padding token; generate() pads with <|endoftext|>
  j["do_sample"] = true;           // as `sophiagpt sample`: temperature 1, top-k 40
  j["temperature"] = 1.0;
  j["top_k"] = 40;
  j["max_length"] = cfg.block_size;  // the position table ends there
  return j;
}

nlohmann::ordered_json hf_tokenizer_config(const ModelConfig& cfg) {
  const std::string eot(kEndOfTextString);
  nlohmann::ordered_json j;
  j["tokenizer_class"] = "GPT2Tokenizer";
  j["model_max_length"] = cfg.block_size;
  j["unk_token"] = eot;
  j["bos_token"] = eot;
  j["eos_token"] = eot;
  j["pad_token"] = nullptr;
  j["add_prefix_space"] = false;
  j["add_bos_token"] = false;
  j["errors"] = "replace";
  // Decoding gives back the exact text (no removal of spaces before punctuation).
  j["clean_up_tokenization_spaces"] = false;
  j["added_tokens_decoder"] = {{std::to_string(kEndOfText),
                                {{"content", eot},
                                 {"lstrip", false},
                                 {"normalized", true},
                                 {"rstrip", false},
                                 {"single_word", false},
                                 {"special", true}}}};
  return j;
}

nlohmann::ordered_json hf_special_tokens_map() {
  const std::string eot(kEndOfTextString);
  nlohmann::ordered_json j;
  j["bos_token"] = eot;
  j["eos_token"] = eot;
  j["unk_token"] = eot;
  return j;
}

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot open '" + path + "': " + std::string(kVocabFetchHint));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw UserError("cannot read '" + path + "'");
  return ss.str();
}

// A vocabulary file, checked against its pinned sha256.
std::string vocab_file(const std::string& path, const char* sha) {
  std::string bytes = read_bytes(path);
  if (sha256_hex(bytes) != sha)
    throw UserError("'" + path + "' is not the GPT-2 file it should be (sha256 " + sha256_hex(bytes) +
                    ", expected " + sha + "): " + kVocabFetchHint);
  return bytes;
}

void write_text(const std::string& path, const std::string& text) {
  write_file_atomic(path, {{text.data(), text.size()}});
}

std::string json_text(const nlohmann::ordered_json& j) { return j.dump(2) + "\n"; }

}  // namespace

void write_hf_folder(const std::string& dir, const ModelConfig& cfg, const std::vector<float>& params,
                     ExportDtype dtype, const std::string& vocab_dir) {
  namespace fs = std::filesystem;
  const fs::path d(dir);
  // The vocabulary first: a missing or wrong file fails before the large write.
  const std::string encoder = vocab_file((fs::path(vocab_dir) / "encoder.json").string(), kEncoderJsonSha256);
  const std::string merges = vocab_file((fs::path(vocab_dir) / "vocab.bpe").string(), kVocabBpeSha256);

  {
    std::vector<HfTensor> tensors = hf_gpt2_tensors(cfg, params);
    std::vector<std::vector<uint16_t>> bf16;
    std::vector<SafetensorsTensor> st;
    st.reserve(tensors.size());
    if (dtype == ExportDtype::kBf16) bf16.reserve(tensors.size());
    for (HfTensor& t : tensors) {
      if (dtype == ExportDtype::kBf16) {
        std::vector<uint16_t> b(t.values.size());
        for (size_t i = 0; i < b.size(); ++i) b[i] = float_to_bf16_rne(t.values[i]);
        std::vector<float>().swap(t.values);  // keep one copy of the weights alive, not two
        bf16.push_back(std::move(b));
        st.push_back({t.name, "BF16", t.shape, bf16.back().data()});
      } else {
        st.push_back({t.name, "F32", t.shape, t.values.data()});
      }
    }
    write_safetensors((d / "model.safetensors").string(), st, {{"format", "pt"}});
  }
  write_text((d / "config.json").string(), json_text(hf_gpt2_config(cfg, dtype)));
  write_text((d / "generation_config.json").string(), json_text(hf_generation_config(cfg)));
  write_text((d / "vocab.json").string(), encoder);
  write_text((d / "merges.txt").string(), merges);
  write_text((d / "tokenizer_config.json").string(), json_text(hf_tokenizer_config(cfg)));
  write_text((d / "special_tokens_map.json").string(), json_text(hf_special_tokens_map()));
}

void write_model_file_bf16(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params) {
  const ParamLayout L = ParamLayout::make(cfg);
  if (params.size() != L.total) throw std::invalid_argument("write_model_file_bf16: parameter count mismatch");
  std::vector<int32_t> header = model_file_header(cfg, 5);
  size_t file_total = 0;
  for (int i = 0; i < kNumParamTensors; ++i) file_total += L.file_size[i];
  std::vector<uint16_t> data;
  data.reserve(file_total);
  for (int i = 0; i < kNumParamTensors; ++i) {
    if (L.size[i] == 0) {
      data.insert(data.end(), L.file_size[i], uint16_t{0});  // bias absent: stored as zeros
      continue;
    }
    const float* p = params.data() + L.offset[i];
    for (size_t e = 0; e < L.size[i]; ++e) data.push_back(float_to_bf16_rne(p[e]));
  }
  uint32_t crc = crc32c_update(0, header.data(), header.size() * 4);
  crc = crc32c_update(crc, data.data(), data.size() * 2);
  std::memcpy(&header[11], &crc, 4);
  write_file_atomic(path, {{header.data(), header.size() * 4}, {data.data(), data.size() * 2}});
}

}  // namespace sgpt
