// Scratch space for the CPU and GPU tests: <system temp>/sgpt_<suite>_<pid>/<name>. Each test process
// (ctest runs one per test) has its own roots; they are removed when the process's tests end if
// every test passed, and kept for a look when one failed.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <system_error>

namespace sgpt_test {

class ScratchRoots : public ::testing::Environment {
 public:
  static ScratchRoots& get() {
    static ScratchRoots* const roots = [] {
      auto* r = new ScratchRoots;  // owned by GoogleTest from here on
      ::testing::AddGlobalTestEnvironment(r);
      return r;
    }();
    return *roots;
  }
  std::filesystem::path add(const std::string& suite) {
    const auto root =
        std::filesystem::temp_directory_path() / ("sgpt_" + suite + "_" + std::to_string(::getpid()));
    std::lock_guard<std::mutex> lock(mu_);
    roots_.insert(root);
    return root;
  }
  void TearDown() override {
    if (!::testing::UnitTest::GetInstance()->Passed()) return;
    std::lock_guard<std::mutex> lock(mu_);
    std::error_code ec;
    for (const auto& r : roots_) std::filesystem::remove_all(r, ec);
  }

 private:
  std::mutex mu_;
  std::set<std::filesystem::path> roots_;
};

// Registered with GoogleTest before main(), so that its TearDown runs after the last test.
inline ScratchRoots& scratch_roots_registered = ScratchRoots::get();

// This process's root for `suite`, created.
inline std::filesystem::path scratch_root(const std::string& suite) {
  const auto root = ScratchRoots::get().add(suite);
  std::filesystem::create_directories(root);
  return root;
}

// scratch_root(suite)/name, with nothing there (whatever an earlier use left is removed).
inline std::filesystem::path scratch_path(const std::string& suite, const std::string& name) {
  const auto p = scratch_root(suite) / name;
  std::filesystem::remove_all(p);
  return p;
}

// scratch_path(suite, name), created as an empty folder.
inline std::filesystem::path scratch_dir(const std::string& suite, const std::string& name) {
  const auto p = scratch_path(suite, name);
  std::filesystem::create_directories(p);
  return p;
}

}  // namespace sgpt_test
