// Export of a trained model (src/model/hf_export.h, `sophiagpt export` / `sophiagpt logits`).
//
// The safetensors file is read back by a minimal reader written here from the format's
// specification (8-byte little-endian header length, JSON header, contiguous byte buffer), and
// every tensor is compared with the original flat parameters, located with offsets computed here
// from the tensor table of model/gpt2.h, transposed as transformers' Conv1D stores weights
// ([in, out], ours are [out, in]). Nothing expected comes from the export code itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu/gpt2_cpu.h"
#include "model/checkpoint.h"
#include "model/hf_export.h"
#include "test_data_helpers.h"
#include "test_model.h"

namespace {
namespace fs = std::filesystem;
using sgpt_test::read_file;
using sgpt_test::run_exe;
using sgpt_test::TempDir;
using sgpt_test::write_file;

// 2 layers, 2 heads, width 16, block 8, vocabulary 50 (padded to 128).
sgpt::ModelConfig tiny_model(bool bias, bool scale) {
  return sgpt_test::model_config(2, 2, 16, 8, 50, 128, bias, scale);
}

// Element offsets of the 16 tensors of the flat buffer, per the table in model/gpt2.h (bias tensors
// have size 0 when bias is off).
struct Offsets {
  size_t wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb,
      total;
};
Offsets offsets_of(const sgpt::ModelConfig& m) {
  const size_t L = m.n_layer, C = m.n_embd, Vp = m.padded_vocab_size, T = m.block_size, b = m.bias ? 1 : 0;
  Offsets o{};
  size_t p = 0;
  auto take = [&](size_t& field, size_t n) { field = p; p += n; };
  take(o.wte, Vp * C);
  take(o.wpe, T * C);
  take(o.ln1w, L * C);
  take(o.ln1b, b * L * C);
  take(o.qkvw, L * 3 * C * C);
  take(o.qkvb, b * L * 3 * C);
  take(o.attprojw, L * C * C);
  take(o.attprojb, b * L * C);
  take(o.ln2w, L * C);
  take(o.ln2b, b * L * C);
  take(o.fcw, L * 4 * C * C);
  take(o.fcb, b * L * 4 * C);
  take(o.fcprojw, L * 4 * C * C);
  take(o.fcprojb, b * L * C);
  take(o.lnfw, C);
  take(o.lnfb, b * C);
  o.total = p;
  return o;
}

std::vector<float> random_params(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.5f);
  std::vector<float> p(n);
  for (float& x : p) x = d(rng);
  return p;
}

// What each Hugging Face tensor must hold: its shape and element (row-major index) -> value.
struct Expected {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
std::map<std::string, Expected> expected_tensors(const sgpt::ModelConfig& m, const std::vector<float>& p) {
  const Offsets o = offsets_of(m);
  const size_t L = m.n_layer, C = m.n_embd, V = m.vocab_size, T = m.block_size;
  std::map<std::string, Expected> e;
  auto plain = [&](const std::string& name, bool present, size_t off, size_t n) {
    Expected x{{int64_t(n)}, std::vector<float>(n, 0.0f)};
    if (present)
      for (size_t i = 0; i < n; ++i) x.values[i] = p[off + i];
    e[name] = x;
  };
  // ours [out, in] at off -> theirs [in, out]
  auto conv = [&](const std::string& name, size_t off, size_t out, size_t in) {
    Expected x{{int64_t(in), int64_t(out)}, std::vector<float>(in * out)};
    for (size_t i = 0; i < in; ++i)
      for (size_t j = 0; j < out; ++j) x.values[i * out + j] = p[off + j * in + i];
    e[name] = x;
  };
  {
    Expected w{{int64_t(V), int64_t(C)}, std::vector<float>(p.begin() + long(o.wte), p.begin() + long(o.wte + V * C))};
    e["transformer.wte.weight"] = w;
    Expected pe{{int64_t(T), int64_t(C)}, std::vector<float>(p.begin() + long(o.wpe), p.begin() + long(o.wpe + T * C))};
    e["transformer.wpe.weight"] = pe;
  }
  for (size_t l = 0; l < L; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".";
    plain(h + "ln_1.weight", true, o.ln1w + l * C, C);
    plain(h + "ln_1.bias", m.bias, o.ln1b + l * C, C);
    conv(h + "attn.c_attn.weight", o.qkvw + l * 3 * C * C, 3 * C, C);
    plain(h + "attn.c_attn.bias", m.bias, o.qkvb + l * 3 * C, 3 * C);
    conv(h + "attn.c_proj.weight", o.attprojw + l * C * C, C, C);
    plain(h + "attn.c_proj.bias", m.bias, o.attprojb + l * C, C);
    plain(h + "ln_2.weight", true, o.ln2w + l * C, C);
    plain(h + "ln_2.bias", m.bias, o.ln2b + l * C, C);
    conv(h + "mlp.c_fc.weight", o.fcw + l * 4 * C * C, 4 * C, C);
    plain(h + "mlp.c_fc.bias", m.bias, o.fcb + l * 4 * C, 4 * C);
    conv(h + "mlp.c_proj.weight", o.fcprojw + l * 4 * C * C, C, 4 * C);
    plain(h + "mlp.c_proj.bias", m.bias, o.fcprojb + l * C, C);
  }
  plain("transformer.ln_f.weight", true, o.lnfw, C);
  plain("transformer.ln_f.bias", m.bias, o.lnfb, C);
  return e;
}

// ---- a minimal safetensors reader, from the format's specification ----
struct StTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;  // widened from F32 or BF16
};
struct StFile {
  uint64_t header_len = 0;
  nlohmann::json header;
  std::map<std::string, StTensor> tensors;
};

float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

StFile read_safetensors(const std::string& path) {
  StFile f;
  const std::string bytes = read_file(path);
  EXPECT_GE(bytes.size(), 8u);
  if (bytes.size() < 8) return f;
  for (int i = 0; i < 8; ++i) f.header_len |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
  EXPECT_EQ(f.header_len % 8, 0u) << "header length " << f.header_len;
  EXPECT_LE(8 + f.header_len, bytes.size());
  const std::string text = bytes.substr(8, f.header_len);
  EXPECT_EQ(text.front(), '{');
  const size_t last = text.find_last_not_of(' ');
  EXPECT_EQ(text[last], '}') << "only spaces may pad the header";
  f.header = nlohmann::json::parse(text);
  const size_t buf0 = 8 + f.header_len, buf_size = bytes.size() - buf0;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, v] : f.header.items()) {
    if (name == "__metadata__") continue;
    StTensor t;
    t.dtype = v.at("dtype").get<std::string>();
    t.shape = v.at("shape").get<std::vector<int64_t>>();
    const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
    EXPECT_EQ(off.size(), 2u) << name;
    EXPECT_TRUE(t.dtype == "F32" || t.dtype == "BF16") << name << ": " << t.dtype;
    const size_t esize = t.dtype == "F32" ? 4 : 2;
    size_t n = 1;
    for (int64_t d : t.shape) n *= size_t(d);
    EXPECT_LE(off[0], off[1]) << name;
    EXPECT_EQ(off[1] - off[0], n * esize) << name;
    EXPECT_LE(off[1], buf_size) << name << " out of bounds";
    if (off.size() != 2 || off[1] > buf_size || off[1] - off[0] != n * esize) continue;
    ranges.push_back({off[0], off[1]});
    t.values.resize(n);
    const char* src = bytes.data() + buf0 + off[0];
    for (size_t i = 0; i < n; ++i) {
      if (esize == 4) {
        std::memcpy(&t.values[i], src + 4 * i, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        t.values[i] = bf16_bits_to_float(b);
      }
    }
    f.tensors[name] = std::move(t);
  }
  // The byte buffer is entirely covered: no gap, no overlap.
  std::sort(ranges.begin(), ranges.end());
  uint64_t at = 0;
  for (const auto& [b, e] : ranges) {
    EXPECT_EQ(b, at) << "gap or overlap in the byte buffer";
    at = e;
  }
  EXPECT_EQ(at, buf_size) << "bytes after the last tensor";
  return f;
}

std::string vocab() { return sgpt_test::vocab_dir(); }

// 2^-8 relative: half a unit in the last place of bf16's 8-bit significand.
bool within_bf16_rounding(float got, float want) {
  return std::fabs(double(got) - double(want)) <= std::ldexp(std::fabs(double(want)), -8);
}

void check_export(bool bias, bool scale, sgpt::ExportDtype dtype) {
  const sgpt::ModelConfig m = tiny_model(bias, scale);
  const Offsets o = offsets_of(m);
  ASSERT_EQ(o.total, sgpt::ParamLayout::make(m).total);
  const std::vector<float> params = random_params(o.total, bias ? 7 : 8);
  TempDir d;
  sgpt::write_hf_folder(d.path(), m, params, dtype, vocab());
  const StFile f = read_safetensors(d / "model.safetensors");
  ASSERT_TRUE(f.header.contains("__metadata__"));
  EXPECT_EQ(f.header["__metadata__"]["format"], "pt");
  const auto want = expected_tensors(m, params);
  EXPECT_EQ(f.tensors.size(), want.size());
  EXPECT_EQ(f.tensors.count("lm_head.weight"), 0u);
  const bool bf16 = dtype == sgpt::ExportDtype::kBf16;
  for (const auto& [name, w] : want) {
    const auto it = f.tensors.find(name);
    ASSERT_NE(it, f.tensors.end()) << name << " missing";
    const StTensor& t = it->second;
    EXPECT_EQ(t.dtype, bf16 ? "BF16" : "F32") << name;
    EXPECT_EQ(t.shape, w.shape) << name;
    ASSERT_EQ(t.values.size(), w.values.size()) << name;
    size_t bad = 0;
    for (size_t i = 0; i < w.values.size(); ++i) {
      const bool ok = bf16 ? within_bf16_rounding(t.values[i], w.values[i]) : t.values[i] == w.values[i];
      if (!ok && bad++ < 3)
        ADD_FAILURE() << name << "[" << i << "] = " << t.values[i] << ", expected " << w.values[i];
    }
  }
}

}  // namespace

TEST(ExportHf, Fp32TensorsWithBiases) { check_export(true, false, sgpt::ExportDtype::kFp32); }
TEST(ExportHf, Fp32TensorsWithoutBiasesAreZero) { check_export(false, true, sgpt::ExportDtype::kFp32); }
TEST(ExportHf, Bf16TensorsWithinRounding) {
  check_export(true, true, sgpt::ExportDtype::kBf16);
  check_export(false, false, sgpt::ExportDtype::kBf16);
}

TEST(ExportHf, Bf16RoundsToNearestEven) {
  auto bits = [](uint32_t u) { float f; std::memcpy(&f, &u, 4); return sgpt::float_to_bf16_rne(f); };
  EXPECT_EQ(bits(0x3f800000u), 0x3f80);  // 1.0 exact
  EXPECT_EQ(bits(0x3f808000u), 0x3f80);  // halfway, even below: down
  EXPECT_EQ(bits(0x3f818000u), 0x3f82);  // halfway, odd below: up
  EXPECT_EQ(bits(0x3f808001u), 0x3f81);  // above halfway: up
  EXPECT_EQ(bits(0xbf80ffffu), 0xbf81);  // negative, above halfway
  EXPECT_EQ(bits(0x7f7fffffu), 0x7f80);  // largest float rounds to infinity
  EXPECT_EQ(bits(0x7f800000u), 0x7f80);  // infinity stays
  EXPECT_EQ(bits(0x7fc00000u) & 0x7fc0, 0x7fc0);  // NaN stays NaN
  EXPECT_EQ(bits(0x7f800001u) & 0x7f80, 0x7f80);  // signalling NaN: still a NaN,
  EXPECT_NE(bits(0x7f800001u) & 0x007f, 0);       // not infinity
}

TEST(ExportHf, ConfigAndTokenizerFiles) {
  const sgpt::ModelConfig m = tiny_model(false, true);
  const std::vector<float> params = random_params(offsets_of(m).total, 3);
  TempDir d;
  sgpt::write_hf_folder(d.path(), m, params, sgpt::ExportDtype::kFp32, vocab());
  const auto c = nlohmann::json::parse(read_file(d / "config.json"));
  EXPECT_EQ(c["architectures"], nlohmann::json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(c["model_type"], "gpt2");
  EXPECT_EQ(c["n_layer"], 2);
  EXPECT_EQ(c["n_head"], 2);
  EXPECT_EQ(c["n_embd"], 16);
  EXPECT_EQ(c["n_positions"], 8);
  EXPECT_EQ(c["n_ctx"], 8);
  EXPECT_EQ(c["vocab_size"], 50);  // the real vocabulary, not the padded 128
  EXPECT_EQ(c["activation_function"], "gelu_new");
  EXPECT_EQ(c["layer_norm_epsilon"], 1e-5);
  EXPECT_EQ(c["scale_attn_by_inverse_layer_idx"], true);
  EXPECT_EQ(c["scale_attn_weights"], true);
  EXPECT_EQ(c["bos_token_id"], 50256);
  EXPECT_EQ(c["eos_token_id"], 50256);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_EQ(c["torch_dtype"], "float32");

  const auto g = nlohmann::json::parse(read_file(d / "generation_config.json"));
  EXPECT_EQ(g["bos_token_id"], 50256);
  EXPECT_EQ(g["eos_token_id"], 50256);

  EXPECT_EQ(read_file(d / "vocab.json"), read_file(vocab() + "/encoder.json"));
  EXPECT_EQ(read_file(d / "merges.txt"), read_file(vocab() + "/vocab.bpe"));
  const auto t = nlohmann::json::parse(read_file(d / "tokenizer_config.json"));
  EXPECT_EQ(t["tokenizer_class"], "GPT2Tokenizer");
  EXPECT_EQ(t["model_max_length"], 8);
  for (const char* k : {"unk_token", "bos_token", "eos_token"}) EXPECT_EQ(t[k], "<|endoftext|>") << k;
  const auto s = nlohmann::json::parse(read_file(d / "special_tokens_map.json"));
  for (const char* k : {"unk_token", "bos_token", "eos_token"}) EXPECT_EQ(s[k], "<|endoftext|>") << k;

  TempDir d2;
  sgpt::write_hf_folder(d2.path(), tiny_model(true, false), random_params(offsets_of(tiny_model(true, false)).total, 4),
                        sgpt::ExportDtype::kBf16, vocab());
  const auto c2 = nlohmann::json::parse(read_file(d2 / "config.json"));
  EXPECT_EQ(c2["scale_attn_by_inverse_layer_idx"], false);
  EXPECT_EQ(c2["torch_dtype"], "bfloat16");
}

// ---- the command line, on a run directory written here ----
namespace {

// A run directory as `sophiagpt train` leaves it: config.json, model_<step>.bin and state_<step>.bin
// (a checkpoint is both files: the readers take the newest whose two files verify).
void write_state(const std::string& path, int64_t step, size_t n_params) {
  sgpt::TrainState st;
  st.meta = {{"step", step}, {"optimizer", "adamw"}, {"n_params", n_params}};
  sgpt::write_state_file(path, st);
}

struct RunDir {
  TempDir dir;
  sgpt::ModelConfig m = tiny_model(true, true);
  std::vector<float> params;
  std::string path() const { return dir.path() + "/run"; }
  RunDir() {
    fs::create_directories(path());
    write_file(path() + "/config.json", R"({"model": {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8,
      "vocab_size": 50, "bias": true, "scale_attn_by_inverse_layer_idx": true},
      "batch": {"micro_batch_size": 2, "total_batch_tokens": 16}, "device": "cpu"})");
    params = random_params(offsets_of(m).total, 11);
    sgpt::write_model_file(path() + "/model_00000003.bin", m, params);
    write_state(path() + "/state_00000003.bin", 3, params.size());
  }
};

bool contains(const std::string& s, const std::string& n) { return s.find(n) != std::string::npos; }

}  // namespace

TEST(ExportCli, HfFolderFromRunAndOverwriteRules) {
  RunDir r;
  const std::string out = r.dir / "hf";
  auto exp = [&](std::vector<std::string> extra) {
    std::vector<std::string> a{"export", "--run", r.path(), "--format", "hf", "--out", out, "--vocab", vocab()};
    a.insert(a.end(), extra.begin(), extra.end());
    return run_exe(a);
  };
  auto e = exp({});
  ASSERT_EQ(e.code, 0) << e.output;
  const StFile f = read_safetensors(out + "/model.safetensors");
  const auto want = expected_tensors(r.m, r.params);
  EXPECT_EQ(f.tensors.at("transformer.h.1.mlp.c_fc.weight").values, want.at("transformer.h.1.mlp.c_fc.weight").values);
  // Nothing temporary is left beside or inside the export.
  for (const auto& ent : fs::directory_iterator(r.dir.path()))
    EXPECT_FALSE(contains(ent.path().filename().string(), ".tmp")) << ent.path();

  e = exp({});  // OUT exists and is not empty
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, out)) << e.output;
  EXPECT_TRUE(contains(e.output, "--overwrite")) << e.output;
  e = exp({"--overwrite", "--dtype", "bf16"});
  EXPECT_EQ(e.code, 0) << e.output;
  EXPECT_EQ(read_safetensors(out + "/model.safetensors").tensors.at("transformer.wte.weight").dtype, "BF16");

  // --overwrite does not remove a folder that is not an earlier export.
  const std::string other = r.dir / "other";
  write_file(other + "/notes.txt", "keep me");
  e = run_exe({"export", "--run", r.path(), "--format", "hf", "--out", other, "--vocab", vocab(), "--overwrite"});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_EQ(read_file(other + "/notes.txt"), "keep me");

  // An empty folder is fine.
  const std::string empty = r.dir / "empty";
  fs::create_directories(empty);
  e = run_exe({"export", "--run", r.path(), "--format", "hf", "--out", empty + "/", "--vocab", vocab()});
  EXPECT_EQ(e.code, 0) << e.output;
  EXPECT_TRUE(fs::exists(empty + "/config.json"));
}

TEST(ExportCli, ErrorsNameTheInput) {
  RunDir r;
  const std::string out = r.dir / "x";
  auto e = run_exe({"export", "--run", r.dir / "nope", "--format", "hf", "--out", out, "--vocab", vocab()});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, r.dir / "nope")) << e.output;

  const std::string bare = r.dir / "bare";
  fs::create_directories(bare);
  write_file(bare + "/config.json", read_file(r.path() + "/config.json"));
  e = run_exe({"export", "--run", bare, "--format", "hf", "--out", out, "--vocab", vocab()});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, bare) && contains(e.output, "no checkpoint")) << e.output;

  e = run_exe({"export", "--run", r.path(), "--format", "onnx", "--out", out});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, "--format 'onnx'")) << e.output;
  e = run_exe({"export", "--run", r.path(), "--format", "hf", "--dtype", "fp8", "--out", out, "--vocab", vocab()});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, "--dtype 'fp8'")) << e.output;
  e = run_exe({"export", "--run", r.path(), "--format", "hf", "--out", out, "--step", "9", "--vocab", vocab()});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, "step 9")) << e.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST(ExportCli, NewestCheckpointThatVerifies) {
  RunDir r;
  // A newer checkpoint with one flipped byte: passed over with a warning.
  std::vector<float> newer = r.params;
  for (float& x : newer) x += 1.0f;
  sgpt::write_model_file(r.path() + "/model_00000005.bin", r.m, newer);
  write_state(r.path() + "/state_00000005.bin", 5, newer.size());
  std::string bytes = read_file(r.path() + "/model_00000005.bin");
  bytes[2000] ^= 0x10;
  write_file(r.path() + "/model_00000005.bin", bytes);
  const std::string out = r.dir / "hf";
  const auto e = run_exe({"export", "--run", r.path(), "--format", "hf", "--out", out, "--vocab", vocab()});
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_TRUE(contains(e.output, "model_00000005.bin")) << e.output;
  EXPECT_TRUE(contains(e.output, "step 3")) << e.output;
  const StFile f = read_safetensors(out + "/model.safetensors");
  EXPECT_EQ(f.tensors.at("transformer.wpe.weight").values,
            expected_tensors(r.m, r.params).at("transformer.wpe.weight").values);
}

TEST(ExportCli, LlmcFp32AndBf16ReadBack) {
  RunDir r;
  const std::string f32 = r.dir / "m32.bin", b16 = r.dir / "m16.bin";
  auto e = run_exe({"export", "--run", r.path(), "--format", "llmc", "--out", f32});
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_EQ(sgpt::read_model_file(f32, r.m), r.params);
  e = run_exe({"export", "--run", r.path(), "--format", "llmc", "--dtype", "bf16", "--out", b16});
  ASSERT_EQ(e.code, 0) << e.output;
  // llm.c's bf16 layout: the 1024-byte header with version 5, then every tensor of the file
  // (padded vocabulary, biases) as 2 bytes.
  const std::string bytes = read_file(b16);
  int32_t h[256];
  std::memcpy(h, bytes.data(), sizeof h);
  EXPECT_EQ(h[0], 20240326);
  EXPECT_EQ(h[1], 5);
  EXPECT_EQ(h[3], 50);
  EXPECT_EQ(h[7], 128);
  EXPECT_EQ(bytes.size(), 1024 + 2 * offsets_of(r.m).total);  // bias on: file tensors = flat buffer
  bool verified = false;
  const std::vector<float> back = sgpt::read_model_file(b16, r.m, &verified);
  EXPECT_TRUE(verified);
  ASSERT_EQ(back.size(), r.params.size());
  size_t bad = 0;
  for (size_t i = 0; i < back.size(); ++i)
    if (!within_bf16_rounding(back[i], r.params[i]) && bad++ < 3)
      ADD_FAILURE() << "element " << i << ": " << back[i] << " vs " << r.params[i];
  // An existing non-empty file is refused, then replaced with --overwrite.
  e = run_exe({"export", "--run", r.path(), "--format", "llmc", "--out", f32});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, f32)) << e.output;
  e = run_exe({"export", "--run", r.path(), "--format", "llmc", "--out", f32, "--overwrite", "--dtype", "bf16"});
  EXPECT_EQ(e.code, 0) << e.output;
  EXPECT_EQ(read_file(f32), bytes);
}

TEST(ExportCli, LlmcBf16WithoutBiasesStoresZeroBiases) {
  const sgpt::ModelConfig m = tiny_model(false, true);
  const std::vector<float> params = random_params(offsets_of(m).total, 5);
  TempDir d;
  sgpt::write_model_file_bf16(d / "m.bin", m, params);
  const std::vector<float> back = sgpt::read_model_file(d / "m.bin", m);  // refuses non-zero biases
  ASSERT_EQ(back.size(), params.size());
  for (size_t i = 0; i < back.size(); ++i) ASSERT_TRUE(within_bf16_rounding(back[i], params[i])) << i;
}

TEST(ExportCli, LogitsMatchTheReferenceForward) {
  RunDir r;
  const std::string out = r.dir / "logits.bin";
  const std::vector<int> ids{3, 1, 4, 1, 5, 9, 2};
  auto e = run_exe({"logits", "--run", r.path(), "--tokens", "3,1,4,1,5,9,2", "--out", out});
  ASSERT_EQ(e.code, 0) << e.output;
  const std::string bytes = read_file(out);
  const size_t T = ids.size(), V = 50, Vp = 128;
  ASSERT_EQ(bytes.size(), T * V * 4);
  sgpt::cpu::Gpt2<float> model(r.m, 1, int(T));
  model.forward_logits(r.params.data(), ids.data(), 1);
  for (size_t t = 0; t < T; ++t)
    for (size_t v = 0; v < V; ++v) {
      float got;
      std::memcpy(&got, bytes.data() + 4 * (t * V + v), 4);
      ASSERT_EQ(got, model.logits()[t * Vp + v]) << t << "," << v;
    }
  // (out exists from here on: the bad inputs below are refused before --overwrite would matter)
  e = run_exe({"logits", "--run", r.path(), "--tokens", "1,2,3,4,5,6,7,8,9", "--out", out, "--overwrite"});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, "block_size")) << e.output;
  e = run_exe({"logits", "--run", r.path(), "--tokens", "1,x", "--out", out, "--overwrite"});
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(contains(e.output, "'x'")) << e.output;
  e = run_exe({"logits", "--run", r.path(), "--tokens", "1,50", "--out", out, "--overwrite"});
  EXPECT_EQ(e.code, 2) << e.output;
}
