// Importance weighting (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders").
// For sample b and K draws z_bk = mu_b + sigma_b * eps_bk of q(z|x_b):
//   log w_bk = log p(x_b|z_bk) + log p(z_bk) - log q(z_bk|x_b)
//   bound_b  = log (1/K) sum_k w_bk            (K = 1: the ELBO; K -> inf: log p(x_b))
// Rows are laid out r = b*K + k.
#pragma once

#include <cmath>

#include "core/threads.hpp"
#include "kernels/kl.hpp"

namespace vaecpp {

// c_r = -log w_r = nll_r + (1/2) sum_j (log 2 pi s^2 + z^2/s^2) - (1/2) sum_j (log 2 pi + lv + eps^2)
// nll (B*K,), z and eps (B*K, L), lv (B, L); c is (B*K,) in double.
template <typename T>
void iwae_neg_log_weights(double* c, const T* nll, const T* z, const T* eps, const T* lv, int B,
                          int K, int L, double prior_std) {
    const double log_2pi_s2 = kLog2Pi + 2.0 * std::log(prior_std), inv_s2 = 1.0 / (prior_std * prior_std);
    for (long r = 0; r < long(B) * K; ++r) {
        const T* zr = z + r * L;
        const T* er = eps + r * L;
        const T* lr = lv + (r / K) * L;
        double acc = nll[r];
        for (int j = 0; j < L; ++j)
            acc += 0.5 * (log_2pi_s2 + double(zr[j]) * zr[j] * inv_s2) -
                   0.5 * (kLog2Pi + double(lr[j]) + double(er[j]) * er[j]);
        c[r] = acc;
    }
}

// Per sample: bound_b = logsumexp_k(-c_bk) - log K, and the normalised weights
// wn_bk = exp(-c_bk - logsumexp_k(-c_bk)) (they sum to one over k).
inline void iwae_bound(double* bound, double* wn, const double* c, int B, int K) {
    for (int b = 0; b < B; ++b) {
        const double* cb = c + long(b) * K;
        double m = -cb[0];
        for (int k = 1; k < K; ++k) m = std::max(m, -cb[k]);
        double s = 0;
        for (int k = 0; k < K; ++k) s += std::exp(-cb[k] - m);
        const double lse = m + std::log(s);
        bound[b] = lse - std::log(double(K));
        for (int k = 0; k < K; ++k) wn[long(b) * K + k] = std::exp(-cb[k] - lse);
    }
}

// Gradient of loss = -(1/B) sum_b bound_b with respect to mu and lv, given dz (B*K, L), the
// gradient already propagated back through the decoder (scaled by wn_r / B). With
// d(-bound_b) = sum_k wn_bk d c_bk:
//   dc/dz (explicit)  = z / s^2,   dc/dlv (explicit, eps fixed) = -1/2,
//   z = mu + exp(lv/2) eps:  dmu += dz_total,  dlv += dz_total * eps * exp(lv/2) / 2.
// dmu, dlv (B, L) are overwritten.
template <typename T>
void iwae_latent_backward(T* dmu, T* dlv, const T* dz, const T* z, const T* eps, const T* lv,
                          const double* wn, int B, int K, int L, double prior_std) {
    const double inv_s2 = 1.0 / (prior_std * prior_std), w = 1.0 / B;
    for (int b = 0; b < B; ++b) {
        for (int j = 0; j < L; ++j) {
            const double sd = std::exp(0.5 * double(lv[long(b) * L + j]));
            double gm = 0, gl = -0.5 * w;  // sum_k wn = 1
            for (int k = 0; k < K; ++k) {
                const long r = long(b) * K + k;
                const double dzt = dz[r * L + j] + wn[r] * w * z[r * L + j] * inv_s2;
                gm += dzt;
                gl += dzt * eps[r * L + j] * 0.5 * sd;
            }
            dmu[long(b) * L + j] = T(gm);
            dlv[long(b) * L + j] = T(gl);
        }
    }
}

}  // namespace vaecpp
