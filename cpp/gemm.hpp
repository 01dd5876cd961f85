// The engine's matrix product: C (M,N) = or += A (M,K) @ B (K,N), row-major, single-threaded (the
// dense kernels split the columns of C between threads themselves).
//
// gemm() is a register-blocked kernel in the style of BLIS/GotoBLAS: an MR x NR tile of C lives in
// vector registers while k runs over a block of the shared dimension; A is read in place (one
// broadcast per row and k) and B a row of NR values at a time, straight from memory when its rows
// are contiguous and from a packed copy when it is a transposed view (B = W^T). Written with GCC
// vector extensions, so one source serves AVX-512 and AVX2 (other targets use Eigen).
// gemm_ref() is the readable Eigen version it is tested against.
//
// Summation order: k runs in order within blocks of kc (a function of K only), and the blocks are
// added to C in order. No part of it depends on M, N or how the columns were split, so splitting C
// between threads changes no result.
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common.hpp"

namespace vaecpp {

// A (M,K) is addressed as A[i * sai + k * sak], so both A and A^T views work; B (K,N) is
// B[k * ldb + j], or B[j * ldb + k] when b_trans; C (M,N) is C[i * ldc + j].
template <typename T>
void gemm_ref(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
              bool b_trans, T* C, long ldc, bool accumulate) {
    using Strided = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                               0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
    Strided a(A, M, K, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(sai, sak));
    Strided b(B, K, N, b_trans ? Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(1, ldb)
                               : Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(ldb, 1));
    Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>> c(C, M, N, Eigen::OuterStride<>(ldc));
    if (accumulate)
        c.noalias() += a * b;
    else
        c.noalias() = a * b;
}

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)))
#define VAECPP_FAST_GEMM 1

namespace gemm_detail {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#ifndef VAECPP_GEMM_MR
constexpr int kMR = 8, kNV = 3;  // 8 x 3 vectors: 24 accumulators of the 32 registers
#else
constexpr int kMR = VAECPP_GEMM_MR, kNV = VAECPP_GEMM_NV;  // for tuning experiments
#endif
#else
constexpr int kVecBytes = 32;
constexpr int kMR = 6, kNV = 2;  // 6 x 2 vectors: 12 accumulators of the 16 registers
#endif

template <typename T>
struct Simd {
    typedef T type __attribute__((vector_size(kVecBytes)));
    typedef T unaligned __attribute__((vector_size(kVecBytes), aligned(alignof(T))));
    static constexpr int n = kVecBytes / int(sizeof(T));
};

template <typename T>
inline typename Simd<T>::type load(const T* p) {
    return *reinterpret_cast<const typename Simd<T>::unaligned*>(p);
}
template <typename T>
inline void store(T* p, typename Simd<T>::type v) {
    *reinterpret_cast<typename Simd<T>::unaligned*>(p) = v;
}

// C[0:R, 0:NV*VL] (+)= A[0:R, 0:K] @ B[0:K, 0:NV*VL]; B rows are ldb apart.
template <typename T, int R, int NV>
inline void tile(long K, const T* A, long sai, long sak, const T* B, long ldb, T* C, long ldc,
                 bool accumulate) {
    using V = typename Simd<T>::type;
    constexpr int VL = Simd<T>::n;
    V acc[R][NV];
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < NV; ++v) acc[i][v] = V{};
    for (long k = 0; k < K; ++k) {
        V b[NV];
        for (int v = 0; v < NV; ++v) b[v] = load(B + k * ldb + v * VL);
        const T* a = A + k * sak;
        for (int i = 0; i < R; ++i) {
            const V ai = V{} + a[i * sai];  // broadcast
            for (int v = 0; v < NV; ++v) acc[i][v] += ai * b[v];
        }
    }
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < NV; ++v) {
            T* c = C + i * ldc + v * VL;
            store(c, accumulate ? load(c) + acc[i][v] : acc[i][v]);
        }
}

// r (< kMR) rows of a strip: the same kernel, unrolled for r rows.
template <typename T, int NV>
inline void rows_tile(long r, long K, const T* A, long sai, long sak, const T* B, long ldb, T* C,
                      long ldc, bool accumulate) {
    switch (r) {
        case 0: break;
        case 1: tile<T, 1, NV>(K, A, sai, sak, B, ldb, C, ldc, accumulate); break;
        case 2: tile<T, 2, NV>(K, A, sai, sak, B, ldb, C, ldc, accumulate); break;
        case 3: tile<T, 3, NV>(K, A, sai, sak, B, ldb, C, ldc, accumulate); break;
        case 4: tile<T, 4, NV>(K, A, sai, sak, B, ldb, C, ldc, accumulate); break;
        case 5: tile<T, 5, NV>(K, A, sai, sak, B, ldb, C, ldc, accumulate); break;
        case 6: tile<T, 6, NV>(K, A, sai, sak, B, ldb, C, ldc, accumulate); break;
        case 7: tile<T, 7, NV>(K, A, sai, sak, B, ldb, C, ldc, accumulate); break;
    }
}

// All rows of one column strip of NV vectors, MR rows at a time. A short remainder is merged with
// the last full tile and the two split evenly (50 rows: 5 x 8 + 5 + 5, not 6 x 8 + 2), since a
// tile of one or two rows has too few accumulators to keep the FMA units busy.
template <typename T, int NV>
inline void strip(long M, long K, const T* A, long sai, long sak, const T* B, long ldb, T* C,
                  long ldc, bool accumulate) {
    long full = M / kMR, r = M % kMR;
    if (full > 0 && r > 0 && r < kMR / 2) --full, r += kMR;
    long i = 0;
    for (; i < full * kMR; i += kMR)
        tile<T, kMR, NV>(K, A + i * sai, sai, sak, B, ldb, C + i * ldc, ldc, accumulate);
    if (r >= kMR) {
        const long h = r / 2;
        rows_tile<T, NV>(r - h, K, A + i * sai, sai, sak, B, ldb, C + i * ldc, ldc, accumulate);
        i += r - h;
        r = h;
    }
    rows_tile<T, NV>(r, K, A + i * sai, sai, sak, B, ldb, C + i * ldc, ldc, accumulate);
}

// Transposes a VL x VL tile held in VL registers: log2(VL) butterfly stages, each swapping one bit
// of the row index with the same bit of the column index by two-register shuffles.
template <typename T, int Bit>
inline void transpose_stage(typename Simd<T>::type* r) {
    using V = typename Simd<T>::type;
    using I = typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type;
    typedef I M __attribute__((vector_size(kVecBytes)));
    constexpr int VL = Simd<T>::n;
    M lo, hi;  // new[r] and new[r | Bit] as shuffles of (old[r], old[r | Bit])
    for (int j = 0; j < VL; ++j) {
        lo[j] = (j & Bit) ? VL + (j ^ Bit) : j;
        hi[j] = (j & Bit) ? VL + j : (j ^ Bit);
    }
    for (int i = 0; i < VL; ++i)
        if (!(i & Bit)) {
            V a = r[i], b = r[i | Bit];
            r[i] = __builtin_shuffle(a, b, lo);
            r[i | Bit] = __builtin_shuffle(a, b, hi);
        }
}

template <typename T>
inline void transpose_tile(typename Simd<T>::type* r) {
    constexpr int VL = Simd<T>::n;
    transpose_stage<T, 1>(r);
    transpose_stage<T, 2>(r);
    transpose_stage<T, 4>(r);
    if (VL > 8) transpose_stage<T, (VL > 8 ? 8 : 1)>(r);
    static_assert(VL == 4 || VL == 8 || VL == 16, "tile transpose for 4, 8 or 16 lanes");
}

// P (kb, nc) row-major = (S (nc, kb) with rows lds apart)^T, VL x VL tiles in registers.
template <typename T>
void pack_transposed(T* P, const T* S, long lds, long nc, long kb) {
    using V = typename Simd<T>::type;
    constexpr long VL = Simd<T>::n;
    const long nf = nc / VL * VL, kf = kb / VL * VL;
    for (long j = 0; j < nf; j += VL) {
        for (long k = 0; k < kf; k += VL) {
            V r[VL];
            for (long i = 0; i < VL; ++i) r[i] = load(S + (j + i) * lds + k);
            transpose_tile<T>(r);
            for (long i = 0; i < VL; ++i) store(P + (k + i) * nc + j, r[i]);
        }
        for (long k = kf; k < kb; ++k)
            for (long i = 0; i < VL; ++i) P[k * nc + j + i] = S[(j + i) * lds + k];
    }
    for (long j = nf; j < nc; ++j)
        for (long k = 0; k < kb; ++k) P[k * nc + j] = S[j * lds + k];
}

// Per-thread scratch for packed B blocks and edge tiles; grows once, never shrinks.
template <typename T>
inline std::vector<T>& scratch(int which) {
    static thread_local std::vector<T> buf[2];
    return buf[which];
}

// C[:, 0:N] (+)= A @ B[0:K, 0:N] for one block of k, B rows ldb apart (unit column stride).
template <typename T>
void block(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb, T* C,
           long ldc, bool accumulate) {
    constexpr long VL = Simd<T>::n, NR = kNV * VL;
    long j = 0;
    for (; j + NR <= N; j += NR) strip<T, kNV>(M, K, A, sai, sak, B + j, ldb, C + j, ldc, accumulate);
    for (; j + VL <= N; j += VL) strip<T, 1>(M, K, A, sai, sak, B + j, ldb, C + j, ldc, accumulate);
    if (j == N) return;
    // Fewer than VL columns left: run a full-width strip on zero-padded copies of B and C.
    const long n = N - j;
    std::vector<T>& pad = scratch<T>(1);
    pad.assign(size_t(K + M) * VL, T(0));
    T* Bp = pad.data();
    T* Cp = Bp + K * VL;
    for (long k = 0; k < K; ++k) std::copy(B + k * ldb + j, B + k * ldb + N, Bp + k * VL);
    if (accumulate)
        for (long i = 0; i < M; ++i) std::copy(C + i * ldc + j, C + i * ldc + N, Cp + i * VL);
    strip<T, 1>(M, K, A, sai, sak, Bp, VL, Cp, VL, accumulate);
    for (long i = 0; i < M; ++i) std::copy(Cp + i * VL, Cp + i * VL + n, C + i * ldc + j);
}

// Shared-dimension block size: K cut into equal blocks of at most kKcMax (a function of K only).
constexpr long kKcMax = 256;
inline long kc_for(long K) {
    const long nk = (K + kKcMax - 1) / kKcMax;
    return (K + nk - 1) / nk;
}
// Columns of B per block: with kc rows, about 384 KiB of B stays in the L2 cache.
template <typename T>
constexpr long nc_max() { return (384 * 1024 / (kKcMax * long(sizeof(T)))) / (kNV * Simd<T>::n) * (kNV * Simd<T>::n); }

}  // namespace gemm_detail

template <typename T>
void gemm(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
          bool b_trans, T* C, long ldc, bool accumulate) {
    using namespace gemm_detail;
    if (M <= 0 || N <= 0) return;
    if (N < Simd<T>::n)  // narrower than one register (e.g. the latent heads): Eigen does better
        return gemm_ref(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc, accumulate);
    if (K <= 0) {
        if (!accumulate)
            for (long i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
        return;
    }
    const long kc = kc_for(K), ncm = nc_max<T>();
    for (long j0 = 0; j0 < N; j0 += ncm) {
        const long nc = std::min(ncm, N - j0);
        for (long k0 = 0; k0 < K; k0 += kc) {
            const long kb = std::min(kc, K - k0);
            const bool acc = accumulate || k0 > 0;
            const T* Ab = A + k0 * sak;
            if (!b_trans) {
                block(M, nc, kb, Ab, sai, sak, B + k0 * ldb + j0, ldb, C + j0, ldc, acc);
            } else {  // pack the (kb, nc) block of B = (rows j0.. of the stored matrix)^T
                std::vector<T>& pk = scratch<T>(0);
                if (pk.size() < size_t(kb * nc)) pk.resize(size_t(kc * ncm));
                pack_transposed(pk.data(), B + j0 * ldb + k0, ldb, nc, kb);
                const T* P = pk.data();
                block(M, nc, kb, Ab, sai, sak, P, nc, C + j0, ldc, acc);
            }
        }
    }
}

#else  // no vector extensions or no AVX2/AVX-512: Eigen's product

template <typename T>
void gemm(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
          bool b_trans, T* C, long ldc, bool accumulate) {
    gemm_ref(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc, accumulate);
}

#endif

inline bool have_fast_gemm() {
#ifdef VAECPP_FAST_GEMM
    return true;
#else
    return false;
#endif
}

}  // namespace vaecpp
