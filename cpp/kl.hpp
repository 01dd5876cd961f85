// The diagonal Gaussian posterior q(z|x) = N(mu, diag(exp(lv))): reparameterisation and its KL
// divergence to the prior p(z) = N(0, s^2 I), both in closed form with hand-written gradients.
#pragma once

#include <cmath>

#include "common.hpp"

namespace vaecpp {

// mu, lv, eps, z are (B,L):  z = mu + exp(lv/2) * eps
template <typename T>
void reparam_forward(T* z, const T* mu, const T* lv, const T* eps, long n) {
    for (long i = 0; i < n; ++i) z[i] = mu[i] + std::exp(T(0.5) * lv[i]) * eps[i];
}

// dz/dmu = 1,  dz/dlv = eps * exp(lv/2) / 2;  dmu, dlv accumulate.
template <typename T>
void reparam_backward(T* dmu, T* dlv, const T* dz, const T* lv, const T* eps, long n) {
    for (long i = 0; i < n; ++i) {
        dmu[i] += dz[i];
        dlv[i] += dz[i] * eps[i] * T(0.5) * std::exp(T(0.5) * lv[i]);
    }
}

// kl is (B,): KL(q || p) = 1/2 sum_j ( (exp(lv) + mu^2) / s^2 - 1 - lv + log s^2 )
template <typename T>
void kl_forward(T* kl, const T* mu, const T* lv, int B, int L, double prior_std) {
    const T inv_s2 = T(1.0 / (prior_std * prior_std));
    const T log_s2 = T(2.0 * std::log(prior_std));
    for (int b = 0; b < B; ++b) {
        const T* m = mu + long(b) * L;
        const T* v = lv + long(b) * L;
        T acc = 0;
        for (int j = 0; j < L; ++j)
            acc += (std::exp(v[j]) + m[j] * m[j]) * inv_s2 - T(1) - v[j] + log_s2;
        kl[b] = T(0.5) * acc;
    }
}

// d KL / d mu = mu / s^2,  d KL / d lv = (exp(lv) / s^2 - 1) / 2;  scaled by w, accumulated.
template <typename T>
void kl_backward(T* dmu, T* dlv, const T* mu, const T* lv, long n, double prior_std, T w) {
    const T inv_s2 = T(1.0 / (prior_std * prior_std));
    for (long i = 0; i < n; ++i) {
        dmu[i] += w * mu[i] * inv_s2;
        dlv[i] += w * T(0.5) * (std::exp(lv[i]) * inv_s2 - T(1));
    }
}

}  // namespace vaecpp
