// Fast element-wise activation kernels over blocks of row-major matrices.
// CPU only (run-time dispatched SIMD loops, OpenMP): kept apart from the scalar formulas, which
// the CUDA backend compiles too.
#pragma once

#include <algorithm>

#include "core/threads.hpp"
#include "kernels/activation_formulas.hpp"
#include "kernels/elementwise_dispatch.hpp"

namespace vaecpp {

// ---- fast kernels -----------------------------------------------------------------------------
// The same maths on a (rows, cols) block of a row-major matrix with row stride ld, in the
// instruction set picked at run time (elementwise_dispatch.hpp; the loops are in
// elementwise_kernels.hpp). act_value and act_grad_from_output above are the readable reference
// they are tested against.

// y[r, j] = f(y[r, j] + b[j]) for r < rows, j < cols; y and b point at the block's first column.
// b may be null (no bias): then y = f(y).
template <typename T>
void bias_act_block(T* y, const T* b, long rows, long cols, long ld, Act a) {
    with_elementwise([&](auto set) { decltype(set)::bias_act(y, b, rows, cols, ld, a); });
}

// da = dout * f'(x) with f'(x) from y = f(x), on a block; da may alias dout.
template <typename T>
void act_grad_block(T* da, const T* dout, const T* y, long rows, long cols, long ld, Act a) {
    with_elementwise([&](auto set) { decltype(set)::act_grad(da, dout, y, rows, cols, ld, a); });
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
