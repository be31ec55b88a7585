// Standalone driver of `sophiagpt bench ...` (src/cli/bench_command.cpp) for builds where the full
// executable is not linked: `optimizer_bench optimizer --models 124M`. Same options and output.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "common/error.h"

int main(int argc, char** argv) {
  CLI::App app{"sophiagpt benchmarks (standalone)"};
  app.require_subcommand(1);
  sgpt::add_bench_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const sgpt::UserError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
