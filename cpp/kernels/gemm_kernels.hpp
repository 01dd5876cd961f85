// The register-blocked product of gemm.hpp for one instruction set. No include guard: gemm.hpp
// includes this file once per kernel set, inside that set's namespace (gemm_v3, gemm_v4 or
// gemm_native) and, with GCC on x86-64, inside a `#pragma GCC target` region, after defining
//   kVecBytes  the vector register's width in bytes (32: AVX2, 64: AVX-512)
//   kMR, kNV   the tile: kMR rows of C by kNV vectors of columns held in registers
// Everything here is defined in that namespace, so the sets never share a function (an inline
// function compiled for AVX-512 must not be picked by the linker for the AVX2 set). It uses only
// what gemm.hpp included before it.
//
// gemm_fast() follows BLIS's loop order (Van Zee & van de Geijn 2015; Low et al. 2016):
//   for each block of nc columns           B's panel (kc x nc), packed once, read from L3 or memory
//    for each block of kc values of k       (in order: the only sum order, see gemm.hpp)
//     for each block of mc rows             A's block (mc x kc), packed, stays in L2
//      for each strip of NR columns         B's micro-panel (kc x NR) stays in L1 ...
//       for each tile of MR rows            ... while A's micro-panels stream from L2 past it
//        tile(): C[MR, NR] (+)= A-panel @ B-panel with the MR x NR sums in registers.
// Written with GCC vector extensions, so one source serves AVX-512 and AVX2.

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
// x in every lane, as one vbroadcastss/sd from memory: x - 0 is x for every x, so the compiler
// drops the subtraction. (Not `V{} + x`: 0 + x is not x for x = -0, so it must add before it
// broadcasts, an extra instruction per element of A; and a loop over the lanes can come out as
// one insert per lane.)
template <typename T>
inline typename Simd<T>::type splat(T x) {
    return x - typename Simd<T>::type{};
}

// a * b + c with one rounding, as one vfmadd instruction. Written out rather than left to the
// compiler's contraction of `c += a * b`, which is a choice it may make differently from one loop
// to the next (GCC leaves a one-row tile as a multiply and an add): every sum of the product goes
// through here, so the rounding never depends on which path, tile or thread formed it.
// In the v4 set compiled for AVX2 (gemm.hpp: VAECPP_GEMM_SPLIT_FMA, for tests) a 64-byte vector
// is two AVX2 registers, so its fused multiply-add is two, lane for lane the same roundings.
template <typename V>
inline V fmadd(V a, V b, V c) {
    constexpr bool f32 = sizeof(a[0]) == 4;
#if defined(VAECPP_GEMM_SPLIT_FMA)
    static_assert(kVecBytes == 64, "the split multiply-add is for 64-byte vectors");
    using H = typename std::conditional<f32, __m256, __m256d>::type;
    H h[3][2];
    std::memcpy(h[0], &a, 64), std::memcpy(h[1], &b, 64), std::memcpy(h[2], &c, 64);
    for (int i = 0; i < 2; ++i) {
        if constexpr (f32) h[2][i] = _mm256_fmadd_ps(h[0][i], h[1][i], h[2][i]);
        else h[2][i] = _mm256_fmadd_pd(h[0][i], h[1][i], h[2][i]);
    }
    std::memcpy(&c, h[2], 64);
    return c;
#else
    if constexpr (kVecBytes == 64) {
        if constexpr (f32) return _mm512_fmadd_ps(a, b, c); else return _mm512_fmadd_pd(a, b, c);
    } else {
        if constexpr (f32) return _mm256_fmadd_ps(a, b, c); else return _mm256_fmadd_pd(a, b, c);
    }
#endif
}

// The micro-kernel: C[0:R, 0:NV*VL] (+)= A @ B over K, from packed panels: Ap holds A's R rows
// interleaved (Ap[k * R + i]) and Bp a strip of B (Bp[k * NV*VL + j]), so both are read as
// sequential streams. The R x NV sums stay in registers for the whole of K (R * NV + NV + 1
// registers: at most the 16 or 32 the set has); C's lines are fetched while k runs.
template <typename T, int R, int NV>
inline void tile(long K, const T* __restrict Ap, const T* __restrict Bp, T* C, long ldc,
                 bool accumulate) {
    using V = typename Simd<T>::type;
    constexpr int VL = Simd<T>::n;
    for (int i = 0; i < R; ++i) {
        __builtin_prefetch(C + i * ldc, 1);
        __builtin_prefetch(C + i * ldc + NV * VL - 1, 1);
    }
    V acc[R][NV] = {};
#pragma GCC unroll 4
    for (long k = 0; k < K; ++k) {
        V b[NV];
        for (int v = 0; v < NV; ++v) b[v] = load(Bp + k * (NV * VL) + v * VL);
        for (int i = 0; i < R; ++i) {
            const V ai = splat(Ap[k * R + i]);
            for (int v = 0; v < NV; ++v) acc[i][v] = fmadd(ai, b[v], acc[i][v]);
        }
    }
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < NV; ++v) {
            T* c = C + i * ldc + v * VL;
            store(c, accumulate ? load(c) + acc[i][v] : acc[i][v]);
        }
}

// tile() for a run-time row count 1 <= r <= kMR.
template <typename T, int NV, int R = 1>
inline void tile_rows(long r, long K, const T* Ap, const T* Bp, T* C, long ldc, bool accumulate) {
    if constexpr (R < kMR) {
        if (r != R) return tile_rows<T, NV, R + 1>(r, K, Ap, Bp, C, ldc, accumulate);
    }
    tile<T, R, NV>(K, Ap, Bp, C, ldc, accumulate);
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
    static thread_local Buffer<T> buf[3];
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

// Packs rows [0, kb) of one strip q of B (B[k * ldb + j], or B[j * ldb + k] when b_trans) into
// Ps as a (kb, q.w) row-major panel, a ragged strip zero-padded.
template <typename T>
void pack_strip(T* __restrict Ps, const T* B, long ldb, bool b_trans, long kb, const Strip& q) {
    using V = typename Simd<T>::type;
    constexpr long VL = Simd<T>::n;
    if (q.n < q.w) {
        for (long k = 0; k < kb; ++k)
            for (long j = 0; j < q.w; ++j)
                Ps[k * q.w + j] = j >= q.n ? T(0) : b_trans ? B[(q.j + j) * ldb + k] : B[k * ldb + q.j + j];
    } else if (!b_trans) {
        for (long k = 0; k < kb; ++k)
            for (long v = 0; v < q.w; v += VL) store(Ps + k * q.w + v, load(B + k * ldb + q.j + v));
    } else {  // B = W^T: W's rows are B's columns; VL x VL tiles transposed through registers
        const long kf = kb / VL * VL;
        for (long v = 0; v < q.w; v += VL) {
            const T* S = B + (q.j + v) * ldb;
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

// Packs rows [0, kb) of B into all its strips: strip q at P[kb * q.j ...]. Without b_trans, B's
// stored rows are read in order, each from start to end, so that the hardware prefetchers see
// one forward stream (strip by strip would stride down B one cache line per row: several times
// slower when B is not in cache).
template <typename T>
void pack_b(T* P, const T* B, long ldb, bool b_trans, long kb, const Strip* st, long ns) {
    constexpr long VL = Simd<T>::n;
    if (b_trans) {
        for (long s = 0; s < ns; ++s) pack_strip(P + kb * st[s].j, B, ldb, true, kb, st[s]);
        return;
    }
    for (long k = 0; k < kb; ++k) {
        const T* Bk = B + k * ldb;
        for (long s = 0; s < ns; ++s) {
            const Strip& q = st[s];
            T* d = P + kb * q.j + k * q.w;
            if (q.n == q.w) {
                for (long v = 0; v < q.w; v += VL) store(d + v, load(Bk + q.j + v));
            } else {
                for (long j = 0; j < q.w; ++j) d[j] = j < q.n ? Bk[q.j + j] : T(0);
            }
        }
    }
}

// Ap[k * R + i] = A[i * sai + k * sak]: an R-row tile of A over kb values of k, interleaved.
// With R <= VL, a vector at a time: the VL - R lanes past a k's R values land on the next k's
// place, which the next store overwrites, and past the tile's end on the next tile's (packed
// after it) or on VL elements of slack after the block.
template <typename T>
inline void pack_a(T* __restrict Ap, const T* A, long sai, long sak, long R, long kb) {
    using V = typename Simd<T>::type;
    constexpr long VL = Simd<T>::n;
    long k = 0;
    if (R <= VL && sai == 1 && sak >= VL) {
        // A^T view (dW = X^T dY): the R values of each k are contiguous; the VL read stay in this
        // stored row and the next, so not past the array but for the last k (done below)
        for (; k + 1 < kb; ++k) store(Ap + k * R, load(A + k * sak));
    } else if (R <= VL && sak == 1) {
        // row-major A: VL x VL tiles of (rows, k) transposed through registers, rows >= R zero
        for (; k + VL <= kb; k += VL) {
            V r[VL];
            for (long i = 0; i < VL; ++i) r[i] = i < R ? load(A + i * sai + k) : V{};
            transpose_tile<T>(r);
            for (long u = 0; u < VL; ++u) store(Ap + (k + u) * R, r[u]);
        }
    }
    for (; k < kb; ++k)
        for (long i = 0; i < R; ++i) Ap[k * R + i] = A[i * sai + k * sak];
}

// How a block of m rows is cut into row tiles: `full` tiles of kMR rows, then up to two of r1 and
// r2 rows. A short remainder is merged with the last full tile and the two split evenly (50
// rows, kMR 6: 7 x 6 + 4 + 4, not 8 x 6 + 2): one- or two-row tiles have too few sums to keep
// the FMA units busy.
struct RowTiles {
    long full, r1, r2;
    explicit RowTiles(long m) : full(m / kMR), r1(m % kMR), r2(0) {
        if (full > 0 && r1 > 0 && r1 < kMR / 2) --full, r1 += kMR;
        if (r1 > kMR) r2 = r1 / 2, r1 -= r2;
    }
    template <typename F>
    void each(F&& f) const {  // f(first row, rows)
        long i = 0;
        for (long t = 0; t < full; ++t, i += kMR) f(i, long(kMR));
        if (r1) f(i, r1);
        if (r2) f(i + r1, r2);
    }
};

// The cache blocks for T with this set's tile on this CPU (gemm_detail::blocking_for).
template <typename T>
inline const gemm_detail::Blocking& blocking() {
    static const gemm_detail::Blocking b =
        gemm_detail::blocking_for(cpu_caches(), kMR, kNV * Simd<T>::n, long(sizeof(T)));
    return b;
}

// Shared-dimension block size: K cut into equal blocks of at most kc_max (a function of K only,
// on a given machine).
template <typename T>
inline long kc_for(long K) {
    const long kmax = blocking<T>().kc_max, nk = (K + kmax - 1) / kmax;
    return (K + nk - 1) / nk;
}

// Rows per block: M cut into equal blocks of at most mc_max, rounded up to whole tiles.
template <typename T>
inline long mc_for(long M) {
    const long mmax = blocking<T>().mc_max, nb = (M + mmax - 1) / mmax;
    return ((M + nb - 1) / nb + kMR - 1) / kMR * kMR;
}

// C[0:R, strip q] (+)= an R-row tile of packed A (Ai) @ strip q of packed B (Bs, kb rows).
template <typename T>
inline void strip_tile(const Strip& q, long R, long kb, const T* Ai, const T* Bs, T* Ci, long ldc,
                       bool accumulate) {
    constexpr long VL = Simd<T>::n;
    if (q.n < q.w) {  // ragged columns: through an (R, VL) copy of C
        T tmp[kMR * VL];
        for (long r = 0; r < R; ++r)
            for (long j = 0; j < VL; ++j) tmp[r * VL + j] = accumulate && j < q.n ? Ci[r * ldc + j] : T(0);
        tile_rows<T, 1>(R, kb, Ai, Bs, tmp, VL, accumulate);
        for (long r = 0; r < R; ++r)
            for (long j = 0; j < q.n; ++j) Ci[r * ldc + j] = tmp[r * VL + j];
    } else if (q.w == kNV * VL) {
        tile_rows<T, kNV>(R, kb, Ai, Bs, Ci, ldc, accumulate);
    } else {
        tile_rows<T, 1>(R, kb, Ai, Bs, Ci, ldc, accumulate);
    }
}

// One block of C (rows of A's packed block by a packed (kb, nc) block of B): the strips of B
// outside, so that each strip stays in L1 while A's row tiles stream past it from L2. The next
// strip is fetched into L2 a few lines per tile meanwhile (B's panel is larger than L2 when C
// is: its first tile would otherwise wait on L3 for every line).
template <typename T>
void block_product(const RowTiles& rows, long kb, const T* Ap, const T* P, const Strip* st, long ns,
                   T* C, long ldc, bool accumulate) {
    constexpr long kLine = 64;
    const long tiles = rows.full + (rows.r1 > 0) + (rows.r2 > 0);
    for (long s = 0; s < ns; ++s) {
        const Strip& q = st[s];
        const T* Bs = P + kb * q.j;
        const char* next = reinterpret_cast<const char*>(P + kb * q.j + kb * q.w);
        const long next_bytes = s + 1 < ns ? kb * st[s + 1].w * long(sizeof(T)) : 0;
        const long per_tile = next_bytes / kLine / tiles + 1;
        long fetched = 0;
        rows.each([&](long i, long R) {
            for (long u = 0; u < per_tile && fetched < next_bytes; ++u, fetched += kLine)
                __builtin_prefetch(next + fetched, 0, 2);
            strip_tile(q, R, kb, Ap + i * kb, Bs, C + i * ldc + q.j, ldc, accumulate);
        });
    }
}

// A product's per-thread scratch: B's packed panel (kb rows of up to ncm columns, strips padded
// to whole vectors), A's packed rows (a_size values, + VL of slack for pack_a) and the list of an
// ncm-wide panel's strips.
template <typename T>
struct Panels {
    T* P;
    T* Ap;
    Strip* st;
};

template <typename T>
inline Panels<T> panels(long kb, long ncm, long a_size) {
    constexpr long VL = Simd<T>::n;
    static thread_local std::vector<Strip> strips;
    strips.resize(size_t(ncm / VL + 2));
    return {scratch<T>(0, size_t(kb) * size_t(ncm + VL)), scratch<T>(1, size_t(a_size) + VL),
            strips.data()};
}

// C[0:m, :] (+)= A[0:m, :] @ B for a few rows and B not transposed (a one-point decode is a
// matrix-vector product that reads each weight once, so packing B would double its cost): B is
// read in place, four rows at a time from start to end, into one row of sums per row of C kept
// in L1. Every sum is the one tile() forms: k in order from zero within a block of kc, then
// added to C.
template <typename T>
void few_rows(long m, long N, long K, const T* A, long sai, long sak, const T* B, long ldb, T* C,
              long ldc, bool accumulate) {
    using V = typename Simd<T>::type;
    constexpr long VL = Simd<T>::n, KU = 4;
    const long kc = kc_for<T>(K), nv = N / VL * VL;
    T* acc = scratch<T>(1, size_t(m) * size_t(N));
    for (long k0 = 0; k0 < K; k0 += kc) {
        const long k1 = std::min(K, k0 + kc);
        std::fill(acc, acc + m * N, T(0));
        for (long k = k0; k < k1; k += KU) {
            const long ku = std::min(KU, k1 - k);
            const T* Bk = B + k * ldb;
            for (long i = 0; i < m; ++i) {
                // acc[i, :] += A[i, k:k+ku] @ B[k:k+ku, :]
                T a[KU];
                V av[KU];
                for (long u = 0; u < KU; ++u) a[u] = u < ku ? A[i * sai + (k + u) * sak] : T(0);
                for (long u = 0; u < KU; ++u) av[u] = splat(a[u]);
                T* ai = acc + i * N;
                if (ku == KU) {
                    for (long j = 0; j < nv; j += VL) {
                        V s = load(ai + j);
                        for (long u = 0; u < KU; ++u) s = fmadd(av[u], load(Bk + u * ldb + j), s);
                        store(ai + j, s);
                    }
                } else {
                    for (long u = 0; u < ku; ++u)
                        for (long j = 0; j < nv; j += VL)
                            store(ai + j, fmadd(av[u], load(Bk + u * ldb + j), load(ai + j)));
                }
                for (long j = nv; j < N; ++j)
                    for (long u = 0; u < ku; ++u) ai[j] = std::fma(a[u], Bk[u * ldb + j], ai[j]);
            }
        }
        const bool add = accumulate || k0 > 0;
        for (long i = 0; i < m; ++i)
            for (long j = 0; j < N; ++j)
                C[i * ldc + j] = add ? C[i * ldc + j] + acc[i * N + j] : acc[i * N + j];
    }
}

template <typename T>
void gemm_fast(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
               bool b_trans, T* C, long ldc, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (long i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
        return;
    }
    if (M < kMR / 2 && !b_trans) return few_rows(M, N, K, A, sai, sak, B, ldb, C, ldc, accumulate);
    const long kc = kc_for<T>(K), mc = mc_for<T>(M), ncm = std::min(blocking<T>().nc_max, N);
    const Panels<T> pan = panels<T>(kc, ncm, kc * mc);
    for (long j0 = 0; j0 < N; j0 += ncm) {
        const long nc = std::min(ncm, N - j0);
        const long ns = make_strips<T>(nc, pan.st);
        for (long k0 = 0; k0 < K; k0 += kc) {
            const long kb = std::min(kc, K - k0);
            // C[:, j0:j0+nc] (+)= A[:, k0:k0+kb] @ B[k0:k0+kb, j0:j0+nc]
            pack_b(pan.P, b_trans ? B + j0 * ldb + k0 : B + k0 * ldb + j0, ldb, b_trans, kb, pan.st, ns);
            for (long i0 = 0; i0 < M; i0 += mc) {
                const RowTiles rows(std::min(mc, M - i0));
                const T* Ai = A + i0 * sai + k0 * sak;
                rows.each([&](long i, long R) { pack_a(pan.Ap + i * kb, Ai + i * sai, sai, sak, R, kb); });
                block_product(rows, kb, pan.Ap, pan.P, pan.st, ns, C + i0 * ldc + j0, ldc,
                              accumulate || k0 > 0);
            }
        }
    }
}

// C (M,N) = A (M,K) @ B (K,N), B not transposed, then rows(i, r, j, n, c, ldc) on each block of
// C's rows [i, i + r) and columns [j, j + n) as soon as it is final, c pointing at its element
// (i, j) and ldc apart from one row to the next (a layer's weight gradient dW = X^T dY, then the
// optimizer step of those weights: tests/test_optimizers.py). When K fits one block of kc (a
// batch of at most kc rows) the row tiles run outside and B's strips inside, B packed whole (it
// lives in L2): a tile's rows of C are complete after one sweep over the strips and are handed
// to rows() while still in L1, and rows() walks down its companion arrays in order. There,
// unless keep_c, C itself is not written: each tile is formed in a per-thread tile in L1 and
// handed over from it (a training step needs the gradient only for its step: not writing it
// keeps 4 bytes per weight out of the caches and memory traffic of every step). Every element
// is the sum gemm_fast forms (k in order from zero within one block); with a larger K,
// gemm_fast into C then rows() a tile at a time.
template <typename T, typename Rows>
void gemm_then_rows(long M, long N, long K, const T* A, long sai, long sak, const T* B, long ldb,
                    T* C, long ldc, bool keep_c, Rows&& rows) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || kc_for<T>(K) < K) {
        gemm_fast<T>(M, N, K, A, sai, sak, B, ldb, false, C, ldc, false);
        for (long i = 0; i < M; i += kMR) rows(i, std::min<long>(kMR, M - i), 0L, N, C + i * ldc, ldc);
        return;
    }
    const long ncm = std::min(blocking<T>().nc_max, N);
    const Panels<T> pan = panels<T>(K, ncm, K * kMR);  // A: one row tile at a time
    T* tile = keep_c ? nullptr : scratch<T>(2, size_t(kMR) * size_t(ncm));
    for (long j0 = 0; j0 < N; j0 += ncm) {
        const long nc = std::min(ncm, N - j0);
        const long ns = make_strips<T>(nc, pan.st);
        pack_b(pan.P, B + j0, ldb, false, K, pan.st, ns);
        RowTiles(M).each([&](long i, long R) {
            // C[i:i+R, j0:j0+nc] = A[i:i+R, :] @ B[:, j0:j0+nc] (in C or the tile), then rows()
            T* Ct = keep_c ? C + i * ldc + j0 : tile;
            const long ldt = keep_c ? ldc : nc;
            pack_a(pan.Ap, A + i * sai, sai, sak, R, K);
            for (long s = 0; s < ns; ++s) {
                const Strip& q = pan.st[s];
                strip_tile(q, R, K, pan.Ap, pan.P + K * q.j, Ct + q.j, ldt, false);
            }
            rows(i, R, j0, nc, static_cast<const T*>(Ct), ldt);
        });
    }
}
