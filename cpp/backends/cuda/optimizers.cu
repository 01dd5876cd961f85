// The optimizer step on the GPU: clipping and the update rules of kernels/optimizer_rules.hpp, over the
// flat parameter buffer. Reference: Optimizer<T>::clip / update in model/optimizer.hpp.
#include "common.cuh"
#include "kernels.hpp"

namespace vaecpp::cuda {

__global__ void clip_values_kernel(float* g, long n, float c) {
    VAECPP_FOR_EACH(i, n) g[i] = clip_value(g[i], c);
}

void clip_values(float* g, long n, float c) {
    if (n == 0) return;
    clip_values_kernel<<<blocks_for(n), kThreads>>>(g, n, c);
    VAECPP_CUDA_CHECK_LAUNCH();
}

// One block per weight array: its sum of squares in double, fixed tree order.
__global__ void sum_squares_kernel(double* ss, const float* g, const long* off, const long* len) {
    __shared__ double part[kThreads];
    const float* a = g + off[blockIdx.x];
    double acc = 0;
    for (long i = threadIdx.x; i < len[blockIdx.x]; i += blockDim.x) acc += double(a[i]) * a[i];
    acc = block_sum(acc, part);
    if (threadIdx.x == 0) ss[blockIdx.x] = acc;
}

// Array blockIdx.y is scaled by clipnorm / norm where its norm exceeds clipnorm.
__global__ void scale_norms_kernel(float* g, const long* off, const long* len, const double* ss,
                                   double clipnorm) {
    const double norm = sqrt(ss[blockIdx.y]);
    if (!(norm > clipnorm)) return;
    const float f = float(clipnorm / norm);
    float* a = g + off[blockIdx.y];
    VAECPP_FOR_EACH(i, len[blockIdx.y]) a[i] *= f;
}

void clip_norms(float* g, const long* off, const long* len, int R, double clipnorm, double* ss,
                long max_len) {
    if (R == 0) return;
    sum_squares_kernel<<<R, kThreads>>>(ss, g, off, len);
    VAECPP_CUDA_CHECK_LAUNCH();
    dim3 grid(blocks_for(max_len), R);
    scale_norms_kernel<<<grid, kThreads>>>(g, off, len, ss, clipnorm);
    VAECPP_CUDA_CHECK_LAUNCH();
}

__global__ void update_kernel(OptCoeffs<float> c, float* p, const float* g, float* m, float* v, long n) {
    VAECPP_FOR_EACH(i, n) opt_update_elem(c, i, p, g, m, v);
}

void optimizer_update(const OptCoeffs<float>& c, float* p, const float* g, float* m, float* v, long n) {
    if (n == 0) return;
    update_kernel<<<blocks_for(n), kThreads>>>(c, p, g, m, v, n);
    VAECPP_CUDA_CHECK_LAUNCH();
}

__global__ void weight_average_kernel(float mu, bool overwrite, float* avg, float* p, long n) {
    VAECPP_FOR_EACH(i, n) {
        ema_rule(mu, i, avg, p);
        if (overwrite) p[i] = avg[i];
    }
}

void weight_average(float mu, bool overwrite, float* avg, float* p, long n) {
    if (n == 0) return;
    weight_average_kernel<<<blocks_for(n), kThreads>>>(mu, overwrite, avg, p, n);
    VAECPP_CUDA_CHECK_LAUNCH();
}

}  // namespace vaecpp::cuda
