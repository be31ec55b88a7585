// Model and state files: round trips, and every malformed file is an error naming it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "model/checkpoint.h"
#include "test_model.h"
#include "test_scratch.h"

using namespace sgpt;
namespace fs = std::filesystem;

namespace {
ModelConfig small(bool bias) { return sgpt_test::model_config(2, 2, 8, 6, 30, 128, bias); }
fs::path tmp(const std::string& n) { return sgpt_test::scratch_root("ckpt") / n; }
std::string error_of(const std::function<void()>& f) {
  try { f(); } catch (const UserError& e) { return e.what(); }
  return "";
}
}  // namespace

TEST(ModelFile, RoundTripWithAndWithoutBias) {
  for (bool bias : {false, true}) {
    const ModelConfig m = small(bias);
    const ParamLayout L = ParamLayout::make(m);
    std::vector<float> p(L.total);
    for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<float>(i) * 0.001f - 1.0f;
    const std::string path = tmp(bias ? "b.bin" : "nb.bin").string();
    write_model_file(path, m, p);
    // llm.c's header: magic, version 3, then the shape.
    std::ifstream f(path, std::ios::binary);
    int32_t h[8];
    f.read(reinterpret_cast<char*>(h), sizeof h);
    EXPECT_EQ(h[0], 20240326);
    EXPECT_EQ(h[1], 3);
    EXPECT_EQ(h[2], 6);
    EXPECT_EQ(h[3], 30);
    EXPECT_EQ(h[4], 2);
    EXPECT_EQ(h[5], 2);
    EXPECT_EQ(h[6], 8);
    EXPECT_EQ(h[7], 128);
    // File size counts every llm.c tensor, biases included.
    size_t file_params = 0;
    for (int i = 0; i < kNumParamTensors; ++i) file_params += L.file_size[i];
    EXPECT_EQ(fs::file_size(path), 1024 + 4 * file_params);
    EXPECT_EQ(read_model_file(path, m), p);
  }
}

TEST(ModelFile, MismatchesAreNamed) {
  const ModelConfig m = small(false);
  const ParamLayout L = ParamLayout::make(m);
  const std::string path = tmp("mm.bin").string();
  write_model_file(path, m, std::vector<float>(L.total, 0.5f));
  ModelConfig other = m;
  other.n_embd = 16;
  EXPECT_NE(error_of([&] { read_model_file(path, other); }).find("n_embd = 8"), std::string::npos);
  ModelConfig withbias = m;
  withbias.bias = true;
  EXPECT_NE(error_of([&] { read_model_file(path, withbias); }).find("bias"), std::string::npos);
  // Truncated file.
  fs::resize_file(path, fs::file_size(path) - 4);
  EXPECT_NE(error_of([&] { read_model_file(path, m); }).find("bytes, expected"), std::string::npos);
  // Wrong magic.
  { std::ofstream f(path, std::ios::binary); int32_t h[256] = {1234}; f.write(reinterpret_cast<char*>(h), sizeof h); }
  EXPECT_NE(error_of([&] { read_model_file(path, m); }).find("magic 1234"), std::string::npos);
  EXPECT_NE(error_of([&] { read_model_file(tmp("absent.bin").string(), m); }).find("absent.bin"), std::string::npos);
}

TEST(ModelFile, NonZeroBiasIntoBiaslessModelIsAnError) {
  const ModelConfig mb = small(true);
  const ParamLayout L = ParamLayout::make(mb);
  const std::string path = tmp("bias.bin").string();
  write_model_file(path, mb, std::vector<float>(L.total, 0.25f));
  // Written with header slot [8] = 2 (bias); read as bias=false: the recorded flag mismatches.
  EXPECT_NE(error_of([&] { read_model_file(path, small(false)); }).find("bias"), std::string::npos);
}

TEST(StateFile, RoundTripAndCorruption) {
  TrainState s;
  s.meta = {{"step", 5}, {"optimizer", "sophiag"}, {"n_params", 3}};
  s.slot_names = {"m", "h"};
  s.slots = {{1, 2, 3}, {4, 5, 6}};
  const std::string path = tmp("state.bin").string();
  write_state_file(path, s);
  const TrainState r = read_state_file(path);
  EXPECT_EQ(r.slot_names, s.slot_names);
  EXPECT_EQ(r.slots, s.slots);
  EXPECT_EQ(r.meta.at("step"), 5);
  fs::resize_file(path, fs::file_size(path) - 1);
  EXPECT_NE(error_of([&] { read_state_file(path); }).find("bytes, expected"), std::string::npos);
  { std::ofstream f(path, std::ios::binary); f << "garbage-garbage-garbage-garbage"; }
  EXPECT_NE(error_of([&] { read_state_file(path); }).find("SGPTSTAT"), std::string::npos);
}

TEST(AtomicWrite, NoTempFileLeftAndOldFileKeptOnFailure) {
  const fs::path dir = tmp("atomic_dir");
  fs::create_directories(dir);
  const std::string path = (dir / "x.bin").string();
  const std::string a = "first";
  write_file_atomic(path, {{a.data(), a.size()}});
  EXPECT_EQ(fs::file_size(path), 5u);
  size_t n = 0;
  for (auto& e : fs::directory_iterator(dir)) { (void)e; ++n; }
  EXPECT_EQ(n, 1u);
  // Writing into a directory that does not exist fails and names the temp path.
  EXPECT_THROW(write_file_atomic((dir / "no" / "y.bin").string(), {{a.data(), a.size()}}), UserError);
  EXPECT_EQ(fs::file_size(path), 5u);
}

// tests/fuzz/findings: an n_params near 2^64 made the size check wrap into a match, then the slot
// allocation threw std::length_error or asked for 2^60 bytes (exit 3), found by reading the reader
// for the fuzzing work; an n_params written as a float beyond 2^64 was an out-of-range conversion
// (undefined behaviour), found by fuzz_checkpoint. Each must be a UserError naming the file.
TEST(StateFile, HugeParameterCountIsAnErrorNotAnAllocation) {
  for (const char* name : {"state_n_params_wrap_length_error.bin", "state_n_params_wrap_huge_alloc.bin",
                           "state_n_params_float_out_of_range.bin"}) {
    const std::string path = std::string(SGPT_SOURCE_DIR) + "/tests/fuzz/findings/" + name;
    try {
      read_state_file(path);
      ADD_FAILURE() << name << " was accepted";
    } catch (const sgpt::UserError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
    EXPECT_THROW(verify_checkpoint_file(path), sgpt::UserError) << name;
  }
}
