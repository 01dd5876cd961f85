// Optimizers over one flat parameter buffer; their moments mirror its layout, so each update is a
// single loop over the element rule of optimizer_rules.hpp (Keras 3's rules).
#pragma once

#include <cmath>
#include <utility>
#include <vector>

#include "common.hpp"
#include "optimizer_rules.hpp"

namespace vaecpp {

template <typename T>
struct Optimizer {
    OptSpec spec;
    long step = 0;           // updates applied so far
    Buffer<T> m, v;     // first / second moments (or momentum / accumulator), like params

    void reset(long n) {
        step = 0;
        m.assign(n, T(0));
        v.assign(spec.kind == Opt::adagrad ? n : (spec.kind == Opt::sgd ? 0 : n),
                 spec.kind == Opt::adagrad ? T(spec.initial_accumulator_value) : T(0));
        if (spec.kind == Opt::sgd && spec.momentum == 0.0) m.clear();
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
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
        for (long i = 0; i < n; ++i) opt_update_elem(c, i, p, g, mp, vp);
    }
};

}  // namespace vaecpp
