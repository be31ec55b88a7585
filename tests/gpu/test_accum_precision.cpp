// Measurement, not a test (disabled; run by scripts/dev/accum_precision.sh): how much bf16 gradient
// accumulation changes the quantities Sophia-G uses, at a real training state.
//
// From the newest checkpoint of the run directory in SGPT_ACCUM_RUN (its config.json: GPT-2 with
// many accumulation steps), three backends start from the same fp32 master weights: bf16 with
// bf16 accumulation, bf16 with fp32 accumulation, and fp32 (every tensor fp32: the reference).
// Each computes, over the same micro-batches (the run's next step's data):
//   g      the step's gradient (mean over all micro-steps), and its relative L2 distance to the
//          fp32 reference, ||g - g_ref|| / ||g_ref||, plus the fraction of coordinates whose sign
//          differs from the reference's where |g_ref| is above its median;
//   g_gnb  the GNB gradient (sampled labels, the same Philox keys), and the relative L1 distance
//          of its square (the Hessian EMA's input) to the reference's (which samples from its own
//          logits: sampling noise included) and between the two bf16 variants (same labels);
//   win    with the checkpoint's m and h: the fraction of coordinates Sophia-G leaves unclipped
//          (|m'| < rho*bs*h, m' = b1*m + (1-b1)*g) in the step it would take with that g.
// Both bf16 variants start from the working weights rounded to nearest from the master, so they
// differ in the accumulation alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "config/config.h"
#include "cuda/cuda_backend.h"
#include "data/loader.h"
#include "model/checkpoint.h"
#include "train/trainer.h"

using namespace sgpt;
namespace fs = std::filesystem;

namespace {

struct Measure {
  std::vector<float> g, gnb;
  double win = 0;
};

}  // namespace

TEST(AccumPrecision, DISABLED_AtCheckpoint) {
  const char* run = std::getenv("SGPT_ACCUM_RUN");
  if (!run) GTEST_SKIP() << "set SGPT_ACCUM_RUN to a run directory";
  std::string why;
  if (!cuda_usable(&why)) GTEST_SKIP() << why;
  const Config cfg = load_config((fs::path(run) / "config.json").string(), {});
  const int64_t step = find_resume_checkpoint(run).step;  // the newest checkpoint that verifies
  ASSERT_GT(step, 0) << "no checkpoint in " << run;
  const std::vector<float> master = read_model_file(model_path(run, step), cfg.model);
  const TrainState st = read_state_file(state_path(run, step));
  std::vector<float> m, h;
  for (size_t i = 0; i < st.slot_names.size(); ++i) {
    if (st.slot_names[i] == "m") m = st.slots[i];
    if (st.slot_names[i] == "h") h = st.slots[i];
  }
  ASSERT_FALSE(m.empty() || h.empty()) << "a Sophia-G run's checkpoint is needed";
  const int B = cfg.batch.micro_batch_size, T = cfg.model.block_size;
  const int accum = cfg.grad_accum_steps();
  const float scale = 1.0f / static_cast<float>(accum);
  LoaderOptions lo;
  lo.pattern = cfg.data.train;
  lo.format = parse_token_format(cfg.data.format);
  lo.B = B;
  lo.T = T;
  lo.seed = cfg.seed;
  lo.vocab_size = cfg.model.vocab_size;
  DataLoader loader(lo);
  loader.restore(st.meta.at("data"));
  std::vector<std::vector<int>> inp(accum), tgt(accum), ginp(accum), gtgt(accum);
  for (int j = 0; j < accum; ++j) {
    inp[j].resize(static_cast<size_t>(B) * T);
    tgt[j].resize(inp[j].size());
    loader.next(inp[j].data(), tgt[j].data());
  }
  for (int j = 0; j < accum; ++j) {
    ginp[j].resize(static_cast<size_t>(B) * T);
    gtgt[j].resize(ginp[j].size());
    loader.next(ginp[j].data(), gtgt[j].data());
  }
  const double bs = cfg.sophia_bs();
  const OptimizerConfig& oc = cfg.optimizer;

  auto measure = [&](Precision p, bool acc32) {
    Measure r;
    auto be = make_cuda_backend(cfg.model, B, T, p, master);
    be->set_grad_accum_fp32(acc32);
    be->zero_grad();
    for (int j = 0; j < accum; ++j) be->train_micro(inp[j].data(), tgt[j].data(), B, T, scale);
    be->get("grad", r.g);
    be->set("m", m);
    be->set("h", h);
    SophiaMetrics met;
    be->optimizer_step(OptimizerStep{&oc, oc.min_lr, step + 1, bs}, &met);
    r.win = met.win_rate();
    be->set("params", master);
    be->zero_grad();
    for (int j = 0; j < accum; ++j)
      be->gnb_micro(ginp[j].data(), B, T, scale, cfg.seed, static_cast<uint32_t>(step), static_cast<uint32_t>(j * B));
    be->get("grad", r.gnb);
    return r;
  };
  const Measure ref = measure(Precision::kFp32, true);
  const Measure a = measure(Precision::kBf16, false);
  const Measure b = measure(Precision::kBf16, true);

  std::vector<float> mags(ref.g.size());
  for (size_t i = 0; i < mags.size(); ++i) mags[i] = std::fabs(ref.g[i]);
  std::nth_element(mags.begin(), mags.begin() + mags.size() / 2, mags.end());
  const float median = mags[mags.size() / 2];
  auto report = [&](const char* name, const Measure& x) {
    double d2 = 0, r2 = 0, hd = 0, hr = 0;
    size_t big = 0, flipped = 0;
    for (size_t i = 0; i < ref.g.size(); ++i) {
      const double e = double(x.g[i]) - ref.g[i];
      d2 += e * e;
      r2 += double(ref.g[i]) * ref.g[i];
      if (std::fabs(ref.g[i]) > median) {
        ++big;
        flipped += (x.g[i] > 0) != (ref.g[i] > 0);
      }
      const double hx = double(x.gnb[i]) * x.gnb[i], hrf = double(ref.gnb[i]) * ref.gnb[i];
      hd += std::fabs(hx - hrf);
      hr += hrf;
    }
    std::printf("ACCUM %-22s step %lld, %d micro-steps of %d x %d: |g - g_fp32|/|g_fp32| = %.3e, sign flips "
                "above the median |g| %.3e, |g_gnb^2 - ref|_1/|ref|_1 = %.3e, win rate %.6f (fp32 %.6f)\n",
                name, static_cast<long long>(step), accum, B, T, std::sqrt(d2 / r2),
                double(flipped) / double(big), hd / hr, x.win, ref.win);
  };
  report("bf16, bf16 accumulation", a);
  report("bf16, fp32 accumulation", b);
  // The two bf16 backends compute the same logits, so they sample the same GNB labels and their
  // GNB gradients differ by the accumulation alone (the fp32 reference samples its own labels, so
  // its comparison above mixes in sampling noise).
  double hd = 0, hr = 0;
  for (size_t i = 0; i < b.gnb.size(); ++i) {
    const double ha = double(a.gnb[i]) * a.gnb[i], hb = double(b.gnb[i]) * b.gnb[i];
    hd += std::fabs(ha - hb);
    hr += hb;
  }
  std::printf("ACCUM GNB, bf16 vs fp32 accumulation (same sampled labels): |g_gnb^2(bf16 acc) - "
              "g_gnb^2(fp32 acc)|_1 / |g_gnb^2(fp32 acc)|_1 = %.3e\n", hd / hr);
}
