// Optimizers over one flat parameter buffer; their moments mirror its layout, so each update is a
// single loop. The rules are Keras 3's (keras/src/optimizers/*.py), including where epsilon goes.
#pragma once

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"

namespace vaecpp {

enum class Opt { adam, sgd, rmsprop, adagrad };

struct OptSpec {
    Opt kind = Opt::adam;
    double learning_rate = 1e-3;
    double beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-7;  // adam; epsilon also rmsprop/adagrad
    double momentum = 0.0;                                // sgd
    bool nesterov = false;                                // sgd
    double rho = 0.9;                                     // rmsprop
    double initial_accumulator_value = 0.1;               // adagrad
    double clipnorm = 0.0, clipvalue = 0.0;               // 0 = off
    double weight_decay = 0.0;                            // decoupled, as Keras: p -= lr * wd * p
};

inline Opt opt_from_name(const std::string& s) {
    if (s == "adam") return Opt::adam;
    if (s == "sgd") return Opt::sgd;
    if (s == "rmsprop") return Opt::rmsprop;
    if (s == "adagrad") return Opt::adagrad;
    throw ValueError("unknown optimizer '" + s + "'; expected one of adam, sgd, rmsprop, adagrad");
}

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
            for (long i = 0; i < n; ++i) g[i] = std::min(std::max(g[i], -c), c);
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

    // p -= update(g); g may be modified by clipping, and is zeroed when zero_grads is set (so the
    // next backward pass can accumulate into it without a separate pass to clear it).
    void update(T* p, T* g, long n, const std::vector<std::pair<long, long>>& ranges,
                bool zero_grads = false) {
        clip(g, n, ranges);
        ++step;
        const double t = double(step);
        Coeffs c;
        c.lr = T(spec.learning_rate);
        c.eps = T(spec.epsilon);
        c.decay = T(1.0 - spec.learning_rate * spec.weight_decay);
        c.alpha = T(spec.learning_rate * std::sqrt(1 - std::pow(spec.beta_2, t)) /
                    (1 - std::pow(spec.beta_1, t)));
        c.a1 = T(1 - spec.beta_1);
        c.a2 = T(1 - spec.beta_2);
        c.mu = T(spec.momentum);
        c.rho = T(spec.rho);
        T* mp = m.data();
        T* vp = v.data();
        // One pass over the flat buffers, cut into one contiguous part per thread; memory-bound,
        // so it only pays to split large models.
        const int nt = threads_for(double(n), double(kParallelMin), n / 64 + 1);
        parallel_parts(n, nt, 64, [&](long i0, long i1) {
            apply(p + i0, g + i0, mp ? mp + i0 : nullptr, vp ? vp + i0 : nullptr, i1 - i0, c,
                  zero_grads);
        });
    }

  private:
    struct Coeffs {
        T lr, eps, decay, alpha, a1, a2, mu, rho;
    };

    // The update rules on n elements; restrict lets the compiler vectorise each loop.
    void apply(T* __restrict p, T* __restrict g, T* __restrict mp, T* __restrict vp, long n,
               const Coeffs& c, bool zero_grads) const {
        const T lr = c.lr, eps = c.eps, decay = c.decay;
        switch (spec.kind) {
            case Opt::adam: {
                // alpha = lr sqrt(1 - b2^t) / (1 - b1^t);  m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2)
                // p -= alpha m / (sqrt(v) + eps)
                const T alpha = c.alpha, a1 = c.a1, a2 = c.a2;
                for (long i = 0; i < n; ++i) {
                    p[i] *= decay;
                    mp[i] += (g[i] - mp[i]) * a1;
                    vp[i] += (g[i] * g[i] - vp[i]) * a2;
                    p[i] -= alpha * mp[i] / (std::sqrt(vp[i]) + eps);
                }
                break;
            }
            case Opt::sgd: {
                // m = mu m - lr g;  p += m  (nesterov: p += mu m - lr g);  plain: p -= lr g
                const T mu = c.mu;
                if (mu == T(0)) {
                    for (long i = 0; i < n; ++i) {
                        p[i] *= decay;
                        p[i] -= lr * g[i];
                    }
                } else if (spec.nesterov) {
                    for (long i = 0; i < n; ++i) {
                        p[i] *= decay;
                        mp[i] = mu * mp[i] - lr * g[i];
                        p[i] += mu * mp[i] - lr * g[i];
                    }
                } else {
                    for (long i = 0; i < n; ++i) {
                        p[i] *= decay;
                        mp[i] = mu * mp[i] - lr * g[i];
                        p[i] += mp[i];
                    }
                }
                break;
            }
            case Opt::rmsprop: {
                // v = rho v + (1 - rho) g^2;  p -= lr g / (sqrt(v) + eps)
                const T rho = c.rho;
                for (long i = 0; i < n; ++i) {
                    p[i] *= decay;
                    vp[i] = rho * vp[i] + (T(1) - rho) * g[i] * g[i];
                    p[i] -= lr * g[i] / (std::sqrt(vp[i]) + eps);
                }
                break;
            }
            case Opt::adagrad: {
                // acc += g^2;  p -= lr g / (sqrt(acc) + eps)
                for (long i = 0; i < n; ++i) {
                    p[i] *= decay;
                    vp[i] += g[i] * g[i];
                    p[i] -= lr * g[i] / (std::sqrt(vp[i]) + eps);
                }
                break;
            }
        }
        if (zero_grads) std::fill(g, g + n, T(0));
    }
};

}  // namespace vaecpp
