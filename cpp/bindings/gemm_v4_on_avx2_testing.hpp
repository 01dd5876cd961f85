// The AVX-512 kernel set's source compiled for AVX2 (gemm.hpp: gemm_v4_on_avx2: its 12 x 32 float
// tile, 16-lane vectors and blocking, each vector two AVX2 registers), callable in-process
// whichever set the product uses (vaecpp._testing.kernels.gemm_v4_on_avx2): on a CPU without
// AVX-512, where the v4 set itself cannot run, this checks its logic against the reference.
// (The set spills: a test of correctness, never of speed.)
#pragma once

#include "kernels/gemm.hpp"

namespace vaecpp {

// gemm() through that set; ValueError where it cannot run (not a GCC x86-64 build, or no AVX2+FMA).
template <typename T>
void gemm_with_v4_on_avx2(long M, long N, long K, const T* A, long sai, long sak, const T* B,
                          long ldb, bool b_trans, T* C, long ldc, bool accumulate) {
#if defined(VAECPP_GEMM_DISPATCH)
    if (cpu_isa_level() != CpuIsa::baseline)
        return gemm_v4_on_avx2::gemm_fast<T>(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc,
                                             accumulate);
#endif
    throw ValueError("the v4 kernels on AVX2 need a GCC x86-64 build and an AVX2+FMA CPU");
}

}  // namespace vaecpp
