// Fully connected layer with a fused activation: out = f(inp @ W + b), W stored (C, OC) like Keras.
#pragma once

#include "activations.hpp"
#include "common.hpp"

namespace vaecpp {

// inp is (B,C), W is (C,OC), b is (OC,), out is (B,OC)
template <typename T>
void dense_forward(T* out, const T* inp, const T* W, const T* b, int B, int C, int OC, Act act) {
    MatMap<T> y(out, B, OC);
    y.noalias() = CMatMap<T>(inp, B, C) * CMatMap<T>(W, C, OC);
    // bias and activation in one pass over the output
    with_act(act, [&](auto A) {
#pragma omp parallel for schedule(static) if (long(B) * OC >= kParallelMin)
        for (int r = 0; r < B; ++r) {
            T* row = out + long(r) * OC;
            for (int j = 0; j < OC; ++j) row[j] = act_value(A(), row[j] + b[j]);
        }
    });
}

// With a = inp @ W + b and y = f(a):  da = dout * f'(a) (from y),
//   dW += inp^T @ da,   db += sum_rows(da),   dinp = da @ W^T.
// dout is overwritten with da; dinp may be null (first layer); dW/db accumulate.
template <typename T>
void dense_backward(T* dinp, T* dW, T* db, T* dout, const T* inp, const T* out, const T* W, int B,
                    int C, int OC, Act act) {
    act_backward(dout, dout, out, long(B) * OC, act);
    CMatMap<T> da(dout, B, OC);
    MatMap<T>(dW, C, OC).noalias() += CMatMap<T>(inp, B, C).transpose() * da;
    add_column_sums(db, dout, B, OC);
    if (dinp) MatMap<T>(dinp, B, C).noalias() = da * CMatMap<T>(W, C, OC).transpose();
}

}  // namespace vaecpp
