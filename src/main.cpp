// sophiagpt: GPT-2 pretraining with Sophia-G (and AdamW), CPU reference and CUDA backends.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "common/error.h"

int main(int argc, char** argv) {
  // A write past the file-size limit (ulimit -f) fails with EFBIG, and the writer reports it
  // naming the file, instead of the process dying by SIGXFSZ without a word.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"sophiagpt: pretrain GPT-2 with Sophia-G (arXiv 2305.14342) or AdamW"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "sophiagpt 0.1.0");
  sgpt::add_train_commands(app);
  sgpt::add_data_commands(app);
  sgpt::add_bench_commands(app);
  sgpt::add_export_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const sgpt::ExitRequest& e) {
    return e.code();
  } catch (const sgpt::UserError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
