// `sophiagpt export` and `sophiagpt logits` (registered by add_export_commands).
//
//   export --run DIR [--step N] --format hf|llmc --out OUT [--dtype fp32|bf16] [--vocab DIR]
//          [--overwrite]
//       hf: a Hugging Face transformers folder OUT (config.json, model.safetensors, tokenizer
//       files: see src/model/hf_export.h, docs/export.md); llmc: an llm.c model file OUT
//       (version 3 for fp32, 5 for bf16). The folder is written as OUT.tmp<pid> and renamed into
//       place, the file through write_file_atomic, so a failure never leaves half an export
//       under OUT. The folder holds a marker, .sophiagpt-export (JSON: what was exported, how,
//       when); an OUT that exists and is not empty is refused, and --overwrite replaces only a
//       folder holding that marker (never a run directory or a data folder), or for llmc only a
//       regular file outside a run directory (never a link, a device, a pipe or a folder).
//   logits --run DIR [--step N] (--tokens "ID,ID,..." | --text TEXT) --out FILE [--vocab DIR]
//          [--overwrite]
//       The fp32 CPU reference forward of one sequence (length <= block_size); FILE gets the
//       logits [T, V] as raw little-endian float32 (V = the real vocabulary, not the padded one),
//       for checkers outside the program (scripts/dev/check_hf_export.py). FILE is written as the
//       llmc export is: an existing one only with --overwrite, never a link, device, pipe or a
//       file of a run directory.
//
// Without --step the checkpoint is the newest of the run whose model and state files verify
// (header, size, checksum), the rule of --resume and of eval and sample (load_trained,
// cli/model_args.h); newer ones that fail are named in a warning. The model options are those of
// sample and eval, so --config/--model/--set work here too.
#include <algorithm>
#include <charconv>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "cli/commands.h"
#include "cli/model_args.h"
#include "common/error.h"
#include "common/paths.h"
#include "cpu/gpt2_cpu.h"
#include "model/checkpoint.h"
#include "model/hf_export.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"
#include "train/trainer.h"

namespace sgpt {
namespace {
namespace fs = std::filesystem;

struct ExportArgs {
  ModelArgs m;
  std::string format, out, dtype = "fp32", vocab;
  bool overwrite = false;
};

// The marker an export writes into its folder: --overwrite replaces only a folder that holds it
// (an earlier export), so a mistyped --out never removes a run directory or an unrelated folder.
constexpr const char* kExportMarker = ".sophiagpt-export";

// Why `dir` is a folder that sophiagpt writes as a whole and that no export may replace: the name
// of a file only a run directory (or a prepared data folder) holds, or "" when it holds none.
std::string run_dir_evidence(const fs::path& dir) {
  std::error_code ec;
  for (const char* f : {kLockFileName, "log.jsonl", "manifest.json"})
    if (fs::exists(fs::symlink_status(dir / f, ec))) return f;
  static const std::regex ckpt("(model|state)_[0-9]{8}\\.bin(\\.bad)?");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, ckpt)) return name;
  }
  return "";
}

// OUT as an absolute path without a trailing separator; refuses ".", ".." and "/".
fs::path normalized_out(const std::string& out) {
  if (out.empty()) throw UserError("--out must not be empty");
  fs::path p = fs::absolute(fs::path(out)).lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  const std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..")
    throw UserError("--out '" + out + "' must name a new folder or file, not '" + p.string() + "'");
  return p;
}

// A file the command writes (export --format llmc, logits --out): check_output_file's rules (no
// link, device, pipe or folder is ever replaced; a regular file only with --overwrite), and never
// a file of a run directory (its checkpoints, its log).
// `new_folder_ok`: a missing parent folder is fine (export creates it).
void check_out_file(const std::string& given, const fs::path& out, bool overwrite, bool new_folder_ok) {
  std::error_code ec;
  if (new_folder_ok && !fs::is_directory(out.parent_path(), ec)) return;  // nothing there to replace
  const bool exists = fs::exists(fs::symlink_status(out, ec));
  if (exists && fs::is_regular_file(fs::symlink_status(out, ec))) {
    const std::string why = run_dir_evidence(out.parent_path());
    if (!why.empty())
      throw UserError("--out '" + given + "' is a file of a run directory ('" + out.parent_path().string() +
                      "' holds " + why + "): it is never replaced, also not with --overwrite; choose another --out");
  }
  // Named as given in the messages (the same file: `out` is its absolute form).
  check_output_file(!given.empty() && given.back() != '/' ? given : out.string(), overwrite, "--out");
}

// The hf folder: a new or empty folder, or (with --overwrite) an earlier export.
void check_out_folder(const ExportArgs& a, const fs::path& out) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(out, ec);
  if (!fs::exists(st)) return;
  if (fs::is_symlink(st))
    throw UserError("--out '" + a.out + "' is a symbolic link: it is never replaced; name the folder itself");
  if (!fs::is_directory(st))
    throw UserError("--out '" + a.out + "' exists and is not a folder: --format hf writes a folder and replaces "
                    "only an earlier export's folder");
  if (fs::is_empty(out, ec)) return;
  if (!a.overwrite)
    throw UserError("--out '" + a.out + "' exists and is not empty (pass --overwrite to replace an earlier export)");
  const std::string why = run_dir_evidence(out);
  if (!why.empty())
    throw UserError("--out '" + a.out + "' is a run directory or a data folder (it holds " + why +
                    "): --overwrite never replaces one; choose another --out");
  if (!fs::is_regular_file(fs::symlink_status(out / kExportMarker, ec)))
    throw UserError("--out '" + a.out + "' holds no " + kExportMarker +
                    " marker, so it is not a folder sophiagpt export wrote: --overwrite replaces only an earlier "
                    "export; remove it yourself or choose another --out");
}

void check_out(const ExportArgs& a, const fs::path& out) {
  if (a.format == "hf") check_out_folder(a, out);
  else check_out_file(a.out, out, a.overwrite, /*new_folder_ok=*/true);
}

// The marker's content: what was exported (`source`, from load_trained), how and when.
std::string export_marker(const ExportArgs& a, const std::string& source) {
  char when[32] = "";
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  if (::gmtime_r(&t, &tm)) std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  const nlohmann::json j = {{"written_by", "sophiagpt export"}, {"format", a.format}, {"dtype", a.dtype},
                            {"source", source}, {"time", when}};
  return j.dump(2) + "\n";
}

// Writes the folder as <out>.tmp<pid>, then renames it into place (an existing out, which
// check_out allowed, is moved aside first and removed after).
void export_folder(const ExportArgs& a, const fs::path& out, const Config& cfg, const std::vector<float>& params,
                   const std::string& vocab_dir, const std::string& source) {
  const std::string pid = std::to_string(::getpid());
  fs::path tmp = out, old = out;
  tmp += ".tmp" + pid;
  old += ".old" + pid;
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) && ec)
    throw UserError("cannot create '" + tmp.string() + "' (the temporary folder for --out '" + a.out + "'): " +
                    ec.message());
  try {
    write_hf_folder(tmp.string(), cfg.model, params,
                    a.dtype == "bf16" ? ExportDtype::kBf16 : ExportDtype::kFp32, vocab_dir);
    const std::string marker = export_marker(a, source);
    write_file_atomic((tmp / kExportMarker).string(), {{marker.data(), marker.size()}});
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  const bool had = fs::exists(fs::symlink_status(out, ec));
  if (had) {
    fs::rename(out, old, ec);
    if (ec) {
      const std::string why = ec.message();
      fs::remove_all(tmp, ec);
      throw UserError("cannot move the existing --out '" + a.out + "' aside: " + why);
    }
  }
  fs::rename(tmp, out, ec);
  if (ec) {
    const std::string why = ec.message();
    if (had) fs::rename(old, out, ec);
    fs::remove_all(tmp, ec);
    throw UserError("cannot rename '" + tmp.string() + "' to --out '" + a.out + "': " + why);
  }
  if (had) fs::remove_all(old, ec);
}

void run_export(ExportArgs a) {
  if (a.format != "hf" && a.format != "llmc")
    throw UserError("--format '" + a.format + "' is not one of: hf, llmc");
  if (a.dtype != "fp32" && a.dtype != "bf16")
    throw UserError("--dtype '" + a.dtype + "' is not one of: fp32, bf16");
  const fs::path out = normalized_out(a.out);
  check_out(a, out);
  const std::string vocab_dir = a.format == "hf" ? find_vocab_dir(a.vocab) : "";
  std::string source;
  const auto [cfg, params] = load_trained(a.m, &source);
  std::error_code ec;
  fs::create_directories(out.parent_path(), ec);
  check_out(a, out);  // again, just before writing: the checks above ran before the model was read
  if (a.format == "hf") {
    if (cfg.model.vocab_size != kGpt2VocabSize)
      std::fprintf(stderr, "note: the model has %d tokens, the GPT-2 tokenizer written beside it %d\n",
                   cfg.model.vocab_size, kGpt2VocabSize);
    export_folder(a, out, cfg, params, vocab_dir, source);
  } else if (a.dtype == "bf16") {
    write_model_file_bf16(out.string(), cfg.model, params);
  } else {
    write_model_file(out.string(), cfg.model, params);
  }
  std::printf("exported %s to %s (%s, %s)\n", source.c_str(), a.out.c_str(), a.format.c_str(),
              a.dtype.c_str());
}

struct LogitsArgs {
  ModelArgs m;
  std::string tokens, text, out, vocab;
  bool overwrite = false;
};

// "ID,ID,..." (commas and/or whitespace between the ids).
std::vector<int> parse_token_list(const std::string& s) {
  std::vector<int> ids;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == ',' || s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && s[j] != ',' && s[j] != ' ' && s[j] != '\t' && s[j] != '\n' && s[j] != '\r') ++j;
    int v = 0;
    const auto [p, err] = std::from_chars(s.data() + i, s.data() + j, v);
    if (err != std::errc() || p != s.data() + j || v < 0)
      throw UserError("--tokens: '" + s.substr(i, j - i) + "' is not a token id (a non-negative integer)");
    ids.push_back(v);
    i = j;
  }
  return ids;
}

void run_logits(LogitsArgs a) {
  if (a.tokens.empty() == a.text.empty()) throw UserError("give the sequence as --tokens or as --text (one of them)");
  if (a.out.empty()) throw UserError("--out must not be empty");
  const fs::path out = fs::absolute(fs::path(a.out));
  check_out_file(a.out, out, a.overwrite, /*new_folder_ok=*/false);
  std::vector<int> ids;
  if (!a.tokens.empty()) ids = parse_token_list(a.tokens);
  else ids = Tokenizer::load(find_vocab_dir(a.vocab)).encode(a.text, /*allow_special=*/true);
  const char* what = a.tokens.empty() ? "--text" : "--tokens";
  if (ids.empty()) throw UserError(std::string(what) + " holds no token");
  std::string source;
  const auto [cfg, params] = load_trained(a.m, &source);
  const int T = static_cast<int>(ids.size()), V = cfg.model.vocab_size, Vp = cfg.model.padded_vocab_size;
  if (T > cfg.model.block_size)
    throw UserError(std::string(what) + " holds " + std::to_string(T) + " tokens, more than the model's block_size " +
                    std::to_string(cfg.model.block_size));
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= V)
      throw UserError(std::string(what) + ": token " + std::to_string(i) + " is " + std::to_string(ids[i]) +
                      ", outside the model's vocabulary (" + std::to_string(V) + " tokens)");
  cpu::Gpt2<float> model(cfg.model, 1, T);
  model.forward_logits(params.data(), ids.data(), 1);
  std::vector<std::pair<const void*, size_t>> rows;
  for (int t = 0; t < T; ++t) rows.push_back({model.logits() + static_cast<size_t>(t) * Vp, static_cast<size_t>(V) * 4});
  check_out_file(a.out, out, a.overwrite, /*new_folder_ok=*/false);  // again: the forward took a while
  write_file_atomic(out.string(), rows);
  std::printf("logits [%d, %d] of %s (float32) -> %s\n", T, V, source.c_str(), a.out.c_str());
}

}  // namespace

void add_export_commands(CLI::App& app) {
  auto ea = std::make_shared<ExportArgs>();
  CLI::App* e = app.add_subcommand("export", "Export a trained model: Hugging Face folder or llm.c model file");
  add_model_options(e, ea->m);
  e->add_option("-f,--format", ea->format, "hf (transformers folder) | llmc (llm.c model file)")->required();
  e->add_option("-o,--out", ea->out, "Output: a folder for hf, a file for llmc")->required();
  e->add_option("--dtype", ea->dtype, "fp32 | bf16 (round to nearest even)")->capture_default_str();
  e->add_option("--vocab", ea->vocab, "Folder holding encoder.json and vocab.bpe (default: data/cache/gpt2)");
  e->add_flag("--overwrite", ea->overwrite,
              "Replace an earlier export: a folder holding .sophiagpt-export (hf), a regular file outside a run "
              "directory (llmc)");
  e->callback([ea] { run_export(*ea); });

  auto la = std::make_shared<LogitsArgs>();
  CLI::App* l = app.add_subcommand("logits", "Logits of one sequence from the fp32 CPU reference (raw float32 [T, V])");
  add_model_options(l, la->m);
  l->add_option("--tokens", la->tokens, "Token ids, comma-separated");
  l->add_option("--text", la->text, "Text, encoded with the GPT-2 tokenizer");
  l->add_option("-o,--out", la->out, "Output file: T x V little-endian float32")->required();
  l->add_option("--vocab", la->vocab, "Folder holding encoder.json and vocab.bpe (for --text)");
  l->add_flag("--overwrite", la->overwrite,
              "Replace an existing --out (a regular file outside a run directory; never a link, device or pipe)");
  l->callback([la] { run_logits(*la); });
}

}  // namespace sgpt
