// The diagonal Gaussian posterior q(z|x) = N(mu, diag(exp(lv))): reparameterisation and its KL
// divergence to the prior p(z) = N(0, s^2 I), both in closed form with hand-written gradients.
// The per-element formulas are VAECPP_HD: cpp/cuda/kl.cu runs the same ones on the GPU.
#pragma once

#include <cmath>

#include "core/types.hpp"

namespace vaecpp {

// z = mu + exp(lv/2) * eps
template <typename T>
VAECPP_HD inline T reparam_value(T mu, T lv, T eps) {
    return mu + std::exp(T(0.5) * lv) * eps;
}

// dz/dmu = 1,  dz/dlv = eps * exp(lv/2) / 2
template <typename T>
VAECPP_HD inline T reparam_dlv(T dz, T lv, T eps) {
    return dz * eps * T(0.5) * std::exp(T(0.5) * lv);
}

// One latent dimension of 2 KL: (exp(lv) + mu^2) / s^2 - 1 - lv + log s^2
template <typename T>
VAECPP_HD inline T kl_term(T mu, T lv, T inv_s2, T log_s2) {
    return (std::exp(lv) + mu * mu) * inv_s2 - T(1) - lv + log_s2;
}

// d KL / d lv = (exp(lv) / s^2 - 1) / 2  (d KL / d mu = mu / s^2 is written inline)
template <typename T>
VAECPP_HD inline T kl_dlv(T lv, T inv_s2) {
    return T(0.5) * (std::exp(lv) * inv_s2 - T(1));
}

// mu, lv, eps, z are (B,L):  z = mu + exp(lv/2) * eps
template <typename T>
void reparam_forward(T* z, const T* mu, const T* lv, const T* eps, long n) {
    for (long i = 0; i < n; ++i) z[i] = reparam_value(mu[i], lv[i], eps[i]);
}

// dmu, dlv accumulate.
template <typename T>
void reparam_backward(T* dmu, T* dlv, const T* dz, const T* lv, const T* eps, long n) {
    for (long i = 0; i < n; ++i) {
        dmu[i] += dz[i];
        dlv[i] += reparam_dlv(dz[i], lv[i], eps[i]);
    }
}

// kl is (B,): KL(q || p) = 1/2 sum_j kl_term(mu_j, lv_j)
template <typename T>
void kl_forward(T* kl, const T* mu, const T* lv, int B, int L, double prior_std) {
    const T inv_s2 = T(1.0 / (prior_std * prior_std));
    const T log_s2 = T(2.0 * std::log(prior_std));
    for (int b = 0; b < B; ++b) {
        const T* m = mu + long(b) * L;
        const T* v = lv + long(b) * L;
        T acc = 0;
        for (int j = 0; j < L; ++j) acc += kl_term(m[j], v[j], inv_s2, log_s2);
        kl[b] = T(0.5) * acc;
    }
}

// Scaled by w and accumulated.
template <typename T>
void kl_backward(T* dmu, T* dlv, const T* mu, const T* lv, long n, double prior_std, T w) {
    const T inv_s2 = T(1.0 / (prior_std * prior_std));
    for (long i = 0; i < n; ++i) {
        dmu[i] += w * mu[i] * inv_s2;
        dlv[i] += w * kl_dlv(lv[i], inv_s2);
    }
}

}  // namespace vaecpp
