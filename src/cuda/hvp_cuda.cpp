// HvpCuda: the exact Hessian-vector product on the GPU (see cuda/hvp_cuda.h for the method, the
// per-op formulas and the memory). The forward and backward below follow Gpt2Cuda::forward_logits
// / backward (src/cuda/gpt2_cuda.cpp) and cpu::Gpt2 (src/cpu/gpt2_cpu.cpp) op for op, each op
// followed by its tangent.
#include "cuda/hvp_cuda.h"

#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/tangent_cuda.h"

namespace sgpt::cuda {

template <class T>
template <class P>
void HvpCuda<T>::alloc(DeviceBuffer<P>& b, size_t n) {
  b.resize(n);
  bytes_ += b.bytes();
}

template <class T>
HvpCuda<T>::HvpCuda(const ModelConfig& cfg, int max_B, int T_, cudaStream_t stream,
                    HvpAttention attention)
    : cfg_(cfg), layout_(ParamLayout::make(cfg)), max_B_(max_B), T_(T_), stream_(stream) {
  if (max_B < 1 || T_ < 1 || T_ > cfg.block_size)
    throw std::invalid_argument("HvpCuda: need max_B >= 1 and 1 <= T <= block_size");
  if (cfg.n_head < 1 || cfg.n_embd % cfg.n_head != 0)
    throw std::invalid_argument("HvpCuda: n_embd must be a multiple of n_head");
  fused_ = std::is_same_v<T, bf16> && attention == HvpAttention::kAuto &&
           flash_tangent_usable(cfg.n_embd, cfg.n_head);
  CUBLAS_CHECK(cublasCreate(&blas_));
  try {
    CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    // fp32 arithmetic (no TF32), host scalars.
    CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
    CUBLAS_CHECK(cublasSetPointerMode(blas_, CUBLAS_POINTER_MODE_HOST));
    N_ = static_cast<size_t>(max_B) * T_;
    const size_t N = N_, C = cfg.n_embd, L = cfg.n_layer, NH = cfg.n_head;
    const size_t Vp = cfg.padded_vocab_size, TT = static_cast<size_t>(T_) * T_;
    alloc(inp_, N);
    alloc(targets_, N);
    alloc(x_, (L + 1) * N * C);
    alloc(xt_, (L + 1) * N * C);
    for (DeviceBuffer<T>* b : {&ln1_, &ln1t_, &atty_, &attyt_, &res2_, &res2t_, &ln2_, &ln2t_})
      alloc(*b, L * N * C);
    alloc(qkv_, L * N * 3 * C);
    alloc(qkvt_, L * N * 3 * C);
    for (DeviceBuffer<T>* b : {&fch_, &fcht_, &gelu_, &gelut_}) alloc(*b, L * N * 4 * C);
    for (DeviceBuffer<float>* b : {&ln1_mean_, &ln1_rstd_, &ln2_mean_, &ln2_rstd_})
      alloc(*b, L * N);
    alloc(lnf_mean_, N);
    alloc(lnf_rstd_, N);
    for (DeviceBuffer<T>* b : {&proj_, &projt_, &lnf_, &lnft_, &dres_, &dres_t_, &dln_, &dln_t_,
                               &datty_, &datty_t_})
      alloc(*b, N * C);
    alloc(logits_, N * Vp);
    alloc(logitst_, N * Vp);
    for (DeviceBuffer<T>* b : {&dgelu_, &dgelu_t_, &dfch_, &dfch_t_}) alloc(*b, N * 4 * C);
    alloc(dqkv_, N * 3 * C);
    alloc(dqkv_t_, N * 3 * C);
    if (fused_) {
      alloc(flse_, L * N * NH);
      alloc(fc_, L * N * NH);
      alloc(fD_, N * NH);
      alloc(fDt_, N * NH);
    } else {
      for (DeviceBuffer<float>* b : {&hq_, &hk_, &hv_, &hqt_, &hkt_, &hvt_, &hdy_, &hdyt_, &hdq_,
                                     &hdk_, &hdv_, &hdqt_, &hdkt_, &hdvt_})
        alloc(*b, N * C);
      for (DeviceBuffer<float>* b : {&P_, &Pt_, &dP_, &dPt_})
        alloc(*b, static_cast<size_t>(max_B) * NH * TT);
    }
    alloc(rowstats_, 2 * N);
    alloc(losses_, N);
    alloc(mean_loss_, 1);
  } catch (...) {
    cublasDestroy(blas_);
    throw;
  }
}

template <class T>
HvpCuda<T>::~HvpCuda() {
  cudaStreamSynchronize(stream_);  // not checked: may run during unwinding
  if (blas_) cublasDestroy(blas_);
}

template <class T>
void HvpCuda<T>::bgemm(bool ta, bool tb, int M, int Nc, int K, float alpha, const float* A,
                       int lda, long long sA, const float* B, int ldb, long long sB, float beta,
                       float* C, int ldc, long long sC, int batch) {
  // Row-major C[M,Nc] is the column-major C^T[Nc,M] = op(B)^T op(A)^T: cuBLAS gets the operands
  // swapped, each with its own transpose flag (a row-major matrix is its column-major transpose).
  CUBLAS_CHECK(cublasSgemmStridedBatched(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         ta ? CUBLAS_OP_T : CUBLAS_OP_N, Nc, M, K, &alpha, B, ldb,
                                         sB, A, lda, sA, &beta, C, ldc, sC, batch));
}

template <class T>
void HvpCuda<T>::linear_forward(T* y, T* y_t, const T* x, const T* x_t, const T* W, const T* b,
                                const T* uW, const T* ub, int N, int C, int OC) {
  matmul_forward(matmul_, y, x, W, b, N, C, OC, stream_);          // y = x W^T + b
  matmul_forward(matmul_, y_t, x_t, W, ub, N, C, OC, stream_);     // ẏ = ẋ W^T + u_b
  matmul_forward_accumulate(matmul_, y_t, x, uW, N, C, OC, stream_);  //  + x U^T
}

template <class T>
void HvpCuda<T>::linear_backward(T* dx, T* dx_t, T* huW, T* hub, const T* dy, const T* dy_t,
                                 const T* x, const T* x_t, const T* W, const T* uW, int N, int C,
                                 int OC) {
  constexpr bool kOverwrite = false;
  // dx = dy W (the primal weight gradient is not needed)
  matmul_backward(matmul_, dx, static_cast<T*>(nullptr), static_cast<T*>(nullptr), dy, x, W, N, C,
                  OC, scratch_, stream_, kOverwrite);
  // ḋx = ḋy W ; ḋW += ḋy^T x ; ḋb += colsum(ḋy)
  matmul_backward(matmul_, dx_t, huW, hub, dy_t, x, W, N, C, OC, scratch_, stream_, kOverwrite);
  // ḋx += dy U ; ḋW += dy^T ẋ
  matmul_backward(matmul_, dx_t, huW, static_cast<T*>(nullptr), dy, x_t, uW, N, C, OC, scratch_,
                  stream_, /*accumulate_dinp=*/true);
}

template <class T>
void HvpCuda<T>::attention_probs(const T* qkv, const T* qkv_t, int B, float scale) {
  const int C = cfg_.n_embd, NH = cfg_.n_head, hs = C / NH, Tn = T_, BH = B * NH;
  const long long sH = static_cast<long long>(Tn) * hs, sS = static_cast<long long>(Tn) * Tn;
  split_qkv(hq_.get(), hk_.get(), hv_.get(), qkv, B, Tn, C, NH, stream_);
  split_qkv(hqt_.get(), hkt_.get(), hvt_.get(), qkv_t, B, Tn, C, NH, stream_);
  // S = scale Q K^T, P = causal softmax(S)
  bgemm(false, true, Tn, Tn, hs, scale, hq_.get(), hs, sH, hk_.get(), hs, sH, 0.0f, P_.get(), Tn,
        sS, BH);
  causal_softmax(P_.get(), BH, Tn, stream_);
  // Ṡ = scale (Q̇ K^T + Q K̇^T), Ṗ = P (Ṡ - rowsum(P Ṡ))
  bgemm(false, true, Tn, Tn, hs, scale, hqt_.get(), hs, sH, hk_.get(), hs, sH, 0.0f, Pt_.get(),
        Tn, sS, BH);
  bgemm(false, true, Tn, Tn, hs, scale, hq_.get(), hs, sH, hkt_.get(), hs, sH, 1.0f, Pt_.get(),
        Tn, sS, BH);
  softmax_tangent(Pt_.get(), P_.get(), BH, Tn, stream_);
}

template <class T>
void HvpCuda<T>::attention_forward(T* y, T* y_t, const T* qkv, const T* qkv_t, int B, int l,
                                   float scale) {
  const int C = cfg_.n_embd, NH = cfg_.n_head, hs = C / NH, Tn = T_, BH = B * NH;
  if constexpr (std::is_same_v<T, bf16>) {
    if (fused_) {
      const size_t at = static_cast<size_t>(l) * N_ * NH;
      flash_tangent_forward(y, y_t, flse_.get() + at, fc_.get() + at, qkv, qkv_t, B, Tn, C, NH,
                            scale, stream_);
      return;
    }
  }
  const long long sH = static_cast<long long>(Tn) * hs, sS = static_cast<long long>(Tn) * Tn;
  attention_probs(qkv, qkv_t, B, scale);
  float* Y = hdq_.get();
  float* Yt = hdk_.get();
  // Y = P V ; Ẏ = Ṗ V + P V̇
  bgemm(false, false, Tn, hs, Tn, 1.0f, P_.get(), Tn, sS, hv_.get(), hs, sH, 0.0f, Y, hs, sH, BH);
  bgemm(false, false, Tn, hs, Tn, 1.0f, Pt_.get(), Tn, sS, hv_.get(), hs, sH, 0.0f, Yt, hs, sH,
        BH);
  bgemm(false, false, Tn, hs, Tn, 1.0f, P_.get(), Tn, sS, hvt_.get(), hs, sH, 1.0f, Yt, hs, sH,
        BH);
  merge_heads(y, Y, B, Tn, C, NH, stream_);
  merge_heads(y_t, Yt, B, Tn, C, NH, stream_);
}

template <class T>
void HvpCuda<T>::attention_backward(T* dqkv, T* dqkv_t, const T* dy, const T* dy_t, const T* y,
                                    const T* y_t, const T* qkv, const T* qkv_t, int B, int l,
                                    float scale) {
  const int C = cfg_.n_embd, NH = cfg_.n_head, hs = C / NH, Tn = T_, BH = B * NH;
  if constexpr (std::is_same_v<T, bf16>) {
    if (fused_) {
      const size_t at = static_cast<size_t>(l) * N_ * NH;
      flash_tangent_backward(dqkv, dqkv_t, dy, dy_t, y, y_t, qkv, qkv_t, flse_.get() + at,
                             fc_.get() + at, fD_.get(), fDt_.get(), B, Tn, C, NH, scale, stream_);
      return;
    }
  }
  (void)y;
  (void)y_t;
  const long long sH = static_cast<long long>(Tn) * hs, sS = static_cast<long long>(Tn) * Tn;
  attention_probs(qkv, qkv_t, B, scale);  // recomputed: P, Ṗ, q, k, v and tangents
  split_heads(hdy_.get(), dy, B, Tn, C, NH, stream_);
  split_heads(hdyt_.get(), dy_t, B, Tn, C, NH, stream_);
  const float *P = P_.get(), *Pt = Pt_.get(), *Q = hq_.get(), *K = hk_.get(), *V = hv_.get();
  const float *Qt = hqt_.get(), *Kt = hkt_.get(), *Vt = hvt_.get();
  const float *dY = hdy_.get(), *dYt = hdyt_.get();
  // dV = P^T dY ; ḋV = Ṗ^T dY + P^T ḋY
  bgemm(true, false, Tn, hs, Tn, 1.0f, P, Tn, sS, dY, hs, sH, 0.0f, hdv_.get(), hs, sH, BH);
  bgemm(true, false, Tn, hs, Tn, 1.0f, Pt, Tn, sS, dY, hs, sH, 0.0f, hdvt_.get(), hs, sH, BH);
  bgemm(true, false, Tn, hs, Tn, 1.0f, P, Tn, sS, dYt, hs, sH, 1.0f, hdvt_.get(), hs, sH, BH);
  // dP = dY V^T ; ḋP = ḋY V^T + dY V̇^T ; then dS, ḋS in place
  bgemm(false, true, Tn, Tn, hs, 1.0f, dY, hs, sH, V, hs, sH, 0.0f, dP_.get(), Tn, sS, BH);
  bgemm(false, true, Tn, Tn, hs, 1.0f, dYt, hs, sH, V, hs, sH, 0.0f, dPt_.get(), Tn, sS, BH);
  bgemm(false, true, Tn, Tn, hs, 1.0f, dY, hs, sH, Vt, hs, sH, 1.0f, dPt_.get(), Tn, sS, BH);
  softmax_backward_tangent(dP_.get(), dPt_.get(), P, Pt, BH, Tn, stream_);
  const float *dS = dP_.get(), *dSt = dPt_.get();
  // dQ = scale dS K ; ḋQ = scale (ḋS K + dS K̇)
  bgemm(false, false, Tn, hs, Tn, scale, dS, Tn, sS, K, hs, sH, 0.0f, hdq_.get(), hs, sH, BH);
  bgemm(false, false, Tn, hs, Tn, scale, dSt, Tn, sS, K, hs, sH, 0.0f, hdqt_.get(), hs, sH, BH);
  bgemm(false, false, Tn, hs, Tn, scale, dS, Tn, sS, Kt, hs, sH, 1.0f, hdqt_.get(), hs, sH, BH);
  // dK = scale dS^T Q ; ḋK = scale (ḋS^T Q + dS^T Q̇)
  bgemm(true, false, Tn, hs, Tn, scale, dS, Tn, sS, Q, hs, sH, 0.0f, hdk_.get(), hs, sH, BH);
  bgemm(true, false, Tn, hs, Tn, scale, dSt, Tn, sS, Q, hs, sH, 0.0f, hdkt_.get(), hs, sH, BH);
  bgemm(true, false, Tn, hs, Tn, scale, dS, Tn, sS, Qt, hs, sH, 1.0f, hdkt_.get(), hs, sH, BH);
  merge_qkv(dqkv, hdq_.get(), hdk_.get(), hdv_.get(), B, Tn, C, NH, stream_);
  merge_qkv(dqkv_t, hdqt_.get(), hdkt_.get(), hdvt_.get(), B, Tn, C, NH, stream_);
}

template <class T>
float HvpCuda<T>::accumulate(const T* params, const T* u, const int* inp_host,
                             const int* tgt_host, int B, float scale, T* hu) {
  if (B < 1 || B > max_B_) throw std::invalid_argument("HvpCuda: B must be in [1, max_B]");
  const int C = cfg_.n_embd, L = cfg_.n_layer, V = cfg_.vocab_size, Vp = cfg_.padded_vocab_size;
  const int N = B * T_;
  const size_t NC = static_cast<size_t>(N) * C;
  for (int n = 0; n < N; ++n) {
    if (inp_host[n] < 0 || inp_host[n] >= V)
      throw std::out_of_range("HvpCuda: token id out of range");
    if (tgt_host[n] < 0 || tgt_host[n] >= V)
      throw std::out_of_range("HvpCuda: target id out of range");
  }
  inp_.upload(inp_host, N, stream_);
  targets_.upload(tgt_host, N, stream_);
  buckets_host_.build(inp_host, N, Vp);
  buckets_.upload(buckets_host_, stream_);
  auto zero = [&](T* v, size_t n) { SGPT_CUDA_CHECK(cudaMemsetAsync(v, 0, n * sizeof(T), stream_)); };
  auto X = [&](int l) { return act(x_, l, C); };
  auto Xt = [&](int l) { return act(xt_, l, C); };
  auto scale_of = [&](int l) { return static_cast<float>(sgpt::attention_scale(cfg_, l)); };

  // ---------------------------------------------------------------- forward with tangents
  encoder_forward(X(0), inp_.get(), tensor(params, kWte), tensor(params, kWpe), B, T_, C, stream_);
  encoder_forward(Xt(0), inp_.get(), tensor(u, kWte), tensor(u, kWpe), B, T_, C, stream_);
  for (int l = 0; l < L; ++l) {
    T *ln1 = act(ln1_, l, C), *ln1t = act(ln1t_, l, C);
    T *qkv = act(qkv_, l, 3 * C), *qkvt = act(qkvt_, l, 3 * C);
    T *atty = act(atty_, l, C), *attyt = act(attyt_, l, C);
    T *res2 = act(res2_, l, C), *res2t = act(res2t_, l, C);
    T *ln2 = act(ln2_, l, C), *ln2t = act(ln2t_, l, C);
    T *fch = act(fch_, l, 4 * C), *fcht = act(fcht_, l, 4 * C);
    T *gelu = act(gelu_, l, 4 * C), *gelut = act(gelut_, l, 4 * C);
    layernorm_forward(ln1, stat(ln1_mean_, l), stat(ln1_rstd_, l), X(l), tensor(params, kLn1w, l),
                      tensor(params, kLn1b, l), N, C, stream_);
    layernorm_forward_tangent(ln1t, X(l), Xt(l), stat(ln1_mean_, l), stat(ln1_rstd_, l),
                              tensor(params, kLn1w, l), tensor(u, kLn1w, l), tensor(u, kLn1b, l),
                              N, C, stream_);
    linear_forward(qkv, qkvt, ln1, ln1t, tensor(params, kQkvw, l), tensor(params, kQkvb, l),
                   tensor(u, kQkvw, l), tensor(u, kQkvb, l), N, C, 3 * C);
    attention_forward(atty, attyt, qkv, qkvt, B, l, scale_of(l));
    linear_forward(proj_.get(), projt_.get(), atty, attyt, tensor(params, kAttprojw, l),
                   tensor(params, kAttprojb, l), tensor(u, kAttprojw, l), tensor(u, kAttprojb, l),
                   N, C, C);
    residual_forward(res2, X(l), proj_.get(), NC, stream_);
    residual_forward(res2t, Xt(l), projt_.get(), NC, stream_);
    layernorm_forward(ln2, stat(ln2_mean_, l), stat(ln2_rstd_, l), res2, tensor(params, kLn2w, l),
                      tensor(params, kLn2b, l), N, C, stream_);
    layernorm_forward_tangent(ln2t, res2, res2t, stat(ln2_mean_, l), stat(ln2_rstd_, l),
                              tensor(params, kLn2w, l), tensor(u, kLn2w, l), tensor(u, kLn2b, l),
                              N, C, stream_);
    linear_forward(fch, fcht, ln2, ln2t, tensor(params, kFcw, l), tensor(params, kFcb, l),
                   tensor(u, kFcw, l), tensor(u, kFcb, l), N, C, 4 * C);
    gelu_forward(gelu, fch, 4 * NC, stream_);
    gelu_forward_tangent(gelut, fch, fcht, 4 * NC, stream_);
    linear_forward(proj_.get(), projt_.get(), gelu, gelut, tensor(params, kFcprojw, l),
                   tensor(params, kFcprojb, l), tensor(u, kFcprojw, l), tensor(u, kFcprojb, l), N,
                   4 * C, C);
    residual_forward(X(l + 1), res2, proj_.get(), NC, stream_);
    residual_forward(Xt(l + 1), res2t, projt_.get(), NC, stream_);
  }
  layernorm_forward(lnf_.get(), lnf_mean_.get(), lnf_rstd_.get(), X(L), tensor(params, kLnfw),
                    tensor(params, kLnfb), N, C, stream_);
  layernorm_forward_tangent(lnft_.get(), X(L), Xt(L), lnf_mean_.get(), lnf_rstd_.get(),
                            tensor(params, kLnfw), tensor(u, kLnfw), tensor(u, kLnfb), N, C,
                            stream_);
  // Tied head: logits = lnf wte^T (no bias).
  linear_forward(logits_.get(), logitst_.get(), lnf_.get(), lnft_.get(), tensor(params, kWte),
                 static_cast<const T*>(nullptr), tensor(u, kWte), static_cast<const T*>(nullptr),
                 N, C, Vp);
  // Loss, dlogits and its tangent, in place; dloss = scale / N makes every tangent below (and so
  // what lands in hu) scale * H u.
  crossentropy_tangent(losses_.get(), logits_.get(), logitst_.get(), targets_.get(),
                       scale / static_cast<float>(N), N, V, Vp, stream_);
  mean_loss(mean_loss_.get(), losses_.get(), N, stream_);

  // ---------------------------------------------------------------- backward with tangents
  linear_backward(dln_.get(), dln_t_.get(), tensor(hu, kWte), static_cast<T*>(nullptr),
                  logits_.get(), logitst_.get(), lnf_.get(), lnft_.get(), tensor(params, kWte),
                  tensor(u, kWte), N, C, Vp);
  zero(dres_.get(), NC);
  zero(dres_t_.get(), NC);
  layernorm_backward_tangent(dres_.get(), dres_t_.get(), tensor(hu, kLnfw), tensor(hu, kLnfb),
                             dln_.get(), dln_t_.get(), X(L), Xt(L), tensor(params, kLnfw),
                             tensor(u, kLnfw), lnf_mean_.get(), lnf_rstd_.get(), rowstats_.get(),
                             N, C, scratch_, stream_);
  for (int l = L - 1; l >= 0; --l) {
    // x_{l+1} = res2 + fcproj(gelu(fc(ln2(res2)))): dres is the gradient of the fcproj output.
    linear_backward(dgelu_.get(), dgelu_t_.get(), tensor(hu, kFcprojw, l), tensor(hu, kFcprojb, l),
                    dres_.get(), dres_t_.get(), act(gelu_, l, 4 * C), act(gelut_, l, 4 * C),
                    tensor(params, kFcprojw, l), tensor(u, kFcprojw, l), N, 4 * C, C);
    zero(dfch_.get(), 4 * NC);
    zero(dfch_t_.get(), 4 * NC);
    gelu_backward_tangent(dfch_.get(), dfch_t_.get(), act(fch_, l, 4 * C), act(fcht_, l, 4 * C),
                          dgelu_.get(), dgelu_t_.get(), 4 * NC, stream_);
    linear_backward(dln_.get(), dln_t_.get(), tensor(hu, kFcw, l), tensor(hu, kFcb, l),
                    dfch_.get(), dfch_t_.get(), act(ln2_, l, C), act(ln2t_, l, C),
                    tensor(params, kFcw, l), tensor(u, kFcw, l), N, C, 4 * C);
    // dres += d ln2 / d res2 (dres becomes d res2)
    layernorm_backward_tangent(dres_.get(), dres_t_.get(), tensor(hu, kLn2w, l),
                               tensor(hu, kLn2b, l), dln_.get(), dln_t_.get(), act(res2_, l, C),
                               act(res2t_, l, C), tensor(params, kLn2w, l), tensor(u, kLn2w, l),
                               stat(ln2_mean_, l), stat(ln2_rstd_, l), rowstats_.get(), N, C,
                               scratch_, stream_);
    // res2 = x_l + attproj(atty): dres is also the gradient of the attproj output.
    linear_backward(datty_.get(), datty_t_.get(), tensor(hu, kAttprojw, l),
                    tensor(hu, kAttprojb, l), dres_.get(), dres_t_.get(), act(atty_, l, C),
                    act(attyt_, l, C), tensor(params, kAttprojw, l), tensor(u, kAttprojw, l), N, C,
                    C);
    attention_backward(dqkv_.get(), dqkv_t_.get(), datty_.get(), datty_t_.get(),
                       act(atty_, l, C), act(attyt_, l, C), act(qkv_, l, 3 * C),
                       act(qkvt_, l, 3 * C), B, l, scale_of(l));
    linear_backward(dln_.get(), dln_t_.get(), tensor(hu, kQkvw, l), tensor(hu, kQkvb, l),
                    dqkv_.get(), dqkv_t_.get(), act(ln1_, l, C), act(ln1t_, l, C),
                    tensor(params, kQkvw, l), tensor(u, kQkvw, l), N, C, 3 * C);
    // dres += d ln1 / d x_l (dres becomes d x_l)
    layernorm_backward_tangent(dres_.get(), dres_t_.get(), tensor(hu, kLn1w, l),
                               tensor(hu, kLn1b, l), dln_.get(), dln_t_.get(), X(l), Xt(l),
                               tensor(params, kLn1w, l), tensor(u, kLn1w, l), stat(ln1_mean_, l),
                               stat(ln1_rstd_, l), rowstats_.get(), N, C, scratch_, stream_);
  }
  // x_0 = wte[tok] + wpe[t]: the tangent of its gradient lands in hu's wte and wpe rows.
  encoder_backward(tensor(hu, kWte), tensor(hu, kWpe), dres_t_.get(), buckets_, B, T_, C,
                   stream_);

  float loss = 0.0f;
  SGPT_CUDA_CHECK(cudaMemcpyAsync(&loss, mean_loss_.get(), sizeof(float), cudaMemcpyDeviceToHost,
                                  stream_));
  SGPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return loss;
}

template class HvpCuda<float>;
template class HvpCuda<bf16>;

}  // namespace sgpt::cuda
