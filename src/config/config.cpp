#include "config/config.h"
#include "config/keys.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>

#include "common/error.h"
#include "common/paths.h"

namespace sgpt {
namespace {

using nlohmann::json;

std::string type_name(const json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number_float()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

// Reads the keys of one JSON object, checking types, and rejects keys it did not read.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string path, const std::string& source,
               const std::map<std::string, std::string>& overrides)
      : j_(j), path_(std::move(path)), source_(source), overrides_(overrides) {
    if (!j_.is_object())
      fail(path_.empty() ? std::string("the config") : path_, "must be an object, got " + type_name(j_));
  }

  void get(const char* key, bool& out) {
    if (const json* v = find(key)) {
      if (!v->is_boolean()) fail(full(key), "must be true or false, got " + type_name(*v));
      out = v->get<bool>();
    }
  }
  void get(const char* key, std::string& out) {
    if (const json* v = find(key)) {
      if (!v->is_string()) fail(full(key), "must be a string, got " + type_name(*v));
      out = v->get<std::string>();
    }
  }
  void get(const char* key, double& out) {
    if (const json* v = find(key)) {
      if (!v->is_number()) fail(full(key), "must be a number, got " + type_name(*v));
      out = v->get<double>();
      if (!std::isfinite(out)) fail(full(key), "must be finite");
    }
  }
  void get(const char* key, int64_t& out) {
    if (const json* v = find(key)) out = integer(key, *v, std::numeric_limits<int64_t>::min(),
                                                  std::numeric_limits<int64_t>::max());
  }
  void get(const char* key, int& out) {
    if (const json* v = find(key)) out = static_cast<int>(integer(key, *v, std::numeric_limits<int>::min(),
                                                                   std::numeric_limits<int>::max()));
  }
  void get(const char* key, uint64_t& out) {
    if (const json* v = find(key)) {
      if (v->is_number_unsigned()) out = v->get<uint64_t>();
      else out = static_cast<uint64_t>(integer(key, *v, 0, std::numeric_limits<int64_t>::max()));
    }
  }
  // A nested object, or nullptr when absent.
  const json* section(const char* key) {
    const json* v = find(key);
    return v;
  }
  std::string full(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  void finish() {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!seen_.count(it.key()))
        fail(full(it.key().c_str()), "is not a known config key (see docs/config.md)");
    }
  }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    // A value that came from --set is that option's fault, not the file's.
    for (const auto& [k, assignment] : overrides_)
      if (k == key || key.rfind(k + ".", 0) == 0 || k.rfind(key + ".", 0) == 0)
        throw UserError("--set '" + assignment + "': config key '" + key + "' " + what);
    throw UserError(source_ + ": config key '" + key + "' " + what);
  }
  const std::map<std::string, std::string>& overrides() const { return overrides_; }

 private:
  const json* find(const char* key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }
  int64_t integer(const char* key, const json& v, int64_t lo, int64_t hi) {
    int64_t x = 0;
    if (v.is_number_integer()) {
      x = v.get<int64_t>();
    } else if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail(full(key), "is too large");
      x = static_cast<int64_t>(u);
    } else if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
               std::fabs(v.get<double>()) < 9.0e15) {
      x = static_cast<int64_t>(v.get<double>());  // 1e5 written as a float is still an integer
    } else {
      fail(full(key), "must be an integer, got " + type_name(v) + " (" + v.dump() + ")");
    }
    if (x < lo || x > hi) fail(full(key), "is out of range (" + std::to_string(x) + ")");
    return x;
  }

  const json& j_;
  std::string path_;
  const std::string& source_;
  const std::map<std::string, std::string>& overrides_;
  std::set<std::string> seen_;
};

// The part of a dotted key before its last dot ("" for a top-level key), and the part after.
std::string section_of(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot);
}
std::string leaf_of(const std::string& name) { return name.substr(name.rfind('.') + 1); }

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw UserError("config key '" + key + "' " + what);
}

}  // namespace

// Reads every key of the table (sections in table order, each section's unknown keys rejected
// after its known keys are read; the top level's last).
Config config_from_json(const json& j, const std::string& source,
                        const std::map<std::string, std::string>& overrides) {
  Config c;
  ObjectReader top(j, "", source, overrides);
  const std::vector<ConfigKey>& keys = config_keys();
  for (size_t i = 0; i < keys.size();) {
    const std::string section = section_of(keys[i].name);
    size_t end = i;
    while (end < keys.size() && section_of(keys[end].name) == section) ++end;
    auto read = [&](ObjectReader& r) {
      for (size_t k = i; k < end; ++k) {
        const std::string leaf = leaf_of(keys[k].name);
        std::visit([&](auto field) { r.get(leaf.c_str(), field(c)); }, keys[k].field);
      }
    };
    if (section.empty()) {
      read(top);
    } else if (const json* s = top.section(section.c_str())) {
      ObjectReader r(*s, section, source, top.overrides());
      read(r);
      r.finish();
    }
    i = end;
  }
  top.finish();
  c.model.padded_vocab_size = pad_vocab(c.model.vocab_size);
  return c;
}

json config_to_json(const Config& c) {
  Config& m = const_cast<Config&>(c);  // the accessors take a Config&; nothing is written
  json j = json::object();
  for (const ConfigKey& k : config_keys()) {
    const std::string section = section_of(k.name);
    json& at = section.empty() ? j : j[section];
    std::visit([&](auto field) { at[leaf_of(k.name)] = field(m); }, k.field);
  }
  return j;
}

int Config::grad_accum_steps(int world) const {
  const int64_t per_micro = static_cast<int64_t>(batch.micro_batch_size) * model.block_size * world;
  return per_micro > 0 ? static_cast<int>(batch.total_batch_tokens / per_micro) : 0;
}

double Config::sophia_bs() const {
  return optimizer.bs > 0 ? optimizer.bs : static_cast<double>(batch.total_batch_tokens);
}

namespace {
// The table's check of one key; a failure throws naming the key.
void check_key(const ConfigKey& k, const Config& cfg) {
  const KeyCheck& ck = k.check;
  if (ck.by_code) return;
  bool ok = true;
  std::string got;
  std::visit(
      [&](auto field) {
        const auto& v = field(const_cast<Config&>(cfg));
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!ck.one_of.empty()) ok = std::find(ck.one_of.begin(), ck.one_of.end(), v) != ck.one_of.end();
          got = "\"" + v + "\"";
        } else if constexpr (!std::is_same_v<T, bool>) {
          const double x = static_cast<double>(v);
          if (ck.lo) ok = ok && (ck.lo_open ? x > *ck.lo : x >= *ck.lo);
          if (ck.hi) ok = ok && (ck.hi_open ? x < *ck.hi : x <= *ck.hi);
          if (ck.finite) ok = ok && std::isfinite(x);
          got = std::to_string(v);
        }
      },
      k.field);
  if (ok) return;
  std::string what = "must be " + key_check_phrase(ck);
  if (ck.note) what += std::string(" ") + ck.note;
  if (ck.got) what += ", got " + got;
  bad(k.name, what);
}
}  // namespace

void Config::validate(int world) const {
  // Each key's own range or allowed values (the table), then the rules over several keys.
  for (const ConfigKey& k : config_keys()) check_key(k, *this);

  const ModelConfig& m = model;
  if (m.n_embd % m.n_head != 0)
    bad("model.n_embd", "must be divisible by model.n_head (" + std::to_string(m.n_embd) + " % " +
                            std::to_string(m.n_head) + " != 0)");
  const OptimizerConfig& o = optimizer;
  if (!(o.min_lr >= 0) || o.min_lr > o.lr) bad("optimizer.min_lr", "must be in [0, optimizer.lr]");
  if (schedule.lr_decay_iters < schedule.warmup_iters)
    bad("schedule.lr_decay_iters", "must be >= schedule.warmup_iters");
  const int64_t per_micro = static_cast<int64_t>(batch.micro_batch_size) * m.block_size * world;
  if (batch.total_batch_tokens % per_micro != 0)
    bad("batch.total_batch_tokens",
        "must be a multiple of batch.micro_batch_size x model.block_size x processes = " +
            std::to_string(per_micro) + ", got " + std::to_string(batch.total_batch_tokens));
  if (o.name == "sophiag" || o.name == "sophiah") {
    const double hb = std::floor(o.hessian_batch_fraction * batch.micro_batch_size);
    if (hb < 1)
      bad("optimizer.hessian_batch_fraction",
          "times batch.micro_batch_size must give at least one sequence");
  }
  // That the file exists is checked before training (check_data), not here: a finished run's
  // config.json stays loadable (eval, sample) after the file moved.
  if (eval.hellaswag_every > 0 && eval.hellaswag_file.empty())
    bad("eval.hellaswag_file", "is empty but eval.hellaswag_every is " + std::to_string(eval.hellaswag_every) +
                                   ": name the HellaSwag JSONL (docs/eval.md)");
  if (!dist.init.empty() && dist.init.rfind("tcp://", 0) != 0 && dist.init.rfind("file://", 0) != 0)
    bad("dist.init", "must be \"tcp://HOST:PORT\", \"file:///path\" or empty, got \"" + dist.init + "\"");
  if (lm_head_precision == "fp8" && precision != "bf16")
    bad("lm_head_precision", "\"fp8\" needs precision \"bf16\"");
  if (attention == "cudnn" && precision != "bf16")
    bad("attention", "\"cudnn\" needs precision \"bf16\" (cuDNN's fused attention has no fp32 "
                     "mode); use \"auto\" or \"own\"");
}

json read_json_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw UserError("cannot read config file '" + path + "': " + std::strerror(errno));
  check_input_file(path, "config file");  // a directory opens, then fails inside the parser
  // The key path being parsed (for messages) and the keys seen in each open object (duplicates).
  struct Frame {
    bool object;
    std::string key;
    std::set<std::string> keys;
  };
  std::vector<Frame> stack;
  auto path_of = [&] {
    std::string p;
    for (const Frame& fr : stack) {
      if (!fr.object || fr.key.empty()) continue;
      p += (p.empty() ? "" : ".") + fr.key;
    }
    return p;
  };
  const json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start: stack.push_back({true, "", {}}); break;
      case json::parse_event_t::array_start: stack.push_back({false, "", {}}); break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case json::parse_event_t::key: {
        Frame& fr = stack.back();
        fr.key = parsed.get<std::string>();
        if (!fr.keys.insert(fr.key).second)
          throw UserError("config file '" + path + "': config key '" + path_of() +
                          "' appears twice (a JSON object's keys must be unique)");
        break;
      }
      case json::parse_event_t::value: break;
    }
    return true;
  };
  try {
    return json::parse(f, cb);
  } catch (const json::parse_error& e) {
    throw UserError("config file '" + path + "' is not valid JSON: " + e.what());
  } catch (const json::out_of_range& e) {  // 406: a number a double cannot hold (1e400)
    const std::string key = path_of();
    throw UserError("config file '" + path + "': " + (key.empty() ? std::string("a value") : "config key '" + key + "'") +
                    " holds a number out of the range of a double (" + e.what() + ")");
  }
}

void apply_override(json& j, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError("--set '" + assignment + "': expected key.path=value");
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  // Only keys of the schema may be set: the defaults hold every key.
  const Config default_config;  // (a named object: g++ 12 warns falsely on a Config{} temporary)
  const json defaults = config_to_json(default_config);
  const json* schema = &defaults;
  json* node = &j;
  std::stringstream ss(key);
  std::string part;
  std::vector<std::string> parts;
  while (std::getline(ss, part, '.')) parts.push_back(part);
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (!schema->is_object() || !schema->contains(p))
      throw UserError("--set '" + assignment + "': '" + key + "' is not a known config key (see docs/config.md)");
    schema = &(*schema)[p];
    if (i + 1 < parts.size()) {
      if (!node->contains(p)) (*node)[p] = json::object();
      node = &(*node)[p];
    }
  }
  if (schema->is_object())
    throw UserError("--set '" + assignment + "': '" + key + "' is a section, set one of its keys");
  json value;
  try {
    value = json::parse(text);
  } catch (const json::parse_error&) {
    value = text;  // a bare word: a string
  } catch (const json::out_of_range&) {
    throw UserError("--set '" + assignment + "': config key '" + key +
                    "' gets a number out of the range of a double");
  }
  (*node)[parts.back()] = value;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides, int world) {
  json j = path.empty() ? json::object() : read_json_file(path);
  if (!j.is_object()) throw UserError("config file '" + path + "' must hold a JSON object");
  std::map<std::string, std::string> set_keys;
  for (const auto& o : overrides) {
    apply_override(j, o);
    set_keys[o.substr(0, o.find('='))] = o;
  }
  const std::string source = path.empty() ? std::string("config") : path;
  Config c = config_from_json(j, source, set_keys);
  c.validate(world);
  return c;
}

}  // namespace sgpt
