// Fast likelihood kernels (the fused Bernoulli loss and gradient).
// CPU only (run-time dispatched SIMD loops, OpenMP): kept apart from the scalar formulas, which
// the CUDA backend compiles too.
#pragma once

#include <algorithm>

#include "kernels/activations_cpu.hpp"
#include "kernels/likelihood_formulas.hpp"

namespace vaecpp {

// ---- fast kernels ----------------------------------------------------------------------------------
// lik_nll / lik_grad / lik_mean above are the readable reference. The fast path fuses the
// Bernoulli loss and its gradient into one vectorised pass that shares e = exp(-|l|):
//   softplus(l) = max(l, 0) + log1p(e),   sigmoid(l) = (l >= 0 ? 1 : e) / (1 + e),
// in the instruction set picked at run time (bernoulli_row in elementwise_kernels.hpp). Other
// likelihoods use the reference kernels.

// x is (B,D), l is (B,D) logits; nll is (B,); dp (may be null) = w * (sigmoid(l) - x).
// mean: nll is the mean over the D dimensions (the caller puts the 1/D into w).
template <typename T>
void bernoulli_nll_grad(T* nll, T* dp, const T* x, const T* l, int B, int D, T w, bool mean = false) {
    with_elementwise([&](auto set) {
#pragma omp parallel for schedule(static) if (long(B) * D >= kParallelMin)
        for (int b = 0; b < B; ++b) {
            const long o = long(b) * D;
            T* dpb = dp ? dp + o : nullptr;
            const double acc = decltype(set)::bernoulli_row(dpb, x + o, l + o, D, w);
            nll[b] = T(mean ? acc / D : acc);
        }
    });
}

// nll (and dp when not null) as lik_nll / lik_grad, fast where a fused kernel exists.
template <typename T>
void lik_nll_grad(T* nll, T* dp, const T* x, const T* p, int B, int D, const LikSpec& s, T w) {
    if (s.kind == Lik::bernoulli)
        return bernoulli_nll_grad(nll, dp, x, p, B, D, s.mean_reduction ? w / T(D) : w, s.mean_reduction);
    lik_nll(nll, x, p, B, D, s);
    if (dp) lik_grad(dp, x, p, B, D, s, w);
}

// As lik_mean, with the Bernoulli mean through the vectorised sigmoid.
template <typename T>
void lik_mean_fast(T* out, const T* p, int B, int D, const LikSpec& s) {
    if (s.kind != Lik::bernoulli) return lik_mean(out, p, B, D, s);
    const long n = long(B) * D;
    if (out != p) std::copy(p, p + n, out);
    parallel_parts(n, threads_for(double(n), double(kParallelMin), n), 64, [&](long i0, long i1) {
        bias_act_block<T>(out + i0, nullptr, 1, i1 - i0, 0, Act::sigmoid);
    });
}

}  // namespace vaecpp
