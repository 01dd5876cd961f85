// Element-wise activations. Every derivative is written in terms of the activation's *output*, so
// a layer only keeps its output for the backward pass (and bias + activation can be done in place).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "core/types.hpp"

namespace vaecpp {

enum class Act { linear, relu, leaky_relu, elu, tanh, sigmoid, softplus };

constexpr double kLeakySlope = 0.2;  // Keras 3's default negative_slope for "leaky_relu"
constexpr double kEluAlpha = 1.0;

// The names the configuration uses, in the enum's order: the one list Python reads (vaecpp._core).
constexpr const char* kActNames[] = {"linear", "relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus"};
constexpr int kNumActs = int(sizeof(kActNames) / sizeof(kActNames[0]));

inline Act act_from_name(const std::string& s) {
    if (s == "none" || s.empty()) return Act::linear;
    for (int i = 0; i < kNumActs; ++i)
        if (s == kActNames[i]) return Act(i);
    throw ValueError("unknown activation '" + s + "'; expected one of " + join_names(kActNames));
}

inline const char* act_name(Act a) { return kActNames[int(a)]; }

// Numerically stable logistic function and log(1 + e^x). The scalar formulas are VAECPP_HD: the
// CUDA kernels (cpp/cuda/activations.cu) call these very functions.
template <typename T>
VAECPP_HD inline T sigmoid(T x) {
    if (x >= 0) return T(1) / (T(1) + std::exp(-x));
    T e = std::exp(x);
    return e / (T(1) + e);
}
template <typename T>
VAECPP_HD inline T softplus(T x) {
    return (x > 0 ? x : T(0)) + std::log1p(std::exp(-std::abs(x)));
}

template <typename T>
VAECPP_HD inline T act_value(Act a, T x) {
    switch (a) {
        case Act::linear: return x;
        case Act::relu: return x > 0 ? x : T(0);
        case Act::leaky_relu: return x > 0 ? x : T(kLeakySlope) * x;
        case Act::elu: return x > 0 ? x : T(kEluAlpha) * std::expm1(x);
        case Act::tanh: return std::tanh(x);
        case Act::sigmoid: return sigmoid(x);
        case Act::softplus: return softplus(x);
    }
    return x;
}

// f'(x) expressed through y = f(x):
//   relu: [y>0]   leaky: y>0 ? 1 : a   elu: y>0 ? 1 : y + a   tanh: 1 - y^2
//   sigmoid: y (1 - y)   softplus: sigmoid(x) = 1 - e^{-y}
template <typename T>
VAECPP_HD inline T act_grad_from_output(Act a, T y) {
    switch (a) {
        case Act::linear: return T(1);
        case Act::relu: return y > 0 ? T(1) : T(0);
        case Act::leaky_relu: return y > 0 ? T(1) : T(kLeakySlope);
        case Act::elu: return y > 0 ? T(1) : y + T(kEluAlpha);
        case Act::tanh: return T(1) - y * y;
        case Act::sigmoid: return y * (T(1) - y);
        case Act::softplus: return -std::expm1(-y);
    }
    return T(1);
}

// Calls f(std::integral_constant<Act, a>) for the runtime value a, so that loops written in f see
// the activation as a constant: the switch leaves the loop and the loop can be vectorised.
template <typename F>
inline void with_act(Act a, F f) {
    switch (a) {
        case Act::linear: return f(std::integral_constant<Act, Act::linear>{});
        case Act::relu: return f(std::integral_constant<Act, Act::relu>{});
        case Act::leaky_relu: return f(std::integral_constant<Act, Act::leaky_relu>{});
        case Act::elu: return f(std::integral_constant<Act, Act::elu>{});
        case Act::tanh: return f(std::integral_constant<Act, Act::tanh>{});
        case Act::sigmoid: return f(std::integral_constant<Act, Act::sigmoid>{});
        case Act::softplus: return f(std::integral_constant<Act, Act::softplus>{});
    }
}

// Reference: x and out are (n,); out may alias x.
template <typename T>
void act_forward_ref(T* out, const T* x, long n, Act a) {
    for (long i = 0; i < n; ++i) out[i] = act_value(a, x[i]);
}

// Reference: dx = dout * f'(x), with f'(x) computed from y = f(x); dx may alias dout.
template <typename T>
void act_backward_ref(T* dx, const T* dout, const T* y, long n, Act a) {
    for (long i = 0; i < n; ++i) dx[i] = dout[i] * act_grad_from_output(a, y[i]);
}

}  // namespace vaecpp
