// The register-blocked product of gemm.hpp for one instruction set. No include guard: gemm.hpp
// includes this file once per kernel set, inside that set's namespace (gemm_v3, gemm_v4 or
// gemm_native) and, with GCC on x86-64, inside a `#pragma GCC target` region, after defining
//   kVecBytes  the vector register's width in bytes (32: AVX2, 64: AVX-512)
//   kMR, kNV   the tile: kMR rows of C by kNV vectors of columns held in registers
// Everything here is defined in that namespace, so the sets never share a function (an inline
// function compiled for AVX-512 must not be picked by the linker for the AVX2 set). It uses only
// what gemm.hpp included before it.
//
// gemm_fast() is a register-blocked kernel in the style of BLIS/GotoBLAS: an MR x NR tile of C
// lives in vector registers while k runs over a block of the shared dimension; A is packed a tile
// of kMR rows at a time, B a (kc, nc) block at a time (through registers when it is a transposed
// view, B = W^T). Written with GCC vector extensions, so one source serves AVX-512 and AVX2.

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

// The micro-kernel: C[0:R, 0:NV*VL] (+)= A @ B over K, from packed panels: Ap holds A's R rows
// interleaved (Ap[k * R + i]) and Bp a strip of B (Bp[k * NV*VL + j]), so both are read as two
// sequential streams. The R x NV accumulators stay in registers for the whole of K.
template <typename T, int R, int NV>
inline void tile(long K, const T* __restrict Ap, const T* __restrict Bp, T* C, long ldc,
                 bool accumulate) {
    using V = typename Simd<T>::type;
    constexpr int VL = Simd<T>::n;
    V acc[R][NV];
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < NV; ++v) acc[i][v] = V{};
    for (long k = 0; k < K; ++k, Ap += R, Bp += NV * VL) {
        V b[NV];
        for (int v = 0; v < NV; ++v) b[v] = load(Bp + v * VL);
        for (int i = 0; i < R; ++i) {
            const V ai = V{} + Ap[i];  // broadcast
            for (int v = 0; v < NV; ++v) acc[i][v] += ai * b[v];
        }
    }
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < NV; ++v) {
            T* c = C + i * ldc + v * VL;
            store(c, accumulate ? load(c) + acc[i][v] : acc[i][v]);
        }
}

// tile() for a run-time row count r <= kMR.
template <typename T, int NV>
inline void tile_rows(long r, long K, const T* Ap, const T* Bp, T* C, long ldc, bool accumulate) {
    static_assert(kMR <= 8, "tile_rows dispatches up to 8 rows");
    switch (r) {
        case 1: tile<T, 1, NV>(K, Ap, Bp, C, ldc, accumulate); break;
        case 2: tile<T, 2, NV>(K, Ap, Bp, C, ldc, accumulate); break;
        case 3: tile<T, 3, NV>(K, Ap, Bp, C, ldc, accumulate); break;
        case 4: tile<T, 4, NV>(K, Ap, Bp, C, ldc, accumulate); break;
        case 5: tile<T, 5, NV>(K, Ap, Bp, C, ldc, accumulate); break;
        case 6: tile<T, 6, NV>(K, Ap, Bp, C, ldc, accumulate); break;
        case 7: tile<T, 7, NV>(K, Ap, Bp, C, ldc, accumulate); break;
        case 8: tile<T, 8, NV>(K, Ap, Bp, C, ldc, accumulate); break;
        default: break;
    }
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
    if (VL > 4) transpose_stage<T, (VL > 4 ? 4 : 1)>(r);  // (a 4-lane tile has no bit 4: that
    if (VL > 8) transpose_stage<T, (VL > 8 ? 8 : 1)>(r);  // stage would index r[4..7])
    static_assert(VL == 4 || VL == 8 || VL == 16, "tile transpose for 4, 8 or 16 lanes");
}

// Per-thread scratch for the packed panels; grows once, never shrinks (no allocation per call).
template <typename T>
inline T* scratch(int which, size_t n) {
    static thread_local Buffer<T> buf[2];
    if (buf[which].size() < n) buf[which].resize(n);
    return buf[which].data();
}

// A block of nc columns is packed as column strips: full strips of NR = kNV*VL columns, then
// strips of VL, then one strip of VL holding the last n < VL columns, zero-padded.
struct Strip {
    long j, w, n;  // first column in the block, packed width, valid columns
};

template <typename T>
inline long make_strips(long nc, Strip* out) {
    constexpr long VL = Simd<T>::n, NR = kNV * VL;
    long ns = 0, j = 0;
    for (; j + NR <= nc; j += NR) out[ns++] = {j, NR, NR};
    for (; j + VL <= nc; j += VL) out[ns++] = {j, VL, VL};
    if (j < nc) out[ns++] = {j, VL, nc - j};
    return ns;
}

// Packs rows [0, kb) of B (B[k * ldb + j], or B[j * ldb + k] when b_trans) into its strips:
// strip q occupies P[kb * q.j ...] as a (kb, q.w) row-major panel.
template <typename T>
void pack_b(T* P, const T* B, long ldb, bool b_trans, long kb, const Strip* st, long ns) {
    using V = typename Simd<T>::type;
    constexpr long VL = Simd<T>::n;
    for (long s = 0; s < ns; ++s) {
        const Strip& q = st[s];
        T* Ps = P + kb * q.j;
        if (q.n < q.w) {  // the ragged last strip, zero-padded
            for (long k = 0; k < kb; ++k)
                for (long j = 0; j < q.w; ++j)
                    Ps[k * q.w + j] = j >= q.n ? T(0) : b_trans ? B[(q.j + j) * ldb + k]
                                                                : B[k * ldb + q.j + j];
        } else if (!b_trans) {
            for (long k = 0; k < kb; ++k)
                for (long v = 0; v < q.w; v += VL) store(Ps + k * q.w + v, load(B + k * ldb + q.j + v));
        } else {  // transposed source: VL x VL tiles through registers
            const long kf = kb / VL * VL;
            for (long v = 0; v < q.w; v += VL) {
                const T* S = B + (q.j + v) * ldb;  // the VL stored rows that are these columns
                for (long k = 0; k < kf; k += VL) {
                    V r[VL];
                    for (long i = 0; i < VL; ++i) r[i] = load(S + i * ldb + k);
                    transpose_tile<T>(r);
                    for (long i = 0; i < VL; ++i) store(Ps + (k + i) * q.w + v, r[i]);
                }
                for (long k = kf; k < kb; ++k)
                    for (long i = 0; i < VL; ++i) Ps[k * q.w + v + i] = S[i * ldb + k];
            }
        }
    }
}

// Ap[k * R + i] = A[i * sai + k * sak]: an R-row tile of A over kb values of k, interleaved.
template <typename T>
inline void pack_a(T* __restrict Ap, const T* A, long sai, long sak, long R, long kb) {
    if (sai == 1) {
        for (long k = 0; k < kb; ++k)
            for (long i = 0; i < R; ++i) Ap[k * R + i] = A[k * sak + i];
    } else {
        for (long i = 0; i < R; ++i)
            for (long k = 0; k < kb; ++k) Ap[k * R + i] = A[i * sai + k * sak];
    }
}

// One R-row tile of C against every strip of a packed block.
template <typename T>
void tile_strips(long R, long kb, const T* Ap, const T* P, const Strip* st, long ns, T* C, long ldc,
                 bool accumulate) {
    constexpr long VL = Simd<T>::n;
    for (long s = 0; s < ns; ++s) {
        const Strip& q = st[s];
        const T* Bs = P + kb * q.j;
        if (q.w == kNV * VL) {
            tile_rows<T, kNV>(R, kb, Ap, Bs, C + q.j, ldc, accumulate);
        } else if (q.n == q.w) {
            tile_rows<T, 1>(R, kb, Ap, Bs, C + q.j, ldc, accumulate);
        } else {  // ragged columns: through an (R, VL) copy of C
            T tmp[kMR * VL];
            for (long i = 0; i < R; ++i)
                for (long j = 0; j < VL; ++j)
                    tmp[i * VL + j] = accumulate && j < q.n ? C[i * ldc + q.j + j] : T(0);
            tile_rows<T, 1>(R, kb, Ap, Bs, tmp, VL, accumulate);
            for (long i = 0; i < R; ++i)
                for (long j = 0; j < q.n; ++j) C[i * ldc + q.j + j] = tmp[i * VL + j];
        }
    }
}

// The cache blocks for T with this set's tile on this CPU (gemm_detail::blocking_for).
template <typename T>
inline const gemm_detail::Blocking& blocking() {
    static const gemm_detail::Blocking b = gemm_detail::blocking_for(cpu_caches(), kMR, kNV * Simd<T>::n, long(sizeof(T)));
    return b;
}

// Shared-dimension block size: K cut into equal blocks of at most kc_max (a function of K only,
// on a given machine).
template <typename T>
inline long kc_for(long K) {
    const long kmax = blocking<T>().kc_max, nk = (K + kmax - 1) / kmax;
    return (K + nk - 1) / nk;
}

template <typename T>
void gemm_fast(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
          bool b_trans, T* C, long ldc, bool accumulate) {
    constexpr long VL = Simd<T>::n;
    if (M <= 0 || N <= 0) return;
    // Narrower than one register (e.g. the latent heads), or too few rows to repay packing B (a
    // one-point decode is a matrix-vector product that reads each weight once): Eigen does better.
    if (N < VL || M < kMR / 2)
        return gemm_ref(M, N, K, A, sai, sak, B, ldb, b_trans, C, ldc, accumulate);
    if (K <= 0) {
        if (!accumulate)
            for (long i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
        return;
    }
    const long kc = kc_for<T>(K), ncm = blocking<T>().nc_max;
    T* P = scratch<T>(0, size_t(kc) * (ncm + VL));
    T* Ap = scratch<T>(1, size_t(kc) * kMR);
    static thread_local std::vector<Strip> strips;
    strips.resize(size_t(ncm / VL + 2));
    Strip* st = strips.data();
    // Rows in tiles of kMR; a short remainder is merged with the last full tile and the two split
    // evenly (50 rows: 5 x 8 + 5 + 5, not 6 x 8 + 2): one- or two-row tiles have too few
    // accumulators to keep the FMA units busy.
    long full = M / kMR, rem = M % kMR;
    if (full > 0 && rem > 0 && rem < kMR / 2) --full, rem += kMR;
    const long r1 = rem > kMR ? rem - rem / 2 : rem, r2 = rem > kMR ? rem / 2 : 0;
    for (long j0 = 0; j0 < N; j0 += ncm) {
        const long nc = std::min(ncm, N - j0);
        const long ns = make_strips<T>(nc, st);
        for (long k0 = 0; k0 < K; k0 += kc) {
            const long kb = std::min(kc, K - k0);
            const bool acc = accumulate || k0 > 0;
            pack_b(P, b_trans ? B + j0 * ldb + k0 : B + k0 * ldb + j0, ldb, b_trans, kb, st, ns);
            auto rows = [&](long i0, long R) {
                pack_a(Ap, A + i0 * sai + k0 * sak, sai, sak, R, kb);
                tile_strips(R, kb, Ap, P, st, ns, C + i0 * ldc + j0, ldc, acc);
            };
            long i0 = 0;
            for (long t = 0; t < full; ++t, i0 += kMR) rows(i0, kMR);
            if (r1) rows(i0, r1);
            if (r2) rows(i0 + r1, r2);
        }
    }
}
