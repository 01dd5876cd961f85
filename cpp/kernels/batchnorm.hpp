// Batch normalisation over the last (channel) axis with Keras semantics (Ioffe & Szegedy 2015):
//   y = gamma (x - mean) rstd + beta,  rstd = 1 / sqrt(var + epsilon),
// with the batch's mean and biased variance over all B * (spatial) rows while training, which also
// move the running statistics (moving = moving * momentum + batch * (1 - momentum), the biased
// variance too, as Keras 3 does), and the moving statistics in inference.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "core/threads.hpp"

namespace vaecpp {

// s (width,) = sum over the N rows of row(r, acc), where row adds row r's terms into acc (width,).
// Per-thread partials in double (part is their scratch), added in thread order.
template <typename F>
void channel_sums(double* s, int width, long N, std::vector<double>& part, F row) {
    const int nt = team_size();
    part.assign(size_t(nt) * width, 0.0);
#pragma omp parallel if (N * width >= kParallelMin)
    {
        double* acc = part.data() + long(thread_num()) * width;
#pragma omp for schedule(static)
        for (long r = 0; r < N; ++r) row(r, acc);
    }
    std::fill_n(s, width, 0.0);
    for (int t = 0; t < nt; ++t)
        for (int c = 0; c < width; ++c) s[c] += part[long(t) * width + c];
}

// inp is (N,C); fills the batch's mean and rstd (C,) and moves moving_mean, moving_var (C,)
template <typename T>
void batchnorm_batch_stats(double* mean, double* rstd, T* moving_mean, T* moving_var, const T* inp,
                           long N, int C, double momentum, double eps, std::vector<double>& part) {
    channel_sums(mean, C, N, part, [&](long r, double* acc) {
        for (int c = 0; c < C; ++c) acc[c] += inp[r * C + c];
    });
    for (int c = 0; c < C; ++c) mean[c] /= double(N);
    // two passes: the variance of the centred values has no cancellation
    channel_sums(rstd, C, N, part, [&](long r, double* acc) {
        for (int c = 0; c < C; ++c) {
            const double d = inp[r * C + c] - mean[c];
            acc[c] += d * d;
        }
    });
    for (int c = 0; c < C; ++c) {
        const double var = rstd[c] / double(N);
        moving_mean[c] = T(moving_mean[c] * momentum + mean[c] * (1.0 - momentum));
        moving_var[c] = T(moving_var[c] * momentum + var * (1.0 - momentum));
        rstd[c] = 1.0 / std::sqrt(var + eps);
    }
}

// inp, out are (N,C); mean, rstd, gamma, beta are (C,)
template <typename T>
void batchnorm_forward(T* out, const T* inp, const double* mean, const double* rstd, const T* gamma,
                       const T* beta, long N, int C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (long r = 0; r < N; ++r)
        for (int c = 0; c < C; ++c)
            out[r * C + c] = T((inp[r * C + c] - mean[c]) * rstd[c]) * gamma[c] + beta[c];
}

// With xhat = (x - mean) rstd, y = gamma xhat + beta over the N rows of a channel:
//   dbeta += sum dy,  dgamma += sum dy xhat,  dxhat = gamma dy.
// Training: dmean/dx_i = 1/N and drstd/dx_i = -rstd^3 (x_i - mean) / N give
//   dx_i = rstd / N (N dxhat_i - sum_j dxhat_j - xhat_i sum_j dxhat_j xhat_j).
// Inference (moving statistics are constants): dx_i = rstd dxhat_i.  dinp may be null.
template <typename T>
void batchnorm_backward(T* dinp, T* dgamma, T* dbeta, const T* dout, const T* inp, const double* mean,
                        const double* rstd, const T* gamma, long N, int C, bool training,
                        std::vector<double>& part, std::vector<double>& sums) {
    // sums = [sum dy (C) | sum dy xhat (C)]
    sums.resize(2 * size_t(C));
    channel_sums(sums.data(), 2 * C, N, part, [&](long r, double* acc) {
        for (int c = 0; c < C; ++c) {
            const double dy = dout[r * C + c];
            acc[c] += dy;
            acc[C + c] += dy * (inp[r * C + c] - mean[c]) * rstd[c];
        }
    });
    for (int c = 0; c < C; ++c) {
        dbeta[c] += T(sums[c]);
        dgamma[c] += T(sums[C + c]);
    }
    if (!dinp) return;
    const double* sdy = sums.data();
    const double* sdyxh = sums.data() + C;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (long r = 0; r < N; ++r)
        for (int c = 0; c < C; ++c) {
            const long k = r * C + c;
            const double g = double(gamma[c]) * rstd[c];
            if (!training) {
                dinp[k] = T(g * dout[k]);
                continue;
            }
            const double xhat = (inp[k] - mean[c]) * rstd[c];
            dinp[k] = T(g / double(N) * (double(N) * dout[k] - sdy[c] - xhat * sdyxh[c]));
        }
}

}  // namespace vaecpp
