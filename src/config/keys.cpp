// The table of config keys: one row per key (see config.h, "The table of config keys").
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "config/keys.h"

namespace sgpt {
namespace {

// Value checks, for the table's third column.
KeyCheck any() { return {}; }
KeyCheck at_least(double lo) {
  KeyCheck c;
  c.lo = lo;
  return c;
}
KeyCheck above(double lo) {
  KeyCheck c = at_least(lo);
  c.lo_open = true;
  return c;
}
// in(lo, hi, "[)"): the brackets say which ends are included.
KeyCheck in(double lo, double hi, const char* ends) {
  KeyCheck c;
  c.lo = lo;
  c.hi = hi;
  c.lo_open = ends[0] == '(';
  c.hi_open = ends[1] == ')';
  return c;
}
KeyCheck one_of(std::vector<std::string> values) {
  KeyCheck c;
  c.one_of = std::move(values);
  return c;
}
// Checked in validate()'s explicit code (a rule over several keys); `phrase` documents it.
KeyCheck by_code(const char* phrase) {
  KeyCheck c;
  c.phrase = phrase;
  c.by_code = true;
  return c;
}

constexpr bool kFixed = true;  // may not change on --resume
constexpr bool kMay = false;

// KEY(optimizer.lr, ...): the name and the accessor come from the same member path.
#define KEY(path, check, doc, resume) \
  ConfigKey { #path, +[](Config& c) -> auto& { return c.path; }, check, doc, resume }

const std::vector<ConfigKey> kKeys = {
    // ---- model ----
    KEY(model.n_layer, at_least(1), "transformer blocks", kFixed),
    KEY(model.n_head, at_least(1), "attention heads", kFixed),
    KEY(model.n_embd, at_least(1), "width; must be divisible by `model.n_head`", kFixed),
    KEY(model.block_size, at_least(1), "sequence length T (training sequences are exactly this long)", kFixed),
    KEY(model.vocab_size, in(2, 65536, "[]").with_note("(tokens are stored as uint16)"),
        "real tokens; embedding rows are padded up to a multiple of 128 (50304) and the loss is over the "
        "first `vocab_size` logits",
        kFixed),
    KEY(model.bias, any(), "biases in Linear and LayerNorm (the official configs use false)", kFixed),
    KEY(model.scale_attn_by_inverse_layer_idx, any(), "attention logits scaled by 1/sqrt(head_dim)/(layer+1)",
        kFixed),

    // ---- optimizer ----
    KEY(optimizer.name, one_of({"sophiag", "sophiah", "adamw", "lion"}), "the optimizer", kFixed),
    KEY(optimizer.lr, above(0).quiet(), "peak learning rate", kMay),
    KEY(optimizer.min_lr, by_code("in [0, `optimizer.lr`]"), "floor of the cosine schedule", kMay),
    KEY(optimizer.beta1, in(0, 1, "[)"), "momentum EMA (Lion: the interpolation that gives the sign)", kMay),
    KEY(optimizer.beta2, in(0, 1, "[)"), "Sophia: Hessian EMA; AdamW: second-moment EMA; Lion: momentum EMA", kMay),
    KEY(optimizer.rho, at_least(0), "Sophia-G clipping scale (the update is clipped where abs(m) >= rho*bs*h); Sophia-H: gamma in max(gamma*h, eps)",
        kMay),
    KEY(optimizer.weight_decay, at_least(0).quiet(), "decoupled decay, applied to the Linear weight matrices only",
        kMay),
    KEY(optimizer.eps, above(0).quiet(), "AdamW epsilon (outside the square root); Sophia-H: the floor eps of max(gamma*h, eps)", kMay),
    KEY(optimizer.bs, at_least(0).with_note("(0 = total_batch_tokens)").quiet(),
        "Sophia-G's `bs` in `rho*bs*h`: tokens per optimizer step; 0 = `batch.total_batch_tokens`", kMay),
    KEY(optimizer.hessian_interval, at_least(1),
        "k: a Hessian estimator pass (Sophia-G: GNB, Sophia-H: Hutchinson) after every step with `step % k == k-1`",
        kMay),
    KEY(optimizer.hessian_probe, one_of({"gaussian", "rademacher"}),
        "Sophia-H: the distribution of the Hutchinson probe u (the paper's is Gaussian)", kMay),
    KEY(optimizer.hessian_bias_correction, any(),
        "Sophia-G and Sophia-H: the update reads h / (1 - beta2^n), n = floor(step / k) estimator "
        "passes so far, as Adam corrects its second moment (the paper and the official code: false)",
        kMay),
    KEY(optimizer.hessian_batch_fraction, in(0, 1, "(]").quiet(),
        "fraction of each micro-batch's sequences the GNB pass uses (the paper uses 0.5); times "
        "`batch.micro_batch_size` it must give at least one sequence (Sophia-G)",
        kMay),
    KEY(optimizer.grad_clip, at_least(0).with_note("(0 disables clipping)").quiet(),
        "global-norm clip for both the gradient and the GNB gradient; 0 disables", kMay),
    KEY(optimizer.max_consecutive_skips, in(1, 1000000, "[]"),
        "divergence guard: a step whose loss or gradient norm is not finite is skipped (no change to the "
        "weights or the optimizer state, logged as `{\"type\":\"skip\"}`); this many skipped steps in a row "
        "stop the run with an error (exit code 2). See [reliability.md](reliability.md)",
        kMay),

    // ---- schedule ----
    KEY(schedule.warmup_iters, at_least(0).quiet(), "linear warmup from 0", kMay),
    KEY(schedule.lr_decay_iters, by_code(">= `schedule.warmup_iters`"),
        "cosine from `lr` to `min_lr` until here, then `min_lr`", kMay),
    KEY(schedule.max_steps, at_least(1).quiet(), "optimizer steps", kMay),

    // ---- batch ----
    KEY(batch.micro_batch_size, at_least(1), "sequences per forward/backward (per process)", kMay),
    KEY(batch.total_batch_tokens, at_least(1),
        "tokens per optimizer step over all processes; must be a multiple of `micro_batch_size * block_size * "
        "processes`; the quotient is the number of gradient-accumulation steps",
        kMay),

    // ---- data ----
    KEY(data.train, any(), "glob of training token files (required)", kFixed),
    KEY(data.val, any(), "glob of validation token files; empty disables evaluation", kMay),
    KEY(data.format, one_of({"llmc", "nanogpt"}),
        "`\"llmc\"` (shards with a 256-int32 header, docs/design.md section 4) or `\"nanogpt\"` (headerless "
        "uint16 `train.bin`/`val.bin`, sampled as random windows)",
        kFixed),
    KEY(data.order, one_of({"shards", "global"}),
        "llmc training order per pass over the data: `\"shards\"` (llm.c's: the files in a random order, each "
        "read whole with its sequences in a random order) or `\"global\"` (one random order over the sequences "
        "of all files, so every batch draws from the whole split; docs/data.md)",
        kFixed),

    // ---- eval ----
    KEY(eval.every, at_least(0).with_note("(0 disables)").quiet(),
        "validation loss every N steps (and at the end); 0 disables", kMay),
    KEY(eval.batches, at_least(1).quiet(),
        "micro-batches per evaluation (the same batches every time, and the same for any number of GPUs, which "
        "share them out)",
        kMay),
    KEY(eval.hellaswag_every, at_least(0).with_note("(0 disables)").quiet(),
        "HellaSwag accuracy (llm.c's acc_norm; [eval.md](eval.md)) after every N steps (steps N, 2N, ...) and at "
        "the end, logged as `{\"type\":\"hellaswag\"}`; 0 disables. With several ranks each scores its own slice "
        "of the examples and the counts are summed",
        kMay),
    KEY(eval.hellaswag_file, any(),
        "the HellaSwag JSONL (`hellaswag_val.jsonl`, [eval.md](eval.md) says where to get it); must be set when "
        "`eval.hellaswag_every` > 0, and must exist when training starts (checked before any model memory is "
        "allocated; a run's `config.json` stays loadable by `eval`/`sample` after the file moved). Needs the "
        "GPT-2 vocabulary (`data/cache/gpt2`, or `$SGPT_VOCAB_DIR`) and a model with `vocab_size` 50257",
        kMay),

    // ---- checkpoint ----
    KEY(checkpoint.every, at_least(0).with_note("(0 = only the final checkpoint)").quiet(),
        "write `model_<step>.bin` + `state_<step>.bin` every N steps; 0 = only at the end", kMay),
    KEY(checkpoint.keep, at_least(1).quiet(), "periodic checkpoints kept; older ones are deleted", kMay),
    KEY(checkpoint.keep_best, any(),
        "also keep the checkpoint with the lowest validation loss (among evaluations at checkpoint steps; its "
        "eval record in log.jsonl says `\"best\": true`), like nanoGPT's save-on-improvement",
        kMay),

    // ---- log ----
    KEY(log.every, at_least(1).quiet(), "console progress line every N steps (`log.jsonl` gets every step)", kMay),
    KEY(log.peak_tflops,
        at_least(0).with_note("(TFLOP/s of the device for MFU; 0 = detect from the GPU's name)"),
        "the device's peak TFLOP/s for MFU (below); 0 = from the GPU's name: bf16 dense tensor-core peak H100 SXM "
        "989, H100 PCIe 756, H200 989, A100 312; fp32 runs use the plain FP32 peak (67, 51, 67, 19.5), because "
        "the fp32 path keeps TF32 off. Other GPUs and the CPU: no MFU is reported (the field is omitted, not 0) "
        "unless this is set",
        kMay),

    // ---- sample ----
    KEY(sample.every, at_least(0).with_note("(0 disables)"),
        "every N steps (after steps N, 2N, ...) rank 0 prints a sample generated from the current weights with "
        "the KV-cache decoder (the GPU decoder when training on the GPU, else the CPU one) and logs it as "
        "`{\"type\":\"sample\",\"step\",\"tokens\",\"text\"}`; 0 disables. Every rank gathers the weights for it "
        "(like a checkpoint)",
        kMay),
    KEY(sample.tokens, in(1, 1000000, "[]"), "tokens per sample", kMay),
    KEY(sample.prompt, any(),
        "text to continue (may contain `<\\|endoftext\\|>`; needs the GPT-2 vocabulary, and its token ids must be "
        "below `model.vocab_size`); `\"\"` = the end-of-text token 50256 (`model.vocab_size - 1` for a model "
        "with a smaller vocabulary). Without the vocabulary files an empty prompt still works and samples are "
        "printed as token ids",
        kMay),
    KEY(sample.temperature, above(0).says("a finite number > 0").finite_only(), "softmax temperature", kMay),
    KEY(sample.top_k, at_least(0).with_note("(0 = no cut)"), "sample among the k most likely tokens; 0 = no cut",
        kMay),
    KEY(sample.top_p, in(0, 1, "(]").with_note("(1 = no cut)"),
        "nucleus: the fewest most likely tokens holding this much probability; 1 = no cut", kMay),

    // ---- dist ----
    KEY(dist.init, by_code("`\"tcp://HOST:PORT\"`, `\"file:///path\"` or `\"\"`"),
        "how the NCCL id reaches the ranks when they were not started by `mpirun` (or the MPI plugin cannot be "
        "loaded): `\"tcp://HOST:PORT\"` (rank 0 listens), `\"file:///path\"` (a shared file), or `\"\"` = "
        "`tcp://$MASTER_ADDR:$MASTER_PORT` (defaults 127.0.0.1:29500). Setting it under `mpirun` uses it "
        "instead of MPI",
        kMay),
    KEY(dist.timeout_s, at_least(0).with_note("(0 = wait forever)").quiet(),
        "a rank that waits longer than this for the others in one phase (a training step, an evaluation, a "
        "checkpoint, the start) prints which and exits with code 4; 0 = wait forever",
        kMay),
    KEY(dist.zero, in(0, 1, "[]").says("0 or 1"),
        "1: ZeRO-1, the optimizer state (fp32 master in bf16, m, h or v) sharded over the ranks; 0: every rank "
        "keeps all of it",
        kMay),

    // ---- top level ----
    KEY(seed, any(), "initialisation, data order and GNB label sampling (Philox4x32-10)", kFixed),
    KEY(precision, one_of({"fp32", "bf16"}),
        "bf16 needs the GPU; `device: auto` without a GPU falls back to fp32", kMay),
    KEY(device, one_of({"auto", "cpu", "cuda"}),
        "`\"auto\"`: the GPU when usable, else the CPU with a notice", kMay),
    KEY(attention, one_of({"auto", "own", "cudnn"}),
        "GPU attention: `\"cudnn\"` (cuDNN fused flash attention, bf16 only; an error if it cannot be used), "
        "`\"own\"` (our kernels), `\"auto\"` (cuDNN when usable, else ours). Ignored on the CPU",
        kMay),
    KEY(recompute,
        in(0, 2, "[]").says("0 (keep every activation), 1 (recompute the GELU outputs) or 2 (also the LayerNorm "
                            "outputs)"),
        "GPU activation recompute, trading compute for memory (like llm.c's `-r`): `0` keeps every layer's "
        "activations for the backward; `1` keeps no per-layer GELU output (one layer's buffer; the backward "
        "recomputes it for each layer; in bf16, where GELU runs in the fc matmul's cuBLASLt epilogue, the "
        "backward re-runs that matmul, which also regenerates the pre-GELU `fch`, so neither is kept per layer: "
        "about 6.6% more model FLOPs at 124M); `2` also drops the per-layer LayerNorm outputs ln1/ln2 "
        "(recomputed from the layer input and the saved mean/rstd). Gradients, losses and weights are "
        "bit-identical at every level (tests/gpu/test_recompute.cpp). Saving at 124M, micro-batch 64 x 1024, "
        "bf16: 9 GiB (1), 11.25 GiB (2); docs/notebook/benchmarks.md \"Memory breakdown\". Ignored on the CPU",
        kMay),
    KEY(cuda_graphs, any(),
        "GPU: each training micro-step (forward, loss, backward) is captured once per batch shape as a CUDA "
        "graph and replayed, instead of launching its few hundred kernels one by one; the same kernels on the "
        "same buffers, so the bits are those of eager launches (tests/gpu/test_graphs.cpp). The optimizer, the "
        "Hessian estimators' passes, evaluation and a data-parallel step's last micro-step (its reduction "
        "overlaps the backward) stay eager. A capture that fails turns it off with a warning naming the reason on stderr. "
        "Ignored on the CPU",
        kMay),
    KEY(lm_head_precision, one_of({"bf16", "fp8"}),
        "GPU, precision bf16: `\"fp8\"` runs the lm head's forward product (logits = lnf @ wte^T) in FP8 E4M3 "
        "on the tensor cores, each operand scaled by 448 / its largest magnitude before every forward, fp32 "
        "accumulation, bf16 logits; the backward stays bf16. It changes the numerics (docs/gpu.md, \"The FP8 "
        "lm head\"), so it is off by default. Needs compute capability 8.9 or later (Ada, Hopper, Blackwell) "
        "and n_embd a multiple of 16. With `device: auto` and no GPU it falls back, like `precision`, to the CPU's fp32",
        kMay),
    KEY(grad_accum_precision, one_of({"auto", "fp32", "bf16"}),
        "bf16 only: where gradients are summed over micro-steps: `\"fp32\"` (each micro-step's bf16 gradient "
        "added into an fp32 buffer, as PyTorch autocast with fp32 parameters does; +4 bytes per parameter) or "
        "`\"bf16\"` (in the bf16 gradient buffer); `\"auto\"`: fp32 when a step has more than one micro-step per "
        "process, for both optimizers (measurement in docs/decisions.md, \"Gradient accumulation precision\"). "
        "fp32 runs always accumulate in fp32",
        kMay),
};
#undef KEY

std::string section_of(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot);
}

// 0.0006, 1.5e-5, 1.0: the shortest form that reads back the same, with a ".0" on whole numbers.
std::string number_text(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  for (const char* e : {"e-0", "e+0", "e+"}) {
    const auto at = s.find(e);
    if (at != std::string::npos) s.replace(at, std::strlen(e), e[1] == '-' ? "e-" : "e");
  }
  return s;
}

std::string value_text(const ConfigKey& k) {
  Config d;
  return std::visit(
      [&d](auto f) -> std::string {
        const auto& v = f(d);
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::string>) return "`\"" + v + "\"`";
        else if constexpr (std::is_same_v<T, double>) {
          std::string s = number_text(v);
          if (s.find_first_of(".e") == std::string::npos) s += ".0";
          return s;
        } else return std::to_string(v);
      },
      k.field);
}

const char* type_word(const ConfigField& f) {
  switch (f.index()) {
    case 0: return "boolean";
    case 1: case 2: case 3: return "integer";
    case 4: return "number";
    default: return "string";
  }
}

}  // namespace

// Used by config.cpp for messages, and here for the docs: "in [0, 1)", "\"a\", \"b\" or \"c\"".
std::string key_check_phrase(const KeyCheck& c, bool markdown) {
  if (c.phrase) return c.phrase;
  std::string s;
  if (!c.one_of.empty()) {
    for (size_t i = 0; i < c.one_of.size(); ++i) {
      if (i) s += i + 1 == c.one_of.size() ? " or " : ", ";
      s += markdown ? "`\"" + c.one_of[i] + "\"`" : "\"" + c.one_of[i] + "\"";
    }
    return s;
  }
  if (c.lo && c.hi)
    return std::string("in ") + (c.lo_open ? "(" : "[") + number_text(*c.lo) + ", " + number_text(*c.hi) +
           (c.hi_open ? ")" : "]");
  if (c.lo) return (c.lo_open ? "> " : ">= ") + number_text(*c.lo);
  if (c.hi) return (c.hi_open ? "< " : "<= ") + number_text(*c.hi);
  return "";
}

const std::vector<ConfigKey>& config_keys() { return kKeys; }

const ConfigKey* find_config_key(const std::string& name) {
  for (const ConfigKey& k : kKeys)
    if (name == k.name) return &k;
  return nullptr;
}

bool may_change_on_resume(const std::string& key) {
  const ConfigKey* k = find_config_key(key);
  return !(k && k->fixed_on_resume);
}

std::string config_keys_markdown(const std::string& sections) {
  std::set<std::string> want;
  std::stringstream ss(sections);
  for (std::string s; std::getline(ss, s, ',');) want.insert(s == "top" ? "" : s);
  std::string md = "| key | default | value | on --resume | meaning |\n|---|---|---|---|---|\n";
  for (const ConfigKey& k : kKeys) {
    if (!want.count(section_of(k.name))) continue;
    std::string value = type_word(k.field);
    if (const std::string p = key_check_phrase(k.check, true); !p.empty()) value += ", " + p;
    if (k.check.note) value += std::string(" ") + k.check.note;
    md += std::string("| `") + k.name + "` | " + value_text(k) + " | " + value + " | " +
          (k.fixed_on_resume ? "fixed" : "may change") + " | " + k.doc + " |\n";
  }
  return md;
}

std::string render_config_doc(const std::string& doc) {
  const std::string open = "<!-- keys:", close = "<!-- /keys -->";
  std::string out;
  std::set<std::string> done;
  size_t at = 0;
  while (true) {
    const size_t b = doc.find(open, at);
    if (b == std::string::npos) break;
    const size_t e = doc.find(" -->", b);
    const size_t c = doc.find(close, b);
    if (e == std::string::npos || c == std::string::npos || c < e)
      throw std::runtime_error("docs/config.md: a <!-- keys:... --> marker without its <!-- /keys -->");
    const std::string sections = doc.substr(b + open.size(), e - b - open.size());
    out += doc.substr(at, e + 4 - at) + "\n" + config_keys_markdown(sections);
    std::stringstream ss(sections);
    for (std::string s; std::getline(ss, s, ',');) done.insert(s == "top" ? "" : s);
    at = c;
  }
  out += doc.substr(at);
  for (const ConfigKey& k : kKeys)
    if (!done.count(section_of(k.name)))
      throw std::runtime_error(std::string("docs/config.md: config key '") + k.name +
                               "' is in no <!-- keys:SECTION --> block (add its section to one)");
  return out;
}

}  // namespace sgpt
