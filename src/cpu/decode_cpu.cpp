// The fp32 CPU decoder (see cpu/decode_cpu.h; the Decoder base: sample/decoder.h).
//
// CpuDecoder::forward runs the new rows through the same ops as cpu::Gpt2::forward_logits
// (encoder, LayerNorm, matmul, GELU and residual from cpu/ops.h, called on the new rows only) and
// computes attention itself, one query row against the cached keys, with the reference's
// arithmetic in the reference's order: score = sum_i q_i k_i in increasing i, times the scale,
// max, exp(score - max) summed in increasing position, times 1/sum, then out_i = sum over
// positions of p * v_i in increasing position. Each matmul output element is the bias plus its
// products added in increasing index order whatever the number of rows (cpu/ops.cpp), so the
// decoder's logits reproduce the full forward's at every position.
#include "cpu/decode_cpu.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu/ops.h"

namespace sgpt {

namespace {

class CpuDecoder final : public Decoder {
 public:
  explicit CpuDecoder(const ModelConfig& cfg) : Decoder(cfg) {
    const size_t T = cfg.block_size, C = cfg.n_embd, L = cfg.n_layer;
    kcache_.assign(L * T * C, 0.0f);
    vcache_.assign(L * T * C, 0.0f);
    x_.resize(T * C);
    ln_.resize(T * C);
    mean_.resize(T);
    rstd_.resize(T);
    qkv_.resize(T * 3 * C);
    atty_.resize(T * C);
    proj_.resize(T * C);
    res2_.resize(T * C);
    fch_.resize(T * 4 * C);
    fch_gelu_.resize(T * 4 * C);
    lnf_.resize(C);
    logits_full_.resize(cfg.padded_vocab_size);
  }

  std::string name() const override { return "cpu fp32"; }

  void set_params(const float* params) override {
    params_.assign(params, params + layout_.total);
    have_params_ = true;
    reset();
  }

 protected:
  void forward(const int* tokens, int n, int pos0) override {
    const int C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer, T = cfg_.block_size;
    const int hs = C / NH, Vp = cfg_.padded_vocab_size;
    const size_t nC = static_cast<size_t>(n) * C;
    // x = wte[token] + wpe[position]: the encoder's arithmetic (e + p).
    const float* wte = tensor(kWte);
    const float* wpe = tensor(kWpe);
    for (int r = 0; r < n; ++r) {
      const float* e = wte + static_cast<size_t>(tokens[r]) * C;
      const float* p = wpe + static_cast<size_t>(pos0 + r) * C;
      float* o = x_.data() + static_cast<size_t>(r) * C;
      for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
    }
    for (int l = 0; l < L; ++l) {
      cpu::layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), tensor(kLn1w, l),
                             tensor(kLn1b, l), n, C);
      cpu::matmul_forward(qkv_.data(), ln_.data(), tensor(kQkvw, l), tensor(kQkvb, l), n, C, 3 * C);
      float* kc = kcache_.data() + static_cast<size_t>(l) * T * C;
      float* vc = vcache_.data() + static_cast<size_t>(l) * T * C;
      for (int r = 0; r < n; ++r) {
        const float* q = qkv_.data() + static_cast<size_t>(r) * 3 * C;
        std::copy(q + C, q + 2 * C, kc + static_cast<size_t>(pos0 + r) * C);
        std::copy(q + 2 * C, q + 3 * C, vc + static_cast<size_t>(pos0 + r) * C);
      }
      attention(kc, vc, n, pos0, C, NH, hs, static_cast<float>(attention_scale(cfg_, l)));
      cpu::matmul_forward(proj_.data(), atty_.data(), tensor(kAttprojw, l), tensor(kAttprojb, l), n,
                          C, C);
      cpu::residual_forward(res2_.data(), x_.data(), proj_.data(), nC);
      cpu::layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), res2_.data(), tensor(kLn2w, l),
                             tensor(kLn2b, l), n, C);
      cpu::matmul_forward(fch_.data(), ln_.data(), tensor(kFcw, l), tensor(kFcb, l), n, C, 4 * C);
      cpu::gelu_forward(fch_gelu_.data(), fch_.data(), nC * 4);
      cpu::matmul_forward(proj_.data(), fch_gelu_.data(), tensor(kFcprojw, l), tensor(kFcprojb, l),
                          n, 4 * C, C);
      cpu::residual_forward(x_.data(), res2_.data(), proj_.data(), nC);
    }
    // Logits of the last row only.
    float m = 0, s = 0;
    cpu::layernorm_forward(lnf_.data(), &m, &s, x_.data() + static_cast<size_t>(n - 1) * C,
                           tensor(kLnfw), tensor(kLnfb), 1, C);
    cpu::matmul_forward(logits_full_.data(), lnf_.data(), wte, static_cast<const float*>(nullptr), 1,
                        C, Vp);
    std::copy(logits_full_.begin(), logits_full_.begin() + cfg_.vocab_size, logits_.begin());
  }

 private:
  // Pointer to layer l of tensor i; nullptr for an absent (size-0) bias.
  const float* tensor(int i, int l = 0) const {
    if (layout_.size[i] == 0) return nullptr;
    const bool per_layer = !(i == kWte || i == kWpe || i == kLnfw || i == kLnfb);
    return params_.data() + layout_.layer_offset(i, l, per_layer ? cfg_.n_layer : 1);
  }

  // atty[r, h*hs..] for the n new rows: query r (position pos0 + r) over cached positions
  // 0..pos0 + r, in cpu::attention_forward's arithmetic and order.
  void attention(const float* kc, const float* vc, int n, int pos0, int C, int NH, int hs,
                 float scale) {
    const long work = static_cast<long>(n) * NH * (pos0 + n) * hs;
#pragma omp parallel for schedule(dynamic) if (work > (1L << 15))
    for (int rh = 0; rh < n * NH; ++rh) {
      const int r = rh / NH, h = rh % NH, len = pos0 + r + 1;
      std::vector<float> a(len);
      const float* q = qkv_.data() + static_cast<size_t>(r) * 3 * C + static_cast<size_t>(h) * hs;
      for (int t2 = 0; t2 < len; ++t2) {
        const float* k = kc + static_cast<size_t>(t2) * C + static_cast<size_t>(h) * hs;
        float d = 0.0f;
        for (int i = 0; i < hs; ++i) d += q[i] * k[i];
        a[t2] = d;
      }
      float mx = -INFINITY;
      for (int t2 = 0; t2 < len; ++t2) {
        a[t2] = a[t2] * scale;
        mx = std::max(mx, a[t2]);
      }
      float sum = 0.0f;
      for (int t2 = 0; t2 < len; ++t2) {
        a[t2] = std::exp(a[t2] - mx);
        sum += a[t2];
      }
      const float inv = 1.0f / sum;
      for (int t2 = 0; t2 < len; ++t2) a[t2] = a[t2] * inv;
      float* o = atty_.data() + static_cast<size_t>(r) * C + static_cast<size_t>(h) * hs;
      for (int i = 0; i < hs; ++i) o[i] = 0.0f;
      for (int t2 = 0; t2 < len; ++t2) {
        const float w = a[t2];
        const float* v = vc + static_cast<size_t>(t2) * C + static_cast<size_t>(h) * hs;
        for (int i = 0; i < hs; ++i) o[i] += w * v[i];
      }
    }
  }

  std::vector<float> params_;
  std::vector<float> kcache_, vcache_;  // [L, block_size, C]
  std::vector<float> x_, ln_, mean_, rstd_, qkv_, atty_, proj_, res2_, fch_, fch_gelu_, lnf_,
      logits_full_;
};

}  // namespace

std::unique_ptr<Decoder> make_cpu_decoder(const ModelConfig& cfg) {
  return std::make_unique<CpuDecoder>(cfg);
}

}  // namespace sgpt
