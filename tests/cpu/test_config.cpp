// Config parsing and validation: every bad value is an error that names the key path.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "config/config.h"

using namespace sgpt;
using nlohmann::json;

namespace {
// Expects config_from_json + validate to fail with a message containing every needle.
void expect_error(const json& j, std::initializer_list<std::string> needles) {
  try {
    Config c = config_from_json(j, "test.json");
    c.validate();
    FAIL() << "no error for " << j.dump();
  } catch (const UserError& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "message: " << msg << "\nmissing: " << n;
  }
}
json tiny() {
  return json::parse(R"({"model": {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 64},
                         "batch": {"micro_batch_size": 4, "total_batch_tokens": 64}})");
}
}  // namespace

TEST(Config, DefaultsAreTheOfficialSmallRecipe) {
  Config c = config_from_json(json::object(), "x");
  c.validate();
  EXPECT_EQ(c.model.n_layer, 12);
  EXPECT_EQ(c.model.padded_vocab_size, 50304);
  EXPECT_EQ(c.optimizer.name, "sophiag");
  EXPECT_EQ(c.batch.total_batch_tokens, 491520);
  EXPECT_EQ(c.grad_accum_steps(), 491520 / (8 * 1024));
  EXPECT_DOUBLE_EQ(c.sophia_bs(), 491520.0);
}

TEST(Config, ParsesAndRoundTrips) {
  json j = tiny();
  j["optimizer"] = {{"name", "adamw"}, {"lr", 1e-3}, {"beta2", 0.95}};
  j["seed"] = 7;
  Config c = config_from_json(j, "x");
  c.validate();
  EXPECT_EQ(c.optimizer.name, "adamw");
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.grad_accum_steps(), 2);
  Config d = config_from_json(config_to_json(c), "y");
  EXPECT_EQ(config_to_json(d), config_to_json(c));
}

TEST(Config, UnknownKeysAreErrors) {
  json j = tiny();
  j["optimizer"] = {{"learning_rate", 1e-3}};
  expect_error(j, {"test.json", "optimizer.learning_rate", "not a known config key"});
  json k = tiny();
  k["wandb"] = true;
  expect_error(k, {"'wandb'", "not a known"});
}

TEST(Config, WrongTypesAreErrors) {
  json j = tiny();
  j["model"]["n_layer"] = "twelve";
  expect_error(j, {"model.n_layer", "integer"});
  json k = tiny();
  k["model"]["bias"] = 1;
  expect_error(k, {"model.bias", "true or false"});
  json l = tiny();
  l["optimizer"] = {{"lr", "fast"}};
  expect_error(l, {"optimizer.lr", "number"});
  json m = tiny();
  m["model"] = 3;
  expect_error(m, {"model", "object"});
  json n = tiny();
  n["model"]["n_head"] = 2.5;
  expect_error(n, {"model.n_head", "integer"});
}

TEST(Config, OutOfRangeValuesAreErrors) {
  auto with = [](const char* sec, const char* key, json v) {
    json j = tiny();
    j[sec][key] = v;
    return j;
  };
  expect_error(with("optimizer", "rho", -0.1), {"optimizer.rho", ">= 0"});
  expect_error(with("optimizer", "beta1", 1.0), {"optimizer.beta1", "[0, 1)"});
  expect_error(with("optimizer", "beta2", -0.5), {"optimizer.beta2", "[0, 1)"});
  expect_error(with("optimizer", "hessian_interval", 0), {"optimizer.hessian_interval", ">= 1"});
  expect_error(with("optimizer", "hessian_batch_fraction", 1.5), {"optimizer.hessian_batch_fraction"});
  expect_error(with("optimizer", "name", "sgd"), {"optimizer.name", "sophiag"});
  expect_error(with("optimizer", "grad_clip", -1), {"optimizer.grad_clip"});
  expect_error(with("model", "n_head", 3), {"model.n_embd", "divisible by model.n_head"});
  expect_error(with("model", "vocab_size", 70000), {"model.vocab_size"});
  expect_error(with("batch", "total_batch_tokens", 100), {"batch.total_batch_tokens", "multiple", "32"});
  expect_error(with("schedule", "max_steps", 0), {"schedule.max_steps"});
  expect_error(with("data", "format", "parquet"), {"data.format"});
  expect_error(with("data", "order", "random"), {"data.order", "global"});
  json j = tiny();
  j["precision"] = "fp8";
  expect_error(j, {"precision", "fp32"});
  json a = tiny();
  a["attention"] = "flash";
  expect_error(a, {"attention", "\"auto\", \"own\" or \"cudnn\"", "flash"});
  json b = tiny();
  b["attention"] = "cudnn";  // tiny() is fp32
  expect_error(b, {"attention", "needs precision \"bf16\""});
  b["precision"] = "bf16";
  EXPECT_EQ(config_from_json(b, "x").attention, "cudnn");
  json h = tiny();
  h["lm_head_precision"] = "fp16";
  expect_error(h, {"lm_head_precision", "\"bf16\" or \"fp8\"", "fp16"});
  h["lm_head_precision"] = "fp8";  // tiny() is fp32
  expect_error(h, {"lm_head_precision", "needs precision \"bf16\""});
  h["precision"] = "bf16";
  EXPECT_EQ(config_from_json(h, "x").lm_head_precision, "fp8");
  EXPECT_EQ(config_from_json(tiny(), "x").lm_head_precision, "bf16");  // the default
}

TEST(Config, OverridesParseJsonOrStrings) {
  json j = tiny();
  apply_override(j, "optimizer.lr=0.01");
  apply_override(j, "optimizer.name=adamw");
  apply_override(j, "model.bias=true");
  apply_override(j, "data.train=\"a b.bin\"");
  Config c = config_from_json(j, "x");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.01);
  EXPECT_EQ(c.optimizer.name, "adamw");
  EXPECT_TRUE(c.model.bias);
  EXPECT_EQ(c.data.train, "a b.bin");
}

TEST(Config, OverrideOfUnknownKeyIsAnError) {
  json j = tiny();
  try {
    apply_override(j, "optimizer.lrr=0.1");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.lrr"), std::string::npos);
  }
  EXPECT_THROW(apply_override(j, "novalue"), UserError);
  EXPECT_THROW(apply_override(j, "model=3"), UserError);
}

// Every config shipped in configs/ and configs/study/ loads and validates, and every line of the
// study plans (configs/study/*.plan: NAME CONFIG key=value ...) names a config that exists and
// overrides that apply and validate: a typo is found here, not after a GPU has been reserved.
TEST(ConfigFiles, EveryShippedConfigAndPlanLineLoads) {
  namespace fs = std::filesystem;
  const fs::path root = SGPT_SOURCE_DIR;
  int configs = 0, lines = 0;
  for (const char* dir : {"configs", "configs/study"}) {
    for (const auto& e : fs::directory_iterator(root / dir)) {
      if (e.path().extension() != ".json") continue;
      EXPECT_NO_THROW(sgpt::load_config(e.path().string(), {})) << e.path();
      ++configs;
    }
  }
  for (const auto& e : fs::directory_iterator(root / "configs/study")) {
    if (e.path().extension() != ".plan") continue;
    std::ifstream in(e.path());
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ws(line);
      std::string name, config, kv;
      ws >> name >> config;
      std::vector<std::string> sets;
      while (ws >> kv) sets.push_back(kv);
      ASSERT_TRUE(fs::exists(root / config)) << e.path() << ": " << line;
      EXPECT_NO_THROW(sgpt::load_config((root / config).string(), sets)) << e.path() << ": " << line;
      ++lines;
    }
  }
  EXPECT_GE(configs, 10);
  EXPECT_GE(lines, 20);
}
