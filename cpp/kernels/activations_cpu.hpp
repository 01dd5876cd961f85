// Fast element-wise activation kernels over blocks of row-major matrices.
// CPU only (Eigen's SIMD functions, OpenMP): kept apart from the scalar formulas, which the CUDA
// backend compiles too.
#pragma once

#include <algorithm>

#include "kernels/activation_formulas.hpp"
#include "core/threads.hpp"

namespace vaecpp {

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
