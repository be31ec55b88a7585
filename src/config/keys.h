// The table of config keys (the rows are in keys.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "config/config.h"

namespace sgpt {

// Every key is one row of config_keys(): its dotted name, where it lives in Config (which gives
// its type; its default is the member's initializer in config.h), the values it accepts, one line of
// documentation and whether it may change on --resume. The reader (config_from_json), the range
// checks of validate(), the writer (config_to_json) and the key tables of docs/config.md
// (config_keys_markdown; tests/cpu/test_config_doc.cpp checks the file) all come from it. To add
// a key: a member in config.h, a row in keys.cpp, then the doc test prints the new docs/config.md.

// Where a key lives in Config: one accessor per member type (the variant's index is the type).
using ConfigField = std::variant<bool& (*)(Config&), int& (*)(Config&), int64_t& (*)(Config&),
                                 uint64_t& (*)(Config&), double& (*)(Config&), std::string& (*)(Config&)>;

// The values a key accepts; validate() reports "config key 'K' must be <phrase>[ <note>][, got V]".
struct KeyCheck {
  std::optional<double> lo, hi;    // numeric bounds (checked on the value as a double)
  bool lo_open = false, hi_open = false;
  bool finite = false;             // also reject inf/nan
  std::vector<std::string> one_of; // strings: the allowed values
  const char* phrase = nullptr;    // replaces the phrase made from the bounds / one_of
  const char* note = nullptr;      // a parenthetical after the phrase, e.g. "(0 disables)"
  bool got = true;                 // append ", got <value>"
  bool by_code = false;            // checked by explicit code in validate() (cross-key); phrase is for the docs

  KeyCheck says(const char* p) const { KeyCheck c = *this; c.phrase = p; return c; }
  KeyCheck with_note(const char* n) const { KeyCheck c = *this; c.note = n; return c; }
  KeyCheck quiet() const { KeyCheck c = *this; c.got = false; return c; }
  KeyCheck finite_only() const { KeyCheck c = *this; c.finite = true; return c; }
};

struct ConfigKey {
  const char* name;       // dotted key path, "optimizer.lr"
  ConfigField field;
  KeyCheck check;
  const char* doc;        // one line for docs/config.md
  bool fixed_on_resume;   // true: changing it makes another run (the resume is refused)
};

// The table, in reading order; a section's keys are contiguous.
const std::vector<ConfigKey>& config_keys();
const ConfigKey* find_config_key(const std::string& name);  // nullptr if no such key
// The "must be ..." phrase of a check: "in [0, 1)", "\"a\" or \"b\"" (markdown: values in backticks).
std::string key_check_phrase(const KeyCheck& c, bool markdown = false);

// may_change_on_resume(key) (declared in train/trainer.h, defined in keys.cpp) reads the table's
// fixed_on_resume column.

// The markdown table of the keys of `sections` (comma-separated section names; "top" = the
// top-level keys), as docs/config.md holds it between <!-- keys:SECTIONS --> and <!-- /keys -->.
std::string config_keys_markdown(const std::string& sections);
// `doc` with every such marked block replaced by config_keys_markdown of its sections (the rest
// unchanged). Throws std::runtime_error on an unclosed marker or a key in no block.
std::string render_config_doc(const std::string& doc);

// The keys a resumed run may change (docs/config.md, "What may change on --resume"): every key but
// those whose row says fixed_on_resume (the model, the optimizer's name, the seed and the training
// data, which make it another run).
bool may_change_on_resume(const std::string& key);

}  // namespace sgpt
