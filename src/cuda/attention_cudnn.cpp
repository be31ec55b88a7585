// cuDNN fused attention through the backend graph API. See attention_cudnn.h for the contract.
//
// Every descriptor is created with cudnnBackendCreateDescriptor, filled with
// cudnnBackendSetAttribute and finalized; a graph is a list of operation descriptors over tensor
// descriptors linked by unique ids (uids). Tensors that live in memory (q, k, v, o, stats, dO, dq,
// dk, dv) are non-virtual and get their pointers in the variant pack at execution; intermediate
// results are virtual (never materialised by a fused engine); the scale, the mask value and the
// constant 1 are by-value scalars whose variant-pack pointers are host addresses.
//
// Layouts (our [B,T,3C] qkv buffer and [B,T,C] outputs, seen as [B,NH,T,hs] without copies):
//   q, k, v, dq, dk, dv  dims [B,NH,T,hs]  strides [3CT, hs, 3C, 1]   (k at +C, v at +2C)
//   o, dO                dims [B,NH,T,hs]  strides [CT, hs, C, 1]
//   k^T, v^T             dims [B,NH,hs,T]  strides [3CT, hs, 1, 3C]   (same memory as k, v)
//   stats (lse)          dims [B,NH,T,1]   strides [NH*T, T, 1, 1]
#include "cuda/attention_cudnn.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <cstdint>
#include <limits>
#include <map>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/check.h"

namespace sgpt::cuda {

bool CudnnAttention::supports(int C, int NH) {
  if (NH < 1 || C % NH != 0) return false;
  const int hs = C / NH;
  return hs % 8 == 0 && hs <= 128 && C % 8 == 0;
}

#if defined(SGPT_WITH_CUDNN)

namespace {

// CUDNN_CHECK with cuDNN's own description of the last error appended (it names the attribute
// or the unsupported pattern, which the status code alone does not).
void check_cudnn_detail(cudnnStatus_t s, const char* expr, const char* file, int line) {
  if (s == CUDNN_STATUS_SUCCESS) return;
  std::string detail = cudnnGetErrorString(s);
  char msg[2048] = {0};
  cudnnGetLastErrorString(msg, sizeof msg);
  if (msg[0] != '\0') detail += std::string(": ") + msg;
  throw_error("cuDNN", detail, expr, file, line);
}
#define SGPT_CUDNN(expr) check_cudnn_detail((expr), #expr, __FILE__, __LINE__)

using Dims = std::array<int64_t, 4>;
using D = cudnnBackendDescriptor_t;

// Owns one backend descriptor.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) {
    SGPT_CUDNN(cudnnBackendCreateDescriptor(type, &d_));
  }
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  Desc& operator=(Desc&&) = delete;
  D get() const { return d_; }

 private:
  D d_ = nullptr;
};

// Tensor uids. Virtual tensors are numbered from kFirstVirtual.
enum : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kScale, kMaskValue, kOne, kFirstVirtual = 100
};

// A finalized execution plan and every descriptor it was built from (kept alive with it).
struct Plan {
  std::vector<Desc> descs;
  D plan = nullptr;
  int64_t workspace = 0;
  int64_t engine = -1;
};

void set(D d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t n,
         const void* value) {
  SGPT_CUDNN(cudnnBackendSetAttribute(d, name, type, n, value));
}

// Builds one operation graph and turns it into an execution plan.
class GraphBuilder {
 public:
  explicit GraphBuilder(cudnnHandle_t handle) : handle_(handle) {}

  D make(cudnnBackendDescriptorType_t type) {
    descs_.emplace_back(type);
    return descs_.back().get();
  }

  D tensor(int64_t uid, cudnnDataType_t type, const Dims& dim, const Dims& stride,
           bool is_virtual, bool by_value = false) {
    D t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim.data());
    set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, stride.data());
    set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    SGPT_CUDNN(cudnnBackendFinalize(t));
    return t;
  }
  D virt(cudnnDataType_t type, const Dims& dim, const Dims& stride) {
    return tensor(next_virtual_++, type, dim, stride, true);
  }
  D scalar(int64_t uid) {
    return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }

  // y = mode(x [, b [, t]]); math in `math`; `axis` for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, D y, D x, D b = nullptr, D t = nullptr,
                 cudnnDataType_t math = CUDNN_DATA_FLOAT, int64_t axis = -1) {
    D pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (axis >= 0) set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    SGPT_CUDNN(cudnnBackendFinalize(pw));
    D op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    const float one = 1.0f;
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (b) set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    if (t) set(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
    SGPT_CUDNN(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }

  // c = a @ b (batched over the first two dims), fp32 accumulation.
  void matmul(D c, D a, D b) {
    D mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    SGPT_CUDNN(cudnnBackendFinalize(mm));
    D op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm);
    SGPT_CUDNN(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }

  // y = reduce(x) over the dimensions where y has extent 1.
  void reduction(cudnnReduceTensorOp_t mode, D y, D x) {
    D rd = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    set(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    set(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    SGPT_CUDNN(cudnnBackendFinalize(rd));
    D op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd);
    SGPT_CUDNN(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }

  // y = x seen with y's dims and strides (a transpose when the strides are swapped).
  void reshape(D y, D x) {
    D op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    SGPT_CUDNN(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }

  // Causal mask: y = (row >= col) ? x : mask_value, row/col generated along dims 2 and 3.
  D causal_mask(D x, D mask_value, const Dims& dim, const Dims& stride) {
    D row = virt(CUDNN_DATA_INT32, dim, stride);
    pointwise(CUDNN_POINTWISE_GEN_INDEX, row, x, nullptr, nullptr, CUDNN_DATA_INT32, 2);
    D col = virt(CUDNN_DATA_INT32, dim, stride);
    pointwise(CUDNN_POINTWISE_GEN_INDEX, col, x, nullptr, nullptr, CUDNN_DATA_INT32, 3);
    D keep = virt(CUDNN_DATA_BOOLEAN, dim, stride);
    pointwise(CUDNN_POINTWISE_CMP_GE, keep, row, col, nullptr, CUDNN_DATA_BOOLEAN);
    D y = virt(CUDNN_DATA_FLOAT, dim, stride);
    pointwise(CUDNN_POINTWISE_BINARY_SELECT, y, x, mask_value, keep);
    return y;
  }

  // The operation graph, the heuristics' engine configurations in their order of preference,
  // and the first one that is deterministic and finalizes into a plan. On failure returns null
  // and says why in *why.
  std::unique_ptr<Plan> plan(std::string* why) {
    D graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
        static_cast<int64_t>(ops_.size()), ops_.data());
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_);
    if (!finalize_ok(graph, "operation graph", why)) return nullptr;

    D heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (!finalize_ok(heur, "engine heuristics", why)) return nullptr;
    int64_t count = 0;
    SGPT_CUDNN(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    std::vector<D> cfgs;
    for (int64_t i = 0; i < count; ++i) cfgs.push_back(make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    SGPT_CUDNN(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &count,
                                        cfgs.data()));
    if (count == 0) *why += "heuristics returned no engine; ";
    for (int64_t i = 0; i < count; ++i) {
      D engine = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      int64_t n = 0;
      SGPT_CUDNN(cudnnBackendGetAttribute(cfgs[i], CUDNN_ATTR_ENGINECFG_ENGINE,
                                          CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &engine));
      int64_t index = -1;
      SGPT_CUDNN(cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX,
                                          CUDNN_TYPE_INT64, 1, &n, &index));
      cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
      int64_t n_notes = 0;
      SGPT_CUDNN(cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                          CUDNN_TYPE_NUMERICAL_NOTE,
                                          CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n_notes, notes));
      bool deterministic = true;
      for (int64_t j = 0; j < n_notes; ++j)
        if (notes[j] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) deterministic = false;
      if (!deterministic) {
        *why += "engine " + std::to_string(index) + " is non-deterministic; ";
        continue;
      }
      D plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_);
      set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
      if (!finalize_ok(plan, "plan with engine " + std::to_string(index), why)) continue;
      auto out = std::make_unique<Plan>();
      SGPT_CUDNN(cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                          CUDNN_TYPE_INT64, 1, &n, &out->workspace));
      out->plan = plan;
      out->engine = index;
      out->descs = std::move(descs_);
      return out;
    }
    return nullptr;
  }

 private:
  static bool finalize_ok(D d, const std::string& what, std::string* why) {
    const cudnnStatus_t s = cudnnBackendFinalize(d);
    if (s == CUDNN_STATUS_SUCCESS) return true;
    char msg[2048] = {0};
    cudnnGetLastErrorString(msg, sizeof msg);
    *why += what + ": " + cudnnGetErrorString(s) + (msg[0] ? std::string(" (") + msg + ")" : "") +
            "; ";
    return false;
  }

  cudnnHandle_t handle_;
  std::vector<Desc> descs_;
  std::vector<D> ops_;
  int64_t next_virtual_ = kFirstVirtual;
};

constexpr cudnnDataType_t kBF = CUDNN_DATA_BFLOAT16;
constexpr cudnnDataType_t kF32 = CUDNN_DATA_FLOAT;

struct Shapes {
  Dims qkv_dim, qkv_stride, t_dim, t_stride, o_stride, s_dim, s_stride, st_stride, r_dim, r_stride;
  Shapes(int B, int T, int C, int NH) {
    const int64_t b = B, t = T, c = C, nh = NH, hs = C / NH;
    qkv_dim = {b, nh, t, hs};
    qkv_stride = {3 * c * t, hs, 3 * c, 1};
    t_dim = {b, nh, hs, t};
    t_stride = {3 * c * t, hs, 1, 3 * c};
    o_stride = {c * t, hs, c, 1};
    s_dim = {b, nh, t, t};
    s_stride = {nh * t * t, t * t, t, 1};
    st_stride = {nh * t * t, t * t, 1, t};  // s_dim read transposed
    r_dim = {b, nh, t, 1};
    r_stride = {nh * t, t, 1, 1};
  }
};

// Forward: o = softmax(mask(scale * q k^T)) v, stats = rowmax + log(rowsum(exp(. - rowmax))).
std::unique_ptr<Plan> build_forward(cudnnHandle_t handle, int B, int T, int C, int NH,
                                    std::string* why) {
  const Shapes s(B, T, C, NH);
  GraphBuilder g(handle);
  D q = g.tensor(kQ, kBF, s.qkv_dim, s.qkv_stride, false);
  D kt = g.tensor(kK, kBF, s.t_dim, s.t_stride, false);
  D v = g.tensor(kV, kBF, s.qkv_dim, s.qkv_stride, false);
  D o = g.tensor(kO, kBF, s.qkv_dim, s.o_stride, false);
  D stats = g.tensor(kStats, kF32, s.r_dim, s.r_stride, false);
  D scale = g.scalar(kScale), mask_value = g.scalar(kMaskValue);

  D logits = g.virt(kF32, s.s_dim, s.s_stride);
  g.matmul(logits, q, kt);
  D scaled = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_MUL, scaled, logits, scale);
  D masked = g.causal_mask(scaled, mask_value, s.s_dim, s.s_stride);
  D rowmax = g.virt(kF32, s.r_dim, s.r_stride);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, rowmax, masked);
  D shifted = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_SUB, shifted, masked, rowmax);
  D e = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_EXP, e, shifted);
  D rowsum = g.virt(kF32, s.r_dim, s.r_stride);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, rowsum, e);
  D logsum = g.virt(kF32, s.r_dim, s.r_stride);
  g.pointwise(CUDNN_POINTWISE_LOG, logsum, rowsum);
  g.pointwise(CUDNN_POINTWISE_ADD, stats, rowmax, logsum);
  D p = g.virt(kBF, s.s_dim, s.s_stride);  // the second matmul takes P in the i/o type
  g.pointwise(CUDNN_POINTWISE_DIV, p, e, rowsum);
  g.matmul(o, p, v);
  return g.plan(why);
}

// Backward. `k_type` is the type of the virtual [B,NH,T,hs] view of k^T that feeds dq = dS k.
std::unique_ptr<Plan> build_backward(cudnnHandle_t handle, int B, int T, int C, int NH,
                                     cudnnDataType_t k_type, std::string* why) {
  const Shapes s(B, T, C, NH);
  const int64_t t = T, nh = NH, hs = C / NH;
  GraphBuilder g(handle);
  D q = g.tensor(kQ, kBF, s.qkv_dim, s.qkv_stride, false);
  D kt = g.tensor(kK, kBF, s.t_dim, s.t_stride, false);
  D vt = g.tensor(kV, kBF, s.t_dim, s.t_stride, false);
  D o = g.tensor(kO, kBF, s.qkv_dim, s.o_stride, false);
  D dout = g.tensor(kDO, kBF, s.qkv_dim, s.o_stride, false);
  D stats = g.tensor(kStats, kF32, s.r_dim, s.r_stride, false);
  D dq = g.tensor(kDQ, kBF, s.qkv_dim, s.qkv_stride, false);
  D dk = g.tensor(kDK, kBF, s.qkv_dim, s.qkv_stride, false);
  D dv = g.tensor(kDV, kBF, s.qkv_dim, s.qkv_stride, false);
  D scale = g.scalar(kScale), mask_value = g.scalar(kMaskValue), one = g.scalar(kOne);

  // rowdot = rowsum(dO * O): the softmax-backward term.
  D prod = g.virt(kF32, s.qkv_dim, {nh * t * hs, t * hs, hs, 1});
  g.pointwise(CUDNN_POINTWISE_MUL, prod, dout, o);
  D rowdot0 = g.virt(kF32, s.r_dim, s.r_stride);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, rowdot0, prod);
  D rowdot = g.virt(kF32, s.r_dim, s.r_stride);
  g.pointwise(CUDNN_POINTWISE_MUL, rowdot, rowdot0, one);

  // P = exp(mask(scale * q k^T) - stats).
  D logits = g.virt(kF32, s.s_dim, s.s_stride);
  g.matmul(logits, q, kt);
  D scaled = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_MUL, scaled, logits, scale);
  D masked = g.causal_mask(scaled, mask_value, s.s_dim, s.s_stride);
  D shifted = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_SUB, shifted, masked, stats);
  D p = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_EXP, p, shifted);

  // dv = P^T dO.
  D pt = g.virt(kBF, s.s_dim, s.st_stride);
  g.reshape(pt, p);
  g.matmul(dv, pt, dout);

  // dS = P * (dO v^T - rowdot) * scale.
  D dp = g.virt(kF32, s.s_dim, s.s_stride);
  g.matmul(dp, dout, vt);
  D dp1 = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_MUL, dp1, dp, one);
  D dp2 = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_SUB, dp2, dp1, rowdot);
  D ds0 = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_MUL, ds0, dp2, p);
  D ds = g.virt(kF32, s.s_dim, s.s_stride);
  g.pointwise(CUDNN_POINTWISE_MUL, ds, ds0, scale);

  // dk = dS^T q; dq = dS k.
  D dst = g.virt(kBF, s.s_dim, s.st_stride);
  g.reshape(dst, ds);
  g.matmul(dk, dst, q);
  D k = g.virt(k_type, s.qkv_dim, s.qkv_stride);
  g.reshape(k, kt);
  g.matmul(dq, ds, k);
  return g.plan(why);
}

void execute(cudnnHandle_t handle, const Plan& plan, const std::vector<int64_t>& uids,
             const std::vector<void*>& ptrs, void* workspace) {
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  set(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
      static_cast<int64_t>(uids.size()), uids.data());
  set(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
      static_cast<int64_t>(ptrs.size()), ptrs.data());
  set(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  SGPT_CUDNN(cudnnBackendFinalize(pack.get()));
  SGPT_CUDNN(cudnnBackendExecute(handle, plan.plan, pack.get()));
}

std::string shape_text(int B, int T, int C, int NH) {
  return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " C=" + std::to_string(C) +
         " NH=" + std::to_string(NH);
}

}  // namespace

struct CudnnAttention::Impl {
  cudnnHandle_t handle = nullptr;
  std::map<std::array<int, 5>, std::unique_ptr<Plan>> plans;  // {backward?, B, T, C, NH}
  DeviceBuffer<unsigned char> workspace;  // used when the caller lends none
  int64_t max_workspace = 0;               // the largest workspace of the plans built so far
  int64_t fwd_engine = -1, bwd_engine = -1;

  void* own_workspace(int64_t bytes) {
    if (workspace.size() < static_cast<size_t>(bytes)) workspace.resize(static_cast<size_t>(bytes));
    return workspace.get();
  }

  ~Impl() {
    plans.clear();  // plans reference the handle
    if (handle) cudnnDestroy(handle);
  }

  Plan& plan(bool backward, int B, int T, int C, int NH) {
    auto& slot = plans[{backward ? 1 : 0, B, T, C, NH}];
    if (slot) return *slot;
    if (!supports(C, NH))
      throw std::runtime_error("cuDNN attention: unsupported shape " + shape_text(B, T, C, NH) +
                               " (needs head size C/NH a multiple of 8, at most 128)");
    std::string why;
    if (!backward) {
      slot = build_forward(handle, B, T, C, NH, &why);
    } else {
      // The view of k^T feeding dq = dS k: bf16 (its memory type) first, fp32 as cuDNN's
      // frontend leaves unset virtual types.
      slot = build_backward(handle, B, T, C, NH, kBF, &why);
      if (!slot) slot = build_backward(handle, B, T, C, NH, kF32, &why);
    }
    if (!slot) {
      plans.erase({backward ? 1 : 0, B, T, C, NH});
      throw std::runtime_error(std::string("cuDNN attention: no deterministic engine for the ") +
                               (backward ? "backward" : "forward") + " graph, " +
                               shape_text(B, T, C, NH) + ": " + why);
    }
    (backward ? bwd_engine : fwd_engine) = slot->engine;
    max_workspace = std::max(max_workspace, slot->workspace);
    return *slot;
  }
};

bool CudnnAttention::built() { return true; }
std::string CudnnAttention::runtime_version() {
  const size_t v = cudnnGetVersion();
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

CudnnAttention::CudnnAttention() : impl_(std::make_unique<Impl>()) {
  SGPT_CUDNN(cudnnCreate(&impl_->handle));
}

CudnnAttention::~CudnnAttention() = default;

void CudnnAttention::prepare(int B, int T, int C, int NH) {
  impl_->plan(false, B, T, C, NH);
  impl_->plan(true, B, T, C, NH);
}

size_t CudnnAttention::workspace_bytes(int B, int T, int C, int NH) {
  const int64_t f = impl_->plan(false, B, T, C, NH).workspace;
  const int64_t b = impl_->plan(true, B, T, C, NH).workspace;
  return static_cast<size_t>(std::max(f, b));
}

size_t CudnnAttention::own_workspace_bytes() const { return impl_->workspace.size(); }

namespace {
// The tensors are declared 16-byte aligned to cuDNN; a pointer that is not would be undefined.
void check_aligned(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
      throw std::invalid_argument("cuDNN attention: a tensor pointer is not 16-byte aligned");
}
}  // namespace

void CudnnAttention::forward(bf16* out, float* lse, const bf16* inp, int B, int T, int C, int NH,
                             float scale, cudaStream_t stream, void* workspace) {
  check_aligned({out, lse, inp, workspace});
  Plan& p = impl_->plan(false, B, T, C, NH);
  if (!workspace) workspace = impl_->own_workspace(p.workspace);
  SGPT_CUDNN(cudnnSetStream(impl_->handle, stream));
  float mask_value = std::numeric_limits<float>::lowest();
  auto* q = const_cast<bf16*>(inp);
  execute(impl_->handle, p, {kQ, kK, kV, kO, kStats, kScale, kMaskValue},
          {q, q + C, q + 2 * C, out, lse, &scale, &mask_value}, workspace);
}

void CudnnAttention::backward(bf16* dinp, const bf16* dout, const bf16* inp, const bf16* out,
                              const float* lse, int B, int T, int C, int NH, float scale,
                              cudaStream_t stream, void* workspace) {
  check_aligned({dinp, dout, inp, out, lse, workspace});
  Plan& p = impl_->plan(true, B, T, C, NH);
  if (!workspace) workspace = impl_->own_workspace(p.workspace);
  SGPT_CUDNN(cudnnSetStream(impl_->handle, stream));
  float mask_value = std::numeric_limits<float>::lowest(), one = 1.0f;
  auto* q = const_cast<bf16*>(inp);
  execute(impl_->handle, p,
          {kQ, kK, kV, kO, kDO, kStats, kDQ, kDK, kDV, kScale, kMaskValue, kOne},
          {q, q + C, q + 2 * C, const_cast<bf16*>(out), const_cast<bf16*>(dout),
           const_cast<float*>(lse), dinp, dinp + C, dinp + 2 * C, &scale, &mask_value, &one},
          workspace);
}

std::string CudnnAttention::describe() const {
  const size_t v = cudnnGetVersion();
  std::string s = "cuDNN " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
                  std::to_string(v % 100);
  if (impl_->fwd_engine >= 0) s += ", forward engine " + std::to_string(impl_->fwd_engine);
  if (impl_->bwd_engine >= 0) s += ", backward engine " + std::to_string(impl_->bwd_engine);
  if (impl_->max_workspace > 0)
    s += ", workspace " + std::to_string((impl_->max_workspace + (1 << 20) - 1) >> 20) + " MiB";
  return s;
}

#else  // built without cuDNN

struct CudnnAttention::Impl {};
bool CudnnAttention::built() { return false; }
std::string CudnnAttention::runtime_version() { return ""; }
CudnnAttention::CudnnAttention() {
  throw std::runtime_error("cuDNN attention: this build has no cuDNN (CMake did not find libcudnn)");
}
CudnnAttention::~CudnnAttention() = default;
void CudnnAttention::prepare(int, int, int, int) {}
size_t CudnnAttention::workspace_bytes(int, int, int, int) { return 0; }
size_t CudnnAttention::own_workspace_bytes() const { return 0; }
void CudnnAttention::forward(bf16*, float*, const bf16*, int, int, int, int, float, cudaStream_t,
                             void*) {}
void CudnnAttention::backward(bf16*, const bf16*, const bf16*, const bf16*, const float*, int, int,
                              int, int, float, cudaStream_t, void*) {}
std::string CudnnAttention::describe() const { return "no cuDNN"; }

#endif

}  // namespace sgpt::cuda
