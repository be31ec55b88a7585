// Dual numbers for exact Hessian-vector products: x = v + d*eps with eps^2 = 0. Running the CPU
// model's forward and backward (cpu::Gpt2<Dual<T>>) on parameters p + eps*u gives, in the dual
// parts of the gradient, the derivative of the gradient along u: the Hessian-vector product H u
// of the loss, exact up to the rounding of T ("forward over reverse"; every op's second-order
// terms come from the same code that computes its gradient). Sophia-H's CPU reference
// (src/cpu/hvp.h) and its tests use it.
//
// Every operation on the value is the one T itself performs; the dual part follows the chain
// rule. Comparisons look at the value only (the max in a softmax moves no derivative: it cancels).
#pragma once
#include <cmath>
#include <type_traits>

namespace sgpt::cpu {

template <class T>
struct Dual {
  T v = 0, d = 0;
  Dual() = default;
  constexpr Dual(T value, T deriv) : v(value), d(deriv) {}
  template <class A, class = std::enable_if_t<std::is_arithmetic_v<A>>>
  constexpr Dual(A x) : v(static_cast<T>(x)), d(0) {}  // NOLINT: constants mix with duals
  template <class A, class = std::enable_if_t<std::is_arithmetic_v<A>>>
  explicit constexpr operator A() const { return static_cast<A>(v); }

  friend Dual operator+(Dual a, Dual b) { return {a.v + b.v, a.d + b.d}; }
  friend Dual operator-(Dual a, Dual b) { return {a.v - b.v, a.d - b.d}; }
  friend Dual operator-(Dual a) { return {-a.v, -a.d}; }
  friend Dual operator*(Dual a, Dual b) { return {a.v * b.v, a.d * b.v + a.v * b.d}; }
  friend Dual operator/(Dual a, Dual b) { return {a.v / b.v, (a.d * b.v - a.v * b.d) / (b.v * b.v)}; }
  Dual& operator+=(Dual b) { return *this = *this + b; }
  Dual& operator-=(Dual b) { return *this = *this - b; }
  Dual& operator*=(Dual b) { return *this = *this * b; }
  Dual& operator/=(Dual b) { return *this = *this / b; }
  friend bool operator<(Dual a, Dual b) { return a.v < b.v; }
  friend bool operator>(Dual a, Dual b) { return a.v > b.v; }
  friend bool operator<=(Dual a, Dual b) { return a.v <= b.v; }
  friend bool operator>=(Dual a, Dual b) { return a.v >= b.v; }
  friend bool operator==(Dual a, Dual b) { return a.v == b.v; }
  friend bool operator!=(Dual a, Dual b) { return a.v != b.v; }

  friend Dual exp(Dual a) {
    const T e = std::exp(a.v);
    return {e, a.d * e};
  }
  friend Dual log(Dual a) { return {std::log(a.v), a.d / a.v}; }
  friend Dual sqrt(Dual a) {
    const T s = std::sqrt(a.v);
    return {s, a.d / (T(2) * s)};
  }
  friend Dual tanh(Dual a) {
    const T t = std::tanh(a.v);
    return {t, a.d * (T(1) - t * t)};
  }
};

}  // namespace sgpt::cpu
