// Likelihoods on the GPU, with the per-dimension formulas of kernels/likelihood_formulas.hpp (the reference).
#include "common.cuh"
#include "kernels.hpp"

namespace vaecpp::cuda {

// One block per sample: each thread sums its strided dimensions in double, then a fixed tree.
__global__ void lik_nll_kernel(float* nll, const float* x, const float* p, int D, LikSpec s) {
    __shared__ double part[kThreads];
    const int P = s.params_per_dim();
    const float* xb = x + long(blockIdx.x) * D;
    const float* pb = p + long(blockIdx.x) * P * D;
    double acc = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        acc += lik_nll_dim(s, P, xb[d], pb[d], P == 2 ? pb[D + d] : 0.f);
    acc = block_sum(acc, part);
    if (threadIdx.x == 0) {
        if (s.mean_reduction) acc /= D;
        nll[blockIdx.x] = float(acc);
    }
}

void lik_nll(float* nll, const float* x, const float* p, int B, int D, const LikSpec& s) {
    if (B == 0) return;
    lik_nll_kernel<<<B, kThreads>>>(nll, x, p, D, s);
    VAECPP_CUDA_CHECK_LAUNCH();
}

__global__ void lik_grad_kernel(float* dp, const float* x, const float* p, long n, int D,
                                LikSpec s, float w) {
    const int P = s.params_per_dim();
    VAECPP_FOR_EACH(i, n) {  // i = b * D + d
        const long b = i / D, d = i % D;
        const float* pb = p + b * P * D;
        float* gb = dp + b * P * D;
        float unused;
        lik_grad_dim(gb[d], P == 2 ? gb[D + d] : unused, s, P, x[i], pb[d],
                     P == 2 ? pb[D + d] : 0.f, w);
    }
}

void lik_grad(float* dp, const float* x, const float* p, int B, int D, const LikSpec& s, float w) {
    const long n = long(B) * D;
    if (n == 0) return;
    if (s.mean_reduction) w /= D;
    lik_grad_kernel<<<blocks_for(n), kThreads>>>(dp, x, p, n, D, s, w);
    VAECPP_CUDA_CHECK_LAUNCH();
}

__global__ void lik_mean_kernel(float* out, const float* p, long n, int D, LikSpec s) {
    const int P = s.params_per_dim();
    VAECPP_FOR_EACH(i, n) out[i] = lik_mean_dim(s, p[(i / D) * P * D + i % D]);
}

void lik_mean(float* out, const float* p, int B, int D, const LikSpec& s) {
    const long n = long(B) * D;
    if (n == 0) return;
    lik_mean_kernel<<<blocks_for(n), kThreads>>>(out, p, n, D, s);
    VAECPP_CUDA_CHECK_LAUNCH();
}

// One block: sums[0] = sum nll, sums[1] = sum kl, in double and a fixed order.
__global__ void loss_sums_kernel(double* sums, const float* nll, const float* kl, int B) {
    __shared__ double part[kThreads];
    double a = 0, b = 0;
    for (int i = threadIdx.x; i < B; i += blockDim.x) {
        a += nll[i];
        b += kl[i];
    }
    a = block_sum(a, part);
    if (threadIdx.x == 0) sums[0] = a;
    __syncthreads();  // part is reused
    b = block_sum(b, part);
    if (threadIdx.x == 0) sums[1] = b;
}

void loss_sums(double* sums, const float* nll, const float* kl, int B) {
    loss_sums_kernel<<<1, kThreads>>>(sums, nll, kl, B);
    VAECPP_CUDA_CHECK_LAUNCH();
}

}  // namespace vaecpp::cuda
