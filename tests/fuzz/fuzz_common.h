// Shared helpers of the libFuzzer targets (scripts/dev/fuzz.sh, docs/reliability.md "Sanitizers and
// fuzzing"). A finding is anything other than the documented way of refusing an input: a crash,
// a sanitizer report, a hang, or an exception of a type the API does not promise.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

namespace sgpt_fuzz {

// A file of this process's own (the readers under test take paths).
inline const std::string& temp_path(const char* tag) {
  static const std::string p = [&] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/sgpt_fuzz_" + tag + "_" + std::to_string(getpid());
  }();
  return p;
}

inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) { std::perror(path.c_str()); std::abort(); }
  if (size && std::fwrite(data, 1, size, f) != size) { std::perror(path.c_str()); std::abort(); }
  std::fclose(f);
}

[[noreturn]] inline void finding(const char* what, const std::exception* e = nullptr) {
  std::fprintf(stderr, "FUZZ FINDING: %s%s%s%s%s\n", what, e ? ": " : "", e ? typeid(*e).name() : "",
               e ? ": " : "", e ? e->what() : "");
  std::abort();
}

}  // namespace sgpt_fuzz
