// Optimizers over one flat parameter buffer; their moments mirror its layout, so each update is a
// single loop over the element rule of optimizer_rules.hpp (Keras 3's rules).
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/buffers.hpp"
#include "core/threads.hpp"
#include "kernels/optimizer_rules.hpp"

namespace vaecpp {

template <typename T>
struct Optimizer {
    OptSpec spec;
    long step = 0;           // updates applied so far
    Buffer<T> m, v;     // first / second moments (or momentum / accumulator), like params
    Buffer<T> ema;      // the weights' moving average (use_ema), like params; else empty

    void reset(long n) {
        step = 0;
        m.assign(n, T(0));
        v.assign(spec.kind == Opt::adagrad ? n : (spec.kind == Opt::sgd ? 0 : n),
                 spec.kind == Opt::adagrad ? T(spec.initial_accumulator_value) : T(0));
        if (spec.kind == Opt::sgd && spec.momentum == 0.0) m.clear();
        ema.assign(spec.use_ema ? n : 0, T(0));
    }

    // The moving average of the weights p (n,) after this step's update (Keras 3's use_ema;
    // optimizer_rules.hpp), and every ema_overwrite_frequency steps the weights set to it.
    void average(T* p, long n) {
        if (!spec.use_ema) return;
        const T mu = T(ema_momentum_at(spec, step));
        const bool overwrite = ema_overwrite_at(spec, step);
        T* a = ema.data();
        parallel_parts(n, threads_for(double(n), double(kParallelMin), n / 64 + 1), 64,
                       [&](long i0, long i1) {
            for (long i = i0; i < i1; ++i) ema_rule(mu, i, a, p);
            if (overwrite) std::copy(a + i0, a + i1, p + i0);
        });
    }

    // Keras's clipnorm acts on each weight array separately; `ranges` are their (offset, size).
    void clip(T* g, long n, const std::vector<std::pair<long, long>>& ranges) const {
        if (spec.clipvalue > 0) {
            const T c = T(spec.clipvalue);
            for (long i = 0; i < n; ++i) g[i] = clip_value(g[i], c);
        }
        if (spec.clipnorm > 0) {
            for (auto [off, len] : ranges) {
                double ss = 0;
                for (long i = off; i < off + len; ++i) ss += double(g[i]) * g[i];
                double norm = std::sqrt(ss);
                if (norm > spec.clipnorm) {
                    const T f = T(spec.clipnorm / norm);
                    for (long i = off; i < off + len; ++i) g[i] *= f;
                }
            }
        }
    }

    // p -= update(g); g may be modified by clipping.
    void update(T* p, T* g, long n, const std::vector<std::pair<long, long>>& ranges) {
        clip(g, n, ranges);
        ++step;
        const OptCoeffs<T> c = opt_coeffs<T>(spec, step);
        T* mp = m.data();
        T* vp = v.data();
        // One pass over the flat buffers (the rules of optimizer_rules.hpp, shared with the CUDA
        // kernels), one contiguous part per thread; memory-bound, so split only large models.
        const int nt = threads_for(double(n), double(kParallelMin), n / 64 + 1);
        parallel_parts(n, nt, 64, [&](long i0, long i1) {
            const long k = i1 - i0;
            T* pm = mp ? mp + i0 : nullptr;  // a moment the rule does not use may be empty
            T* pv = vp ? vp + i0 : nullptr;
            switch (c.kind) {  // one loop per rule, so that each vectorises
                case Opt::adam: apply<Opt::adam>(c, k, p + i0, g + i0, pm, pv); break;
                case Opt::sgd: apply<Opt::sgd>(c, k, p + i0, g + i0, pm, pv); break;
                case Opt::rmsprop: apply<Opt::rmsprop>(c, k, p + i0, g + i0, pm, pv); break;
                case Opt::adagrad: apply<Opt::adagrad>(c, k, p + i0, g + i0, pm, pv); break;
            }
        });
    }

  private:
    // The rule over n elements. The coefficients by value and restrict pointers: nothing the loop
    // writes can alias what it reads, so the compiler vectorises it (sqrt and division included,
    // with -fno-math-errno).
    template <Opt K>
    static void apply(const OptCoeffs<T> c, long n, T* __restrict p, const T* __restrict g,
                      T* __restrict m, T* __restrict v) {
        for (long i = 0; i < n; ++i) opt_rule<K>(c, i, p, g, m, v);
    }
};

}  // namespace vaecpp
