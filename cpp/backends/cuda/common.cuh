// Launch helpers shared by the .cu files (nvcc only).
#pragma once

#include <algorithm>

#include "check.hpp"

namespace vaecpp::cuda {

constexpr int kThreads = 256;  // threads per block of the element-wise kernels

inline unsigned blocks_for(long n, int threads = kThreads) {
    return unsigned(std::max<long>(1, std::min<long>((n + threads - 1) / threads, 1L << 30)));
}

// Grid-stride loop: correct for any n, whatever the grid.
#define VAECPP_FOR_EACH(i, n) \
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += long(gridDim.x) * blockDim.x)

// Sum of one double per thread over a block of kThreads threads, in a fixed tree order; the result
// is valid in thread 0.
__device__ inline double block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    return shared[0];
}

}  // namespace vaecpp::cuda
