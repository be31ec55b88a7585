// libFuzzer target: the config loader (src/config/config.h) on arbitrary text.
// Input: a JSON document, optionally followed by a NUL byte and "--set" assignments, one a line.
// The document goes through read_json_file (duplicate keys, numbers out of range) via load_config,
// the assignments through apply_override, then config_from_json and validate. Acceptable: success,
// sgpt::UserError, nlohmann::json exceptions. A config that loads must survive the round trip
// config_to_json -> config_from_json unchanged.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "config/config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string doc = in.substr(0, nul);
  std::vector<std::string> overrides;
  if (nul != std::string::npos) {
    size_t pos = nul + 1;
    while (pos <= in.size() && overrides.size() < 16) {
      size_t nl = in.find('\n', pos);
      if (nl == std::string::npos) nl = in.size();
      overrides.push_back(in.substr(pos, nl - pos));
      pos = nl + 1;
    }
  }
  const std::string& path = sgpt_fuzz::temp_path("config");
  sgpt_fuzz::write_bytes(path, reinterpret_cast<const uint8_t*>(doc.data()), doc.size());

  // 1. The whole loader, as `sophiagpt train --config FILE --set ...` runs it.
  try {
    const sgpt::Config c = sgpt::load_config(path, overrides);
    const nlohmann::json j = sgpt::config_to_json(c);
    const sgpt::Config c2 = sgpt::config_from_json(j, "round trip");
    if (sgpt::config_to_json(c2) != j) sgpt_fuzz::finding("config_to_json/config_from_json round trip differs");
  } catch (const sgpt::UserError&) {
  } catch (const nlohmann::json::exception&) {
  } catch (const std::exception& e) {
    sgpt_fuzz::finding("load_config threw an unexpected exception", &e);
  }

  // 2. config_from_json on any parsed value (not only objects), without the file reader.
  try {
    const nlohmann::json j = nlohmann::json::parse(doc);
    (void)sgpt::config_from_json(j, "fuzz");
  } catch (const sgpt::UserError&) {
  } catch (const nlohmann::json::exception&) {
  } catch (const std::exception& e) {
    sgpt_fuzz::finding("config_from_json threw an unexpected exception", &e);
  }
  return 0;
}
