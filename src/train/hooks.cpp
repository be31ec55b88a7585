#include "train/hooks.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "cpu/decode_cpu.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

namespace sgpt {
namespace fs = std::filesystem;
using nlohmann::json;

double now_s() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

void check_hellaswag_file(const Config& cfg) {
  if (cfg.eval.hellaswag_every <= 0) return;
  std::error_code ec;
  if (!fs::is_regular_file(cfg.eval.hellaswag_file, ec))
    throw UserError("config key 'eval.hellaswag_file': '" + cfg.eval.hellaswag_file +
                    "' does not exist or is not a file (eval.hellaswag_every is " +
                    std::to_string(cfg.eval.hellaswag_every) +
                    "); docs/eval.md says where to get hellaswag_val.jsonl");
}

RunHooks::RunHooks(const Config& cfg_, Backend& be_, const TrainOptions& opt_, JsonlLog& log_, TrainResult& res_,
                   std::function<bool()> console_, std::function<void(const char*)> phase_)
    : cfg(cfg_), be(be_), opt(opt_), log(log_), res(res_), console(std::move(console_)), phase(std::move(phase_)),
      mc(cfg_.model), B(cfg_.batch.micro_batch_size), T(cfg_.model.block_size), main_rank(opt_.rank == 0),
      multi(opt_.world > 1), inp(static_cast<size_t>(B) * T), tgt(static_cast<size_t>(B) * T) {
  if (!cfg.data.val.empty() && cfg.eval.every > 0)
    val_loader = std::make_unique<DataLoader>(val_loader_options(cfg, opt.rank, opt.world));
  // Evaluation: the eval.batches micro-batches one process evaluates, shared out among the ranks as
  // in training (rank r reads batches r, r + N, r + 2N, ...: its slice of each global batch), and
  // the loss is their mean. So the validation loss is over the same sequences for every number of
  // ranks, whether or not N divides eval.batches.
  eval_batches = cfg.eval.batches > opt.rank ? (cfg.eval.batches - opt.rank + opt.world - 1) / opt.world : 0;
  // HellaSwag (eval.hellaswag_every, src/eval/hellaswag.h): every rank loads and checks all
  // examples (so a bad file fails alike everywhere), scores its own slice, and the counts are
  // summed over the ranks through Backend::average.
  if (cfg.eval.hellaswag_every > 0) {
    check_hellaswag_file(cfg);
    hellaswag_examples = load_hellaswag(cfg.eval.hellaswag_file, Tokenizer::load(find_vocab_dir()));
    check_hellaswag(hellaswag_examples, mc.vocab_size, T, cfg.eval.hellaswag_file);
    std::vector<int> pi(static_cast<size_t>(B) * T, std::min(kEndOfText, mc.vocab_size - 1)), pt(pi.size(), -1);
    std::vector<float> pl(pi.size());
    try {  // a backend without per-position losses fails here, not at the first evaluation
      be.eval_losses(pi.data(), pt.data(), B, T, pl.data());
    } catch (const std::logic_error& e) {
      throw UserError("config key 'eval.hellaswag_every': the " + be.name() + " backend cannot score HellaSwag (" +
                      e.what() + "); set it to 0");
    }
  }
  // Samples (sample.every, docs/sampling.md): the prompt is encoded on every rank (a bad prompt
  // fails alike everywhere); every rank gathers the weights (Backend::get is collective), rank 0
  // decodes with its decoder (opt.make_decoder: the GPU one on the GPU; else the CPU one).
  if (cfg.sample.every > 0) {
    sample_opt.temperature = cfg.sample.temperature;
    sample_opt.top_k = cfg.sample.top_k;
    sample_opt.top_p = cfg.sample.top_p;
    sample_opt.seed = cfg.seed;
    try {
      sample_tok = std::make_unique<Tokenizer>(Tokenizer::load(find_vocab_dir()));
    } catch (const UserError& e) {
      if (!cfg.sample.prompt.empty())
        throw UserError(std::string("config key 'sample.prompt' needs the GPT-2 vocabulary to encode it: ") + e.what());
      if (main_rank)
        std::fprintf(stderr, "note: samples are printed as token ids (no GPT-2 vocabulary: %s)\n", e.what());
    }
    if (sample_tok && !cfg.sample.prompt.empty()) {
      sample_prompt = sample_tok->encode(cfg.sample.prompt, /*allow_special=*/true);
      for (int id : sample_prompt)
        if (id >= mc.vocab_size)
          throw UserError("config key 'sample.prompt' encodes to token " + std::to_string(id) +
                          ", outside the model's vocabulary (model.vocab_size " + std::to_string(mc.vocab_size) + ")");
    }
    // The start token: end-of-text, or the last id of a model with a smaller vocabulary.
    if (sample_prompt.empty()) sample_prompt.push_back(std::min(kEndOfText, mc.vocab_size - 1));
  }
}

void RunHooks::hellaswag(int64_t step) {
    if (hellaswag_examples.empty()) return;
    phase("a HellaSwag evaluation");
    const auto [lo_ex, hi_ex] = hellaswag_slice(hellaswag_examples.size(), opt.rank, opt.world);
    const HellaSwagResult r = evaluate_hellaswag(be, hellaswag_examples, lo_ex, hi_ex, B, T, cfg.eval.hellaswag_file);
    double counts[2] = {static_cast<double>(r.correct), static_cast<double>(r.total)};
    if (multi) {
      be.average(counts, 2);  // means over ranks: times world gives the sums
      for (double& c : counts) c *= opt.world;
    }
    const int64_t correct = std::llround(counts[0]), total = std::llround(counts[1]);
    const double acc = total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
    res.last_hellaswag = acc;
    log.write(json{{"type", "hellaswag"}, {"step", step}, {"hellaswag", acc}, {"correct", correct}, {"total", total}});
    if (console()) {
      std::printf("step %lld: hellaswag %.4f (%lld/%lld)\n", static_cast<long long>(step), acc,
                  static_cast<long long>(correct), static_cast<long long>(total));
      std::fflush(stdout);
    }
  }

void RunHooks::sample(int64_t step) {
    phase("a sample");
    std::vector<float> params;
    be.get("params", params);  // collective: every rank
    if (!main_rank) return;
    if (!sample_decoder) sample_decoder = opt.make_decoder ? opt.make_decoder(mc) : make_cpu_decoder(mc);
    sample_decoder->set_params(params.data());
    const double t0 = now_s();
    const std::vector<int> toks = generate(*sample_decoder, sample_prompt, cfg.sample.tokens, sample_opt);
    const double dt = now_s() - t0;
    std::string text;
    if (sample_tok) {
      text = utf8_repair(sample_tok->decode(toks));
    } else {
      for (int t : toks) text += (text.empty() ? "" : " ") + std::to_string(t);
    }
    res.samples.emplace_back(step, toks);
    log.write(json{{"type", "sample"}, {"step", step}, {"tokens", toks}, {"text", text}});
    if (console()) {
      std::printf("--- sample at step %lld (%s, %d tokens, %.0f tokens/s) ---\n%s\n---\n",
                  static_cast<long long>(step), sample_decoder->name().c_str(), cfg.sample.tokens,
                  dt > 0 ? toks.size() / dt : 0.0, text.c_str());
      std::fflush(stdout);
    }
  }

void RunHooks::evaluate(int64_t step) {
    if (!val_loader) return;
    phase("evaluation");
    val_loader->reset();
    double sum = 0;
    for (int i = 0; i < eval_batches; ++i) {
      val_loader->next(inp.data(), tgt.data());
      sum += be.eval_micro(inp.data(), tgt.data(), B, T);
    }
    double vl = sum;
    be.average(&vl, 1);  // the mean over ranks of their sums
    vl = vl * opt.world / cfg.eval.batches;
    res.last_val_loss = vl;
    json rec{{"type", "eval"}, {"step", step}, {"val_loss", vl}};
    // checkpoint.keep_best: the lowest loss among evaluations of a checkpointed model (the one of
    // `step` is written at the end of the previous step, or at the end of the run).
    const bool at_checkpoint = step > 0 && ((cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0) ||
                                            step == cfg.schedule.max_steps);
    if (cfg.checkpoint.keep_best && at_checkpoint && (res.best_val_step < 0 || vl < res.best_val_loss)) {
      res.best_val_step = step;
      res.best_val_loss = vl;
      rec["best"] = true;
    }
    log.write(rec);
    if (console()) {
      std::printf("step %lld: val loss %.4f\n", static_cast<long long>(step), vl);
      std::fflush(stdout);
    }
  }

}  // namespace sgpt
