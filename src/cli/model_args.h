// The options that name a trained model (a run directory and a step, or a config and a model file)
// and the loading of it, shared by the commands that read one: sample and eval
// (src/cli/train_command.cpp), export and logits (src/cli/export_command.cpp).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace sgpt {

// A trained model: its config and parameters, from a run directory or from explicit files.
struct ModelArgs {
  std::string run, config, model;
  std::vector<std::string> sets;
  std::optional<int64_t> step;  // --step N (absent: the newest checkpoint that verifies)
};

// --run/-r, --step, --config/-c, --model/-m, --set/-s.
void add_model_options(CLI::App* c, ModelArgs& m);

// The run's config.json (or --config) with --set applied, and the parameters of the checkpoint of
// --step or of --model. Without either, the checkpoint of the run is the newest whose two files
// (model_N.bin, state_N.bin) verify: find_resume_checkpoint, the rule --resume uses; each newer
// damaged or incomplete one is named in a warning. A --step whose checkpoint is damaged or
// incomplete is an error naming the file. UserError naming the input when one is missing or bad.
// *source (when given) says what was loaded: "step N of RUN" or the --model file.
std::pair<Config, std::vector<float>> load_trained(const ModelArgs& m, std::string* source = nullptr);

}  // namespace sgpt
