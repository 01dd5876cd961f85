// Optimizers over one flat parameter buffer; their moments mirror its layout, so an update is a
// loop over the element rule of optimizer_rules.hpp (Keras 3's rules), over the whole buffer or,
// in training without a collective, over each layer's part as soon as its gradient is complete
// (a Dense layer's weights inside its backward: weight_step.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/buffers.hpp"
#include "core/threads.hpp"
#include "kernels/optimizer_rules.hpp"
#include "kernels/weight_step.hpp"

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

    // Keras's clipnorm acts on each weight array separately; `ranges` are their (offset, size)
    // in the flat buffer, and those inside [off, off + n) are clipped.
    void clip(T* g, long off, long n, const std::vector<std::pair<long, long>>& ranges) const {
        if (spec.clipvalue > 0) {
            const T c = T(spec.clipvalue);
            for (long i = off; i < off + n; ++i) g[i] = clip_value(g[i], c);
        }
        if (spec.clipnorm > 0) {
            for (auto [a, len] : ranges) {
                if (a < off || a + len > off + n) continue;
                double ss = 0;
                for (long i = a; i < a + len; ++i) ss += double(g[i]) * g[i];
                double norm = std::sqrt(ss);
                if (norm > spec.clipnorm) {
                    const T f = T(spec.clipnorm / norm);
                    for (long i = a; i < a + len; ++i) g[i] *= f;
                }
            }
        }
    }

    // One optimizer step over the whole flat buffer: p -= update(g); g may be modified by clipping.
    void update(T* p, T* g, long n, const std::vector<std::pair<long, long>>& ranges) {
        begin_step();
        apply(p, g, 0, n, ranges);
    }

    // The same step in parts (e.g. each layer's weights as soon as its gradient is complete):
    // begin_step() once, then apply() to parts that together cover the buffer once. Every element
    // goes through the same rule with the same coefficients as in update(), and clipnorm's arrays
    // lie each inside one part, so the result is update()'s, bit for bit.
    void begin_step() {
        ++step;
        coeffs_ = opt_coeffs<T>(spec, step);
    }

    // Clipping and the rule over elements [off, off + n) of the flat buffers p, g and the moments.
    void apply(T* p, T* g, long off, long n, const std::vector<std::pair<long, long>>& ranges) {
        clip(g, off, n, ranges);
        const OptCoeffs<T> c = coeffs_;
        T* mp = m.data();
        T* vp = v.data();
        // The rules of optimizer_rules.hpp (shared with the CUDA kernels) in the instruction set
        // picked at run time (opt_rules in elementwise_kernels.hpp), one contiguous part per
        // thread; memory-bound, so split only large parts.
        const int nt = threads_for(double(n), double(kParallelMin), n / 64 + 1);
        parallel_parts(n, nt, 64, [&](long i0, long i1) {
            const long a = off + i0;
            T* pm = mp ? mp + a : nullptr;  // a moment the rule does not use may be empty
            T* pv = vp ? vp + a : nullptr;
            step_elements(c, i1 - i0, p + a, g + a, pm, pv);
        });
    }

    // Whether a layer may apply this step to its own weights inside backward (weight_step): no
    // clipping, which needs a whole weight array's gradient (clipnorm) or changes it first.
    bool steps_in_backward() const { return spec.clipnorm == 0 && spec.clipvalue == 0; }

    // The step (after begin_step()) of the parameters p that start at offset `off` of the flat
    // buffer, for their layer's backward to apply (weight_step.hpp).
    WeightStep<T> weight_step(T* p, long off) {
        return {coeffs_, p, m.empty() ? nullptr : m.data() + off, v.empty() ? nullptr : v.data() + off};
    }

  private:
    OptCoeffs<T> coeffs_{};  // of update number `step`, set by begin_step()
};

}  // namespace vaecpp
