// The optimizers' update rules for one element, Keras 3's (keras/src/optimizers/*.py), including
// where epsilon goes. Eigen-free and VAECPP_HD: the CPU loop (opt_rule_loop in
// elementwise_kernels.hpp, one per instruction set) and the CUDA kernel
// (backends/cuda/optimizers.cu) run this same code.
#pragma once

#include <cmath>
#include <string>

#include "core/types.hpp"

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
    bool use_ema = false;                                 // keep a moving average of the weights
    double ema_momentum = 0.99;
    long ema_overwrite_frequency = 0;                     // 0 = never copy the average back
};

// The names the configuration uses, in the enum's order: the one list Python reads (vaecpp._core).
constexpr const char* kOptNames[] = {"adam", "sgd", "rmsprop", "adagrad"};
constexpr int kNumOpts = int(sizeof(kOptNames) / sizeof(kOptNames[0]));

inline Opt opt_from_name(const std::string& s) {
    for (int i = 0; i < kNumOpts; ++i)
        if (s == kOptNames[i]) return Opt(i);
    throw ValueError("unknown optimizer '" + s + "'; expected one of " + join_names(kOptNames));
}

// The constants of update number `step` (1 for the first), computed once per step in double.
template <typename T>
struct OptCoeffs {
    Opt kind;
    T lr, eps, decay;   // decay = 1 - lr * weight_decay
    T alpha, a1, a2;    // adam: alpha = lr sqrt(1 - b2^t) / (1 - b1^t), a1 = 1 - b1, a2 = 1 - b2
    T mu, rho;          // sgd momentum, rmsprop rho
    bool nesterov;
};

template <typename T>
OptCoeffs<T> opt_coeffs(const OptSpec& s, long step) {
    const double t = double(step);
    OptCoeffs<T> c;
    c.kind = s.kind;
    c.lr = T(s.learning_rate);
    c.eps = T(s.epsilon);
    c.decay = T(1.0 - s.learning_rate * s.weight_decay);
    c.alpha = T(s.learning_rate * std::sqrt(1 - std::pow(s.beta_2, t)) / (1 - std::pow(s.beta_1, t)));
    c.a1 = T(1 - s.beta_1);
    c.a2 = T(1 - s.beta_2);
    c.mu = T(s.momentum);
    c.rho = T(s.rho);
    c.nesterov = s.nesterov;
    return c;
}

// Element i: p[i] -= update(g[i]); m and v are the rule's moments (unused ones may be null).
//   adam:    m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2);  p -= alpha m / (sqrt(v) + eps)
//   sgd:     m = mu m - lr g;  p += m  (nesterov: p += mu m - lr g);  plain: p -= lr g
//   rmsprop: v = rho v + (1 - rho) g^2;  p -= lr g / (sqrt(v) + eps)
//   adagrad: acc += g^2;  p -= lr g / (sqrt(acc) + eps)
// Every rule first applies the decoupled weight decay p *= 1 - lr wd.
// The rule of one optimizer kind K (a template, so that a loop over it has no switch inside and
// vectorises on the CPU).
template <Opt K, typename T>
VAECPP_HD inline void opt_rule(const OptCoeffs<T>& c, long i, T* p, const T* g, T* m, T* v) {
    p[i] *= c.decay;
    if constexpr (K == Opt::adam) {
        m[i] += (g[i] - m[i]) * c.a1;
        v[i] += (g[i] * g[i] - v[i]) * c.a2;
        p[i] -= c.alpha * m[i] / (std::sqrt(v[i]) + c.eps);
    } else if constexpr (K == Opt::sgd) {
        if (c.mu == T(0)) {
            p[i] -= c.lr * g[i];
        } else {
            m[i] = c.mu * m[i] - c.lr * g[i];
            p[i] += c.nesterov ? c.mu * m[i] - c.lr * g[i] : m[i];
        }
    } else if constexpr (K == Opt::rmsprop) {
        v[i] = c.rho * v[i] + (T(1) - c.rho) * g[i] * g[i];
        p[i] -= c.lr * g[i] / (std::sqrt(v[i]) + c.eps);
    } else {  // adagrad
        v[i] += g[i] * g[i];
        p[i] -= c.lr * g[i] / (std::sqrt(v[i]) + c.eps);
    }
}

template <typename T>
VAECPP_HD inline void opt_update_elem(const OptCoeffs<T>& c, long i, T* p, const T* g, T* m, T* v) {
    switch (c.kind) {
        case Opt::adam: opt_rule<Opt::adam>(c, i, p, g, m, v); break;
        case Opt::sgd: opt_rule<Opt::sgd>(c, i, p, g, m, v); break;
        case Opt::rmsprop: opt_rule<Opt::rmsprop>(c, i, p, g, m, v); break;
        case Opt::adagrad: opt_rule<Opt::adagrad>(c, i, p, g, m, v); break;
    }
}

// Keras 3's moving average of the weights (use_ema), after the update of step t (1 for the first):
//   avg = mu avg + (1 - mu) p,  mu = 0 at t = 1 (the average starts as the weights), else ema_momentum.
template <typename T>
VAECPP_HD inline void ema_rule(T mu, long i, T* avg, const T* p) {
    avg[i] = mu * avg[i] + (T(1) - mu) * p[i];
}

// The average's momentum after the update of step t, and whether the weights then become the
// average (Keras: every ema_overwrite_frequency iterations).
inline double ema_momentum_at(const OptSpec& s, long step) { return step <= 1 ? 0.0 : s.ema_momentum; }
inline bool ema_overwrite_at(const OptSpec& s, long step) {
    return s.ema_overwrite_frequency > 0 && step % s.ema_overwrite_frequency == 0;
}

// Keras's clipvalue: g in [-c, c].
template <typename T>
VAECPP_HD inline T clip_value(T g, T c) {
    return g < -c ? -c : (g > c ? c : g);
}

}  // namespace vaecpp
