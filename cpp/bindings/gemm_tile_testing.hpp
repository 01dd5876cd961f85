// The AVX-512 kernel set's tile (12 rows x 2 vectors) and row tiling, compiled for AVX2's 8-lane
// vectors (vaecpp._testing.kernels.gemm_v4_tile): on a CPU without AVX-512, where the v4 set
// itself cannot run, this checks the same source with the same tile against the reference. (24
// sums do not fit AVX2's 16 registers, so it spills: a test of correctness, never of speed.)
#pragma once

#include "kernels/gemm.hpp"

#if defined(VAECPP_GEMM_DISPATCH)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace vaecpp::gemm_v4_tile_on_v3 {
constexpr int kVecBytes = 32;
constexpr int kMR = 12, kNV = 2;
#include "kernels/gemm_kernels.hpp"
}  // namespace vaecpp::gemm_v4_tile_on_v3
#pragma GCC pop_options
#endif

namespace vaecpp {

// gemm() with that tile; ValueError where it cannot run (not a GCC x86-64 build, or no AVX2+FMA).
template <typename T>
void gemm_v4_tile(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
                  bool b_trans, T* C, long ldc, bool accumulate) {
#if defined(VAECPP_GEMM_DISPATCH)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return gemm_v4_tile_on_v3::gemm_fast<T>(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc,
                                                accumulate);
#endif
    throw ValueError("the v4 tile on AVX2 needs a GCC x86-64 build and an AVX2+FMA CPU");
}

}  // namespace vaecpp
