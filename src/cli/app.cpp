// The sophiagpt command line: its subcommands (cli/commands.h) and the exit codes of every error
// (2: the user's input, 3: an internal error). src/main.cpp calls it; so does the test build of
// the executable that injects faults (tests/faults/).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/error.h"

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The words of the command line that must name subcommands (the first one, and the next one
// under a subcommand that has its own, `bench`): an unknown one is an error naming it and listing
// the subcommands there, where CLI11 would only say "A subcommand is required". "" when all are
// known (CLI11 then parses as usual).
std::string unknown_subcommand(CLI::App& app, int argc, char** argv) {
  CLI::App* at = &app;
  std::string path = "sophiagpt";
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    // An option before any subcommand: only the program's own (help, version) are known there.
    if (at == &app && !word.empty() && word[0] == '-' && word != "-h" && word != "--help" && word != "--version")
      return "unknown option '" + word + "': the command line starts with a subcommand (sophiagpt --help lists them)";
    if (word.empty() || word[0] == '-') return "";  // an option: CLI11 takes it from here
    const std::vector<CLI::App*> subs = at->get_subcommands([](CLI::App*) { return true; });
    if (subs.empty()) return "";
    CLI::App* next = nullptr;
    std::string names, close;
    for (CLI::App* s : subs) {
      if (s->check_name(word)) next = s;
      names += (names.empty() ? "" : ", ") + s->get_name();
      if (close.empty() && edit_distance(word, s->get_name()) <= 2) close = s->get_name();
    }
    if (!next)
      return "unknown subcommand '" + word + "'" + (at == &app ? "" : " of '" + path + "'") +
             (close.empty() ? "" : " (did you mean '" + close + "'?)") + "; the subcommands are: " + names + " (" +
             path + " <subcommand> --help)";
    at = next;
    path += " " + word;
  }
  return "";
}

}  // namespace

namespace sgpt {
int run_sophiagpt(int argc, char** argv) {
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
  if (const std::string unknown = unknown_subcommand(app, argc, argv); !unknown.empty()) {
    std::fprintf(stderr, "error: %s\n", unknown.c_str());
    return 2;
  }
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
}  // namespace sgpt
