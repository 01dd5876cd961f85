// Likelihoods p(x | decoder output). The decoder emits P values per data dimension, laid out per
// sample as P blocks of D: [location (D) | log-variance or log-scale (D)]. Each likelihood gives the
// per-sample negative log-likelihood summed over dimensions, its gradient with respect to the
// decoder outputs, and the decoded mean.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/activation_formulas.hpp"
#include "core/types.hpp"

namespace vaecpp {

enum class Lik { bernoulli, gaussian, mse, continuous_bernoulli, laplace };

struct LikSpec {
    Lik kind = Lik::bernoulli;
    Act loc_act = Act::linear;   // applied to the location block (gaussian, mse, laplace)
    double log_var_clip = 5.0;   // gaussian log-variance / laplace log-scale clip
    double laplace_scale = 0.0;  // > 0: fixed Laplace scale (P = 1); 0: learned log-scale (P = 2)
    bool mean_reduction = false; // reduction="mean": mean over dimensions instead of the sum

    VAECPP_HD int params_per_dim() const {
        if (kind == Lik::gaussian) return 2;
        if (kind == Lik::laplace) return laplace_scale > 0 ? 1 : 2;
        return 1;
    }
};

// The names the configuration uses, in the enum's order: the one list Python reads (vaecpp._core).
constexpr const char* kLikNames[] = {"bernoulli", "gaussian", "mse", "continuous_bernoulli", "laplace"};
constexpr int kNumLiks = int(sizeof(kLikNames) / sizeof(kLikNames[0]));

inline Lik lik_from_name(const std::string& s) {
    for (int i = 0; i < kNumLiks; ++i)
        if (s == kLikNames[i]) return Lik(i);
    throw ValueError("unknown likelihood '" + s + "'; expected one of " + join_names(kLikNames));
}

constexpr double kLog2 = 0.6931471805599453;

// Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) in logits l, lambda = sigmoid(l):
//   log C(l) = log( l / tanh(l/2) ),   d log C / dl = 1/l - 1/sinh(l),
//   E[x] = sigmoid(l) / tanh(l/2) - 1/l.
// All three are 0/0 at l = 0; near it we use their Taylor series (error < 1e-13 for |l| < 0.05).
// These and the per-dimension formulas below are VAECPP_HD: cpp/cuda/likelihoods.cu calls them.
VAECPP_HD inline double cb_log_norm(double l) {
    double a = std::abs(l);
    if (a < 0.05) {
        double l2 = l * l;
        return kLog2 + l2 / 12 - 7 * l2 * l2 / 1440 + 31 * l2 * l2 * l2 / 90720;
    }
    return std::log(a) - std::log(std::tanh(0.5 * a));
}
VAECPP_HD inline double cb_dlog_norm(double l) {
    if (std::abs(l) < 0.05) {
        double l2 = l * l;
        return l / 6 - 7 * l * l2 / 360 + 31 * l * l2 * l2 / 15120;
    }
    if (std::abs(l) > 700) return 1 / l;  // 1/sinh underflows to 0
    return 1 / l - 1 / std::sinh(l);
}
VAECPP_HD inline double cb_mean(double l) {
    if (std::abs(l) < 0.05) return 0.5 + l / 12 - l * l * l / 720;
    return sigmoid(l) / std::tanh(0.5 * l) - 1 / l;
}

// One data dimension: -log p(x | l, l2), with l the location output and l2 the second output
// (log-variance or log-scale; unused when P = 1). Summed over d by lik_nll.
template <typename T>
VAECPP_HD inline double lik_nll_dim(const LikSpec& s, int P, T x, T l, T l2) {
    const T clip = T(s.log_var_clip);
    switch (s.kind) {
        case Lik::bernoulli:  // softplus(l) - x l  (binary cross-entropy from logits)
            return softplus(l) - x * l;
        case Lik::continuous_bernoulli:
            return softplus(l) - x * l - cb_log_norm(l);
        case Lik::gaussian: {  // (log 2pi + lv + (x - mu)^2 / e^lv) / 2
            T mu = act_value(s.loc_act, l);
            T lv = std::min(std::max(l2, -clip), clip);
            T r = x - mu;
            return 0.5 * (kLog2Pi + lv + r * r * std::exp(-lv));
        }
        case Lik::mse: {
            T r = x - act_value(s.loc_act, l);
            return r * r;
        }
        case Lik::laplace: {  // |x - mu| / b + log(2 b)
            T mu = act_value(s.loc_act, l);
            T ls = P == 2 ? std::min(std::max(l2, -clip), clip) : T(std::log(s.laplace_scale));
            return std::abs(x - mu) * std::exp(-ls) + kLog2 + ls;
        }
    }
    return 0;
}

// One data dimension of dp = w * d nll / d p: g for the location, g2 for the second output:
//   bernoulli: sigmoid(l) - x;  continuous Bernoulli: sigmoid(l) - x - dlogC(l);
//   gaussian:  dmu = (mu - x) / e^lv * f'(.),  dlv = (1 - (x - mu)^2 / e^lv) / 2 inside the clip, else 0;
//   mse: 2 (y - x) f'(.);  laplace: sign(mu - x) / b * f'(.),  dls = 1 - |x - mu| / b inside the clip.
// w already includes the 1/D of reduction="mean".
template <typename T>
VAECPP_HD inline void lik_grad_dim(T& g, T& g2, const LikSpec& s, int P, T x, T l, T l2, T w) {
    const T clip = T(s.log_var_clip);
    switch (s.kind) {
        case Lik::bernoulli:
            g = w * (sigmoid(l) - x);
            break;
        case Lik::continuous_bernoulli:
            g = w * (sigmoid(l) - x - T(cb_dlog_norm(l)));
            break;
        case Lik::gaussian: {
            T mu = act_value(s.loc_act, l);
            T lv = std::min(std::max(l2, -clip), clip);
            T iv = std::exp(-lv), r = x - mu;
            g = w * (-r * iv) * act_grad_from_output(s.loc_act, mu);
            g2 = (l2 > -clip && l2 < clip) ? w * T(0.5) * (T(1) - r * r * iv) : T(0);
            break;
        }
        case Lik::mse: {
            T y = act_value(s.loc_act, l);
            g = w * T(2) * (y - x) * act_grad_from_output(s.loc_act, y);
            break;
        }
        case Lik::laplace: {
            T mu = act_value(s.loc_act, l);
            T r = x - mu;
            T sgn = r > 0 ? T(-1) : (r < 0 ? T(1) : T(0));
            if (P == 2) {
                T ls = std::min(std::max(l2, -clip), clip);
                T ib = std::exp(-ls);
                g = w * sgn * ib * act_grad_from_output(s.loc_act, mu);
                g2 = (l2 > -clip && l2 < clip) ? w * (T(1) - std::abs(r) * ib) : T(0);
            } else {
                g = w * sgn * T(1.0 / s.laplace_scale) * act_grad_from_output(s.loc_act, mu);
            }
            break;
        }
    }
}

// The likelihood's mean from one dimension's location output.
template <typename T>
VAECPP_HD inline T lik_mean_dim(const LikSpec& s, T l) {
    switch (s.kind) {
        case Lik::bernoulli: return sigmoid(l);
        case Lik::continuous_bernoulli: return T(cb_mean(l));
        default: return act_value(s.loc_act, l);
    }
}

// x is (B,D), p is (B,P*D), nll is (B,): nll[b] = sum_d -log p(x[b,d] | p[b,.,d])
template <typename T>
void lik_nll(T* nll, const T* x, const T* p, int B, int D, const LikSpec& s) {
    const int P = s.params_per_dim();
#pragma omp parallel for schedule(static) if (long(B) * D >= kParallelMin)
    for (int b = 0; b < B; ++b) {
        const T* xb = x + long(b) * D;
        const T* pb = p + long(b) * P * D;
        double acc = 0;
        for (int d = 0; d < D; ++d) acc += lik_nll_dim(s, P, xb[d], pb[d], P == 2 ? pb[D + d] : T(0));
        if (s.mean_reduction) acc /= D;  // Keras 1's losses: the mean over dimensions
        nll[b] = T(acc);
    }
}

// dp = w * d nll / d p, same layout as p (overwritten)
template <typename T>
void lik_grad(T* dp, const T* x, const T* p, int B, int D, const LikSpec& s, T w) {
    const int P = s.params_per_dim();
    if (s.mean_reduction) w /= D;
#pragma omp parallel for schedule(static) if (long(B) * D >= kParallelMin)
    for (int b = 0; b < B; ++b) {
        const T* xb = x + long(b) * D;
        const T* pb = p + long(b) * P * D;
        T* gb = dp + long(b) * P * D;
        T unused;
        for (int d = 0; d < D; ++d)
            lik_grad_dim(gb[d], P == 2 ? gb[D + d] : unused, s, P, xb[d], pb[d],
                         P == 2 ? pb[D + d] : T(0), w);
    }
}

// out is (B,D): the mean of p(x | p)
template <typename T>
void lik_mean(T* out, const T* p, int B, int D, const LikSpec& s) {
    const int P = s.params_per_dim();
#pragma omp parallel for schedule(static) if (long(B) * D >= kParallelMin)
    for (int b = 0; b < B; ++b) {
        const T* pb = p + long(b) * P * D;
        T* ob = out + long(b) * D;
        for (int d = 0; d < D; ++d) ob[d] = lik_mean_dim(s, pb[d]);
    }
}

}  // namespace vaecpp
