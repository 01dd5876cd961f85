// The optimizer step of one layer's weights, as the layer's backward applies it to its own
// parameters as soon as their gradient is final (CpuExecutor in training without a collective
// or clipping; Dense fuses it into its weight-gradient product: dense.hpp), and as
// Optimizer::apply applies it to any part of the flat buffers. Both go through step_elements(),
// so an element's new value does not depend on which of them stepped it.
#pragma once

#include "kernels/elementwise_dispatch.hpp"
#include "kernels/optimizer_rules.hpp"

namespace vaecpp {

// A layer's parameters p and the optimizer's moments m, v at the same offsets in their flat
// buffers (null where the rule has none), with the coefficients of this step. keep_grads: the
// layer writes its weight gradient to its gradient buffer as well (the step does not need it
// there where the layer fuses the step into the gradient's product: dense.hpp).
template <typename T>
struct WeightStep {
    OptCoeffs<T> c;
    T* p;
    T* m;
    T* v;
    bool keep_grads = false;
};

// p[i], m[i], v[i] for i in [0, n) stepped on the gradient g[0, n) by the rule of c
// (optimizer_rules.hpp), in the element-wise set in use (elementwise_kernels.hpp: opt_rules).
template <typename T>
void step_elements(const OptCoeffs<T>& c, long n, T* p, const T* g, T* m, T* v) {
    with_elementwise([&](auto s) { decltype(s)::opt_rules(c, n, p, g, m, v); });
}

// Elements [off, off + n) of the layer's parameters on their gradient g (n values).
template <typename T>
void step_elements(const WeightStep<T>& s, long off, long n, const T* g) {
    step_elements(s.c, n, s.p + off, g, s.m ? s.m + off : nullptr, s.v ? s.v + off : nullptr);
}

}  // namespace vaecpp
