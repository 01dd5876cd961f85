// The latent layer on the GPU: the reparameterisation noise (the CPU's Philox draws), z, the KL
// term and their gradients. References: kernels/kl.hpp and CpuExecutor::draw_eps / backward in backends/cpu_executor.hpp.
#include "common.cuh"
#include "kernels.hpp"

namespace vaecpp::cuda {

__global__ void fill_normal_kernel(float* eps, long n, long offset, double std_, Philox rng,
                                   uint64_t stream) {
    VAECPP_FOR_EACH(i, n) eps[i] = float(std_ * rng.normal(stream, uint64_t(offset + i)));
}

void fill_normal(float* eps, long rows, int L, long first, double std_, Philox rng, uint64_t stream) {
    const long n = rows * L;
    if (n == 0) return;
    fill_normal_kernel<<<blocks_for(n), kThreads>>>(eps, n, first * L, std_, rng, stream);
    VAECPP_CUDA_CHECK_LAUNCH();
}

__global__ void reparam_kernel(float* z, const float* mu, const float* lv, const float* eps, long n) {
    VAECPP_FOR_EACH(i, n) z[i] = reparam_value(mu[i], lv[i], eps[i]);
}

void reparam_forward(float* z, const float* mu, const float* lv, const float* eps, long n) {
    if (n == 0) return;
    reparam_kernel<<<blocks_for(n), kThreads>>>(z, mu, lv, eps, n);
    VAECPP_CUDA_CHECK_LAUNCH();
}

// One thread per sample, dimensions in order, as kl_forward.
__global__ void kl_kernel(float* kl, const float* mu, const float* lv, int B, int L, float inv_s2,
                          float log_s2) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    float acc = 0.f;
    for (int j = 0; j < L; ++j) acc += kl_term(mu[long(b) * L + j], lv[long(b) * L + j], inv_s2, log_s2);
    kl[b] = 0.5f * acc;
}

void kl_forward(float* kl, const float* mu, const float* lv, int B, int L, double prior_std) {
    if (B == 0) return;
    kl_kernel<<<blocks_for(B), kThreads>>>(kl, mu, lv, B, L, float(1.0 / (prior_std * prior_std)),
                                           float(2.0 * std::log(prior_std)));
    VAECPP_CUDA_CHECK_LAUNCH();
}

// dmu = dz + w mu / s^2,  dlv = dz eps exp(lv/2) / 2 + w (exp(lv) / s^2 - 1) / 2
__global__ void latent_backward_kernel(float* dmu, float* dlv, const float* dz, const float* mu,
                                       const float* lv, const float* eps, long n, float inv_s2,
                                       float w) {
    VAECPP_FOR_EACH(i, n) {
        dmu[i] = dz[i] + w * mu[i] * inv_s2;
        dlv[i] = reparam_dlv(dz[i], lv[i], eps[i]) + w * kl_dlv(lv[i], inv_s2);
    }
}

void latent_backward(float* dmu, float* dlv, const float* dz, const float* mu, const float* lv,
                     const float* eps, long n, double prior_std, float w) {
    if (n == 0) return;
    latent_backward_kernel<<<blocks_for(n), kThreads>>>(
        dmu, dlv, dz, mu, lv, eps, n, float(1.0 / (prior_std * prior_std)), w);
    VAECPP_CUDA_CHECK_LAUNCH();
}

}  // namespace vaecpp::cuda
