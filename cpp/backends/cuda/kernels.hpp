// The CUDA backend's kernels, as host functions that launch them on the default stream (so every
// launch is ordered after the previous one) and check the launch. Each is the GPU twin of a CPU
// function, named beside it: that function is the reference the parity tests compare against, and
// the scalar formulas are the very same VAECPP_HD code. All arrays are device pointers, row-major.
// Reductions run in a fixed order (no atomics), so results repeat bit for bit on one GPU.
#pragma once

#include <cstdint>

#include "kernels/activation_formulas.hpp"
#include "kernels/kl.hpp"
#include "kernels/likelihood_formulas.hpp"
#include "kernels/optimizer_rules.hpp"
#include "core/rng.hpp"

namespace vaecpp::cuda {

// ---- dense.cu (reference: kernels/dense.hpp) ---------------------------------------------------------
// C (M,N) = alpha op(A) op(B) + beta C, with op(A) (M,K) and op(B) (K,N); ta/tb: A/B are stored
// transposed. beta = 0 ignores C's old contents. cuBLAS when built with it, else a tiled kernel.
struct Blas;
Blas* blas_create();
void blas_destroy(Blas* h) noexcept;
bool blas_is_cublas();
void gemm(Blas* h, bool ta, bool tb, int M, int N, int K, float alpha, const float* A,
          const float* B, float beta, float* C);
// out (B,OC) = f(out + b) in place: the bias and activation of dense_forward
void bias_act_forward(float* out, const float* b, int B, int OC, Act act);
// db (OC,) (+)= sum over rows of da (B,OC): dense_backward's bias gradient, one thread per column
void column_sums(float* db, const float* da, int B, int OC, bool accumulate);

// ---- activations.cu (reference: kernels/activation_formulas.hpp, layers/basic_layers.hpp) ---------------------------------
void act_forward(float* out, const float* x, long n, Act a);
void act_backward(float* dx, const float* dout, const float* y, long n, Act a);  // dx may alias dout
// DropoutLayer: mask = [uniform(stream, first + i) >= rate] / (1 - rate), out = inp * mask
void dropout_forward(float* out, float* mask, const float* inp, long n, long first, double rate,
                     Philox rng, uint64_t stream);
void multiply(float* out, const float* a, const float* b, long n);  // out = a * b (may alias)
// xb (B,D) = rows perm[first .. first+B) of X (N,D): the batch gather of the training loop
void gather_rows(float* xb, const float* X, const int64_t* perm, long first, int B, int D);

// ---- likelihoods.cu (reference: kernels/likelihood_formulas.hpp) ----------------------------------------------
void lik_nll(float* nll, const float* x, const float* p, int B, int D, const LikSpec& s);
void lik_grad(float* dp, const float* x, const float* p, int B, int D, const LikSpec& s, float w);
void lik_mean(float* out, const float* p, int B, int D, const LikSpec& s);
// sums (2,) in double = (sum_b nll_b, sum_b kl_b): the ELBO's batch sums
void loss_sums(double* sums, const float* nll, const float* kl, int B);

// ---- kl.cu (reference: kernels/kl.hpp, CpuExecutor::draw_eps) -------------------------------------------------
// eps[i] = std * normal(stream, first * L + i) for i < rows * L
void fill_normal(float* eps, long rows, int L, long first, double std_, Philox rng, uint64_t stream);
void reparam_forward(float* z, const float* mu, const float* lv, const float* eps, long n);
void kl_forward(float* kl, const float* mu, const float* lv, int B, int L, double prior_std);
// dmu, dlv = reparam_backward + kl_backward (weight w) from zero, as CpuExecutor::backward does for the ELBO
void latent_backward(float* dmu, float* dlv, const float* dz, const float* mu, const float* lv,
                     const float* eps, long n, double prior_std, float w);

// ---- optimizers.cu (reference: model/optimizer.hpp) ------------------------------------------------
void clip_values(float* g, long n, float c);
// Keras's clipnorm per weight array: off/len (R,) on the device; ss (R,) scratch
void clip_norms(float* g, const long* off, const long* len, int R, double clipnorm, double* ss,
                long max_len);
void optimizer_update(const OptCoeffs<float>& c, float* p, const float* g, float* m, float* v, long n);
// avg = mu avg + (1 - mu) p (ema_rule); then p = avg when `overwrite`
void weight_average(float mu, bool overwrite, float* avg, float* p, long n);

// ---- device.cu ---------------------------------------------------------------------------------
int device_count() noexcept;  // 0 when there is no device or no driver

}  // namespace vaecpp::cuda
