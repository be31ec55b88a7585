// Running the sophiagpt executable from a test with a command line in shell syntax (stdout and
// stderr together), and the checks on what it printed or on a library call's error message.
// Header-only; SGPT_EXE is the binary's path (CMakeLists.txt).
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <functional>
#include <string>

#include "common/error.h"

struct Exec {
  int code;         // exit status (-1: killed by a signal)
  std::string out;  // stdout and stderr together
};

inline Exec run_cli(const std::string& args) {
  const std::string cmd = std::string(SGPT_EXE) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  if (!p) return {-1, "popen failed"};
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The message of the sgpt::UserError that f() throws; "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const sgpt::UserError& e) {
    return e.what();
  }
  return "";
}
