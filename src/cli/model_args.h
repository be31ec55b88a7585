// The options that name a trained model (a run directory and a step, or a config and a model file)
// and the loading of it, shared by the commands that read one: sample and eval
// (src/cli/train_command.cpp), export and logits (src/cli/export_command.cpp).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace sgpt {

// A trained model: its config and parameters, from a run directory or from explicit files.
struct ModelArgs {
  std::string run, config, model;
  std::vector<std::string> sets;
  int64_t step = -1;
};

// --run/-r, --step, --config/-c, --model/-m, --set/-s.
void add_model_options(CLI::App* c, ModelArgs& m);

// The run's config.json (or --config) with --set applied, and the parameters of the checkpoint of
// --step (default: the newest) or of --model. UserError naming the input when one is missing or bad.
std::pair<Config, std::vector<float>> load_trained(const ModelArgs& m);

}  // namespace sgpt
