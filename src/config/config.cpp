#include "config/config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

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

template <class F>
void read_section(ObjectReader& top, const char* key, const std::string& source, F&& body) {
  if (const json* s = top.section(key)) {
    ObjectReader r(*s, key, source, top.overrides());
    body(r);
    r.finish();
  }
}

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw UserError("config key '" + key + "' " + what);
}

}  // namespace

Config config_from_json(const json& j, const std::string& source,
                        const std::map<std::string, std::string>& overrides) {
  Config c;
  ObjectReader top(j, "", source, overrides);
  read_section(top, "model", source, [&](ObjectReader& r) {
    ModelConfig& m = c.model;
    r.get("n_layer", m.n_layer);
    r.get("n_head", m.n_head);
    r.get("n_embd", m.n_embd);
    r.get("block_size", m.block_size);
    r.get("vocab_size", m.vocab_size);
    r.get("bias", m.bias);
    r.get("scale_attn_by_inverse_layer_idx", m.scale_attn_by_inverse_layer_idx);
  });
  read_section(top, "optimizer", source, [&](ObjectReader& r) {
    OptimizerConfig& o = c.optimizer;
    r.get("name", o.name);
    r.get("lr", o.lr);
    r.get("min_lr", o.min_lr);
    r.get("beta1", o.beta1);
    r.get("beta2", o.beta2);
    r.get("rho", o.rho);
    r.get("weight_decay", o.weight_decay);
    r.get("eps", o.eps);
    r.get("bs", o.bs);
    r.get("hessian_interval", o.hessian_interval);
    r.get("hessian_batch_fraction", o.hessian_batch_fraction);
    r.get("grad_clip", o.grad_clip);
    r.get("max_consecutive_skips", o.max_consecutive_skips);
  });
  read_section(top, "schedule", source, [&](ObjectReader& r) {
    r.get("warmup_iters", c.schedule.warmup_iters);
    r.get("lr_decay_iters", c.schedule.lr_decay_iters);
    r.get("max_steps", c.schedule.max_steps);
  });
  read_section(top, "batch", source, [&](ObjectReader& r) {
    r.get("micro_batch_size", c.batch.micro_batch_size);
    r.get("total_batch_tokens", c.batch.total_batch_tokens);
  });
  read_section(top, "data", source, [&](ObjectReader& r) {
    r.get("train", c.data.train);
    r.get("val", c.data.val);
    r.get("format", c.data.format);
  });
  read_section(top, "eval", source, [&](ObjectReader& r) {
    r.get("every", c.eval.every);
    r.get("batches", c.eval.batches);
    r.get("hellaswag_every", c.eval.hellaswag_every);
    r.get("hellaswag_file", c.eval.hellaswag_file);
  });
  read_section(top, "checkpoint", source, [&](ObjectReader& r) {
    r.get("every", c.checkpoint.every);
    r.get("keep", c.checkpoint.keep);
  });
  read_section(top, "log", source, [&](ObjectReader& r) {
    r.get("every", c.log.every);
    r.get("peak_tflops", c.log.peak_tflops);
  });
  read_section(top, "sample", source, [&](ObjectReader& r) {
    r.get("every", c.sample.every);
    r.get("tokens", c.sample.tokens);
    r.get("prompt", c.sample.prompt);
    r.get("temperature", c.sample.temperature);
    r.get("top_k", c.sample.top_k);
    r.get("top_p", c.sample.top_p);
  });
  read_section(top, "dist", source, [&](ObjectReader& r) {
    r.get("init", c.dist.init);
    r.get("timeout_s", c.dist.timeout_s);
    r.get("zero", c.dist.zero);
  });
  top.get("seed", c.seed);
  top.get("precision", c.precision);
  top.get("device", c.device);
  top.get("attention", c.attention);
  top.get("recompute", c.recompute);
  top.get("grad_accum_precision", c.grad_accum_precision);
  top.finish();
  c.model.padded_vocab_size = pad_vocab(c.model.vocab_size);
  return c;
}

json config_to_json(const Config& c) {
  const ModelConfig& m = c.model;
  const OptimizerConfig& o = c.optimizer;
  return json{
      {"model",
       {{"n_layer", m.n_layer}, {"n_head", m.n_head}, {"n_embd", m.n_embd},
        {"block_size", m.block_size}, {"vocab_size", m.vocab_size}, {"bias", m.bias},
        {"scale_attn_by_inverse_layer_idx", m.scale_attn_by_inverse_layer_idx}}},
      {"optimizer",
       {{"name", o.name}, {"lr", o.lr}, {"min_lr", o.min_lr}, {"beta1", o.beta1},
        {"beta2", o.beta2}, {"rho", o.rho}, {"weight_decay", o.weight_decay}, {"eps", o.eps},
        {"bs", o.bs}, {"hessian_interval", o.hessian_interval},
        {"hessian_batch_fraction", o.hessian_batch_fraction}, {"grad_clip", o.grad_clip},
        {"max_consecutive_skips", o.max_consecutive_skips}}},
      {"schedule",
       {{"warmup_iters", c.schedule.warmup_iters}, {"lr_decay_iters", c.schedule.lr_decay_iters},
        {"max_steps", c.schedule.max_steps}}},
      {"batch",
       {{"micro_batch_size", c.batch.micro_batch_size},
        {"total_batch_tokens", c.batch.total_batch_tokens}}},
      {"data", {{"train", c.data.train}, {"val", c.data.val}, {"format", c.data.format}}},
      {"eval", {{"every", c.eval.every}, {"batches", c.eval.batches},
                {"hellaswag_every", c.eval.hellaswag_every}, {"hellaswag_file", c.eval.hellaswag_file}}},
      {"checkpoint", {{"every", c.checkpoint.every}, {"keep", c.checkpoint.keep}}},
      {"log", {{"every", c.log.every}, {"peak_tflops", c.log.peak_tflops}}},
      {"sample", {{"every", c.sample.every}, {"tokens", c.sample.tokens}, {"prompt", c.sample.prompt},
                  {"temperature", c.sample.temperature}, {"top_k", c.sample.top_k}, {"top_p", c.sample.top_p}}},
      {"dist", {{"init", c.dist.init}, {"timeout_s", c.dist.timeout_s}, {"zero", c.dist.zero}}},
      {"seed", c.seed},
      {"precision", c.precision},
      {"device", c.device},
      {"attention", c.attention},
      {"recompute", c.recompute},
      {"grad_accum_precision", c.grad_accum_precision},
  };
}

int Config::grad_accum_steps(int world) const {
  const int64_t per_micro = static_cast<int64_t>(batch.micro_batch_size) * model.block_size * world;
  return per_micro > 0 ? static_cast<int>(batch.total_batch_tokens / per_micro) : 0;
}

double Config::sophia_bs() const {
  return optimizer.bs > 0 ? optimizer.bs : static_cast<double>(batch.total_batch_tokens);
}

void Config::validate(int world) const {
  const ModelConfig& m = model;
  auto positive = [](const char* key, int64_t v) {
    if (v < 1) bad(key, "must be >= 1, got " + std::to_string(v));
  };
  positive("model.n_layer", m.n_layer);
  positive("model.n_head", m.n_head);
  positive("model.n_embd", m.n_embd);
  positive("model.block_size", m.block_size);
  if (m.vocab_size < 2 || m.vocab_size > 65536)
    bad("model.vocab_size", "must be in [2, 65536] (tokens are stored as uint16), got " +
                                std::to_string(m.vocab_size));
  if (m.n_embd % m.n_head != 0)
    bad("model.n_embd", "must be divisible by model.n_head (" + std::to_string(m.n_embd) + " % " +
                            std::to_string(m.n_head) + " != 0)");

  const OptimizerConfig& o = optimizer;
  if (o.name != "sophiag" && o.name != "adamw")
    bad("optimizer.name", "must be \"sophiag\" or \"adamw\", got \"" + o.name + "\"");
  if (!(o.lr > 0)) bad("optimizer.lr", "must be > 0");
  if (!(o.min_lr >= 0) || o.min_lr > o.lr) bad("optimizer.min_lr", "must be in [0, optimizer.lr]");
  if (!(o.beta1 >= 0 && o.beta1 < 1)) bad("optimizer.beta1", "must be in [0, 1), got " + std::to_string(o.beta1));
  if (!(o.beta2 >= 0 && o.beta2 < 1)) bad("optimizer.beta2", "must be in [0, 1), got " + std::to_string(o.beta2));
  if (!(o.rho >= 0)) bad("optimizer.rho", "must be >= 0, got " + std::to_string(o.rho));
  if (!(o.weight_decay >= 0)) bad("optimizer.weight_decay", "must be >= 0");
  if (!(o.eps > 0)) bad("optimizer.eps", "must be > 0");
  if (!(o.bs >= 0)) bad("optimizer.bs", "must be >= 0 (0 = total_batch_tokens)");
  if (o.hessian_interval < 1) bad("optimizer.hessian_interval", "must be >= 1, got " + std::to_string(o.hessian_interval));
  if (!(o.hessian_batch_fraction > 0 && o.hessian_batch_fraction <= 1))
    bad("optimizer.hessian_batch_fraction", "must be in (0, 1]");
  if (!(o.grad_clip >= 0)) bad("optimizer.grad_clip", "must be >= 0 (0 disables clipping)");
  if (o.max_consecutive_skips < 1 || o.max_consecutive_skips > 1000000)
    bad("optimizer.max_consecutive_skips",
        "must be in [1, 1000000], got " + std::to_string(o.max_consecutive_skips));

  if (schedule.warmup_iters < 0) bad("schedule.warmup_iters", "must be >= 0");
  if (schedule.lr_decay_iters < schedule.warmup_iters)
    bad("schedule.lr_decay_iters", "must be >= schedule.warmup_iters");
  if (schedule.max_steps < 1) bad("schedule.max_steps", "must be >= 1");

  positive("batch.micro_batch_size", batch.micro_batch_size);
  positive("batch.total_batch_tokens", batch.total_batch_tokens);
  const int64_t per_micro = static_cast<int64_t>(batch.micro_batch_size) * m.block_size * world;
  if (batch.total_batch_tokens % per_micro != 0)
    bad("batch.total_batch_tokens",
        "must be a multiple of batch.micro_batch_size x model.block_size x processes = " +
            std::to_string(per_micro) + ", got " + std::to_string(batch.total_batch_tokens));
  if (o.name == "sophiag") {
    const double hb = std::floor(o.hessian_batch_fraction * batch.micro_batch_size);
    if (hb < 1)
      bad("optimizer.hessian_batch_fraction",
          "times batch.micro_batch_size must give at least one sequence");
  }

  if (data.format != "llmc" && data.format != "nanogpt")
    bad("data.format", "must be \"llmc\" or \"nanogpt\", got \"" + data.format + "\"");
  if (eval.every < 0) bad("eval.every", "must be >= 0 (0 disables)");
  if (eval.batches < 1) bad("eval.batches", "must be >= 1");
  if (checkpoint.every < 0) bad("checkpoint.every", "must be >= 0 (0 = only the final checkpoint)");
  if (checkpoint.keep < 1) bad("checkpoint.keep", "must be >= 1");
  if (log.every < 1) bad("log.every", "must be >= 1");
  if (!(log.peak_tflops >= 0))
    bad("log.peak_tflops", "must be >= 0 (TFLOP/s of the device for MFU; 0 = detect from the GPU's name), got " +
                               std::to_string(log.peak_tflops));
  if (eval.hellaswag_every < 0) bad("eval.hellaswag_every", "must be >= 0 (0 disables)");
  // That the file exists is checked before training (check_data), not here: a finished run's
  // config.json stays loadable (eval, sample) after the file moved.
  if (eval.hellaswag_every > 0 && eval.hellaswag_file.empty())
    bad("eval.hellaswag_file", "is empty but eval.hellaswag_every is " + std::to_string(eval.hellaswag_every) +
                                   ": name the HellaSwag JSONL (docs/eval.md)");
  if (sample.every < 0) bad("sample.every", "must be >= 0 (0 disables), got " + std::to_string(sample.every));
  if (sample.tokens < 1 || sample.tokens > 1000000)
    bad("sample.tokens", "must be in [1, 1000000], got " + std::to_string(sample.tokens));
  if (!(sample.temperature > 0) || !std::isfinite(sample.temperature))
    bad("sample.temperature", "must be a finite number > 0, got " + std::to_string(sample.temperature));
  if (sample.top_k < 0) bad("sample.top_k", "must be >= 0 (0 = no cut), got " + std::to_string(sample.top_k));
  if (!(sample.top_p > 0 && sample.top_p <= 1))
    bad("sample.top_p", "must be in (0, 1] (1 = no cut), got " + std::to_string(sample.top_p));
  if (!(dist.timeout_s >= 0)) bad("dist.timeout_s", "must be >= 0 (0 = wait forever)");
  if (dist.zero != 0 && dist.zero != 1) bad("dist.zero", "must be 0 or 1, got " + std::to_string(dist.zero));
  if (!dist.init.empty() && dist.init.rfind("tcp://", 0) != 0 && dist.init.rfind("file://", 0) != 0)
    bad("dist.init", "must be \"tcp://HOST:PORT\", \"file:///path\" or empty, got \"" + dist.init + "\"");
  if (precision != "fp32" && precision != "bf16")
    bad("precision", "must be \"fp32\" or \"bf16\", got \"" + precision + "\"");
  if (device != "auto" && device != "cpu" && device != "cuda")
    bad("device", "must be \"auto\", \"cpu\" or \"cuda\", got \"" + device + "\"");
  if (grad_accum_precision != "auto" && grad_accum_precision != "fp32" && grad_accum_precision != "bf16")
    bad("grad_accum_precision", "must be \"auto\", \"fp32\" or \"bf16\", got \"" + grad_accum_precision + "\"");
  if (recompute < 0 || recompute > 2)
    bad("recompute", "must be 0 (keep every activation), 1 (recompute the GELU outputs) or 2 "
                     "(also the LayerNorm outputs), got " + std::to_string(recompute));
  if (attention != "auto" && attention != "own" && attention != "cudnn")
    bad("attention", "must be \"auto\", \"own\" or \"cudnn\", got \"" + attention + "\"");
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
