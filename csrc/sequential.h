// The sequential engine: exact curvature of chains of Linear layers and pointwise
// activations ending in cross-entropy or MSE, device-generic.
//
// Per sample n the chain is
//     a_0 = x,   z_l = W_l a_{l-1} + b_l,   a_l = s_l(z_l)   (l = 1..L),   f = a_L,
// with s_l the (possibly empty) composition of the activations after Linear l, and
// the loss is given in the normalized form of sequential_math.h (coefficients c_n,
// targets T_n; hesskit/engines/chain.py builds them from nn.CrossEntropyLoss and
// nn.MSELoss). Three algorithms share one forward and gradient pass:
//
//  * sequential_hbp: backward Hessian propagation (Dangel, Harmeling & Hennig 2020):
//        M_L     = D_L H_f D_L + diag(s_L'' . g_f),
//        M_{l-1} = D_{l-1} W_l^T M_l W_l D_{l-1} + diag(s_{l-1}'' . W_l^T g_l),
//    D = diag(s'), g_l = dl/dz_l; M_l = d^2 l / dz_l^2 per sample. The exact block
//    of Linear l is sum_n (a~ a~^T) (x) M_l with a~ = [a_{l-1}; 1] (kron_block).
//    GGN: drop the diag(s'' . g) terms; functional (H - G): H_f := 0.
//  * sequential_matmat: Hessian (or GGN) times k tangents at once: forward,
//    R-forward (Pearlmutter 1994), backward, R-backward, the k tangents carried as
//    one (width, k, N) state so that each step is one GEMM plus fused pointwise
//    kernels.
//  * sequential_dense: the explicit matrix from per-sample Kronecker factors. For
//    layers l <= m (rows of l, columns of m), with J_{l<-m} = (dz_m/dz_l)^T =
//    P_{lm} W_m^T and P_{lm} = (da_{m-1}/dz_l)^T,
//        H_{lm} = sum_n (J_{l<-m} M_m) (x) (a~_{l-1} a~_{m-1}^T)        [GGN-like part]
//               + sum_n a~_{l-1}[q] g_m[i] P_{lm}[p, j]  (W_m columns)  [residual, l < m],
//    each a single GEMM over the samples; the lower triangle is the transpose.
//
// The pointwise kernels are supplied by a policy class K (CPU: csrc/cpu/sequential.cpp,
// CUDA: csrc/cuda/sequential.cpp) with static members
//     activation_forward(z, prog, a, d1, d2)        a, s', s'' of (N, m) pre-activations
//     loss_head(loss, f, T, c, p, g)                 softmax (or identity) and dl/df
//     output_hessian_apply(loss, p, c, U, Y, cm)     Y = H_f,n U per sample n and tangent j,
//                                                    U (N, k, C), or (C, k, N) when cm; Y may be U
//     sym_scale_add_diag(M, s, r)                    M = sym(M) . s s^T + diag(r), in place
//     broadcast_fma(X, s, Y, q, out)                 out[a, j, c] = s[a, c] X[a, j, c] + q[a, c] Y[a, j, c]
// (r, Y and q may be undefined tensors: the term is left out; out may be X).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/DeviceType.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "message.h"
#include "sequential_math.h"

namespace hesskit {
namespace seq {

enum class Kind { Hessian, GGN, Functional };

inline Kind parse_kind(c10::string_view kind) {
  if (kind == "hessian") return Kind::Hessian;
  if (kind == "ggn") return Kind::GGN;
  if (kind == "functional") return Kind::Functional;
  TORCH_CHECK_VALUE(false, "sequential: kind must be 'hessian', 'ggn' or 'functional', got '",
              std::string(kind), "'");
}

inline int parse_loss(c10::string_view loss) {
  if (loss == "cross_entropy") return kCrossEntropy;
  if (loss == "mse") return kMse;
  TORCH_CHECK_VALUE(false, "sequential: loss must be 'cross_entropy' or 'mse', got '",
              std::string(loss), "'");
}

// One Linear layer of the chain and where its parameters sit in the flat vector
// [W_1.flatten(), b_1, W_2.flatten(), b_2, ...].
struct Layer {
  at::Tensor W;                  // (m, n), contiguous
  std::optional<at::Tensor> b;   // (m,)
  ActivationProgram act;
  int64_t m, n;
  int64_t w_off, b_off;          // flat offsets (b_off meaningful when b is set)
  int64_t size() const { return m * n + (b ? m : 0); }
  int64_t n_aug() const { return n + (b ? 1 : 0); }
};

struct Problem {
  std::vector<Layer> layers;
  at::Tensor X;       // (N, n_1)
  int loss;
  at::Tensor target;  // (N, C)
  at::Tensor coef;    // (N,)
  Kind kind;
  int64_t n_params;
  int64_t N() const { return X.size(0); }
  int64_t L() const { return static_cast<int64_t>(layers.size()); }
};

// Validates the arguments shared by every sequential op and gathers them.
inline Problem make_problem(const at::Tensor& X, at::TensorList weights,
                            const c10::List<std::optional<at::Tensor>>& biases,
                            at::IntArrayRef act_codes, at::ArrayRef<double> act_args,
                            at::IntArrayRef act_counts, c10::string_view loss,
                            const at::Tensor& target, const at::Tensor& coef,
                            c10::string_view kind, c10::DeviceType device_type) {
  const auto L = static_cast<int64_t>(weights.size());
  TORCH_CHECK_VALUE(L >= 1, "sequential: weights must hold at least one Linear weight");
  TORCH_CHECK_VALUE(static_cast<int64_t>(biases.size()) == L, "sequential: biases must have one entry "
              "(a tensor or None) per weight, got ", msg::num(biases.size()), " for ", msg::num(L), " weights");
  TORCH_CHECK_VALUE(static_cast<int64_t>(act_counts.size()) == L, "sequential: act_counts must have "
              "one entry per weight, got ", msg::num(act_counts.size()), " for ", msg::num(L), " weights");
  TORCH_CHECK_VALUE(act_args.size() == 2 * act_codes.size(), "sequential: act_args must hold two "
              "numbers per activation code, got ", msg::num(act_args.size()), " for ", msg::num(act_codes.size()),
              " codes");
  TORCH_CHECK_VALUE(X.dim() == 2, "sequential: X must be 2-D (N, features), got ", msg::num(X.dim()), "-D");
  TORCH_CHECK_TYPE(X.scalar_type() == at::kFloat || X.scalar_type() == at::kDouble,
              "sequential: X must be float32 or float64, got ", msg::dtype(X.scalar_type()));
  TORCH_CHECK_VALUE(X.device().type() == device_type, "sequential: X must be on a ", msg::device(device_type),
              " device, got ", msg::device(X.device()));
  auto same = [&](const at::Tensor& t, const std::string& name) {
    TORCH_CHECK_TYPE(t.scalar_type() == X.scalar_type(), "sequential: ", name, " must have the dtype "
                "of X (", msg::dtype(X.scalar_type()), "), got ", msg::dtype(t.scalar_type()));
    TORCH_CHECK_VALUE(t.device() == X.device(), "sequential: ", name, " must be on the device of X (",
                msg::device(X.device()), "), got ", msg::device(t.device()));
  };
  Problem pb;
  pb.X = X.contiguous();
  pb.loss = parse_loss(loss);
  pb.kind = parse_kind(kind);
  int64_t offset = 0, width = X.size(1), code_pos = 0;
  for (int64_t l = 0; l < L; ++l) {
    Layer layer;
    const at::Tensor& W = weights[l];
    same(W, "weights[" + msg::num(l) + "]");
    TORCH_CHECK_VALUE(W.dim() == 2 && W.size(1) == width, "sequential: weights[", msg::num(l), "] must have "
                "shape (m, ", msg::num(width), "), got ", msg::shape(W.sizes()));
    layer.W = W.contiguous();
    layer.m = W.size(0);
    layer.n = W.size(1);
    const std::optional<at::Tensor> b = biases.get(l);
    if (b.has_value() && b->defined()) {
      same(*b, "biases[" + msg::num(l) + "]");
      TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == layer.m, "sequential: biases[", msg::num(l),
                  "] must have shape (", msg::num(layer.m), ",), got ", msg::shape(b->sizes()));
      layer.b = b->contiguous();
    }
    const int64_t count = act_counts[l];
    TORCH_CHECK_VALUE(count >= 0 && count <= kMaxActivations, "sequential: act_counts[", msg::num(l),
                "] must be in [0, ", msg::num(kMaxActivations), "], got ", msg::num(count));
    TORCH_CHECK_VALUE(code_pos + count <= static_cast<int64_t>(act_codes.size()),
                "sequential: act_counts add up to more than the ", msg::num(act_codes.size()), " act_codes");
    layer.act.count = static_cast<int>(count);
    for (int64_t k = 0; k < kMaxActivations; ++k) {
      const bool used = k < count;
      const int64_t code = used ? act_codes[code_pos + k] : 0;
      TORCH_CHECK_VALUE(!used || (code >= kFirstActivationCode && code <= kLastActivationCode),
                        "sequential: act_codes[", msg::num(code_pos + k), "] = ", msg::num(code),
                        " is not an activation code in [", msg::num(kFirstActivationCode), ", ",
                        msg::num(kLastActivationCode), "]");
      layer.act.code[k] = static_cast<int>(code);
      layer.act.arg0[k] = used ? act_args[2 * (code_pos + k)] : 0.0;
      layer.act.arg1[k] = used ? act_args[2 * (code_pos + k) + 1] : 0.0;
    }
    code_pos += count;
    layer.w_off = offset;
    layer.b_off = offset + layer.m * layer.n;
    offset += layer.size();
    width = layer.m;
    pb.layers.push_back(std::move(layer));
  }
  TORCH_CHECK_VALUE(code_pos == static_cast<int64_t>(act_codes.size()), "sequential: act_counts add up "
              "to ", msg::num(code_pos), " but ", msg::num(act_codes.size()), " act_codes were given");
  pb.n_params = offset;
  const int64_t N = X.size(0);
  same(target, "target");
  same(coef, "coef");
  TORCH_CHECK_VALUE(target.dim() == 2 && target.size(0) == N && target.size(1) == width,
              "sequential: target must have the output shape (", msg::num(N), ", ", msg::num(width), "), got ",
              msg::shape(target.sizes()));
  TORCH_CHECK_VALUE(coef.dim() == 1 && coef.size(0) == N, "sequential: coef must have shape (", msg::num(N),
              ",), got ", msg::shape(coef.sizes()));
  // The softmax of an empty row would read past it (logsumexp of nothing is -inf).
  TORCH_CHECK_VALUE(pb.loss != kCrossEntropy || width >= 1, "sequential: cross_entropy needs "
                    "at least one output class, but weights[", msg::num(L - 1), "] has 0 rows");
  pb.target = target.contiguous();
  pb.coef = coef.contiguous();
  return pb;
}

// Validates a `layers` selection: strictly increasing indices into the chain.
inline std::vector<int64_t> check_layers(const Problem& pb, at::IntArrayRef layers) {
  TORCH_CHECK_VALUE(!layers.empty(), "sequential: layers must select at least one layer");
  for (size_t i = 0; i < layers.size(); ++i) {
    TORCH_CHECK_VALUE(layers[i] >= 0 && layers[i] < pb.L(), "sequential: layers[", msg::num(i), "] = ",
                msg::num(layers[i]), " is not a layer index in [0, ", msg::num(pb.L()), ")");
    TORCH_CHECK_VALUE(i == 0 || layers[i] > layers[i - 1], "sequential: layers must be strictly "
                "increasing, got ", msg::shape(layers));
  }
  return layers.vec();
}

// Forward pass, loss head and (when the residual terms are wanted) the gradients.
// The per-layer tensors are sample-major (N, width), or feature-major (width, N) when
// the pass was made with feature_major = true; p and g_out are always (N, C).
struct Pass {
  std::vector<at::Tensor> input;  // a_{l-1}
  std::vector<at::Tensor> d1;     // s_l'(z_l)
  std::vector<at::Tensor> d2;     // s_l''(z_l)
  at::Tensor p;                   // softmax(f) or f
  at::Tensor g_out;               // dl/df
  std::vector<at::Tensor> gz;     // dl/dz_l            (residual kinds only)
  std::vector<at::Tensor> r;      // s_l'' . dl/da_l    (residual kinds only)
};

template <class K>
Pass forward_pass(const Problem& pb, bool feature_major = false) {
  Pass ps;
  at::Tensor a = feature_major ? pb.X.t().contiguous() : pb.X;
  for (const Layer& layer : pb.layers) {
    ps.input.push_back(a);
    at::Tensor z;
    if (feature_major) {
      z = layer.b ? at::addmm(layer.b->unsqueeze(1), layer.W, a) : at::mm(layer.W, a);
    } else {
      z = layer.b ? at::addmm(*layer.b, a, layer.W.t()) : at::mm(a, layer.W.t());
    }
    at::Tensor next = at::empty_like(z), d1 = at::empty_like(z), d2 = at::empty_like(z);
    K::activation_forward(z, layer.act, next, d1, d2);
    ps.d1.push_back(d1);
    ps.d2.push_back(d2);
    a = next;
  }
  const at::Tensor f = feature_major ? a.t().contiguous() : a;
  ps.p = at::empty_like(f);
  ps.g_out = at::empty_like(f);
  K::loss_head(pb.loss, f, pb.target, pb.coef, ps.p, ps.g_out);
  if (pb.kind != Kind::GGN) {
    const int64_t L = pb.L();
    ps.gz.resize(L);
    ps.r.resize(L);
    at::Tensor ga = feature_major ? ps.g_out.t().contiguous() : ps.g_out;
    for (int64_t l = L - 1; l >= 0; --l) {
      ps.gz[l] = ps.d1[l] * ga;
      ps.r[l] = ps.d2[l] * ga;
      if (l > 0) {
        ga = feature_major ? at::mm(pb.layers[l].W.t(), ps.gz[l]) : at::mm(ps.gz[l], pb.layers[l].W);
      }
    }
  }
  return ps;
}

// M_l = d^2 l / dz_l^2 per sample (N, m_l, m_l) for l >= lowest (kind-specific);
// entries below `lowest` stay undefined.
template <class K>
std::vector<at::Tensor> propagate_hessians(const Problem& pb, const Pass& ps, int64_t lowest) {
  const int64_t N = pb.N(), L = pb.L(), C = ps.p.size(1);
  const bool residual = pb.kind != Kind::GGN;
  std::vector<at::Tensor> M(L);
  at::Tensor top;
  if (pb.kind == Kind::Functional) {
    top = at::zeros({N, C, C}, ps.p.options());
  } else {
    const at::Tensor eye = at::eye(C, ps.p.options()).expand({N, C, C}).contiguous();
    top = at::empty_like(eye);
    K::output_hessian_apply(pb.loss, ps.p, pb.coef, eye, top, /*class_major=*/false);
  }
  K::sym_scale_add_diag(top, ps.d1[L - 1], residual ? ps.r[L - 1] : at::Tensor());
  M[L - 1] = top;
  for (int64_t l = L - 1; l > lowest; --l) {
    const Layer& layer = pb.layers[l];
    const int64_t m = layer.m, n = layer.n;
    // W^T M W per sample: (M W)^T W with M symmetric, two GEMMs over all samples.
    at::Tensor MW = at::mm(M[l].view({N * m, m}), layer.W).view({N, m, n});
    at::Tensor WMW = at::mm(MW.transpose(1, 2).contiguous().view({N * n, m}), layer.W)
                         .view({N, n, n});
    K::sym_scale_add_diag(WMW, ps.d1[l - 1], residual ? ps.r[l - 1] : at::Tensor());
    M[l - 1] = WMW;
  }
  return M;
}

// sequential_hbp: the input a_{l-1} (N, n_l) and the output-side Hessians M_l
// (N, m_l, m_l) of every selected layer l.
template <class K>
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> hbp(const Problem& pb,
                                                                  at::IntArrayRef layers_arg) {
  const std::vector<int64_t> layers = check_layers(pb, layers_arg);
  const Pass ps = forward_pass<K>(pb);
  const std::vector<at::Tensor> M = propagate_hessians<K>(pb, ps, layers.front());
  std::vector<at::Tensor> inputs, hessians;
  for (int64_t l : layers) {
    // The first input is X itself: return a copy (op outputs must not alias inputs).
    inputs.push_back(l == 0 ? ps.input[0].clone() : ps.input[l]);
    hessians.push_back(M[l]);
  }
  return {inputs, hessians};
}

// sequential_forward: what sequential_matmat needs of the forward pass, feature-major
// (the layout matmat works in), as one flat list:
//     [a~_0, ..., a~_{L-1},  s'_1, ..., s'_L,  p,  (s''.g_a)_1, ..., (s''.g_a)_L,  g_z,1, ..., g_z,L]
// with a~_{l-1} = [a_{l-1}; 1] (n_l + bias, N) the augmented layer inputs, s'_l (m_l, N),
// p (N, C) the softmax (or f), and the residual tensors (m_l, N) only for kinds other
// than the GGN. These depend on the parameters and the data, not on V: products at
// fixed parameters (an eigensolver's iterations) can pass them back to skip the pass.
inline int64_t forward_state_size(const Problem& pb) {
  return (pb.kind == Kind::GGN ? 2 : 4) * pb.L() + 1;
}

template <class K>
std::vector<at::Tensor> forward_state(const Problem& pb) {
  const Pass ps = forward_pass<K>(pb, /*feature_major=*/true);
  const int64_t N = pb.N(), L = pb.L();
  std::vector<at::Tensor> state;
  state.reserve(forward_state_size(pb));
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor& a = ps.input[l];
    state.push_back(pb.layers[l].b ? at::cat({a, at::ones({1, N}, a.options())}, 0) : a);
  }
  for (int64_t l = 0; l < L; ++l) state.push_back(ps.d1[l]);
  state.push_back(ps.p);
  if (pb.kind != Kind::GGN) {
    for (int64_t l = 0; l < L; ++l) state.push_back(ps.r[l]);
    for (int64_t l = 0; l < L; ++l) state.push_back(ps.gz[l]);
  }
  return state;
}

// Validates a state passed to sequential_matmat against the problem's shapes (its
// values cannot be checked: they must come from sequential_forward on the same
// arguments; a GGN product may use the longer state of a residual kind).
inline void check_forward_state(const Problem& pb, at::TensorList state) {
  const int64_t N = pb.N(), L = pb.L(), C = pb.target.size(1);
  const auto n = static_cast<int64_t>(state.size());
  TORCH_CHECK_VALUE(n == forward_state_size(pb) || (pb.kind == Kind::GGN && n == 4 * L + 1),
              "sequential_matmat: state must hold ", msg::num(forward_state_size(pb)),
              " tensors (sequential_forward of the same chain and kind), got ", msg::num(n));
  auto expect = [&](int64_t i, int64_t rows, int64_t cols) {
    const at::Tensor& t = state[i];
    TORCH_CHECK_VALUE(t.defined() && t.dim() == 2 && t.size(0) == rows && t.size(1) == cols,
                "sequential_matmat: state[", msg::num(i), "] must have shape (", msg::num(rows),
                ", ", msg::num(cols), "), got ", t.defined() ? msg::shape(t.sizes()) : "undefined");
    TORCH_CHECK_VALUE(t.scalar_type() == pb.X.scalar_type() && t.device() == pb.X.device(),
                "sequential_matmat: state[", msg::num(i), "] must have the dtype and device of X");
  };
  for (int64_t l = 0; l < L; ++l) {
    expect(l, pb.layers[l].n_aug(), N);
    expect(L + l, pb.layers[l].m, N);
  }
  expect(2 * L, N, C);
  if (n > 2 * L + 1) {
    for (int64_t l = 0; l < L; ++l) {
      expect(2 * L + 1 + l, pb.layers[l].m, N);
      expect(3 * L + 1 + l, pb.layers[l].m, N);
    }
  }
}

// sequential_matmat: (P, k) curvature times V (P, k), P in the flat chain order; the
// forward pass is taken from `state` when given (see sequential_forward).
template <class K>
at::Tensor matmat(const Problem& pb, const at::Tensor& V_arg,
                  const std::optional<at::TensorList>& state_arg) {
  TORCH_CHECK_VALUE(V_arg.dim() == 2 && V_arg.size(0) == pb.n_params, "sequential_matmat: V must have "
              "shape (", msg::num(pb.n_params), ", k), got ", msg::shape(V_arg.sizes()));
  TORCH_CHECK_VALUE(V_arg.scalar_type() == pb.X.scalar_type() && V_arg.device() == pb.X.device(),
              "sequential_matmat: V must have the dtype and device of X");
  if (state_arg) check_forward_state(pb, *state_arg);
  const at::Tensor V = V_arg.contiguous();
  const int64_t N = pb.N(), L = pb.L(), k = V.size(1);
  at::Tensor out = at::empty_like(V);
  if (k == 0) return out;
  const bool residual = pb.kind != Kind::GGN;
  // Feature-major throughout, the tangent states R{z_l}[i, j, n] as (m_l, k, N): every
  // GEMM then has the long dimension (samples) along its output rows, which BLAS
  // handles far better than (N k, m) outputs of a few columns. A bias enters as the
  // weight of a constant input 1 (inputs a~ = [a; 1], tangents [V_W | V_b]), so it
  // costs no separate pass.
  const std::vector<at::Tensor> state =
      state_arg ? std::vector<at::Tensor>(state_arg->begin(), state_arg->end())
                : forward_state<K>(pb);
  auto contiguous = [&](int64_t i) { return state[i].contiguous(); };
  std::vector<at::Tensor> inA(L), d1T(L), rT(L), gzT(L);
  for (int64_t l = 0; l < L; ++l) {
    inA[l] = contiguous(l);
    d1T[l] = contiguous(L + l);
    if (residual) {
      rT[l] = contiguous(2 * L + 1 + l);
      gzT[l] = contiguous(3 * L + 1 + l);
    }
  }
  const at::Tensor p = contiguous(2 * L);
  std::vector<at::Tensor> Rz(L), Ra(L);
  for (int64_t l = 0; l < L; ++l) {
    const Layer& layer = pb.layers[l];
    const int64_t m = layer.m, n = layer.n, na = layer.n_aug();
    // R{z}[i, j, :] = [V_W,j | V_b,j][i] a~ + (W R{a}[:, j, :])[i]
    const at::Tensor VW = V.narrow(0, layer.w_off, m * n).view({m, n, k}).permute({0, 2, 1});
    const at::Tensor VA = layer.b ? at::cat({VW, V.narrow(0, layer.b_off, m).unsqueeze(2)}, 2)
                                  : VW;
    at::Tensor rz = at::mm(VA.reshape({m * k, na}), inA[l]).view({m, k, N});
    if (l > 0) rz.view({m, k * N}).addmm_(layer.W, Ra[l - 1].view({n, k * N}));
    // The GGN needs no R{z} later: R{a} overwrites it.
    Ra[l] = residual ? at::empty_like(rz) : rz;
    K::broadcast_fma(rz, d1T[l], at::Tensor(), at::Tensor(), Ra[l]);
    Rz[l] = rz;
  }
  // The backward pass reuses the forward buffers: R{g} of layer l's outputs overwrites
  // R{a_l}, which nothing needs any more (R{a_{l-1}} is read before it is overwritten).
  // R{dl/df} = H_f R{f}; the functional part has no output-Hessian term.
  at::Tensor rg = Ra[L - 1];
  if (pb.kind == Kind::Functional) {
    rg.zero_();
  } else {
    K::output_hessian_apply(pb.loss, p, pb.coef, rg, rg, /*class_major=*/true);
  }
  for (int64_t l = L - 1; l >= 0; --l) {
    const Layer& layer = pb.layers[l];
    const int64_t m = layer.m, n = layer.n, na = layer.n_aug();
    // R{g_z} = s' . R{g_a} + s'' . g_a . R{z}, in place of R{g_a}
    at::Tensor rgz = rg;
    K::broadcast_fma(rg, d1T[l], residual ? Rz[l] : at::Tensor(),
                     residual ? rT[l] : at::Tensor(), rgz);
    // R{dl/d[W | b]} = sum_n R{g_z} a~^T (+ g_z R{a}^T for W): rows q < n of the GEMM are
    // the weight's columns, row n the bias.
    const at::Tensor grad = at::mm(inA[l], rgz.view({m * k, N}).t()).view({na, m, k});
    at::Tensor outW = out.narrow(0, layer.w_off, m * n).view({m, n, k});
    outW.copy_(grad.narrow(0, 0, n).permute({1, 0, 2}));
    if (layer.b) out.narrow(0, layer.b_off, m).copy_(grad.select(0, n));
    if (residual && l > 0) {
      outW.add_(at::mm(gzT[l], Ra[l - 1].view({n * k, N}).t()).view({m, n, k}));
    }
    if (l > 0) {
      // R{g_a} = W^T R{g_z} + V_W^T g_z, into the buffer of R{a_{l-1}}
      at::Tensor next = Ra[l - 1];
      at::Tensor next_flat = next.view({n, k * N});
      at::mm_out(next_flat, layer.W.t(), rgz.view({m, k * N}));
      if (residual) {
        const at::Tensor VW = V.narrow(0, layer.w_off, m * n).view({m, n, k});
        next.view({n * k, N}).addmm_(VW.permute({1, 2, 0}).reshape({n * k, m}), gzT[l]);
      }
      rg = next;
    }
  }
  return out;
}

// Where the rows of each selected layer sit in the (P_sel, P_sel) output.
struct Placement {
  int64_t w_off, b_off;  // b_off = -1 without bias
};

// H[rows of l, columns of m] += R4, R4[p, q~, i, j~] in augmented coordinates
// (q~ = n_l is the bias of l; j~ = n_m the bias of m, present when `col_bias`).
inline void add_block(at::Tensor& H, const Layer& rl, const Placement& pl, const Layer& cm,
                      const Placement& pm, const at::Tensor& R4, bool col_bias) {
  const int64_t P = H.size(0);
  const int64_t ml = rl.m, nl = rl.n, mm = cm.m, nm = cm.n;
  const bool cb = col_bias && pm.b_off >= 0;
  const at::Tensor RW = R4.narrow(1, 0, nl);
  H.as_strided({ml, nl, mm, nm}, {nl * P, P, nm, 1}, pl.w_off * P + pm.w_off)
      .add_(RW.narrow(3, 0, nm));
  if (cb) H.as_strided({ml, nl, mm}, {nl * P, P, 1}, pl.w_off * P + pm.b_off).add_(RW.select(3, nm));
  if (pl.b_off >= 0) {
    const at::Tensor Rb = R4.select(1, nl);
    H.as_strided({ml, mm, nm}, {P, nm, 1}, pl.b_off * P + pm.w_off).add_(Rb.narrow(2, 0, nm));
    if (cb) H.as_strided({ml, mm}, {P, 1}, pl.b_off * P + pm.b_off).add_(Rb.select(2, nm));
  }
}

// hesskit::kron_block(A, M) = sum_n (a_n a_n^T) (x) M_n through the dispatcher (its
// kernels are in csrc/cpu/kron_block.cpp and csrc/cuda/kron_block.cpp).
inline at::Tensor kron_block_op(const at::Tensor& A, const at::Tensor& M) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("hesskit::kron_block", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(A, M);
}

// [a, 1] when the layer has a bias, else a.
inline at::Tensor augmented_input(const Layer& layer, const at::Tensor& a) {
  if (!layer.b) return a;
  return at::cat({a, at::ones({a.size(0), 1}, a.options())}, 1);
}

// sequential_dense: the explicit (P_sel, P_sel) matrix over the selected layers.
template <class K>
at::Tensor dense(const Problem& pb, at::IntArrayRef layers_arg) {
  const std::vector<int64_t> layers = check_layers(pb, layers_arg);
  const int64_t N = pb.N();
  const bool residual = pb.kind != Kind::GGN;
  const Pass ps = forward_pass<K>(pb);
  const std::vector<at::Tensor> M = propagate_hessians<K>(pb, ps, layers.front());
  std::vector<Placement> place(pb.L(), Placement{-1, -1});
  std::vector<at::Tensor> aug(pb.L());
  int64_t P = 0;
  for (int64_t l : layers) {
    const Layer& layer = pb.layers[l];
    place[l] = Placement{P, layer.b ? P + layer.m * layer.n : -1};
    P += layer.size();
    aug[l] = augmented_input(layer, ps.input[l]);
  }
  at::Tensor H = at::zeros({P, P}, pb.X.options());
  for (size_t mi = 0; mi < layers.size(); ++mi) {
    const int64_t m = layers[mi];
    const Layer& top = pb.layers[m];
    const int64_t mm = top.m, nm = top.n, nam = top.n_aug();
    // cur[n] = [K^_{l,m}; P^_{l,m}] (rows: m_m, then n_m when residual), columns m_l:
    // K^_{m,m} = M_m; K^_{l,m} = (K^_{l+1,m} W_{l+1}) . s_l', P^_{m-1,m} = diag(s_{m-1}').
    at::Tensor cur = M[m];
    for (int64_t l = m; l >= layers.front(); --l) {
      if (l < m) {
        const Layer& up = pb.layers[l + 1];
        const int64_t rows = cur.size(1);
        at::Tensor next = at::mm(cur.reshape({N * rows, up.m}), up.W).view({N, rows, up.n});
        if (l == m - 1 && residual) {
          next = at::cat({next, at::eye(nm, next.options()).expand({N, nm, nm})}, 1);
        }
        cur = at::empty_like(next);
        K::broadcast_fma(next, ps.d1[l], at::Tensor(), at::Tensor(), cur);
      }
      if (place[l].w_off < 0) continue;
      const Layer& low = pb.layers[l];
      const int64_t ml = low.m, nal = low.n_aug();
      if (l == m) {
        // Diagonal block sum_n M_n (x) a~ a~^T by kron_block, exactly symmetric.
        add_block(H, low, place[l], top, place[m],
                  kron_block_op(aug[l], M[m]).view({ml, nal, mm, nam}), true);
        continue;
      }
      // GGN-like part: sum_n K[n, i, p] a~_l[n, q] a~_m[n, j] -> R4[p, q, i, j].
      const at::Tensor outer = (aug[l].unsqueeze(2) * aug[m].unsqueeze(1)).view({N, nal * nam});
      const at::Tensor Kh = cur.narrow(1, 0, mm).reshape({N, mm * ml});
      add_block(H, low, place[l], top, place[m],
                at::mm(Kh.t(), outer).view({mm, ml, nal, nam}).permute({1, 2, 0, 3}), true);
      if (residual) {
        // residual: sum_n P^[n, j, p] a~_l[n, q] g_m[n, i] -> R4[p, q, i, j] (W_m columns).
        const at::Tensor ag = (aug[l].unsqueeze(2) * ps.gz[m].unsqueeze(1)).view({N, nal * mm});
        const at::Tensor Ph = cur.narrow(1, mm, nm).reshape({N, nm * ml});
        add_block(H, low, place[l], top, place[m],
                  at::mm(Ph.t(), ag).view({nm, ml, nal, mm}).permute({1, 2, 3, 0}), false);
      }
    }
  }
  // Lower triangle: H[m, l] = H[l, m]^T.
  for (size_t mi = 0; mi < layers.size(); ++mi) {
    for (size_t li = 0; li < mi; ++li) {
      const int64_t l = layers[li], m = layers[mi];
      const int64_t sl = pb.layers[l].size(), sm = pb.layers[m].size();
      H.narrow(0, place[m].w_off, sm).narrow(1, place[l].w_off, sl)
          .copy_(H.narrow(0, place[l].w_off, sl).narrow(1, place[m].w_off, sm).t());
    }
  }
  return H;
}

// The op entry points for the kernels K of device type D (registered with
// TORCH_LIBRARY_IMPL by csrc/cpu/sequential.cpp and csrc/cuda/sequential.cpp).
template <class K, c10::DeviceType D>
struct Entry {
  using TensorLists = std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>>;

  static TensorLists hbp(const at::Tensor& X, at::TensorList weights,
                         const c10::List<std::optional<at::Tensor>>& biases,
                         at::IntArrayRef act_codes, at::ArrayRef<double> act_args,
                         at::IntArrayRef act_counts, c10::string_view loss,
                         const at::Tensor& target, const at::Tensor& coef,
                         at::IntArrayRef layers, c10::string_view kind) {
    const c10::DeviceGuard guard(X.device());
    return seq::hbp<K>(make_problem(X, weights, biases, act_codes, act_args, act_counts, loss,
                                    target, coef, kind, D),
                       layers);
  }

  static at::Tensor matmat(const at::Tensor& X, at::TensorList weights,
                           const c10::List<std::optional<at::Tensor>>& biases,
                           at::IntArrayRef act_codes, at::ArrayRef<double> act_args,
                           at::IntArrayRef act_counts, c10::string_view loss,
                           const at::Tensor& target, const at::Tensor& coef, const at::Tensor& V,
                           c10::string_view kind, std::optional<at::TensorList> state) {
    const c10::DeviceGuard guard(X.device());
    return seq::matmat<K>(make_problem(X, weights, biases, act_codes, act_args, act_counts, loss,
                                       target, coef, kind, D),
                          V, state);
  }

  static std::vector<at::Tensor> forward(const at::Tensor& X, at::TensorList weights,
                                         const c10::List<std::optional<at::Tensor>>& biases,
                                         at::IntArrayRef act_codes, at::ArrayRef<double> act_args,
                                         at::IntArrayRef act_counts, c10::string_view loss,
                                         const at::Tensor& target, const at::Tensor& coef,
                                         c10::string_view kind) {
    const c10::DeviceGuard guard(X.device());
    return seq::forward_state<K>(make_problem(X, weights, biases, act_codes, act_args,
                                              act_counts, loss, target, coef, kind, D));
  }

  static at::Tensor dense(const at::Tensor& X, at::TensorList weights,
                          const c10::List<std::optional<at::Tensor>>& biases,
                          at::IntArrayRef act_codes, at::ArrayRef<double> act_args,
                          at::IntArrayRef act_counts, c10::string_view loss,
                          const at::Tensor& target, const at::Tensor& coef,
                          at::IntArrayRef layers, c10::string_view kind) {
    const c10::DeviceGuard guard(X.device());
    return seq::dense<K>(make_problem(X, weights, biases, act_codes, act_args, act_counts, loss,
                                      target, coef, kind, D),
                         layers);
  }
};

}  // namespace seq
}  // namespace hesskit
