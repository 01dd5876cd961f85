// Element-wise layers on the GPU: activations, dropout, the batch gather. References:
// kernels/activations_cpu.hpp (act_forward / act_backward), layers/basic_layers.hpp (DropoutLayer), model/engine.hpp (the batch gather).
#include "common.cuh"
#include "kernels.hpp"

namespace vaecpp::cuda {

__global__ void act_forward_kernel(float* out, const float* x, long n, Act a) {
    VAECPP_FOR_EACH(i, n) out[i] = act_value(a, x[i]);
}

void act_forward(float* out, const float* x, long n, Act a) {
    if (n == 0 || (a == Act::linear && out == x)) return;
    act_forward_kernel<<<blocks_for(n), kThreads>>>(out, x, n, a);
    VAECPP_CUDA_CHECK_LAUNCH();
}

// dx = dout * f'(x), f' from y = f(x)
__global__ void act_backward_kernel(float* dx, const float* dout, const float* y, long n, Act a) {
    VAECPP_FOR_EACH(i, n) dx[i] = dout[i] * act_grad_from_output(a, y[i]);
}

void act_backward(float* dx, const float* dout, const float* y, long n, Act a) {
    if (n == 0 || (a == Act::linear && dx == dout)) return;
    act_backward_kernel<<<blocks_for(n), kThreads>>>(dx, dout, y, n, a);
    VAECPP_CUDA_CHECK_LAUNCH();
}

// The same draw, compared in double, as DropoutLayer::forward: word i % 4 of Philox block i / 4
// as a 32-bit uniform.
__global__ void dropout_kernel(float* out, float* mask, const float* inp, long n, long first,
                               double rate, Philox rng, uint64_t stream) {
    const float keep = float(1.0 / (1.0 - rate));
    VAECPP_FOR_EACH(i, n) {
        const uint64_t g = uint64_t(first + i);  // the element's number in the whole batch
        const PhiloxBlock w = rng(stream, g >> 2);
        mask[i] = Philox::to_unit32(w[int(g & 3)]) >= rate ? keep : 0.f;
        out[i] = inp[i] * mask[i];
    }
}

void dropout_forward(float* out, float* mask, const float* inp, long n, long first, double rate,
                     Philox rng, uint64_t stream) {
    if (n == 0) return;
    dropout_kernel<<<blocks_for(n), kThreads>>>(out, mask, inp, n, first, rate, rng, stream);
    VAECPP_CUDA_CHECK_LAUNCH();
}

__global__ void multiply_kernel(float* out, const float* a, const float* b, long n) {
    VAECPP_FOR_EACH(i, n) out[i] = a[i] * b[i];
}

void multiply(float* out, const float* a, const float* b, long n) {
    if (n == 0) return;
    multiply_kernel<<<blocks_for(n), kThreads>>>(out, a, b, n);
    VAECPP_CUDA_CHECK_LAUNCH();
}

// xb is (B,D), X is (N,D): xb[b] = X[perm[first + b]]
__global__ void gather_kernel(float* xb, const float* X, const int64_t* perm, long first, long n, int D) {
    VAECPP_FOR_EACH(i, n) {
        const long b = i / D, d = i % D;
        xb[i] = X[perm[first + b] * D + d];
    }
}

void gather_rows(float* xb, const float* X, const int64_t* perm, long first, int B, int D) {
    const long n = long(B) * D;
    if (n == 0) return;
    gather_kernel<<<blocks_for(n), kThreads>>>(xb, X, perm, first, n, D);
    VAECPP_CUDA_CHECK_LAUNCH();
}

}  // namespace vaecpp::cuda
