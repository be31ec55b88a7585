// Subcommands of the sophiagpt executable. Each family registers itself on the CLI11 app; the
// callbacks throw sgpt::UserError (src/common/error.h) for bad inputs, which main() reports as
// "error: ..." with exit code 2.
#pragma once
#include <CLI/CLI.hpp>

namespace sgpt {
void add_train_commands(CLI::App& app);  // train, eval, sample       (src/cli/train_command.cpp)
void add_data_commands(CLI::App& app);   // tokenize, prepare         (src/cli/data_commands.cpp)
void add_bench_commands(CLI::App& app);  // bench optimizer|train     (src/cli/bench_command.cpp)
void add_export_commands(CLI::App& app); // export, logits           (src/cli/export_command.cpp)
// The whole command line: parses argv, runs the subcommand, returns the exit code (src/cli/app.cpp).
int run_sophiagpt(int argc, char** argv);
}  // namespace sgpt
