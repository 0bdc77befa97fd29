// Scalar mathematics of the sequential engine, shared by the CPU kernels and the
// CUDA kernels (compiled by nvcc alone: this header includes no torch header).
//
// Pointwise activations sigma with their first and second derivatives, and
// composition of several activations that follow one Linear layer: for
// s = s_K o ... o s_1,
//     s'  = prod_k s_k'(v_{k-1}),
//     s'' = s_K''(v_{K-1}) (s_{K-1} o ... o s_1)'^2 + s_K'(v_{K-1}) (s_{K-1} o ... o s_1)''.
// These are what backward Hessian propagation needs (Dangel, Harmeling & Hennig 2020,
// "Modular block-diagonal curvature approximations for feedforward architectures").
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define HESSKIT_HD __host__ __device__ __forceinline__
#else
#define HESSKIT_HD inline
#endif

namespace hesskit {
namespace seq {

// Activation codes of the op schemas (hesskit/engines/chain.py names them).
enum ActivationCode : int {
  kRelu = 1,
  kLeakyRelu = 2,   // arg0 = negative_slope
  kTanh = 3,
  kSigmoid = 4,
  kGeluErf = 5,
  kGeluTanh = 6,
  kSilu = 7,
  kSoftplus = 8,    // arg0 = beta, arg1 = threshold
  kElu = 9,         // arg0 = alpha
};
constexpr int kFirstActivationCode = kRelu;
constexpr int kLastActivationCode = kElu;

// Most activations that may follow one Linear layer (passed by value to kernels).
constexpr int kMaxActivations = 8;

// The pointwise activations that follow one Linear layer, applied in order.
struct ActivationProgram {
  int count;
  int code[kMaxActivations];
  double arg0[kMaxActivations];
  double arg1[kMaxActivations];
};

HESSKIT_HD float m_exp(float x) { return expf(x); }
HESSKIT_HD double m_exp(double x) { return exp(x); }
HESSKIT_HD float m_expm1(float x) { return expm1f(x); }
HESSKIT_HD double m_expm1(double x) { return expm1(x); }
HESSKIT_HD float m_log1p(float x) { return log1pf(x); }
HESSKIT_HD double m_log1p(double x) { return log1p(x); }
HESSKIT_HD float m_erfc(float x) { return erfcf(x); }
HESSKIT_HD double m_erfc(double x) { return erfc(x); }

// sigma(x) and sigma(-x) = 1 - sigma(x), each to full relative precision (1 - sigma(x)
// computed as a difference loses it for large x).
template <typename T>
HESSKIT_HD void sigmoid_pair(T x, T& s, T& sc) {
  const T e = m_exp(x >= T(0) ? -x : x);  // exp(-|x|), no overflow
  const T inv = T(1) / (T(1) + e);
  s = x >= T(0) ? inv : e * inv;
  sc = x >= T(0) ? e * inv : inv;
}

// y = s(x), d1 = s'(x), d2 = s''(x) for one activation. Derivatives of tanh-like and
// sigmoid-like functions use sech^2(u) = 4 sigma(2u) sigma(-2u) and sigma (1 - sigma)
// from sigmoid_pair (tanh: from one expm1), not 1 - tanh^2 or 1 - sigma, which cancel
// in float32.
template <typename T>
HESSKIT_HD void activation(int code, T x, T arg0, T arg1, T& y, T& d1, T& d2) {
  switch (code) {
    case kRelu:
      y = x > T(0) ? x : T(0);
      d1 = x > T(0) ? T(1) : T(0);
      d2 = T(0);
      return;
    case kLeakyRelu:
      y = x > T(0) ? x : arg0 * x;
      d1 = x > T(0) ? T(1) : arg0;
      d2 = T(0);
      return;
    case kTanh: {
      // One transcendental for all three: with u = e^{-2|x|} and em = u - 1,
      // |tanh x| = -em / (2 + em) and sech^2 x = 4u / (2 + em)^2. Each of u and em is
      // computed where it keeps full relative precision: em by expm1 while u >= 1/2
      // (|x| <= ln 2 / 2), u by exp beyond (where em = u - 1 is exact to rounding).
      const T ax = x >= T(0) ? x : -x;
      T u, em;
      if (ax <= T(0.34657359027997265471)) {
        em = m_expm1(T(-2) * ax);
        u = T(1) + em;
      } else {
        u = m_exp(T(-2) * ax);
        em = u - T(1);
      }
      const T q = T(1) / (T(2) + em);
      const T t = x >= T(0) ? -em * q : em * q;
      y = t;
      d1 = T(4) * u * q * q;  // 1 - tanh^2
      d2 = T(-2) * t * d1;
      return;
    }
    case kSigmoid: {
      T s, sc;
      sigmoid_pair(x, s, sc);
      y = s;
      d1 = s * sc;
      d2 = d1 * (sc - s);
      return;
    }
    case kGeluErf: {
      // y = x Phi(x), y' = Phi + x phi, y'' = phi (2 - x^2); Phi by erfc (no 1 + erf).
      const T Phi = T(0.5) * m_erfc(x * T(-0.70710678118654752440));
      const T phi = T(0.39894228040143267794) * m_exp(T(-0.5) * x * x);
      y = x * Phi;
      d1 = Phi + x * phi;
      d2 = phi * (T(2) - x * x);
      return;
    }
    case kGeluTanh: {
      // y = x (1 + tanh u) / 2 = x sigma(2u), u = k0 (x + k1 x^3).
      const T k0 = T(0.79788456080286535588), k1 = T(0.044715);
      const T u = k0 * (x + k1 * x * x * x);
      const T du = k0 * (T(1) + T(3) * k1 * x * x);
      const T ddu = T(6) * k0 * k1 * x;
      T s2, s2c;
      sigmoid_pair(T(2) * u, s2, s2c);
      const T t = s2 - s2c;
      const T sech2 = T(4) * s2 * s2c;
      y = x * s2;
      d1 = s2 + T(0.5) * x * sech2 * du;
      d2 = sech2 * (du + T(0.5) * x * (ddu - T(2) * t * du * du));
      return;
    }
    case kSilu: {
      T s, sc;
      sigmoid_pair(x, s, sc);
      y = x * s;
      d1 = s * (T(1) + x * sc);
      d2 = s * sc * (T(2) + x * (sc - s));
      return;
    }
    case kSoftplus: {
      // torch: linear above the threshold (beta x > threshold).
      const T bx = arg0 * x;
      if (bx > arg1) {
        y = x;
        d1 = T(1);
        d2 = T(0);
      } else {
        T s, sc;
        sigmoid_pair(bx, s, sc);
        y = m_log1p(m_exp(bx)) / arg0;
        d1 = s;
        d2 = arg0 * s * sc;
      }
      return;
    }
    case kElu: {
      if (x > T(0)) {
        y = x;
        d1 = T(1);
        d2 = T(0);
      } else {
        // At x = 0 exactly autograd takes this branch for y' (= alpha) but gives
        // y'' = 0 (the dead-ReLU-then-ELU case of a bias-free chain); we follow it.
        const T e = arg0 * m_exp(x);
        y = arg0 * m_expm1(x);
        d1 = e;
        d2 = x < T(0) ? e : T(0);
      }
      return;
    }
    default:  // validated before any kernel runs
      y = x;
      d1 = T(1);
      d2 = T(0);
      return;
  }
}

// The composed activation of `prog` at x: value, first and second derivative.
template <typename T>
HESSKIT_HD void activation_program(const ActivationProgram& prog, T x, T& y, T& d1, T& d2) {
  T v = x, D1 = T(1), D2 = T(0);
  for (int k = 0; k < prog.count; ++k) {
    T yk, s1, s2;
    activation<T>(prog.code[k], v, T(prog.arg0[k]), T(prog.arg1[k]), yk, s1, s2);
    D2 = s2 * D1 * D1 + s1 * D2;
    D1 = s1 * D1;
    v = yk;
  }
  y = v;
  d1 = D1;
  d2 = D2;
}

// Loss heads in the normalized form of the ops: per sample n with output f_n,
//   cross-entropy: l_n = c_n logsumexp(f_n) - <T_n, f_n>,  grad = c_n softmax(f_n) - T_n,
//                  Hessian = c_n (diag p_n - p_n p_n^T);
//   mse:           l_n = c_n |f_n|^2 / 2 - <T_n, f_n>,      grad = c_n f_n - T_n,
//                  Hessian = c_n I.
enum LossCode : int { kCrossEntropy = 0, kMse = 1 };

// One row: p = softmax(f) (cross-entropy) or p = f (mse); g = c p - t.
template <typename T>
HESSKIT_HD void loss_head_row(int loss, const T* f, const T* t, T c, int64_t C, T* p, T* g) {
  if (loss == kCrossEntropy) {
    T mx = f[0];
    for (int64_t j = 1; j < C; ++j) mx = f[j] > mx ? f[j] : mx;
    T sum = T(0);
    for (int64_t j = 0; j < C; ++j) {
      p[j] = m_exp(f[j] - mx);
      sum += p[j];
    }
    const T inv = T(1) / sum;
    for (int64_t j = 0; j < C; ++j) p[j] *= inv;
  } else {
    for (int64_t j = 0; j < C; ++j) p[j] = f[j];
  }
  for (int64_t j = 0; j < C; ++j) g[j] = c * p[j] - t[j];
}

// One row of the output-Hessian product, y = c (diag p - p p^T) u or y = c u, with
// the class entries of u and y `stride` apart; y may be u.
template <typename T>
HESSKIT_HD void output_hessian_row(int loss, const T* p, T c, const T* u, T* y, int64_t C,
                                   int64_t stride) {
  if (loss == kCrossEntropy) {
    T dot = T(0);
    for (int64_t j = 0; j < C; ++j) dot += p[j] * u[j * stride];
    for (int64_t j = 0; j < C; ++j) y[j * stride] = c * p[j] * (u[j * stride] - dot);
  } else {
    for (int64_t j = 0; j < C; ++j) y[j * stride] = c * u[j * stride];
  }
}

// Row r (one sample n and one tangent) of an output-space block of k tangents:
// sample-major (N, k, C) has n = r / k, its classes at r C + (0..C-1); class-major
// (C, k, N) has n = r % N, its classes at r + (0..C-1) k N.
struct OutputRow {
  int64_t n, offset, stride;
};

HESSKIT_HD OutputRow output_row(bool class_major, int64_t r, int64_t N, int64_t k, int64_t C) {
  return class_major ? OutputRow{r % N, r, k * N} : OutputRow{r / k, r * C, 1};
}

}  // namespace seq
}  // namespace hesskit
