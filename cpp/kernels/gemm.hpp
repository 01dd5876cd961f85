// The engine's matrix product: C (M,N) = or += A (M,K) @ B (K,N), row-major, single-threaded (the
// dense kernels split the columns, or rows, of C between threads themselves).
//
// gemm() runs a register-blocked kernel in the style of BLIS/GotoBLAS (gemm_kernels.hpp: an MR x NR
// tile of C in vector registers while k runs over a block of the shared dimension, A and B packed
// into panels, BLIS's loop order), from the kernel set that suits the CPU it runs on: x86-64-v4
// (AVX-512, 12 x 32 float tile) or x86-64-v3 (AVX2 + FMA, 6 x 16), both compiled into every GCC
// x86-64 build and picked at run time from cpuid (gemm_kernels()); other targets use Eigen.
// gemm_ref() is the readable Eigen version it is tested against.
//
// Cache blocking comes from the CPU it runs on (cpu_caches.hpp: L1d and L2 per core, read once)
// and the kernel's tile: blocks of kc values of k keep B's micro-panel in L1, blocks of mc rows
// keep A's packed block in L2 (see blocking_for() below).
//
// Summation order: every element of C is formed the same way, by fused multiply-adds with k in
// order from zero within each block of kc (a function of K, of the machine's L1d and of the
// kernel set's tile only), each block's sum then added to C in order. No part of it depends on
// M, N, on the tile or path that formed the element, or on how rows and columns were split, so
// splitting C between threads changes no result, and a machine always gives the same one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // the kernels' fused multiply-add (gemm_kernels.hpp, fmadd)
#endif

#include "core/buffers.hpp"
#include "core/threads.hpp"
#include "core/cpu_caches.hpp"
#include "core/cpu_isa.hpp"

namespace vaecpp {

// A (M,K) is addressed as A[i * sai + k * sak], so both A and A^T views work; B (K,N) is
// B[k * ldb + j], or B[j * ldb + k] when b_trans; C (M,N) is C[i * ldc + j].
// The reference: Eigen's product on views with a unit inner stride known at compile time wherever
// the layout allows (Eigen only vectorises those; a matrix-vector product through a run-time
// stride runs one scalar at a time).
namespace gemm_detail {
template <typename T>
using RowView = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;  // row-major, rows ld apart

template <typename T, typename AV, typename BV>
void product(const AV& a, const BV& b, T* C, long M, long N, long ldc, bool accumulate) {
    Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>> c(C, M, N, Eigen::OuterStride<>(ldc));
    if (accumulate)
        c.noalias() += a * b;
    else
        c.noalias() = a * b;
}

template <typename T, typename AV>
void with_b(const AV& a, long N, long K, const T* B, long ldb, bool b_trans, T* C, long M,
            long ldc, bool accumulate) {
    if (b_trans)
        product<T>(a, RowView<T>(B, N, K, Eigen::OuterStride<>(ldb)).transpose(), C, M, N, ldc,
                   accumulate);
    else
        product<T>(a, RowView<T>(B, K, N, Eigen::OuterStride<>(ldb)), C, M, N, ldc, accumulate);
}
}  // namespace gemm_detail

template <typename T>
void gemm_ref(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
              bool b_trans, T* C, long ldc, bool accumulate) {
    using namespace gemm_detail;
    if (sak == 1) {
        with_b(RowView<T>(A, M, K, Eigen::OuterStride<>(sai)), N, K, B, ldb, b_trans, C, M, ldc,
               accumulate);
    } else if (sai == 1) {
        with_b(RowView<T>(A, K, M, Eigen::OuterStride<>(sak)).transpose(), N, K, B, ldb, b_trans, C,
               M, ldc, accumulate);
    } else {
        using Strided = Eigen::Map<const Mat<T>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
        with_b(Strided(A, M, K, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(sai, sak)), N, K, B,
               ldb, b_trans, C, M, ldc, accumulate);
    }
}

namespace gemm_detail {

// The cache blocks for T on this CPU, computed once from its L1d and L2 by BLIS's rules for its
// loop order (gemm_kernels.hpp), in which a (kc, NR) micro-panel of B stays in L1 while the
// (MR, kc) micro-panels of an (mc, kc) block of A stream past it from L2:
// - kc_max: B's micro-panel fills at most half of L1d, the other half left to the A panels and
//   C lines passing through; a multiple of 16 in [64, 1024]. (32 KiB and the 16-column AVX2
//   float strip give 256, BLIS's value for Haswell and Zen.)
// - mc_max: A's packed block fills at most half of L2, the rest left to B's micro-panels on their
//   way to L1 and to C's lines; a multiple of MR.
// - nc_max: B's packed panel (kc, nc) is read once per block of mc rows from wherever it lives (L3
//   or memory: one micro-panel per mc / MR tiles, a trickle next to the arithmetic), so it is as
//   wide as a 4096-column scratch buffer allows, and A is packed once per 4096 columns of C.
struct Blocking {
    long kc_max, mc_max, nc_max;
};

inline Blocking blocking_for(const CacheSizes& c, long mr, long nr, long elem) {
    const long kc = std::min(1024L, std::max(64L, c.l1d / 2 / (nr * elem) / 16 * 16));
    const long mc = std::min(4096L / mr * mr, std::max(mr, c.l2 / 2 / (kc * elem) / mr * mr));
    return {kc, mc, 4096L / nr * nr};
}

}  // namespace gemm_detail

}  // namespace vaecpp

// ---- the register-blocked kernels, one set per instruction set (gemm_kernels.hpp) ---------------
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// GCC on x86-64: the x86-64-v3 (AVX2 + FMA) and x86-64-v4 (AVX-512) sets are both compiled, with
// `#pragma GCC target` whatever the build's -march, and the CPU picks one at run time: a portable
// build (VAECPP_NATIVE=OFF, e.g. a wheel) has the same kernels as a native one.
#define VAECPP_FAST_GEMM 1
#define VAECPP_GEMM_DISPATCH 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace vaecpp::gemm_v3 {
constexpr int kVecBytes = 32;
constexpr int kMR = 6, kNV = 2;  // 6 x 2 vectors: 12 accumulators of the 16 registers
#include "kernels/gemm_kernels.hpp"
}  // namespace vaecpp::gemm_v3
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
namespace vaecpp::gemm_v4 {
constexpr int kVecBytes = 64;
constexpr int kMR = 12, kNV = 2;  // 12 x 2 vectors: 24 accumulators of the 32 registers
#include "kernels/gemm_kernels.hpp"
}  // namespace vaecpp::gemm_v4
#pragma GCC pop_options
// The v4 set's source (12 x 32 float tile, 16-lane vectors, its blocking) compiled for AVX2: each
// 64-byte vector is two AVX2 registers (24 sums do not fit 16 registers: it spills). For tests
// only (VAECPP_GEMM_KERNELS=v4-on-avx2): it runs the v4 kernels' logic on any AVX2 CPU, where
// the v4 set itself cannot run; never picked by itself, never a measure of speed.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VAECPP_GEMM_SPLIT_FMA 1
namespace vaecpp::gemm_v4_on_avx2 {
constexpr int kVecBytes = 64;
constexpr int kMR = 12, kNV = 2;
#include "kernels/gemm_kernels.hpp"
}  // namespace vaecpp::gemm_v4_on_avx2
#undef VAECPP_GEMM_SPLIT_FMA
#pragma GCC pop_options

#elif (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)))
// Other compilers: the one set that the build's own flags (-march=native) allow.
#define VAECPP_FAST_GEMM 1
namespace vaecpp::gemm_native {
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kMR = 12, kNV = 2;
#else
constexpr int kVecBytes = 32;
constexpr int kMR = 6, kNV = 2;
#endif
#include "kernels/gemm_kernels.hpp"
}  // namespace vaecpp::gemm_native
#endif

namespace vaecpp {

// The kernel set the product uses, chosen once: the best one this CPU runs, or the one named by
// VAECPP_GEMM_KERNELS (for tests and comparisons): "v3" the AVX2 + FMA set even on an AVX-512
// CPU, "eigen" Eigen's product, "v4-on-avx2" the v4 set's source compiled for AVX2 (tests of the
// v4 logic on a CPU without AVX-512); "v4" or "auto" (or unset) the best. A set the CPU cannot
// run is never chosen.
enum class GemmKernels { eigen, v3, v4, v4_on_avx2, native };

namespace gemm_detail {
inline GemmKernels pick_kernels() {
    const char* e = std::getenv("VAECPP_GEMM_KERNELS");
    const std::string want = e ? e : "auto";
    if (want == "eigen") return GemmKernels::eigen;
#if defined(VAECPP_GEMM_DISPATCH)
    const CpuIsa isa = cpu_isa_level();
    if (want == "v4-on-avx2" && isa != CpuIsa::baseline) return GemmKernels::v4_on_avx2;
    if (isa == CpuIsa::v4 && want != "v3") return GemmKernels::v4;
    return isa != CpuIsa::baseline ? GemmKernels::v3 : GemmKernels::eigen;
#elif defined(VAECPP_FAST_GEMM)
    return GemmKernels::native;
#else
    return GemmKernels::eigen;
#endif
}
}  // namespace gemm_detail

inline GemmKernels gemm_kernels() {
    static const GemmKernels k = gemm_detail::pick_kernels();
    return k;
}

// The name build_info() and `vaecpp info` give the set in use.
inline std::string gemm_kernels_name() {
    switch (gemm_kernels()) {
        case GemmKernels::v4: return cpu_isa_name(CpuIsa::v4);
        case GemmKernels::v3: return cpu_isa_name(CpuIsa::v3);
        case GemmKernels::v4_on_avx2: return kV4OnAvx2Name;
#if defined(__AVX512F__)
        case GemmKernels::native: return "native (AVX-512)";
#else
        case GemmKernels::native: return "native (AVX2+FMA)";
#endif
        default: return "eigen";
    }
}

template <typename T>
void gemm(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
          bool b_trans, T* C, long ldc, bool accumulate) {
    switch (gemm_kernels()) {
#if defined(VAECPP_GEMM_DISPATCH)
        case GemmKernels::v4:
            return gemm_v4::gemm_fast<T>(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc, accumulate);
        case GemmKernels::v3:
            return gemm_v3::gemm_fast<T>(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc, accumulate);
        case GemmKernels::v4_on_avx2:
            return gemm_v4_on_avx2::gemm_fast<T>(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc, accumulate);
#elif defined(VAECPP_FAST_GEMM)
        case GemmKernels::native:
            return gemm_native::gemm_fast<T>(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc, accumulate);
#endif
        default:
            return gemm_ref<T>(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc, accumulate);
    }
}

// C (M,N) = A (M,K) @ B (K,N), then rows(i, r, j, n, c, ldc) on each block of C's rows
// [i, i + r) and columns [j, j + n) (together: all of C, each element once) as soon as it is
// final, c pointing at its element (i, j), rows ldc apart: in the kernel set in use
// (gemm_kernels.hpp: gemm_then_rows, which may form a block in a tile of its own and leave C
// unwritten unless keep_c); Eigen's product into C, then rows() over blocks of 8 rows. What
// rows() sees is the product gemm() gives, bit for bit.
template <typename T, typename Rows>
void gemm_then_rows(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
                    T* C, long ldc, bool keep_c, Rows&& rows) {
    switch (gemm_kernels()) {
#if defined(VAECPP_GEMM_DISPATCH)
        case GemmKernels::v4:
            return gemm_v4::gemm_then_rows<T>(M, N, K, A, sai, sak, B, ldb, C, ldc, keep_c, rows);
        case GemmKernels::v3:
            return gemm_v3::gemm_then_rows<T>(M, N, K, A, sai, sak, B, ldb, C, ldc, keep_c, rows);
        case GemmKernels::v4_on_avx2:
            return gemm_v4_on_avx2::gemm_then_rows<T>(M, N, K, A, sai, sak, B, ldb, C, ldc, keep_c, rows);
#elif defined(VAECPP_FAST_GEMM)
        case GemmKernels::native:
            return gemm_native::gemm_then_rows<T>(M, N, K, A, sai, sak, B, ldb, C, ldc, keep_c, rows);
#endif
        default:
            gemm_ref<T>(M, N, K, A, sai, sak, B, ldb, false, C, ldc, false);
            for (long i = 0; i < M; i += 8)
                rows(i, std::min<long>(8, M - i), 0L, N, static_cast<const T*>(C + i * ldc), ldc);
    }
}

inline bool have_fast_gemm() { return gemm_kernels() != GemmKernels::eigen; }

// The register tile and cache blocks of the set in use for float32 and float64 on this CPU
// (build_info() and the tests read them); empty with Eigen's product.
inline std::map<std::string, std::map<std::string, long>> gemm_blocking_info() {
    std::map<std::string, std::map<std::string, long>> out;
    auto add = [&](const char* dtype, long mr, long nr, const gemm_detail::Blocking& b) {
        out[dtype] = {{"mr", mr}, {"nr", nr}, {"kc_max", b.kc_max}, {"mc_max", b.mc_max},
                      {"nc_max", b.nc_max}};
    };
#define VAECPP_GEMM_INFO(set)                                                                   \
    add("float32", set::kMR, set::kNV * set::Simd<float>::n, set::blocking<float>());           \
    add("float64", set::kMR, set::kNV * set::Simd<double>::n, set::blocking<double>())
    switch (gemm_kernels()) {
#if defined(VAECPP_GEMM_DISPATCH)
        case GemmKernels::v4: VAECPP_GEMM_INFO(gemm_v4); break;
        case GemmKernels::v3: VAECPP_GEMM_INFO(gemm_v3); break;
        case GemmKernels::v4_on_avx2: VAECPP_GEMM_INFO(gemm_v4_on_avx2); break;
#elif defined(VAECPP_FAST_GEMM)
        case GemmKernels::native: VAECPP_GEMM_INFO(gemm_native); break;
#endif
        default: break;
    }
#undef VAECPP_GEMM_INFO
    return out;
}

}  // namespace vaecpp
