// The hostile-input catalogue as a table: one row per bad input of every subcommand (train, eval,
// sample, export, logits, prepare, tokenize, bench, info and the top level), each run as its own
// test (value-parameterized; ctest lists one test per row, named `<subcommand>/Catalogue.Case/<row>`).
//
// A row names the fixture state it needs (Setup), the command line with placeholders for the
// fixture paths, the exit code, the phrases the combined stdout+stderr must contain, and the paths
// that must come out byte-identical and of the same type (a symbolic link stays a link, a FIFO a
// FIFO, /dev/null a character device). For every row the harness also asserts: exit code never 3
// (internal error), no death by a signal, no time-out, no raw library message (std::bad_alloc,
// basic_string, ...); and for a row that must fail, that nothing appeared in or vanished from the
// case's fixture folders (the whole work folder's listing before and after).
//
// Expected values follow the documented behaviour (docs/reliability.md, docs/config.md,
// docs/data.md, docs/export.md, src/common/paths.h for the file-system guards), not what the
// program printed when the row was written: a row whose behaviour is wrong today (an internal
// error, a silently accepted bad value, a replaced file) states the correct behaviour and fails
// until the product is fixed. Exit codes of command lines that do not parse are CLI11's (the
// documented "other" row of the exit-code table): 104 ConversionError, 105 ValidationError,
// 106 RequiredError, 109 ExtrasError, 114 ArgumentMismatch.
//
// Fixtures are made once (a tiny trained run: 2 layers, n_embd 32, vocabulary 512, block 16, four
// steps with checkpoints at steps 2 and 4; token shards with a fixed pattern and damaged ones;
// configs; text inputs) into <build>/test_fixtures/catalogue-<key>, keyed by the binaries, under a
// file lock, so the many processes ctest starts share them; each case copies them into its own work
// folder (<tmp>/sgpt_catalogue_<pid>/<row>/w, the command's working directory) and plants its link,
// FIFO, folders and files there. Rows that target /dev/null run, as root, in a private mount
// namespace with a /dev of their own (a program that replaced /dev/null would otherwise break the
// machine), as user nobody where that namespace cannot be made, and directly when not root.
// SGPT_CATALOGUE_SHOW=1 prints every row's exit code and first output line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/paths.h"
#include "model/checkpoint.h"
#include "model/gpt2.h"
#include "test_files.h"
#include "test_model.h"
#include "test_scratch.h"
#include "tokenizer/sha256.h"

namespace fs = std::filesystem;

// Rows name only the fields they set (designated initializers); the others keep their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace catalogue {

// ---------------------------------------------------------------------------------------------
// The table's types

// What the case's copy of the fixtures looks like before the command runs.
enum class Setup {
  kNone,
  kFlipNewestModel,      // one byte of {RUN}/model_00000004.bin's weights flipped
  kTruncateNewestModel,  // {RUN}/model_00000004.bin 100 bytes short
  kFlipNewestState,      // one byte of {RUN}/state_00000004.bin's slots flipped
  kRemoveNewestState,    // {RUN}/state_00000004.bin missing (an incomplete checkpoint)
  kFlipAllModels,        // model_00000002.bin and model_00000004.bin both damaged
  kNoCheckpoints,        // {RUN} keeps config.json and log.jsonl, no model/state file
  kLockRun,              // this test process holds sgpt::DirLock on {RUN}
  kLockFolder,           // this test process holds sgpt::DirLock on {P}/locked (an empty folder)
};

enum Flags : unsigned {
  kCpuOnlyBuild = 1,  // the expectation holds for a binary built without CUDA (skipped otherwise)
  kNoGpu = 2,         // the expectation holds where no GPU is usable (skipped otherwise)
  kPrivateDev = 4,    // the command targets /dev/null: run it where it cannot replace the real one
  kCudaBuild = 8,     // the expectation holds for a binary built with CUDA (skipped otherwise)
};

struct Row {
  std::string name;                     // the test's name: [A-Za-z0-9_]
  Setup setup = Setup::kNone;
  std::string cmd;                      // sophiagpt's arguments, shell syntax, with placeholders
  int code = 0;                         // expected exit code
  std::vector<std::string> phrases;     // each must appear in stdout+stderr
  std::vector<std::string> same;        // paths byte-identical (and of the same type) afterwards
  std::vector<std::string> may_create;  // paths a failing command may leave behind (documented)
  unsigned flags = 0;
  int timeout_s = 60;
};

void PrintTo(const Row& r, std::ostream* os) { *os << r.name; }

// Placeholders (all absolute paths):
//   {W}     the case's work folder, the command's working directory
//   {DATA}  {W}/data: token shards (train_000.bin, train_001.bin, val_000.bin and damaged ones)
//   {C}     {W}/cfg: configs; {CFG} = {W}/cfg/tiny.json, the valid tiny config (data paths
//           relative to {W})
//   {RUN}   {W}/run: the tiny trained run (model/state at steps 2 and 4, config.json, log.jsonl)
//   {OTHER} {W}/other/model.bin: a valid model file of another shape (3 layers)
//   {TXT}   {W}/text: inputs for prepare and tokenize
//   {PREP}  {W}/prepared: a folder already holding prepared data
//   {P}     {W}/p, planted per case: link -> target.txt, fifo, dir/ (empty), dirfull/notes.txt,
//           existing.bin, empty/, locked/
//   {OUT}   {W}/out: a path that does not exist
//   {VOCAB} the GPT-2 vocabulary folder (data/cache/gpt2 of the source tree)

// ---------------------------------------------------------------------------------------------
// The table

const std::string kTrain = "train --device cpu -q --config {CFG} --out-dir {OUT} ";
const std::string kLock = "is in use by another sophiagpt process";
const std::string kExists = "exists (pass --overwrite to replace it)";
const std::string kSymlink = "is a symbolic link";
const std::string kNotRegular = "is not a regular file";
const std::string kDirNotFile = "is a directory, not a file";
const std::string kMissing = "does not exist";

// A --set of a bad value on `train`: exit 2 naming the key, nothing created.
Row bad_value(const std::string& name, const std::string& set, const std::string& key) {
  return {.name = name, .cmd = kTrain + "--set '" + set + "'", .code = 2, .phrases = {"config key '" + key + "'"},
          .same = {"{C}", "{DATA}"}};
}

std::vector<Row> top_rows() {
  return {
      {.name = "no_subcommand", .cmd = "", .code = 106, .phrases = {"A subcommand is required"}},
      // The message must name what was typed; CLI11 reports an unexpected argument as ExtrasError.
      {.name = "unknown_subcommand_trian", .cmd = "trian", .code = 2, .phrases = {"unknown subcommand 'trian'", "did you mean 'train'"}},
      {.name = "unknown_subcommand_with_options", .cmd = "trian --config {CFG} --out-dir {OUT}", .code = 2,
       .phrases = {"unknown subcommand 'trian'"}, .same = {"{C}"}},
      {.name = "unknown_subcommand_upper_case", .cmd = "TRAIN", .code = 2, .phrases = {"unknown subcommand 'TRAIN'"}},
      {.name = "unknown_option", .cmd = "--frob", .code = 2, .phrases = {"unknown option '--frob'"}},
      {.name = "help", .cmd = "--help", .code = 0, .phrases = {"Usage:", "train", "prepare"}},
      {.name = "help_short", .cmd = "-h", .code = 0, .phrases = {"Usage:"}},
      {.name = "version", .cmd = "--version", .code = 0, .phrases = {"sophiagpt 0.1.0"}},
  };
}

std::vector<Row> train_rows() {
  std::vector<Row> v = {
      // ---- the config file ----
      {.name = "config_missing", .cmd = "train --device cpu --config {C}/nope.json --out-dir {OUT}", .code = 2,
       .phrases = {"{C}/nope.json"}, .same = {"{C}"}},
      {.name = "config_in_missing_folder", .cmd = "train --device cpu --config {W}/nodir/c.json --out-dir {OUT}",
       .code = 2, .phrases = {"{W}/nodir/c.json"}},
      {.name = "config_is_a_directory", .cmd = "train --device cpu --config {C} --out-dir {OUT}", .code = 2,
       .phrases = {kDirNotFile}, .same = {"{C}"}},
      {.name = "config_empty_file", .cmd = "train --device cpu --config {C}/empty.json --out-dir {OUT}", .code = 2,
       .phrases = {"empty.json", "is not valid JSON"}, .same = {"{C}"}},
      {.name = "config_random_bytes", .cmd = "train --device cpu --config {C}/random.json --out-dir {OUT}", .code = 2,
       .phrases = {"random.json", "is not valid JSON"}, .same = {"{C}"}},
      {.name = "config_truncated_json", .cmd = "train --device cpu --config {C}/truncated.json --out-dir {OUT}",
       .code = 2, .phrases = {"truncated.json", "is not valid JSON"}, .same = {"{C}"}},
      {.name = "config_nan_literal", .cmd = "train --device cpu --config {C}/nan.json --out-dir {OUT}", .code = 2,
       .phrases = {"nan.json", "is not valid JSON"}, .same = {"{C}"}},
      {.name = "config_json_array", .cmd = "train --device cpu --config {C}/array.json --out-dir {OUT}", .code = 2,
       .phrases = {"must hold a JSON object"}, .same = {"{C}"}},
      {.name = "config_json_string", .cmd = "train --device cpu --config {C}/string.json --out-dir {OUT}", .code = 2,
       .phrases = {"must hold a JSON object"}, .same = {"{C}"}},
      {.name = "config_unknown_key", .cmd = "train --device cpu --config {C}/unknown_key.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'optimizer.rhoo' is not a known config key"}, .same = {"{C}"}},
      {.name = "config_unknown_section", .cmd = "train --device cpu --config {C}/unknown_section.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'optimiser' is not a known config key"}, .same = {"{C}"}},
      {.name = "config_section_not_object", .cmd = "train --device cpu --config {C}/section_number.json --out-dir {OUT}",
       .code = 2, .phrases = {"'model' must be an object"}, .same = {"{C}"}},
      {.name = "config_string_for_integer", .cmd = "train --device cpu --config {C}/type_string.json --out-dir {OUT}",
       .code = 2, .phrases = {"type_string.json: config key 'model.n_layer' must be an integer"}, .same = {"{C}"}},
      {.name = "config_bool_for_number", .cmd = "train --device cpu --config {C}/type_bool.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'optimizer.lr' must be a number"}, .same = {"{C}"}},
      {.name = "config_number_for_string", .cmd = "train --device cpu --config {C}/type_number.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'optimizer.name' must be a string"}, .same = {"{C}"}},
      {.name = "config_string_for_bool", .cmd = "train --device cpu --config {C}/type_bool_string.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'model.bias' must be true or false"}, .same = {"{C}"}},
      {.name = "config_null_value", .cmd = "train --device cpu --config {C}/null.json --out-dir {OUT}", .code = 2,
       .phrases = {"config key 'seed'"}, .same = {"{C}"}},
      {.name = "config_fraction_for_integer", .cmd = "train --device cpu --config {C}/fraction.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'model.n_layer' must be an integer"}, .same = {"{C}"}},
      {.name = "config_integer_beyond_int", .cmd = "train --device cpu --config {C}/huge_int.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'model.n_layer' is out of range"}, .same = {"{C}"}},
      {.name = "config_duplicate_key", .cmd = "train --device cpu --config {C}/dup.json --out-dir {OUT}", .code = 2,
       .phrases = {"config key 'seed' appears twice"}, .same = {"{C}"}},
      {.name = "config_duplicate_nested_key", .cmd = "train --device cpu --config {C}/dup_nested.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'optimizer.lr' appears twice"}, .same = {"{C}"}},
      {.name = "config_number_1e400", .cmd = "train --device cpu --config {C}/big.json --out-dir {OUT}", .code = 2,
       .phrases = {"big.json", "config key 'optimizer.lr' holds a number out of the range of a double"}, .same = {"{C}"}},
      {.name = "config_number_minus_1e400", .cmd = "train --device cpu --config {C}/minus_big.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'optimizer.lr' holds a number out of the range of a double"}, .same = {"{C}"}},
      {.name = "config_value_out_of_range_in_file", .cmd = "train --device cpu --config {C}/lr_zero.json --out-dir {OUT}",
       .code = 2, .phrases = {"config key 'optimizer.lr' must be > 0"}, .same = {"{C}"}},
      // ---- --set syntax and keys ----
      {.name = "set_without_equals", .cmd = kTrain + "--set foo", .code = 2,
       .phrases = {"--set 'foo': expected key.path=value"}},
      {.name = "set_empty_key", .cmd = kTrain + "--set =1", .code = 2, .phrases = {"--set '=1'"}},
      {.name = "set_a_section", .cmd = kTrain + "--set model=1", .code = 2, .phrases = {"'model' is a section"}},
      {.name = "set_empty_value", .cmd = kTrain + "--set model.n_layer=", .code = 2,
       .phrases = {"--set 'model.n_layer=': config key 'model.n_layer' must be an integer"}},
      {.name = "set_missing_value", .cmd = kTrain + "--set", .code = 114, .phrases = {"--set"}},
      {.name = "set_unknown_key", .cmd = kTrain + "--set optimizer.rhoo=1", .code = 2,
       .phrases = {"--set 'optimizer.rhoo=1'", "is not a known config key"}},
      {.name = "set_unknown_section", .cmd = kTrain + "--set foo.bar=1", .code = 2,
       .phrases = {"'foo.bar' is not a known config key"}},
      {.name = "set_key_below_a_value", .cmd = kTrain + "--set model.n_layer.x=1", .code = 2,
       .phrases = {"'model.n_layer.x' is not a known config key"}},
      {.name = "set_string_for_integer", .cmd = kTrain + "--set 'model.n_layer=\"two\"'", .code = 2,
       .phrases = {"--set 'model.n_layer=\"two\"': config key 'model.n_layer' must be an integer"}},
      {.name = "set_fraction_for_integer", .cmd = kTrain + "--set model.n_layer=2.5", .code = 2,
       .phrases = {"--set 'model.n_layer=2.5'"}},
      {.name = "set_bool_for_number", .cmd = kTrain + "--set optimizer.lr=true", .code = 2,
       .phrases = {"--set 'optimizer.lr=true'", "must be a number"}},
      {.name = "set_number_1e400", .cmd = kTrain + "--set optimizer.lr=1e400", .code = 2,
       .phrases = {"--set 'optimizer.lr=1e400'", "out of the range of a double"}},
      {.name = "set_number_minus_1e400", .cmd = kTrain + "--set optimizer.lr=-1e400", .code = 2,
       .phrases = {"--set 'optimizer.lr=-1e400'", "out of the range of a double"}},
  };
  // ---- every bound of docs/config.md (and the checks the code adds to it) ----
  const std::vector<Row> bounds = {
      bad_value("range_model_n_layer_0", "model.n_layer=0", "model.n_layer"),
      bad_value("range_model_n_head_0", "model.n_head=0", "model.n_head"),
      bad_value("range_model_n_embd_0", "model.n_embd=0", "model.n_embd"),
      bad_value("range_model_n_embd_not_divisible", "model.n_embd=33", "model.n_embd"),
      bad_value("range_model_block_size_0", "model.block_size=0", "model.block_size"),
      bad_value("range_model_vocab_size_1", "model.vocab_size=1", "model.vocab_size"),
      bad_value("range_model_vocab_size_65537", "model.vocab_size=65537", "model.vocab_size"),
      bad_value("range_optimizer_name", "optimizer.name=lamb", "optimizer.name"),
      bad_value("range_optimizer_lr_0", "optimizer.lr=0", "optimizer.lr"),
      bad_value("range_optimizer_lr_negative", "optimizer.lr=-1", "optimizer.lr"),
      bad_value("range_optimizer_min_lr_negative", "optimizer.min_lr=-1e-6", "optimizer.min_lr"),
      bad_value("range_optimizer_min_lr_above_lr", "optimizer.min_lr=1", "optimizer.min_lr"),
      bad_value("range_optimizer_beta1_negative", "optimizer.beta1=-0.1", "optimizer.beta1"),
      bad_value("range_optimizer_beta1_1", "optimizer.beta1=1", "optimizer.beta1"),
      bad_value("range_optimizer_beta2_negative", "optimizer.beta2=-0.1", "optimizer.beta2"),
      bad_value("range_optimizer_beta2_1", "optimizer.beta2=1", "optimizer.beta2"),
      bad_value("range_optimizer_rho_negative", "optimizer.rho=-0.5", "optimizer.rho"),
      bad_value("range_optimizer_weight_decay_negative", "optimizer.weight_decay=-0.1", "optimizer.weight_decay"),
      bad_value("range_optimizer_eps_0", "optimizer.eps=0", "optimizer.eps"),
      bad_value("range_optimizer_bs_negative", "optimizer.bs=-1", "optimizer.bs"),
      bad_value("range_optimizer_hessian_interval_0", "optimizer.hessian_interval=0", "optimizer.hessian_interval"),
      bad_value("range_optimizer_hessian_batch_fraction_0", "optimizer.hessian_batch_fraction=0",
                "optimizer.hessian_batch_fraction"),
      bad_value("range_optimizer_hessian_batch_fraction_above_1", "optimizer.hessian_batch_fraction=1.5",
                "optimizer.hessian_batch_fraction"),
      bad_value("range_optimizer_grad_clip_negative", "optimizer.grad_clip=-1", "optimizer.grad_clip"),
      bad_value("range_optimizer_max_consecutive_skips_0", "optimizer.max_consecutive_skips=0",
                "optimizer.max_consecutive_skips"),
      bad_value("range_optimizer_max_consecutive_skips_above_max", "optimizer.max_consecutive_skips=1000001",
                "optimizer.max_consecutive_skips"),
      bad_value("range_schedule_warmup_iters_negative", "schedule.warmup_iters=-1", "schedule.warmup_iters"),
      bad_value("range_schedule_max_steps_0", "schedule.max_steps=0", "schedule.max_steps"),
      bad_value("range_batch_micro_batch_size_0", "batch.micro_batch_size=0", "batch.micro_batch_size"),
      bad_value("range_batch_total_batch_tokens_0", "batch.total_batch_tokens=0", "batch.total_batch_tokens"),
      bad_value("range_batch_total_batch_tokens_not_a_multiple", "batch.total_batch_tokens=33",
                "batch.total_batch_tokens"),
      bad_value("range_data_format", "data.format=csv", "data.format"),
      bad_value("range_data_order", "data.order=random", "data.order"),
      bad_value("range_eval_every_negative", "eval.every=-1", "eval.every"),
      bad_value("range_eval_batches_0", "eval.batches=0", "eval.batches"),
      bad_value("range_eval_hellaswag_every_negative", "eval.hellaswag_every=-1", "eval.hellaswag_every"),
      bad_value("range_eval_hellaswag_every_without_file", "eval.hellaswag_every=1", "eval.hellaswag_file"),
      bad_value("range_checkpoint_every_negative", "checkpoint.every=-1", "checkpoint.every"),
      bad_value("range_checkpoint_keep_0", "checkpoint.keep=0", "checkpoint.keep"),
      bad_value("range_log_every_0", "log.every=0", "log.every"),
      bad_value("range_log_peak_tflops_negative", "log.peak_tflops=-1", "log.peak_tflops"),
      bad_value("range_sample_every_negative", "sample.every=-1", "sample.every"),
      bad_value("range_sample_tokens_0", "sample.tokens=0", "sample.tokens"),
      bad_value("range_sample_tokens_above_max", "sample.tokens=1000001", "sample.tokens"),
      bad_value("range_sample_temperature_0", "sample.temperature=0", "sample.temperature"),
      bad_value("range_sample_top_k_negative", "sample.top_k=-1", "sample.top_k"),
      bad_value("range_sample_top_p_0", "sample.top_p=0", "sample.top_p"),
      bad_value("range_sample_top_p_above_1", "sample.top_p=1.5", "sample.top_p"),
      bad_value("range_dist_timeout_s_negative", "dist.timeout_s=-1", "dist.timeout_s"),
      bad_value("range_dist_zero_2", "dist.zero=2", "dist.zero"),
      bad_value("range_dist_init_scheme", "dist.init=http://x", "dist.init"),
      bad_value("range_seed_negative", "seed=-1", "seed"),
      bad_value("range_precision", "precision=fp16", "precision"),

      bad_value("range_grad_accum_precision", "grad_accum_precision=fp8", "grad_accum_precision"),
      bad_value("range_attention", "attention=flash", "attention"),
      bad_value("range_attention_cudnn_in_fp32", "attention=cudnn", "attention"),
      bad_value("range_lm_head_precision", "lm_head_precision=fp16", "lm_head_precision"),
      bad_value("range_lm_head_fp8_in_fp32", "lm_head_precision=fp8", "lm_head_precision"),
      bad_value("range_recompute_3", "recompute=3", "recompute"),
      bad_value("range_recompute_negative", "recompute=-1", "recompute"),
  };
  v.insert(v.end(), bounds.begin(), bounds.end());
  // Without --device, which would override the config's key.
  v.push_back({.name = "range_device", .cmd = "train -q --config {CFG} --out-dir {OUT} --set device=tpu", .code = 2,
               .phrases = {"config key 'device'"}, .same = {"{C}", "{DATA}"}});
  v.push_back({.name = "range_schedule_lr_decay_iters_below_warmup",
               .cmd = kTrain + "--set schedule.warmup_iters=10 --set schedule.lr_decay_iters=5", .code = 2,
               .phrases = {"config key 'schedule.lr_decay_iters'"}, .same = {"{C}", "{DATA}"}});
  const std::vector<Row> rest = {
      // A model that cannot be allocated is a bad config value, not an internal error.
      {.name = "model_too_large_for_memory", .cmd = kTrain + "--set model.n_layer=100000000", .code = 2,
       .phrases = {"GiB of host memory", "available"}},
      // ---- data ----
      {.name = "data_train_no_match", .cmd = kTrain + "--set data.train={DATA}/nope_*.bin", .code = 2,
       .phrases = {"{DATA}/nope_*.bin"}, .same = {"{DATA}"}},
      {.name = "data_train_missing_file", .cmd = kTrain + "--set data.train={DATA}/nope.bin", .code = 2,
       .phrases = {"{DATA}/nope.bin"}, .same = {"{DATA}"}},
      {.name = "data_train_empty", .cmd = kTrain + "--set data.train=", .code = 2, .phrases = {"data.train"}},
      {.name = "data_train_is_a_directory", .cmd = kTrain + "--set data.train={DATA}", .code = 2,
       .phrases = {"{DATA}", "is a directory"}, .same = {"{DATA}"}},
      {.name = "data_train_is_a_fifo", .cmd = kTrain + "--set data.train={P}/fifo", .code = 2,
       .phrases = {"{P}/fifo", kNotRegular}, .same = {"{P}/fifo"}, .timeout_s = 5},
      {.name = "data_train_damaged_header", .cmd = kTrain + "--set data.train={DATA}/bad_magic.bin", .code = 2,
       .phrases = {"{DATA}/bad_magic.bin", "bad magic"}, .same = {"{DATA}"}},
      {.name = "data_train_truncated_shard", .cmd = kTrain + "--set data.train={DATA}/truncated.bin", .code = 2,
       .phrases = {"{DATA}/truncated.bin"}, .same = {"{DATA}"}},
      {.name = "data_train_trailing_bytes", .cmd = kTrain + "--set data.train={DATA}/trailing.bin", .code = 2,
       .phrases = {"{DATA}/trailing.bin"}, .same = {"{DATA}"}},
      {.name = "data_train_shorter_than_header", .cmd = kTrain + "--set data.train={DATA}/short_header.bin",
       .code = 2, .phrases = {"shorter than the 1024-byte llm.c header"}, .same = {"{DATA}"}},
      {.name = "data_train_fewer_tokens_than_a_sequence", .cmd = kTrain + "--set data.train={DATA}/few_tokens.bin",
       .code = 2, .phrases = {"no file holds a sequence of T+1 = 17"}, .same = {"{DATA}"}},
      // An llm.c shard has a header a nanoGPT file does not: read as nanogpt, its 1024 header bytes
      // would be trained on as tokens.
      {.name = "data_llmc_shard_read_as_nanogpt",
       .cmd = kTrain + "--set data.train={DATA}/train_000.bin --set data.format=nanogpt", .code = 2,
       .phrases = {"{DATA}/train_000.bin"}, .same = {"{DATA}"}},
      {.name = "data_nanogpt_odd_size", .cmd = kTrain + "--set data.train={DATA}/odd.bin --set data.format=nanogpt",
       .code = 2, .phrases = {"{DATA}/odd.bin"}, .same = {"{DATA}"}},
      // Tokens are checked as they are read (docs/data.md), so the run folder may exist by then.
      {.name = "data_token_id_not_below_vocab", .cmd = kTrain + "--set data.train={DATA}/big_token.bin", .code = 2,
       .phrases = {"{DATA}/big_token.bin", "is not below the vocabulary size 512"}, .same = {"{DATA}"},
       .may_create = {"{OUT}"}},
      {.name = "data_val_no_match", .cmd = kTrain + "--set data.val={DATA}/nope_*.bin --set eval.every=2", .code = 2,
       .phrases = {"{DATA}/nope_*.bin"}, .same = {"{DATA}"}},
      {.name = "data_val_damaged_header", .cmd = kTrain + "--set data.val={DATA}/bad_magic.bin --set eval.every=2",
       .code = 2, .phrases = {"{DATA}/bad_magic.bin", "bad magic"}, .same = {"{DATA}"}},
      // Validation data sharing files with the training data would measure the validation loss on
      // training tokens: refused, naming both keys.
      {.name = "data_val_equal_to_train", .cmd = kTrain + "--set 'data.val=data/train_*.bin' --set eval.every=4",
       .code = 2, .phrases = {"'data.train'", "'data.val'", "share"}, .same = {"{DATA}"}},
      {.name = "data_hellaswag_file_missing",
       .cmd = kTrain + "--set eval.hellaswag_every=1 --set eval.hellaswag_file={W}/nope.jsonl", .code = 2,
       .phrases = {"{W}/nope.jsonl"}},
      // ---- run folders and checkpoints ----
      {.name = "resume_empty_folder", .cmd = "train --device cpu -q --config {CFG} --out-dir {P}/empty --resume",
       .code = 2, .phrases = {"holds no run to resume"}, .same = {"{P}/empty"}},
      {.name = "resume_missing_folder", .cmd = kTrain + "--resume", .code = 2, .phrases = {"holds no run to resume"}},
      {.name = "plain_train_into_a_run", .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN}", .code = 2,
       .phrases = {"already holds a run", "--resume"}, .same = {"{RUN}"}},
      {.name = "resume_newest_model_damaged", .setup = Setup::kFlipNewestModel,
       .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN} --resume", .code = 0,
       .phrases = {"fails its checksum", "resuming from the newest checkpoint that verifies, step 2"},
       .same = {"{RUN}/model_00000002.bin", "{RUN}/state_00000002.bin"}},
      {.name = "resume_newest_model_truncated", .setup = Setup::kTruncateNewestModel,
       .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN} --resume", .code = 0,
       .phrases = {"truncated?", "resuming from the newest checkpoint that verifies, step 2"},
       .same = {"{RUN}/model_00000002.bin", "{RUN}/state_00000002.bin"}},
      {.name = "resume_newest_state_damaged", .setup = Setup::kFlipNewestState,
       .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN} --resume", .code = 0,
       .phrases = {"state_00000004.bin", "resuming from the newest checkpoint that verifies, step 2"},
       .same = {"{RUN}/model_00000002.bin", "{RUN}/state_00000002.bin"}},
      {.name = "resume_newest_state_missing", .setup = Setup::kRemoveNewestState,
       .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN} --resume", .code = 0,
       .phrases = {"resuming from the newest checkpoint that verifies, step 2"},
       .same = {"{RUN}/model_00000002.bin", "{RUN}/state_00000002.bin"}},
      {.name = "resume_every_checkpoint_damaged", .setup = Setup::kFlipAllModels,
       .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN} --resume", .code = 0,
       .phrases = {"holds no complete checkpoint that verifies", "restarts from step 0"}},
      {.name = "resume_run_without_checkpoint", .setup = Setup::kNoCheckpoints,
       .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN} --resume", .code = 0,
       .phrases = {"holds no complete checkpoint", "restarts from step 0"}},
      {.name = "init_from_a_directory", .cmd = kTrain + "--init-from {RUN}", .code = 2,
       .phrases = {"{RUN}", kDirNotFile}, .same = {"{RUN}"}},
      {.name = "init_from_missing_file", .cmd = kTrain + "--init-from {W}/nope.bin", .code = 2,
       .phrases = {"{W}/nope.bin"}},
      {.name = "init_from_damaged_model", .setup = Setup::kFlipNewestModel,
       .cmd = kTrain + "--init-from {RUN}/model_00000004.bin", .code = 2,
       .phrases = {"{RUN}/model_00000004.bin", "fails its checksum"}, .same = {"{RUN}"}},
      {.name = "init_from_truncated_model", .setup = Setup::kTruncateNewestModel,
       .cmd = kTrain + "--init-from {RUN}/model_00000004.bin", .code = 2,
       .phrases = {"{RUN}/model_00000004.bin", "truncated?"}, .same = {"{RUN}"}},
      {.name = "init_from_model_of_another_shape", .cmd = kTrain + "--init-from {OTHER}", .code = 2,
       .phrases = {"{OTHER}", "n_layer"}, .same = {"{OTHER}"}},
      {.name = "init_from_random_bytes", .cmd = kTrain + "--init-from {TXT}/random.txt", .code = 2,
       .phrases = {"{TXT}/random.txt"}, .same = {"{TXT}"}},
      // --init-from starts a run, --resume continues one: both at once is a contradiction.
      {.name = "init_from_with_resume",
       .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN} --resume --init-from {RUN}/model_00000002.bin",
       .code = 2, .phrases = {"--init-from", "--resume"}, .same = {"{RUN}"}},
      {.name = "out_dir_is_a_file", .cmd = "train --device cpu -q --config {CFG} --out-dir {P}/existing.bin", .code = 2,
       .phrases = {"exists and is not a directory"}, .same = {"{P}/existing.bin"}},
      {.name = "out_dir_below_a_file", .cmd = "train --device cpu -q --config {CFG} --out-dir {P}/existing.bin/run",
       .code = 2, .phrases = {"{P}/existing.bin/run"}, .same = {"{P}/existing.bin"}},
      {.name = "out_dir_is_a_symlink_to_a_file", .cmd = "train --device cpu -q --config {CFG} --out-dir {P}/link",
       .code = 2, .phrases = {"{P}/link"}, .same = {"{P}/link", "{P}/target.txt"}},
      {.name = "out_dir_empty_string", .cmd = "train --device cpu -q --config {CFG} --out-dir ''", .code = 2,
       .phrases = {"--out-dir must not be empty"}},
      {.name = "out_dir_dev_null", .cmd = "train --device cpu -q --config {CFG} --out-dir /dev/null", .code = 2,
       .phrases = {"exists and is not a directory"}, .same = {"/dev/null"}, .flags = kPrivateDev},
      {.name = "out_dir_locked", .setup = Setup::kLockFolder,
       .cmd = "train --device cpu -q --config {CFG} --out-dir {P}/locked", .code = 2, .phrases = {kLock},
       .same = {"{P}/locked"}},
      {.name = "resume_into_a_locked_run", .setup = Setup::kLockRun,
       .cmd = "train --device cpu -q --config {CFG} --out-dir {RUN} --resume", .code = 2, .phrases = {kLock},
       .same = {"{RUN}"}},
      // ---- command-line values ----
      {.name = "device_unknown", .cmd = "train --device tpu --config {CFG} --out-dir {OUT}", .code = 105,
       .phrases = {"--device"}},
      {.name = "device_cuda_without_gpu", .cmd = "train --device cuda -q --config {CFG} --out-dir {OUT}", .code = 2,
       .phrases = {"no GPU is usable"}, .flags = kNoGpu},
      {.name = "precision_bf16_on_the_cpu", .cmd = kTrain + "--set precision=bf16", .code = 2,
       .phrases = {"config key 'precision'"}},
      {.name = "config_option_without_value", .cmd = "train --device cpu --out-dir {OUT} --config", .code = 114,
       .phrases = {"--config"}},
      {.name = "out_dir_option_without_value", .cmd = "train --device cpu --config {CFG} --out-dir", .code = 114,
       .phrases = {"--out-dir"}},
      {.name = "unknown_option", .cmd = kTrain + "--frob", .code = 109, .phrases = {"--frob"}},
      {.name = "extra_argument", .cmd = kTrain + "extra", .code = 109, .phrases = {"extra"}},
      {.name = "help", .cmd = "train --help", .code = 0, .phrases = {"Usage:", "--resume"}},
  };
  v.insert(v.end(), rest.begin(), rest.end());
  return v;
}

std::vector<Row> eval_rows() {
  const std::string e = "eval --device cpu ";
  const std::string r = "eval --device cpu --run {RUN} ";
  return {
      {.name = "no_model", .cmd = "eval --device cpu", .code = 2,
       .phrases = {"name a run directory (--run) or both --config and --model"}},
      {.name = "config_without_model", .cmd = e + "--config {CFG}", .code = 2,
       .phrases = {"name a run directory (--run) or both --config and --model"}},
      {.name = "run_missing", .cmd = e + "--run {W}/nope", .code = 2, .phrases = {"{W}/nope"}},
      {.name = "run_is_a_file", .cmd = e + "--run {CFG}", .code = 2, .phrases = {"{CFG}", "is not a directory"}},
      {.name = "run_without_checkpoint", .setup = Setup::kNoCheckpoints, .cmd = r, .code = 2,
       .phrases = {"holds no checkpoint"}, .same = {"{RUN}"}},
      {.name = "config_is_a_directory", .cmd = e + "--config {C} --model {RUN}/model_00000004.bin", .code = 2,
       .phrases = {kDirNotFile}, .same = {"{RUN}", "{C}"}},
      {.name = "model_is_a_directory", .cmd = e + "--config {RUN}/config.json --model {RUN}", .code = 2,
       .phrases = {kDirNotFile}, .same = {"{RUN}"}},
      {.name = "model_missing", .cmd = e + "--config {RUN}/config.json --model {W}/nope.bin", .code = 2,
       .phrases = {"{W}/nope.bin"}, .same = {"{RUN}"}},
      {.name = "model_of_another_shape", .cmd = e + "--config {RUN}/config.json --model {OTHER}", .code = 2,
       .phrases = {"{OTHER}", "n_layer"}, .same = {"{RUN}", "{OTHER}"}},
      {.name = "model_random_bytes", .cmd = e + "--config {RUN}/config.json --model {TXT}/random.txt", .code = 2,
       .phrases = {"{TXT}/random.txt"}, .same = {"{RUN}", "{TXT}"}},
      // Without --step the checkpoint is the newest that verifies (as export and logits choose it).
      {.name = "newest_model_damaged_falls_back", .setup = Setup::kFlipNewestModel, .cmd = r, .code = 0,
       .phrases = {"warning", "{RUN}/model_00000004.bin", "val loss"}, .same = {"{RUN}"}},
      {.name = "newest_model_truncated_falls_back", .setup = Setup::kTruncateNewestModel, .cmd = r, .code = 0,
       .phrases = {"warning", "{RUN}/model_00000004.bin", "val loss"}, .same = {"{RUN}"}},
      {.name = "every_model_damaged", .setup = Setup::kFlipAllModels, .cmd = r, .code = 2,
       .phrases = {"fails its checksum"}, .same = {"{RUN}"}},
      {.name = "step_missing", .cmd = r + "--step 3", .code = 2, .phrases = {"step 3"}, .same = {"{RUN}"}},
      {.name = "step_damaged", .setup = Setup::kFlipNewestModel, .cmd = r + "--step 4", .code = 2,
       .phrases = {"{RUN}/model_00000004.bin", "fails its checksum"}, .same = {"{RUN}"}},
      {.name = "step_negative", .cmd = r + "--step -1", .code = 2, .phrases = {"--step"}, .same = {"{RUN}"}},
      {.name = "step_not_a_number", .cmd = r + "--step x", .code = 104, .phrases = {"--step"}},
      {.name = "batches_zero", .cmd = r + "--batches 0", .code = 2, .phrases = {"--batches"}, .same = {"{RUN}"}},
      {.name = "batches_negative", .cmd = r + "--batches -3", .code = 2, .phrases = {"--batches"}, .same = {"{RUN}"}},
      {.name = "batches_not_a_number", .cmd = r + "--batches many", .code = 104, .phrases = {"--batches"}},
      {.name = "set_out_of_range", .cmd = r + "--set optimizer.lr=-1", .code = 2,
       .phrases = {"config key 'optimizer.lr'"}, .same = {"{RUN}"}},
      {.name = "set_unknown_key", .cmd = r + "--set optimizer.rhoo=1", .code = 2,
       .phrases = {"'optimizer.rhoo' is not a known config key"}, .same = {"{RUN}"}},
      {.name = "val_empty", .cmd = r + "--set data.val=", .code = 2, .phrases = {"config key 'data.val' is empty"},
       .same = {"{RUN}"}},
      {.name = "val_no_match", .cmd = r + "--set data.val={DATA}/nope_*.bin", .code = 2,
       .phrases = {"{DATA}/nope_*.bin"}, .same = {"{RUN}"}},
      {.name = "val_damaged_header", .cmd = r + "--set data.val={DATA}/bad_magic.bin", .code = 2,
       .phrases = {"{DATA}/bad_magic.bin", "bad magic"}, .same = {"{RUN}", "{DATA}"}},
      {.name = "val_token_id_not_below_vocab", .cmd = r + "--set data.val={DATA}/big_token.bin", .code = 2,
       .phrases = {"{DATA}/big_token.bin", "is not below the vocabulary size 512"}, .same = {"{RUN}", "{DATA}"}},
      {.name = "val_is_a_fifo", .cmd = r + "--set data.val={P}/fifo", .code = 2, .phrases = {"{P}/fifo", kNotRegular},
       .same = {"{RUN}", "{P}/fifo"}, .timeout_s = 5},
      {.name = "hellaswag_missing", .cmd = r + "--hellaswag {W}/nope.jsonl", .code = 2,
       .phrases = {"{W}/nope.jsonl"}, .same = {"{RUN}"}},
      {.name = "hellaswag_is_a_directory", .cmd = r + "--hellaswag {TXT}", .code = 2, .phrases = {"{TXT}", kDirNotFile},
       .same = {"{RUN}", "{TXT}"}},
      {.name = "hellaswag_not_json", .cmd = r + "--hellaswag {TXT}/notjson.jsonl", .code = 2,
       .phrases = {"{TXT}/notjson.jsonl"}, .same = {"{RUN}", "{TXT}"}},
      {.name = "limit_negative", .cmd = r + "--hellaswag {TXT}/notjson.jsonl --limit -1", .code = 2,
       .phrases = {"--limit"}, .same = {"{RUN}"}},
      {.name = "device_unknown", .cmd = "eval --device tpu --run {RUN}", .code = 105, .phrases = {"--device"}},
      {.name = "unknown_option", .cmd = r + "--frob", .code = 109, .phrases = {"--frob"}},
      {.name = "help", .cmd = "eval --help", .code = 0, .phrases = {"Usage:", "--batches"}},
  };
}

std::vector<Row> sample_rows() {
  const std::string r = "sample --device cpu --run {RUN} ";
  return {
      {.name = "no_model", .cmd = "sample --device cpu", .code = 2,
       .phrases = {"name a run directory (--run) or both --config and --model"}},
      {.name = "run_missing", .cmd = "sample --device cpu --run {W}/nope", .code = 2, .phrases = {"{W}/nope"}},
      {.name = "model_is_a_directory", .cmd = "sample --device cpu --config {RUN}/config.json --model {RUN}", .code = 2,
       .phrases = {kDirNotFile}, .same = {"{RUN}"}},
      {.name = "tokens_negative", .cmd = r + "-n -1", .code = 2, .phrases = {"--tokens"}, .same = {"{RUN}"}},
      // sample.tokens, the same count in the config, is in [1, 1000000] (docs/config.md).
      {.name = "tokens_zero", .cmd = r + "-n 0", .code = 2, .phrases = {"--tokens"}, .same = {"{RUN}"}},
      {.name = "tokens_not_a_number", .cmd = r + "-n many", .code = 104, .phrases = {"--tokens"}},
      {.name = "tokens_beyond_int", .cmd = r + "-n 99999999999", .code = 104, .phrases = {"--tokens"}},
      {.name = "temperature_negative", .cmd = r + "-n 2 --temperature -1", .code = 2, .phrases = {"--temperature"}},
      {.name = "temperature_zero", .cmd = r + "-n 2 --temperature 0", .code = 2, .phrases = {"--temperature"}},
      {.name = "temperature_nan", .cmd = r + "-n 2 --temperature nan", .code = 2, .phrases = {"--temperature"}},
      {.name = "temperature_inf", .cmd = r + "-n 2 --temperature inf", .code = 2, .phrases = {"--temperature"}},
      {.name = "top_p_two", .cmd = r + "-n 2 --top-p 2", .code = 2, .phrases = {"--top-p"}},
      {.name = "top_p_zero", .cmd = r + "-n 2 --top-p 0", .code = 2, .phrases = {"--top-p"}},
      {.name = "top_k_negative", .cmd = r + "-n 2 --top-k -1", .code = 2, .phrases = {"--top-k"}},
      // --seed is unsigned: -1 must not become 2^64-1.
      {.name = "seed_negative", .cmd = r + "-n 2 --seed -1", .code = 2, .phrases = {"--seed"}},
      {.name = "seed_not_a_number", .cmd = r + "-n 2 --seed x", .code = 2, .phrases = {"--seed 'x' is not a seed"}},
      {.name = "prompt_outside_the_vocabulary", .cmd = r + "-n 2 --prompt Hello", .code = 2,
       .phrases = {"outside the model's vocabulary"}},
      {.name = "prompt_not_utf8", .cmd = r + "-n 2 --prompt \"$(printf '\\377')\"", .code = 2,
       .phrases = {"not valid UTF-8"}},
      {.name = "vocab_missing", .cmd = r + "-n 2 --vocab {W}/novocab", .code = 2, .phrases = {"{W}/novocab"}},
      {.name = "newest_model_damaged_falls_back", .setup = Setup::kFlipNewestModel, .cmd = r + "-n 2", .code = 0,
       .phrases = {"warning", "{RUN}/model_00000004.bin", "2 tokens in"}, .same = {"{RUN}"}},
      {.name = "step_missing", .cmd = r + "-n 2 --step 3", .code = 2, .phrases = {"step 3"}, .same = {"{RUN}"}},
      {.name = "step_negative", .cmd = r + "-n 2 --step -1", .code = 2, .phrases = {"--step"}, .same = {"{RUN}"}},
      {.name = "step_damaged", .setup = Setup::kFlipNewestModel, .cmd = r + "-n 2 --step 4", .code = 2,
       .phrases = {"{RUN}/model_00000004.bin", "fails its checksum"}, .same = {"{RUN}"}},
      {.name = "device_cuda_without_gpu", .cmd = "sample --device cuda --run {RUN} -n 2", .code = 2,
       .phrases = {"no GPU is usable"}, .flags = kNoGpu},
      // The batch decoder's flags (docs/sampling.md, "Batches").
      {.name = "batch_zero", .cmd = r + "-n 2 --batch 0", .code = 2, .phrases = {"--batch must be >= 1"}},
      {.name = "batch_negative", .cmd = r + "-n 2 --batch -3", .code = 2, .phrases = {"--batch must be >= 1"}},
      {.name = "batch_not_a_number", .cmd = r + "-n 2 --batch many", .code = 104, .phrases = {"--batch"}},
      {.name = "precision_unknown", .cmd = r + "-n 2 --precision fp16", .code = 2,
       .phrases = {"--precision must be fp32 or bf16", "fp16"}},
      {.name = "precision_bf16_on_the_cpu", .cmd = r + "-n 2 --precision bf16", .code = 2,
       .phrases = {"--precision bf16 needs the GPU"}},
      {.name = "prompt_file_missing", .cmd = r + "-n 2 --prompt-file {W}/nope.txt", .code = 2,
       .phrases = {"--prompt-file", "{W}/nope.txt"}},
      {.name = "prompt_file_is_a_directory", .cmd = r + "-n 2 --prompt-file {TXT}", .code = 2,
       .phrases = {"--prompt-file", kDirNotFile}, .same = {"{TXT}"}},
      {.name = "prompt_file_empty", .cmd = r + "-n 2 --prompt-file {TXT}/empty.txt", .code = 2,
       .phrases = {"--prompt-file", "{TXT}/empty.txt", "holds no prompt"}},
      {.name = "prompt_file_and_prompt", .cmd = r + "-n 2 --prompt-file {TXT}/prompts.txt --prompt '!'", .code = 2,
       .phrases = {"--prompt and --prompt-file exclude each other"}},
      {.name = "prompt_file_outside_the_vocabulary", .cmd = r + "-n 2 --prompt-file {TXT}/bigprompt.txt", .code = 2,
       .phrases = {"--prompt-file prompt", "outside the model's vocabulary"}},
      {.name = "batch_of_one_prompt", .cmd = r + "-n 2 --batch 3 --prompt '!'", .code = 0,
       .phrases = {"--- sample 0 (seed 1) ---", "--- sample 2 (seed 3) ---", "6 tokens in", "batches of 3"},
       .same = {"{RUN}"}},
      {.name = "prompt_file_in_batches", .cmd = r + "-n 2 --batch 1 --seed 5 --prompt-file {TXT}/prompts.txt", .code = 0,
       .phrases = {"--- sample 0 (seed 5) ---", "--- sample 1 (seed 6) ---", "4 tokens in", "2 prompt(s) in batches of 1"},
       .same = {"{RUN}", "{TXT}"}},
      {.name = "unknown_option", .cmd = r + "--frob", .code = 109, .phrases = {"--frob"}},
      {.name = "help", .cmd = "sample --help", .code = 0, .phrases = {"Usage:", "--top-p", "--batch", "--prompt-file", "--precision"}},
  };
}

std::vector<Row> export_rows() {
  const std::string r = "export --run {RUN} ";
  return {
      {.name = "format_missing", .cmd = r + "--out {OUT}", .code = 106, .phrases = {"--format"}},
      {.name = "out_missing", .cmd = r + "--format hf", .code = 106, .phrases = {"--out"}},
      {.name = "format_unknown", .cmd = r + "--format onnx --out {OUT}", .code = 2, .phrases = {"--format 'onnx'"}},
      {.name = "dtype_unknown", .cmd = r + "--format hf --dtype fp8 --out {OUT}", .code = 2,
       .phrases = {"--dtype 'fp8'"}},
      // A run folder holds a config.json, which made it look like an earlier export.
      {.name = "out_is_the_run_itself_overwrite", .cmd = r + "--format hf --out {RUN} --overwrite", .code = 2,
       .phrases = {"{RUN}"}, .same = {"{RUN}"}},
      {.name = "out_is_the_run_itself", .cmd = r + "--format hf --out {RUN}", .code = 2, .phrases = {"{RUN}"},
       .same = {"{RUN}"}},
      {.name = "out_non_export_folder_overwrite", .cmd = r + "--format hf --out {P}/dirfull --overwrite", .code = 2,
       .phrases = {"holds no .sophiagpt-export marker"}, .same = {"{P}/dirfull", "{RUN}"}},
      {.name = "out_non_empty_folder", .cmd = r + "--format hf --out {P}/dirfull", .code = 2,
       .phrases = {"exists and is not empty", "pass --overwrite"}, .same = {"{P}/dirfull", "{RUN}"}},
      {.name = "hf_out_is_a_file", .cmd = r + "--format hf --out {P}/existing.bin", .code = 2,
       .phrases = {"--out '{P}/existing.bin'"}, .same = {"{P}/existing.bin", "{RUN}"}},
      {.name = "hf_out_root", .cmd = r + "--format hf --out /", .code = 2, .phrases = {"must name a new folder or file"}},
      {.name = "hf_out_dot", .cmd = r + "--format hf --out .", .code = 2, .phrases = {"--out '.'"}, .same = {"{RUN}"}},
      {.name = "llmc_out_existing_checkpoint", .cmd = r + "--format llmc --out {RUN}/model_00000002.bin", .code = 2,
       .phrases = {"--out '{RUN}/model_00000002.bin' is a file of a run directory", "never replaced"}, .same = {"{RUN}"}},
      // --overwrite replaces an earlier export, never a checkpoint of a run.
      {.name = "llmc_out_existing_checkpoint_overwrite",
       .cmd = r + "--format llmc --out {RUN}/model_00000002.bin --overwrite", .code = 2,
       .phrases = {"{RUN}/model_00000002.bin"}, .same = {"{RUN}"}},
      {.name = "llmc_out_folder", .cmd = r + "--format llmc --out {P}/dir", .code = 2, .phrases = {"--out '{P}/dir'"},
       .same = {"{P}/dir", "{RUN}"}},
      {.name = "llmc_out_symlink", .cmd = r + "--format llmc --out {P}/link", .code = 2, .phrases = {kSymlink},
       .same = {"{P}/link", "{P}/target.txt", "{RUN}"}},
      {.name = "llmc_out_symlink_overwrite", .cmd = r + "--format llmc --out {P}/link --overwrite", .code = 2,
       .phrases = {kSymlink}, .same = {"{P}/link", "{P}/target.txt", "{RUN}"}},
      {.name = "llmc_out_fifo", .cmd = r + "--format llmc --out {P}/fifo", .code = 2, .phrases = {kNotRegular},
       .same = {"{P}/fifo", "{RUN}"}},
      {.name = "llmc_out_dev_null", .cmd = r + "--format llmc --out /dev/null --overwrite", .code = 2,
       .phrases = {kNotRegular}, .same = {"/dev/null", "{RUN}"}, .flags = kPrivateDev},
      {.name = "newest_model_damaged_falls_back", .setup = Setup::kFlipNewestModel,
       .cmd = r + "--format llmc --out {OUT}", .code = 0,
       .phrases = {"warning: using the newest checkpoint that verifies, step 2", "{RUN}/model_00000004.bin", "exported step 2"},
       .same = {"{RUN}"}},
      {.name = "every_model_damaged", .setup = Setup::kFlipAllModels, .cmd = r + "--format llmc --out {OUT}",
       .code = 2, .phrases = {"has no checkpoint that verifies"}, .same = {"{RUN}"}},
      {.name = "step_missing", .cmd = r + "--step 3 --format llmc --out {OUT}", .code = 2, .phrases = {"step 3"},
       .same = {"{RUN}"}},
      {.name = "step_negative", .cmd = r + "--step -1 --format llmc --out {OUT}", .code = 2, .phrases = {"--step"},
       .same = {"{RUN}"}},
      {.name = "step_damaged", .setup = Setup::kFlipNewestModel, .cmd = r + "--step 4 --format llmc --out {OUT}",
       .code = 2, .phrases = {"{RUN}/model_00000004.bin", "fails its checksum"}, .same = {"{RUN}"}},
      {.name = "run_missing", .cmd = "export --run {W}/nope --format llmc --out {OUT}", .code = 2,
       .phrases = {"{W}/nope"}},
      {.name = "vocab_missing", .cmd = r + "--format hf --out {OUT} --vocab {W}/novocab", .code = 2,
       .phrases = {"{W}/novocab"}, .same = {"{RUN}"}},
      {.name = "unknown_option", .cmd = r + "--format hf --out {OUT} --frob", .code = 109, .phrases = {"--frob"}},
      {.name = "help", .cmd = "export --help", .code = 0, .phrases = {"Usage:", "--overwrite"}},
  };
}

std::vector<Row> logits_rows() {
  const std::string r = "logits --run {RUN} ";
  return {
      {.name = "out_missing", .cmd = r + "--tokens 1,2", .code = 106, .phrases = {"--out"}},
      {.name = "out_existing_file", .cmd = r + "--tokens 1,2,3 --out {P}/existing.bin", .code = 2,
       .phrases = {"{P}/existing.bin", kExists}, .same = {"{P}/existing.bin", "{RUN}"}},
      {.name = "out_existing_file_overwrite", .cmd = r + "--tokens 1,2,3 --out {P}/existing.bin --overwrite",
       .code = 0, .phrases = {"logits [3, 512]"}, .same = {"{RUN}"}},
      {.name = "out_symlink", .cmd = r + "--tokens 1,2,3 --out {P}/link", .code = 2, .phrases = {"{P}/link", kSymlink},
       .same = {"{P}/link", "{P}/target.txt", "{RUN}"}},
      {.name = "out_symlink_overwrite", .cmd = r + "--tokens 1,2,3 --out {P}/link --overwrite", .code = 2,
       .phrases = {"{P}/link", kSymlink}, .same = {"{P}/link", "{P}/target.txt", "{RUN}"}},
      {.name = "out_fifo", .cmd = r + "--tokens 1,2,3 --out {P}/fifo", .code = 2, .phrases = {"{P}/fifo", kNotRegular},
       .same = {"{P}/fifo", "{RUN}"}},
      {.name = "out_directory", .cmd = r + "--tokens 1,2,3 --out {P}/dir", .code = 2, .phrases = {"{P}/dir", kDirNotFile},
       .same = {"{P}/dir", "{RUN}"}},
      {.name = "out_dev_null", .cmd = r + "--tokens 1,2,3 --out /dev/null", .code = 2,
       .phrases = {"/dev/null", kNotRegular}, .same = {"/dev/null", "{RUN}"}, .flags = kPrivateDev},
      {.name = "out_in_a_missing_folder", .cmd = r + "--tokens 1,2,3 --out {W}/nodir/l.bin", .code = 2,
       .phrases = {"{W}/nodir", kMissing}, .same = {"{RUN}"}},
      {.name = "out_empty_string", .cmd = r + "--tokens 1,2,3 --out ''", .code = 2,
       .phrases = {"--out must not be empty"}},
      {.name = "tokens_and_text", .cmd = r + "--tokens 1,2 --text hi --out {OUT}", .code = 2,
       .phrases = {"give the sequence as --tokens or as --text"}},
      {.name = "neither_tokens_nor_text", .cmd = r + "--out {OUT}", .code = 2,
       .phrases = {"give the sequence as --tokens or as --text"}},
      {.name = "tokens_not_numbers", .cmd = r + "--tokens a,b --out {OUT}", .code = 2,
       .phrases = {"--tokens: 'a' is not a token id"}},
      {.name = "tokens_negative", .cmd = r + "--tokens=-1 --out {OUT}", .code = 2,
       .phrases = {"--tokens: '-1' is not a token id"}},
      {.name = "tokens_beyond_int", .cmd = r + "--tokens 99999999999 --out {OUT}", .code = 2,
       .phrases = {"'99999999999' is not a token id"}},
      {.name = "tokens_outside_the_vocabulary", .cmd = r + "--tokens 1,512 --out {OUT}", .code = 2,
       .phrases = {"token 1 is 512, outside the model's vocabulary (512 tokens)"}},
      {.name = "tokens_longer_than_block_size", .cmd = r + "--tokens 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1 --out {OUT}",
       .code = 2, .phrases = {"more than the model's block_size 16"}},
      {.name = "tokens_only_commas", .cmd = r + "--tokens ,,, --out {OUT}", .code = 2,
       .phrases = {"--tokens holds no token"}},
      {.name = "text_vocab_missing", .cmd = r + "--text hi --vocab {W}/novocab --out {OUT}", .code = 2,
       .phrases = {"{W}/novocab"}},
      {.name = "newest_model_damaged_falls_back", .setup = Setup::kFlipNewestModel,
       .cmd = r + "--tokens 1,2,3 --out {OUT}", .code = 0,
       .phrases = {"warning: using the newest checkpoint that verifies, step 2", "{RUN}/model_00000004.bin", "of step 2"},
       .same = {"{RUN}"}},
      {.name = "every_model_damaged", .setup = Setup::kFlipAllModels, .cmd = r + "--tokens 1,2,3 --out {OUT}",
       .code = 2, .phrases = {"has no checkpoint that verifies"}, .same = {"{RUN}"}},
      {.name = "step_missing", .cmd = r + "--step 3 --tokens 1,2,3 --out {OUT}", .code = 2, .phrases = {"step 3"},
       .same = {"{RUN}"}},
      {.name = "step_negative", .cmd = r + "--step -1 --tokens 1,2,3 --out {OUT}", .code = 2, .phrases = {"--step"},
       .same = {"{RUN}"}},
      {.name = "step_damaged", .setup = Setup::kFlipNewestModel, .cmd = r + "--step 4 --tokens 1,2,3 --out {OUT}",
       .code = 2, .phrases = {"fails its checksum"}, .same = {"{RUN}"}},
      {.name = "model_is_a_directory", .cmd = "logits --config {RUN}/config.json --model {RUN} --tokens 1 --out {OUT}",
       .code = 2, .phrases = {kDirNotFile}, .same = {"{RUN}"}},
      {.name = "run_missing", .cmd = "logits --run {W}/nope --tokens 1 --out {OUT}", .code = 2,
       .phrases = {"{W}/nope"}},
      {.name = "unknown_option", .cmd = r + "--tokens 1 --out {OUT} --frob", .code = 109, .phrases = {"--frob"}},
      {.name = "help", .cmd = "logits --help", .code = 0, .phrases = {"Usage:", "--tokens"}},
  };
}

std::vector<Row> prepare_rows() {
  const std::string p = "prepare --output-dir {OUT} ";
  return {
      {.name = "input_missing_option", .cmd = "prepare --output-dir {OUT}", .code = 106, .phrases = {"--input"}},
      {.name = "output_dir_missing_option", .cmd = "prepare --input {TXT}/docs.jsonl", .code = 106,
       .phrases = {"--output-dir"}},
      {.name = "input_missing", .cmd = p + "--input {TXT}/nope.txt", .code = 2, .phrases = {"{TXT}/nope.txt"}},
      {.name = "input_hidden_files_only", .cmd = p + "--input {TXT}/hidden", .code = 2,
       .phrases = {"{TXT}/hidden", "holds no documents"}, .same = {"{TXT}"}},
      {.name = "input_unsupported_files_only", .cmd = p + "--input {TXT}/unsupported", .code = 2,
       .phrases = {"{TXT}/unsupported", "holds no documents", "skipped"}, .same = {"{TXT}"}},
      {.name = "input_unknown_kind", .cmd = p + "--input {TXT}/table.csv", .code = 2,
       .phrases = {"{TXT}/table.csv", "unknown input type"}, .same = {"{TXT}"}},
      // Input that is not text (random bytes named .txt) is refused unless --allow-binary.
      {.name = "input_random_bytes_txt_one_document", .cmd = p + "--input {TXT}/random.txt", .code = 2,
       .phrases = {"{TXT}/random.txt", "does not look like text", "--allow-binary"}, .same = {"{TXT}"}},
      // Asked for, ill-formed UTF-8 is replaced by U+FFFD and counted (docs/data.md).
      {.name = "input_random_bytes_txt", .cmd = p + "--input {TXT}/random.txt --val-fraction 0 --allow-binary",
       .code = 0, .phrases = {"ill-formed UTF-8 sequence(s) replaced by U+FFFD"}, .same = {"{TXT}"}},
      {.name = "input_empty_txt", .cmd = p + "--input {TXT}/empty.txt", .code = 2,
       .phrases = {"{TXT}/empty.txt", "holds no documents"}, .same = {"{TXT}"}},
      {.name = "input_empty_jsonl", .cmd = p + "--input {TXT}/empty.jsonl", .code = 2,
       .phrases = {"{TXT}/empty.jsonl", "holds no documents"}, .same = {"{TXT}"}},
      {.name = "jsonl_missing_text_field", .cmd = p + "--input {TXT}/nofield.jsonl", .code = 2,
       .phrases = {"{TXT}/nofield.jsonl:1", "no string field 'text'"}, .same = {"{TXT}"}},
      {.name = "jsonl_text_not_a_string", .cmd = p + "--input {TXT}/textnum.jsonl", .code = 2,
       .phrases = {"{TXT}/textnum.jsonl:1", "no string field 'text'"}, .same = {"{TXT}"}},
      {.name = "jsonl_line_not_json", .cmd = p + "--input {TXT}/notjson.jsonl", .code = 2,
       .phrases = {"{TXT}/notjson.jsonl:1", "not a valid JSON line"}, .same = {"{TXT}"}},
      {.name = "xz_random_bytes", .cmd = p + "--input {TXT}/bad.xz", .code = 2, .phrases = {"{TXT}/bad.xz", "xz"},
       .same = {"{TXT}"}},
      {.name = "xz_truncated", .cmd = p + "--input {TXT}/truncated.jsonl.xz", .code = 2,
       .phrases = {"{TXT}/truncated.jsonl.xz"}, .same = {"{TXT}"}},
      {.name = "val_fraction_one", .cmd = p + "--input {TXT}/docs.jsonl --val-fraction 1", .code = 2,
       .phrases = {"--val-fraction"}},
      {.name = "val_fraction_negative", .cmd = p + "--input {TXT}/docs.jsonl --val-fraction -0.1", .code = 2,
       .phrases = {"--val-fraction"}},
      {.name = "val_fraction_nan", .cmd = p + "--input {TXT}/docs.jsonl --val-fraction nan", .code = 2,
       .phrases = {"--val-fraction"}},
      {.name = "shard_tokens_zero", .cmd = p + "--input {TXT}/docs.jsonl --shard-tokens 0", .code = 2,
       .phrases = {"--shard-tokens"}},
      {.name = "shard_tokens_negative", .cmd = p + "--input {TXT}/docs.jsonl --shard-tokens -1", .code = 2,
       .phrases = {"--shard-tokens"}},
      {.name = "shard_tokens_beyond_llmc", .cmd = p + "--input {TXT}/docs.jsonl --shard-tokens 2147483648", .code = 2,
       .phrases = {"--shard-tokens"}},
      {.name = "threads_negative", .cmd = p + "--input {TXT}/docs.jsonl --threads -1", .code = 2,
       .phrases = {"--threads"}},
      // --seed is unsigned: -1 must not become 2^64-1.
      {.name = "seed_negative", .cmd = p + "--input {TXT}/docs.jsonl --seed -1", .code = 2, .phrases = {"--seed '-1' is not a seed"}},
      {.name = "text_field_empty", .cmd = p + "--input {TXT}/docs.jsonl --text-field ''", .code = 2,
       .phrases = {"--text-field"}},
      {.name = "format_unknown", .cmd = p + "--input {TXT}/docs.jsonl --format csv", .code = 105,
       .phrases = {"--format"}},
      {.name = "output_dir_is_a_file", .cmd = "prepare --input {TXT}/docs.jsonl --output-dir {P}/existing.bin",
       .code = 2, .phrases = {"{P}/existing.bin", "exists and is not a directory"}, .same = {"{P}/existing.bin"}},
      {.name = "output_dir_dev_null", .cmd = "prepare --input {TXT}/docs.jsonl --output-dir /dev/null", .code = 2,
       .phrases = {"/dev/null"}, .same = {"/dev/null"}, .flags = kPrivateDev},
      {.name = "output_dir_holds_prepared_data", .cmd = "prepare --input {TXT}/docs.jsonl --output-dir {PREP}",
       .code = 2, .phrases = {"already holds prepared data", "--overwrite"}, .same = {"{PREP}", "{TXT}"}},
      {.name = "output_dir_locked", .setup = Setup::kLockFolder,
       .cmd = "prepare --input {TXT}/docs.jsonl --output-dir {P}/locked", .code = 2, .phrases = {kLock},
       .same = {"{P}/locked"}},
      {.name = "vocab_missing", .cmd = p + "--input {TXT}/docs.jsonl --vocab {W}/novocab", .code = 2,
       .phrases = {"{W}/novocab"}},
      {.name = "unknown_option", .cmd = p + "--input {TXT}/docs.jsonl --frob", .code = 109, .phrases = {"--frob"}},
      {.name = "help", .cmd = "prepare --help", .code = 0, .phrases = {"Usage:", "--val-fraction"}},
  };
}

std::vector<Row> tokenize_rows() {
  return {
      {.name = "file_is_a_directory", .cmd = "tokenize --file {TXT}", .code = 2, .phrases = {"{TXT}", kDirNotFile},
       .same = {"{TXT}"}},
      {.name = "file_missing", .cmd = "tokenize --file {TXT}/nope.txt", .code = 2, .phrases = {"{TXT}/nope.txt"}},
      {.name = "file_option_without_value", .cmd = "tokenize --file", .code = 114, .phrases = {"--file"}},
      {.name = "file_random_bytes", .cmd = "tokenize --file {TXT}/random.txt", .code = 0,
       .phrases = {"warning: input is not valid UTF-8"}, .same = {"{TXT}"}},
      {.name = "decode_id_beyond_vocab", .cmd = "tokenize --decode 15496 50257", .code = 2,
       .phrases = {"token id 50257 at position 1 is outside the GPT-2 vocabulary"}},
      {.name = "decode_negative_id", .cmd = "tokenize --decode -- -1", .code = 2,
       .phrases = {"-1", "outside the GPT-2 vocabulary"}},
      {.name = "decode_id_beyond_int", .cmd = "tokenize --decode 99999999999", .code = 2,
       .phrases = {"'99999999999' is not a token id"}},
      {.name = "decode_not_a_number", .cmd = "tokenize --decode abc", .code = 2, .phrases = {"'abc' is not a token id"}},
      {.name = "decode_fraction", .cmd = "tokenize --decode 1.5", .code = 2, .phrases = {"is not a token id"}},
      {.name = "decode_file_random_bytes", .cmd = "tokenize --decode --file {TXT}/random.txt", .code = 2,
       .phrases = {"{TXT}/random.txt", "is not a token id"}, .same = {"{TXT}"}},
      {.name = "decode_file_id_beyond_vocab", .cmd = "tokenize --decode --file {TXT}/ids.txt", .code = 2,
       .phrases = {"token id 70000 at position 2 is outside the GPT-2 vocabulary"}, .same = {"{TXT}"}},
      {.name = "vocab_missing", .cmd = "tokenize hello --vocab {W}/novocab", .code = 2,
       .phrases = {"{W}/novocab", "scripts/fetch_assets.sh"}},
      {.name = "vocab_is_a_file", .cmd = "tokenize hello --vocab {CFG}", .code = 2, .phrases = {"{CFG}"}},
      {.name = "unknown_option", .cmd = "tokenize --frob", .code = 109, .phrases = {"--frob"}},
      {.name = "help", .cmd = "tokenize --help", .code = 0, .phrases = {"Usage:", "--decode"}},
  };
}

std::vector<Row> bench_rows() {
  return {
      {.name = "no_subcommand", .cmd = "bench", .code = 106, .phrases = {"A subcommand is required"},
       .flags = kCudaBuild},
      {.name = "no_subcommand_on_a_cpu_build", .cmd = "bench", .code = 2, .phrases = {"bench needs a CUDA build"},
       .flags = kCpuOnlyBuild},
      {.name = "unknown_subcommand", .cmd = "bench frob", .code = 2, .phrases = {"unknown subcommand 'frob'"}},
      {.name = "optimizer_on_a_cpu_build", .cmd = "bench optimizer", .code = 2, .phrases = {"bench needs a CUDA build"},
       .flags = kCpuOnlyBuild},
      {.name = "train_on_a_cpu_build", .cmd = "bench train", .code = 2, .phrases = {"bench needs a CUDA build"},
       .flags = kCpuOnlyBuild},
      {.name = "train_batch_zero_on_a_cpu_build", .cmd = "bench train --batch 0", .code = 2,
       .phrases = {"bench needs a CUDA build"}, .flags = kCpuOnlyBuild},
      {.name = "optimizer_reps_not_a_number", .cmd = "bench optimizer --reps many", .code = 104, .phrases = {"--reps"}},
      {.name = "train_grad_accum_unknown", .cmd = "bench train --grad-accum fp8", .code = 105,
       .phrases = {"--grad-accum"}},
      {.name = "optimizer_unknown_option", .cmd = "bench optimizer --frob", .code = 109, .phrases = {"--frob"}},
      {.name = "help", .cmd = "bench --help", .code = 0, .phrases = {"optimizer", "train"}},
      {.name = "train_help", .cmd = "bench train --help", .code = 0, .phrases = {"Usage:", "--memory-budget-gib"}},
  };
}

std::vector<Row> info_rows() {
  return {
      {.name = "plain", .cmd = "info", .code = 0, .phrases = {"cuda build: no", "gpu: not usable"},
       .flags = kCpuOnlyBuild},
      // The documented answer is the exit code alone: 1 when no GPU is usable, nothing printed.
      {.name = "gpu_usable_without_gpu", .cmd = "info --gpu-usable", .code = 1, .phrases = {""}, .flags = kNoGpu},
      {.name = "flag_with_a_value", .cmd = "info --gpu-usable=maybe", .code = 104, .phrases = {"--gpu-usable"}},
      {.name = "unknown_option", .cmd = "info --frob", .code = 109, .phrases = {"--frob"}},
      {.name = "extra_argument", .cmd = "info extra", .code = 109, .phrases = {"extra"}},
      {.name = "help", .cmd = "info --help", .code = 0, .phrases = {"Usage:", "--gpu-usable"}},
  };
}

// ---------------------------------------------------------------------------------------------
// Files

bool contains(const std::string& s, const std::string& n) { return s.find(n) != std::string::npos; }

void write_bytes(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

using sgpt_test::flip_byte;

std::string llmc_shard(const std::vector<uint16_t>& tokens, int32_t magic = 20240520, int64_t claimed = -1) {
  int32_t h[256] = {};
  h[0] = magic;
  h[1] = 1;
  h[2] = static_cast<int32_t>(claimed >= 0 ? claimed : static_cast<int64_t>(tokens.size()));
  std::string s(reinterpret_cast<const char*>(h), sizeof h);
  s.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
  return s;
}

using sgpt_test::xz_compress;

const char* kLockName = sgpt::kLockFileName;

// What a path is, for "unchanged" checks: the type (not following a symbolic link), and for a file
// its size and SHA-256, for a link its target, for a device its numbers, for a folder every entry
// (the lock file of sgpt::DirLock left out: it is designed to stay, empty and harmless).
std::string describe(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return "absent";
  if (S_ISLNK(st.st_mode)) return "symlink -> " + fs::read_symlink(p).string();
  if (S_ISREG(st.st_mode)) return "file " + std::to_string(st.st_size) + " " + sgpt::sha256_hex(read_bytes(p));
  if (S_ISFIFO(st.st_mode)) return "fifo";
  if (S_ISSOCK(st.st_mode)) return "socket";
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
    return std::string(S_ISCHR(st.st_mode) ? "char device " : "block device ") + std::to_string(major(st.st_rdev)) +
           ":" + std::to_string(minor(st.st_rdev));
  if (!S_ISDIR(st.st_mode)) return "other";
  std::map<std::string, std::string> entries;
  for (const auto& e : fs::directory_iterator(p))
    if (e.path().filename() != kLockName) entries[e.path().filename().string()] = describe(e.path());
  std::string s = "dir {";
  for (const auto& [name, what] : entries) s += "\n  " + name + ": " + what;
  return s + "\n}";
}

// Every path under `root` with its type (names only: contents are the `same` list's business).
// The lock file of sgpt::DirLock is left out, as in describe().
std::set<std::string> listing(const fs::path& root) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::none, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->path().filename() == kLockName) continue;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    const char* type = S_ISLNK(st.st_mode) ? "link" : S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file"
                                                                                                       : "special";
    out.insert(fs::relative(it->path(), root).string() + " (" + type + ")");
  }
  return out;
}

std::string expand(std::string s, const std::map<std::string, std::string>& vars) {
  for (const auto& [key, value] : vars) {
    for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + value.size()))
      s.replace(at, key.size(), value);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Running the executable

struct Result {
  int code = -1;       // exit status, when it exited
  int signal = 0;      // the signal that ended it, if one did
  bool timed_out = false;
  std::string out;     // stdout and stderr together
  double seconds = 0;
};

// Runs argv (argv[0] a path) with working directory `cwd`, stdin from /dev/null and stdout+stderr
// into `out_file`, in its own process group; killed (the whole group) after `timeout_s`.
Result run_argv(const std::vector<std::string>& argv, const fs::path& cwd, const fs::path& out_file, int timeout_s) {
  Result r;
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) {
    r.out = "fork failed";
    return r;
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || ::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  int st = 0;
  const auto deadline = t0 + std::chrono::seconds(timeout_s);
  for (;;) {
    const pid_t w = ::waitpid(pid, &st, WNOHANG);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.timed_out) {
    if (WIFEXITED(st)) r.code = WEXITSTATUS(st);
    if (WIFSIGNALED(st)) r.signal = WTERMSIG(st);
  }
  r.out = read_bytes(out_file);
  return r;
}

std::string vocab_dir() { return std::string(SGPT_SOURCE_DIR) + "/data/cache/gpt2"; }

// The environment every command gets: one OpenMP thread (the machine is shared), the vocabulary,
// no test fault hook.
std::string env_prefix() {
  return "env -u SGPT_TEST_FAULT OMP_NUM_THREADS=1 SGPT_VOCAB_DIR=" + vocab_dir() + " ";
}

Result run_sgpt(const std::string& args, const fs::path& cwd, const fs::path& out_file, int timeout_s) {
  return run_argv({"/bin/sh", "-c", "exec " + env_prefix() + SGPT_EXE + " " + args}, cwd, out_file, timeout_s);
}

// ---------------------------------------------------------------------------------------------
// The fixtures, made once per build of the binaries

struct Master {
  fs::path dir;
  bool cuda_build = false;
  bool gpu_usable = false;
};

std::string file_key(const char* path) {
  struct stat st {};
  if (::stat(path, &st) != 0) return "none";
  return std::to_string(st.st_size) + "." + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

void build_master(const fs::path& m) {
  // Token shards: a fixed pattern below the vocabulary of 512, and damaged ones.
  std::vector<uint16_t> a(4096), b(4096), val(2048);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint16_t>((i * 7 + i / 13) % 512);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint16_t>((i * 5 + 3) % 512);
  for (size_t i = 0; i < val.size(); ++i) val[i] = static_cast<uint16_t>((i * 3 + 1) % 512);
  write_bytes(m / "data/train_000.bin", llmc_shard(a));
  write_bytes(m / "data/train_001.bin", llmc_shard(b));
  write_bytes(m / "data/val_000.bin", llmc_shard(val));
  write_bytes(m / "data/bad_magic.bin", llmc_shard(a, 20240521));
  write_bytes(m / "data/truncated.bin", llmc_shard(a, 20240520, 8192));  // the header claims twice the tokens
  write_bytes(m / "data/trailing.bin", llmc_shard(a) + "xyz!");
  write_bytes(m / "data/short_header.bin", llmc_shard(a).substr(0, 100));
  write_bytes(m / "data/few_tokens.bin", llmc_shard(std::vector<uint16_t>(10, 7)));
  write_bytes(m / "data/big_token.bin", llmc_shard(std::vector<uint16_t>(2048, 600)));  // every id >= 512
  write_bytes(m / "data/odd.bin", std::string(4097, '\x01'));

  // Configs.
  write_bytes(m / "cfg/tiny.json", R"({
  "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "vocab_size": 512},
  "batch": {"micro_batch_size": 2, "total_batch_tokens": 32},
  "schedule": {"warmup_iters": 1, "lr_decay_iters": 4, "max_steps": 4},
  "optimizer": {"hessian_interval": 2},
  "eval": {"every": 0, "batches": 2},
  "checkpoint": {"every": 2, "keep": 2},
  "log": {"every": 1},
  "data": {"train": "data/train_*.bin", "val": "data/val_000.bin"}
}
)");
  const std::vector<std::pair<std::string, std::string>> cfgs = {
      {"empty.json", ""},
      {"truncated.json", R"({"model": {)"},
      {"nan.json", R"({"optimizer": {"lr": NaN}})"},
      {"array.json", "[1, 2]"},
      {"string.json", R"("tiny")"},
      {"unknown_key.json", R"({"optimizer": {"rhoo": 0.1}})"},
      {"unknown_section.json", R"({"optimiser": {"lr": 0.1}})"},
      {"section_number.json", R"({"model": 3})"},
      {"type_string.json", R"({"model": {"n_layer": "two"}})"},
      {"type_bool.json", R"({"optimizer": {"lr": true}})"},
      {"type_number.json", R"({"optimizer": {"name": 5}})"},
      {"type_bool_string.json", R"({"model": {"bias": "yes"}})"},
      {"null.json", R"({"seed": null})"},
      {"fraction.json", R"({"model": {"n_layer": 2.5}})"},
      {"huge_int.json", R"({"model": {"n_layer": 99999999999}})"},
      {"dup.json", R"({"seed": 1, "model": {"n_layer": 2}, "seed": 2})"},
      {"dup_nested.json", R"({"optimizer": {"lr": 1e-3, "beta1": 0.9, "lr": 2e-3}})"},
      {"big.json", R"({"optimizer": {"lr": 1e400}})"},
      {"minus_big.json", R"({"optimizer": {"lr": -1e400}})"},
      {"lr_zero.json", R"({"optimizer": {"lr": 0}})"},
  };
  for (const auto& [name, text] : cfgs) write_bytes(m / "cfg" / name, text);
  write_bytes(m / "cfg/random.json", random_bytes(300, 11));

  // A model file of another shape (3 layers), valid in itself.
  const sgpt::ModelConfig other = sgpt_test::model_config(3, 2, 32, 16, 512, 512);
  fs::create_directories(m / "other");
  sgpt::write_model_file((m / "other/model.bin").string(), other,
                         std::vector<float>(sgpt::ParamLayout::make(other).total, 0.01f));

  // Text inputs.
  write_bytes(m / "text/docs.jsonl",
              "{\"text\": \"Mr. Speaker, the state of the union is strong.\"}\n"
              "{\"text\": \"We hold these truths to be self-evident.\"}\n"
              "{\"text\": \"Four score and seven years ago.\"}\n");
  write_bytes(m / "text/random.txt", random_bytes(3000, 7));
  write_bytes(m / "text/empty.txt", "");
  write_bytes(m / "text/prompts.txt", "!\n\n#\r\n");  // two prompts (tokens 0 and 2) for sample --prompt-file
  write_bytes(m / "text/bigprompt.txt", "!\nHello\n");  // "Hello" is outside the tiny model's vocabulary
  write_bytes(m / "text/empty.jsonl", "");
  write_bytes(m / "text/nofield.jsonl", "{\"body\": \"x\"}\n{\"body\": \"y\"}\n");
  write_bytes(m / "text/textnum.jsonl", "{\"text\": 5}\n");
  write_bytes(m / "text/notjson.jsonl", "{not json\n");
  write_bytes(m / "text/bad.xz", random_bytes(500, 3));
  const std::string xz = xz_compress(read_bytes(m / "text/docs.jsonl") + std::string(20000, ' '));
  write_bytes(m / "text/truncated.jsonl.xz", xz.substr(0, xz.size() / 2));
  write_bytes(m / "text/table.csv", "a,b\n1,2\n");
  write_bytes(m / "text/hidden/.a.txt", "a hidden document\n");
  write_bytes(m / "text/hidden/.b.txt", "another hidden document\n");
  write_bytes(m / "text/unsupported/a.csv", "a,b\n");
  write_bytes(m / "text/unsupported/b.dat", "data\n");
  write_bytes(m / "text/ids.txt", "15496 995 70000\n");

  // A folder already holding prepared data.
  write_bytes(m / "prepared/manifest.json", "{}\n");
  write_bytes(m / "prepared/train_000000.bin", llmc_shard(val));

  // The tiny trained run (relative data paths: every case's copy reads its own shards).
  const Result t = run_sgpt("train --device cpu -q --config cfg/tiny.json --out-dir run", m, m / "train.txt", 300);
  if (t.code != 0 || !fs::exists(m / "run/model_00000004.bin") || !fs::exists(m / "run/model_00000002.bin"))
    throw std::runtime_error("training the fixture run failed (exit " + std::to_string(t.code) + "): " + t.out);
  const Result info = run_sgpt("info", m, m / "info.txt", 60);
  if (info.code != 0) throw std::runtime_error("sophiagpt info failed: " + info.out);
}

// Built under <build>/test_fixtures by the first process that needs it (a lock serializes the
// processes ctest runs side by side), reused while neither binary changes.
const Master& master() {
  static const Master m = [] {
    const fs::path base = fs::path(SGPT_EXE).parent_path() / "test_fixtures";
    fs::create_directories(base);
    const std::string key = sgpt::sha256_hex(file_key(SGPT_EXE) + "|" + file_key("/proc/self/exe")).substr(0, 16);
    const fs::path dir = base / ("catalogue-" + key);
    struct Fd {
      int fd;
      ~Fd() { if (fd >= 0) ::close(fd); }  // drops the lock, also when building throws
    } lock{::open((base / ".catalogue.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)};
    if (lock.fd < 0 || ::flock(lock.fd, LOCK_EX) != 0) throw std::runtime_error("cannot lock " + base.string());
    if (!fs::exists(dir / "READY")) {
      for (const auto& e : fs::directory_iterator(base))  // fixtures of earlier builds
        if (e.path().filename().string().rfind("catalogue-", 0) == 0 && e.path() != dir) fs::remove_all(e.path());
      const fs::path tmp = base / ("catalogue-" + key + ".tmp" + std::to_string(::getpid()));
      fs::remove_all(tmp);
      fs::create_directories(tmp);
      build_master(tmp);
      write_bytes(tmp / "READY", "");
      fs::rename(tmp, dir);
    }
    Master r;
    r.dir = dir;
    const std::string info = read_bytes(dir / "info.txt");
    r.cuda_build = contains(info, "cuda build: yes");
    r.gpu_usable = contains(info, "gpu: usable");
    return r;
  }();
  return m;
}

// How a /dev/null row is run: in a private mount namespace with a /dev of our own (root with
// CAP_SYS_ADMIN), else as nobody (who cannot replace /dev/null), or directly when not root.
enum class DevGuard { kNamespace, kNobody, kNotRoot, kNone };

DevGuard dev_guard(const fs::path& scratch) {
  static const DevGuard g = [&] {
    if (::geteuid() != 0) return DevGuard::kNotRoot;
    const Result ns = run_argv({"/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                                "mount -t tmpfs -o mode=755 sgpt-catalogue-dev /dev && mknod -m 666 /dev/null c 1 3"},
                               scratch, scratch / "unshare_probe.txt", 30);
    if (ns.code == 0) return DevGuard::kNamespace;
    const Result nb = run_argv({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/true"},
                               scratch, scratch / "setpriv_probe.txt", 30);
    return nb.code == 0 ? DevGuard::kNobody : DevGuard::kNone;
  }();
  return g;
}

const char* kDevNullMarker = "catalogue: /dev/null is no longer a character device";

// ---------------------------------------------------------------------------------------------
// The test

class Catalogue : public ::testing::TestWithParam<Row> {};

TEST_P(Catalogue, Case) {
  const Row& row = GetParam();
  const Master& m = master();
  if ((row.flags & kCpuOnlyBuild) && m.cuda_build) GTEST_SKIP() << "the expectation is a CPU-only build's";
  if ((row.flags & kCudaBuild) && !m.cuda_build) GTEST_SKIP() << "the expectation is a CUDA build's";
  if ((row.flags & kNoGpu) && m.gpu_usable) GTEST_SKIP() << "the expectation is a machine's without a usable GPU";

  // The case's own copy of the fixtures, and its planted files.
  const fs::path root = sgpt_test::scratch_dir("catalogue", row.name);
  const fs::path w = root / "w";
  fs::create_directories(w);
  for (const char* sub : {"data", "cfg", "run", "other", "text", "prepared"})
    fs::copy(m.dir / sub, w / sub, fs::copy_options::recursive);
  const fs::path p = w / "p";
  fs::create_directories(p / "dir");
  fs::create_directories(p / "empty");
  fs::create_directories(p / "locked");
  write_bytes(p / "dirfull/notes.txt", "my notes\n");
  write_bytes(p / "existing.bin", "a file that was here first\n");
  write_bytes(p / "target.txt", "the link's target\n");
  fs::create_symlink("target.txt", p / "link");
  ASSERT_EQ(::mkfifo((p / "fifo").c_str(), 0644), 0) << std::strerror(errno);

  const std::map<std::string, std::string> vars = {
      {"{W}", w.string()},           {"{DATA}", (w / "data").string()},   {"{CFG}", (w / "cfg/tiny.json").string()},
      {"{C}", (w / "cfg").string()}, {"{RUN}", (w / "run").string()},     {"{OTHER}", (w / "other/model.bin").string()},
      {"{TXT}", (w / "text").string()}, {"{PREP}", (w / "prepared").string()}, {"{P}", p.string()},
      {"{OUT}", (w / "out").string()},  {"{VOCAB}", vocab_dir()},
  };
  const fs::path run = w / "run";
  sgpt::DirLock lock;
  switch (row.setup) {
    case Setup::kNone: break;
    case Setup::kFlipNewestModel: flip_byte(run / "model_00000004.bin", 1024 + 101); break;
    case Setup::kTruncateNewestModel:
      fs::resize_file(run / "model_00000004.bin", fs::file_size(run / "model_00000004.bin") - 100);
      break;
    case Setup::kFlipNewestState:
      flip_byte(run / "state_00000004.bin", static_cast<std::streamoff>(fs::file_size(run / "state_00000004.bin")) - 4);
      break;
    case Setup::kRemoveNewestState: fs::remove(run / "state_00000004.bin"); break;
    case Setup::kFlipAllModels:
      flip_byte(run / "model_00000002.bin", 1024 + 101);
      flip_byte(run / "model_00000004.bin", 1024 + 101);
      break;
    case Setup::kNoCheckpoints:
      for (const char* f : {"model_00000002.bin", "state_00000002.bin", "model_00000004.bin", "state_00000004.bin"})
        fs::remove(run / f);
      break;
    case Setup::kLockRun: lock = sgpt::DirLock(run.string(), "catalogue test"); break;
    case Setup::kLockFolder: lock = sgpt::DirLock((p / "locked").string(), "catalogue test"); break;
  }

  const std::string cmd = expand(row.cmd, vars);
  std::vector<std::string> phrases, same, may_create;
  for (const auto& s : row.phrases) phrases.push_back(expand(s, vars));
  for (const auto& s : row.same) same.push_back(expand(s, vars));
  for (const auto& s : row.may_create) may_create.push_back(expand(s, vars));
  std::map<std::string, std::string> before;
  for (const auto& s : same) before[s] = describe(s);
  const std::set<std::string> listed_before = listing(w);

  Result r;
  bool dev_marker = false;
  if (row.flags & kPrivateDev) {
    const std::string sgpt_cmd = env_prefix() + SGPT_EXE + " " + cmd;
    switch (dev_guard(root)) {
      case DevGuard::kNamespace:
        r = run_argv({"/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                      "mount -t tmpfs -o mode=755 sgpt-catalogue-dev /dev && mknod -m 666 /dev/null c 1 3 && "
                      "mknod -m 666 /dev/zero c 1 5 && mknod -m 666 /dev/urandom c 1 9 || exit 97; " +
                          sgpt_cmd + "; rc=$?; [ -c /dev/null ] || echo '" + kDevNullMarker + "'; exit $rc"},
                     w, root / "output.txt", row.timeout_s);
        ASSERT_NE(r.code, 97) << "could not set up the private /dev: " << r.out;
        break;
      case DevGuard::kNobody:
        fs::permissions(root, fs::perms::others_read | fs::perms::others_exec, fs::perm_options::add);
        r = run_argv({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                      "exec " + sgpt_cmd},
                     w, root / "output.txt", row.timeout_s);
        break;
      case DevGuard::kNotRoot: r = run_sgpt(cmd, w, root / "output.txt", row.timeout_s); break;
      case DevGuard::kNone: GTEST_SKIP() << "as root without a mount namespace or setpriv, /dev/null is not safe";
    }
    dev_marker = contains(r.out, kDevNullMarker);
  } else {
    r = run_sgpt(cmd, w, root / "output.txt", row.timeout_s);
  }
  lock = sgpt::DirLock();

  const std::string first_line = r.out.substr(0, r.out.find('\n'));
  if (std::getenv("SGPT_CATALOGUE_SHOW"))  // every row's outcome, for reading the catalogue's answers
    std::printf("%s: exit %d%s, %.2f s: %s\n", row.name.c_str(), r.code, r.timed_out ? " (timed out)" : "", r.seconds,
                first_line.c_str());
  SCOPED_TRACE("sophiagpt " + cmd + "\n--- output (exit " + std::to_string(r.code) + ", " +
               std::to_string(r.seconds).substr(0, 5) + " s) ---\n" + r.out.substr(0, 3000));
  // For every row.
  ASSERT_FALSE(r.timed_out) << "no answer within " << row.timeout_s << " s";
  EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal;
  EXPECT_NE(r.code, 3) << "internal error: " << first_line;
  for (const char* raw : {"internal error", "terminate called", "bad_alloc", "basic_string", "basic_filebuf",
                          "std::length_error", "std::out_of_range", "vector::"})
    EXPECT_FALSE(contains(r.out, raw)) << "a raw library message (" << raw << ")";
  EXPECT_FALSE(dev_marker) << "/dev/null was replaced";
  struct stat dn {};
  EXPECT_TRUE(::stat("/dev/null", &dn) == 0 && S_ISCHR(dn.st_mode)) << "the machine's /dev/null is not a device";
  // The row's own expectations.
  EXPECT_EQ(r.code, row.code) << first_line;
  for (const auto& phrase : phrases) EXPECT_TRUE(contains(r.out, phrase)) << "missing phrase: " << phrase;
  for (const auto& s : same) EXPECT_EQ(describe(s), before[s]) << s << " changed";
  if (row.code != 0) {
    std::set<std::string> after = listing(w);
    std::vector<std::string> appeared, vanished;
    for (const auto& e : after) {
      bool allowed = false;
      for (const auto& c : may_create)
        allowed = allowed || (w / e.substr(0, e.rfind(" ("))).string().rfind(c, 0) == 0;
      if (!listed_before.count(e) && !allowed) appeared.push_back(e);
    }
    for (const auto& e : listed_before)
      if (!after.count(e)) vanished.push_back(e);
    EXPECT_TRUE(appeared.empty()) << "a failing command left new files: " << ::testing::PrintToString(appeared);
    EXPECT_TRUE(vanished.empty()) << "a failing command removed files: " << ::testing::PrintToString(vanished);
  }
}

std::string row_name(const ::testing::TestParamInfo<Row>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(top, Catalogue, ::testing::ValuesIn(top_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(train, Catalogue, ::testing::ValuesIn(train_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(eval, Catalogue, ::testing::ValuesIn(eval_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(sample, Catalogue, ::testing::ValuesIn(sample_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(export, Catalogue, ::testing::ValuesIn(export_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(logits, Catalogue, ::testing::ValuesIn(logits_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(prepare, Catalogue, ::testing::ValuesIn(prepare_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(tokenize, Catalogue, ::testing::ValuesIn(tokenize_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(bench, Catalogue, ::testing::ValuesIn(bench_rows()), row_name);
INSTANTIATE_TEST_SUITE_P(info, Catalogue, ::testing::ValuesIn(info_rows()), row_name);

}  // namespace catalogue
