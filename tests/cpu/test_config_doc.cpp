// docs/config.md's key tables against the table of config keys (src/config/keys.cpp), and the
// table's own consistency.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "config/keys.h"
#include "train/trainer.h"

namespace sgpt {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A key added to the table without its doc line, a doc line edited by hand, or a table moved out
// of its markers fails here. The expected file is written next to the test (the build directory):
// copy it over docs/config.md when the table's change was meant.
TEST(ConfigDoc, TablesMatchTheKeyTable) {
  const std::string path = std::string(SGPT_SOURCE_DIR) + "/docs/config.md";
  const std::string doc = read_text(path);
  ASSERT_FALSE(doc.empty()) << path;
  const std::string want = render_config_doc(doc);
  if (doc == want) return;
  std::ofstream("config.md.generated") << want;
  std::istringstream a(doc), b(want);
  std::string la, lb;
  int line = 0;
  while (true) {
    ++line;
    const bool ga = static_cast<bool>(std::getline(a, la)), gb = static_cast<bool>(std::getline(b, lb));
    if (!ga && !gb) break;
    if (la != lb || ga != gb) {
      ADD_FAILURE() << path << " line " << line << " differs from the table of config keys:\n  file:  " << la
                    << "\n  table: " << lb << "\nThe expected file is config.md.generated in the test's working "
                    << "directory (the build directory); copy it over docs/config.md if the table is right.";
      return;
    }
  }
}

TEST(ConfigDoc, EveryKeyIsWrittenAndReadOnce) {
  const Config d;
  const nlohmann::json j = config_to_json(d);
  std::set<std::string> names, sections_done;
  std::string last_section = "-";
  size_t leaves = 0;
  for (auto it = j.begin(); it != j.end(); ++it) leaves += it->is_object() ? it->size() : 1;
  for (const ConfigKey& k : config_keys()) {
    const std::string name = k.name;
    EXPECT_TRUE(names.insert(name).second) << name << " is in the table twice";
    const auto dot = name.rfind('.');
    const std::string section = dot == std::string::npos ? "" : name.substr(0, dot);
    if (section != last_section) {  // a section's keys are contiguous (the reader relies on it)
      EXPECT_TRUE(sections_done.insert(section).second) << "section '" << section << "' is split at " << name;
      last_section = section;
    }
    EXPECT_EQ(find_config_key(name), &k);
    EXPECT_NE(std::string(k.doc), "") << name;
    // Reading the default value back through --set gives the same config.
    EXPECT_NO_THROW(load_config("", {name + "=" + (section.empty() ? j.at(name) : j.at(section).at(name.substr(dot + 1))).dump()}))
        << name;
  }
  EXPECT_EQ(names.size(), leaves);
}

// The keys docs/config.md's "What may change on --resume" names as fixed, and only those.
TEST(ConfigDoc, FixedOnResumeAsDocumented) {
  std::set<std::string> fixed;
  for (const ConfigKey& k : config_keys())
    if (!may_change_on_resume(k.name)) fixed.insert(k.name);
  const std::set<std::string> want = {"model.n_layer", "model.n_head", "model.n_embd", "model.block_size",
                                      "model.vocab_size", "model.bias", "model.scale_attn_by_inverse_layer_idx",
                                      "optimizer.name", "seed", "data.train", "data.format",
                                      "data.order"};
  EXPECT_EQ(fixed, want);
  EXPECT_TRUE(may_change_on_resume("optimizer.lr"));
  EXPECT_TRUE(may_change_on_resume("not.a.key"));
}

}  // namespace
}  // namespace sgpt
