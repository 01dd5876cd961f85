// Dense layers on the GPU: the matrix products (cuBLAS, or a tiled kernel where the toolkit has no
// cuBLAS), the fused bias + activation and the bias gradient. Reference: kernels/dense.hpp.
#include "common.cuh"
#include "kernels.hpp"

#ifdef VAECPP_CUBLAS
#include <cublas_v2.h>
#endif

namespace vaecpp::cuda {

#ifdef VAECPP_CUBLAS
static const char* cublas_status_name(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "unknown cuBLAS status";
    }
}

#define VAECPP_CUBLAS_CHECK(call)                                                              \
    do {                                                                                       \
        cublasStatus_t vaecpp_st_ = (call);                                                    \
        if (vaecpp_st_ != CUBLAS_STATUS_SUCCESS)                                               \
            throw CudaError(std::string("cuBLAS error ") + cublas_status_name(vaecpp_st_) +    \
                            " in " #call " at " __FILE__ ":" + std::to_string(__LINE__));      \
    } while (0)

struct Blas {
    cublasHandle_t handle = nullptr;
};

Blas* blas_create() {
    Blas* h = new Blas;
    cublasStatus_t st = cublasCreate(&h->handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        delete h;
        VAECPP_CUBLAS_CHECK(st);
    }
    // FP32 arithmetic, no TF32 tensor cores (those only with CUBLAS_TF32_TENSOR_OP_MATH): results
    // stay within float rounding of the CPU's. cuBLAS repeats its results bit for bit on one GPU
    // model and toolkit version when, as here, one stream is used and atomics are not allowed.
    cublasStatus_t mode = cublasSetMathMode(h->handle, CUBLAS_DEFAULT_MATH);
    if (mode != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(h->handle);
        delete h;
        VAECPP_CUBLAS_CHECK(mode);
    }
    return h;
}

void blas_destroy(Blas* h) noexcept {
    if (!h) return;
    cublasDestroy(h->handle);
    delete h;
}

bool blas_is_cublas() { return true; }

// Row-major C (M,N) is column-major C^T (N,M), and C^T = op(B)^T op(A)^T: hand cuBLAS B then A.
void gemm(Blas* h, bool ta, bool tb, int M, int N, int K, float alpha, const float* A,
          const float* B, float beta, float* C) {
    if (M == 0 || N == 0) return;
    VAECPP_CUBLAS_CHECK(cublasSgemm(h->handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                                    tb ? K : N, A, ta ? M : K, &beta, C, N));
}

#else  // no cuBLAS: a shared-memory tiled product, one output per thread, k in order

struct Blas {};
Blas* blas_create() { return new Blas; }
void blas_destroy(Blas* h) noexcept { delete h; }
bool blas_is_cublas() { return false; }

constexpr int kTile = 16;

// C (M,N) = alpha op(A) op(B) + beta C;  op(A)[i,k] = ta ? A[k*M + i] : A[i*K + k], op(B) alike
__global__ void gemm_kernel(bool ta, bool tb, int M, int N, int K, float alpha, const float* A,
                            const float* B, float beta, float* C) {
    __shared__ float as[kTile][kTile + 1], bs[kTile][kTile + 1];
    const int i = blockIdx.y * kTile + threadIdx.y, j = blockIdx.x * kTile + threadIdx.x;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += kTile) {
        const int ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
        as[threadIdx.y][threadIdx.x] =
            (i < M && ka < K) ? (ta ? A[long(ka) * M + i] : A[long(i) * K + ka]) : 0.f;
        bs[threadIdx.y][threadIdx.x] =
            (kb < K && j < N) ? (tb ? B[long(j) * K + kb] : B[long(kb) * N + j]) : 0.f;
        __syncthreads();
        for (int k = 0; k < kTile; ++k) acc += as[threadIdx.y][k] * bs[k][threadIdx.x];
        __syncthreads();
    }
    if (i < M && j < N) {
        float* c = C + long(i) * N + j;
        *c = beta == 0.f ? alpha * acc : alpha * acc + beta * *c;
    }
}

void gemm(Blas*, bool ta, bool tb, int M, int N, int K, float alpha, const float* A,
          const float* B, float beta, float* C) {
    if (M == 0 || N == 0) return;
    dim3 threads(kTile, kTile), grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile);
    gemm_kernel<<<grid, threads>>>(ta, tb, M, N, K, alpha, A, B, beta, C);
    VAECPP_CUDA_CHECK_LAUNCH();
}

#endif

// out is (B,OC), b is (OC,)
__global__ void bias_act_kernel(float* out, const float* b, long n, int OC, Act act) {
    VAECPP_FOR_EACH(i, n) out[i] = act_value(act, out[i] + b[i % OC]);
}

void bias_act_forward(float* out, const float* b, int B, int OC, Act act) {
    const long n = long(B) * OC;
    if (n == 0) return;
    bias_act_kernel<<<blocks_for(n), kThreads>>>(out, b, n, OC, act);
    VAECPP_CUDA_CHECK_LAUNCH();
}

// da is (B,OC); one thread per column walks the rows in order (coalesced: neighbours read
// neighbouring columns), so the sum is the same on every run.
__global__ void column_sums_kernel(float* db, const float* da, int B, int OC, bool accumulate) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= OC) return;
    float acc = 0.f;
    for (int r = 0; r < B; ++r) acc += da[long(r) * OC + j];
    db[j] = accumulate ? db[j] + acc : acc;
}

void column_sums(float* db, const float* da, int B, int OC, bool accumulate) {
    if (OC == 0) return;
    column_sums_kernel<<<blocks_for(OC), kThreads>>>(db, da, B, OC, accumulate);
    VAECPP_CUDA_CHECK_LAUNCH();
}

}  // namespace vaecpp::cuda
