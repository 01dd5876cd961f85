// Fast likelihood kernels (the fused Bernoulli loss and gradient).
// CPU only (Eigen's SIMD functions, OpenMP): kept apart from the scalar formulas, which the CUDA
// backend compiles too.
#pragma once

#include <algorithm>

#include "kernels/activations_cpu.hpp"
#include "kernels/likelihood_formulas.hpp"

namespace vaecpp {

// ---- fast kernels ----------------------------------------------------------------------------------
// lik_nll / lik_grad / lik_mean above are the readable reference. The fast path fuses the
// Bernoulli loss and its gradient into one vectorised pass that shares e = exp(-|l|):
//   softplus(l) = max(l, 0) + log1p(e),   sigmoid(l) = (l >= 0 ? 1 : e) / (1 + e).
// Other likelihoods use the reference kernels.

// x is (B,D), l is (B,D) logits; nll is (B,); dp (may be null) = w * (sigmoid(l) - x).
// mean: nll is the mean over the D dimensions (the caller puts the 1/D into w).
template <typename T>
void bernoulli_nll_grad(T* nll, T* dp, const T* x, const T* l, int B, int D, T w, bool mean = false) {
    constexpr long kChunk = 256;
#pragma omp parallel for schedule(static) if (long(B) * D >= kParallelMin)
    for (int b = 0; b < B; ++b) {
        T ebuf[kChunk];
        double acc = 0;
        for (long d0 = 0; d0 < D; d0 += kChunk) {
            const long n = std::min<long>(kChunk, D - d0);
            const long o = long(b) * D + d0;
            CArrMap<T> lv(l + o, n), xv(x + o, n);
            ArrMap<T> e(ebuf, n);
            e = (-lv.abs()).exp();
            acc += double((lv.max(T(0)) + e.log1p() - xv * lv).sum());
            if (dp) {  // a plain loop: Eigen 3.4's select() would not vectorise
                const T* __restrict lp = l + o;
                const T* __restrict xp = x + o;
                T* __restrict g = dp + o;
                for (long d = 0; d < n; ++d)
                    g[d] = w * ((lp[d] >= 0 ? T(1) : ebuf[d]) / (T(1) + ebuf[d]) - xp[d]);
            }
        }
        nll[b] = T(mean ? acc / D : acc);
    }
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
