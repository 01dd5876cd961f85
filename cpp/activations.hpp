// Element-wise activations. Every derivative is written in terms of the activation's *output*, so
// a layer only keeps its output for the backward pass (and bias + activation can be done in place).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "base.hpp"

namespace vaecpp {

enum class Act { linear, relu, leaky_relu, elu, tanh, sigmoid, softplus };

constexpr double kLeakySlope = 0.2;  // Keras 3's default negative_slope for "leaky_relu"
constexpr double kEluAlpha = 1.0;

inline Act act_from_name(const std::string& s) {
    if (s == "linear" || s == "none" || s.empty()) return Act::linear;
    if (s == "relu") return Act::relu;
    if (s == "leaky_relu") return Act::leaky_relu;
    if (s == "elu") return Act::elu;
    if (s == "tanh") return Act::tanh;
    if (s == "sigmoid") return Act::sigmoid;
    if (s == "softplus") return Act::softplus;
    throw ValueError("unknown activation '" + s +
                     "'; expected one of linear, relu, leaky_relu, elu, tanh, sigmoid, softplus");
}

inline const char* act_name(Act a) {
    switch (a) {
        case Act::linear: return "linear";
        case Act::relu: return "relu";
        case Act::leaky_relu: return "leaky_relu";
        case Act::elu: return "elu";
        case Act::tanh: return "tanh";
        case Act::sigmoid: return "sigmoid";
        case Act::softplus: return "softplus";
    }
    return "?";
}

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

// ---- fast kernels -----------------------------------------------------------------------------
// The same maths on a (rows, cols) block of a row-major matrix with row stride ld, with the switch
// on the activation hoisted out of the loops so every case vectorises (plain loops where the
// compiler can, Eigen's SIMD exp/log1p/tanh/logistic otherwise). act_value and
// act_grad_from_output above are the readable reference they are tested against.
template <typename T>
using ArrMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using CArrMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Columns per step of the kernels below that keep an intermediate (e.g. exp(-|x|)) on the stack.
constexpr long kActChunk = 256;

// The transcendental part goes through Eigen's SIMD functions into a stack buffer and the branch
// through a plain loop, so both vectorise (Eigen 3.4 evaluates select() one scalar at a time).
// v (n <= kActChunk) is overwritten with f(v); a is not linear / relu / leaky_relu.
template <typename T>
void act_chunk_transcendental(T* __restrict v, long n, Act a) {
    T tmp[kActChunk];
    ArrMap<T> V(v, n), E(tmp, n);
    switch (a) {
        case Act::elu:  // x > 0 ? x : alpha (e^x - 1)
            E = V.min(T(0)).expm1();
            for (long j = 0; j < n; ++j) v[j] = v[j] > 0 ? v[j] : T(kEluAlpha) * tmp[j];
            break;
        case Act::tanh:
            V = V.tanh();
            break;
        case Act::sigmoid:  // with e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) below
            E = (-V.abs()).exp();
            for (long j = 0; j < n; ++j) v[j] = (v[j] >= 0 ? T(1) : tmp[j]) / (T(1) + tmp[j]);
            break;
        case Act::softplus:  // max(x, 0) + log1p(exp(-|x|))
            V = V.max(T(0)) + (-V.abs()).exp().log1p();
            break;
        default:
            break;
    }
}

// y[r, j] = f(y[r, j] + b[j]) for r < rows, j < cols; y and b point at the block's first column.
// b may be null (no bias): then y = f(y).
template <typename T>
void bias_act_block(T* y, const T* b, long rows, long cols, long ld, Act a) {
    for (long r = 0; r < rows; ++r) {
        T* __restrict row = y + r * ld;
        if (b)
            for (long j = 0; j < cols; ++j) row[j] += b[j];
        switch (a) {
            case Act::linear:
                break;
            case Act::relu:
                for (long j = 0; j < cols; ++j) row[j] = row[j] > 0 ? row[j] : T(0);
                break;
            case Act::leaky_relu:
                for (long j = 0; j < cols; ++j) row[j] = row[j] > 0 ? row[j] : T(kLeakySlope) * row[j];
                break;
            default:
                for (long j0 = 0; j0 < cols; j0 += kActChunk)
                    act_chunk_transcendental(row + j0, std::min(kActChunk, cols - j0), a);
                break;
        }
    }
}

// da = dout * f'(x) with f'(x) from y = f(x), on a block; da may alias dout.
template <typename T>
void act_grad_block(T* da, const T* dout, const T* y, long rows, long cols, long ld, Act a) {
    for (long r = 0; r < rows; ++r) {
        T* d = da + r * ld;
        const T* g = dout + r * ld;
        const T* __restrict o = y + r * ld;
        switch (a) {
            case Act::linear:
                if (d != g) std::copy(g, g + cols, d);
                break;
            case Act::relu:
                for (long j = 0; j < cols; ++j) d[j] = o[j] > 0 ? g[j] : T(0);
                break;
            case Act::leaky_relu:
                for (long j = 0; j < cols; ++j) d[j] = o[j] > 0 ? g[j] : g[j] * T(kLeakySlope);
                break;
            case Act::elu:
                for (long j = 0; j < cols; ++j) d[j] = g[j] * (o[j] > 0 ? T(1) : o[j] + T(kEluAlpha));
                break;
            case Act::tanh:
                for (long j = 0; j < cols; ++j) d[j] = g[j] * (T(1) - o[j] * o[j]);
                break;
            case Act::sigmoid:
                for (long j = 0; j < cols; ++j) d[j] = g[j] * (o[j] * (T(1) - o[j]));
                break;
            case Act::softplus:
                ArrMap<T>(d, cols) = CArrMap<T>(g, cols) * -(-CArrMap<T>(o, cols)).expm1();
                break;
        }
    }
}

// Fast versions of act_forward_ref / act_backward_ref over (n,) arrays.
template <typename T>
void act_forward(T* out, const T* x, long n, Act a) {
    if (out != x) std::copy(x, x + n, out);
    if (a == Act::linear) return;
    parallel_parts(n, threads_for(double(n), double(kParallelMin), n), 64,
                   [&](long i0, long i1) { bias_act_block<T>(out + i0, nullptr, 1, i1 - i0, 0, a); });
}

template <typename T>
void act_backward(T* dx, const T* dout, const T* y, long n, Act a) {
    parallel_parts(n, threads_for(double(n), double(kParallelMin), n), 64, [&](long i0, long i1) {
        act_grad_block(dx + i0, dout + i0, y + i0, 1, i1 - i0, 0, a);
    });
}

}  // namespace vaecpp
