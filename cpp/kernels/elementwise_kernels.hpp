// The element-wise loops of elementwise_dispatch.hpp for one instruction set: activations and
// their gradients, the fused Bernoulli loss, bias column sums and the optimizer rules. No include
// guard: elementwise_dispatch.hpp includes this file once per kernel set, inside that set's struct
// (EwGeneric, EwV3, EwV4) and, with GCC on x86-64, inside a `#pragma GCC target` region, after
// defining
//   kVecBytes  the vector register's width in bytes (16: SSE2 / NEON, 32: AVX2, 64: AVX-512)
// Every function is a static member of that struct, so the sets never share a function (an inline
// function compiled for AVX2 must not be picked by the linker for the SSE2 set). The readable
// references are the scalar formulas of activation_formulas.hpp, likelihood_formulas.hpp and
// optimizer_rules.hpp; the tests compare each set with them.
//
// exp, expm1 and log1p are written here with GCC vector extensions (Cephes's method: x = n ln2 + r,
// 2^n from the exponent bits, a polynomial in r), so that they run a whole register at a time in
// every set. Within a set the results depend only on the inputs; between sets they differ in the
// last bits (FMA contraction where the set has FMA, and the lanes of the Bernoulli sum).

template <typename T>
struct Vec {
    typedef T type __attribute__((vector_size(kVecBytes)));
    typedef T unaligned __attribute__((vector_size(kVecBytes), aligned(alignof(T))));
    using I = typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type;
    typedef I itype __attribute__((vector_size(kVecBytes)));
    static constexpr int n = kVecBytes / int(sizeof(T));
};
template <typename T>
using vec = typename Vec<T>::type;

template <typename T>
static inline vec<T> splat(T v) {
    return vec<T>{} + v;
}
template <typename T>
static inline vec<T> load(const T* p) {
    return *reinterpret_cast<const typename Vec<T>::unaligned*>(p);
}
template <typename T>
static inline void store(T* p, vec<T> v) {
    *reinterpret_cast<typename Vec<T>::unaligned*>(p) = v;
}

// ---- exp, expm1, log1p on a register ------------------------------------------------------------
// x = n ln2 + r with |r| <= ln2 / 2, x clamped to where 2^n is a normal number (NaN stays NaN);
// returns 2^n. n is rounded by adding 1.5 * 2^mantissa, whose low bits then hold it.
template <typename T>
VAECPP_EW_INLINE static vec<T> exp_reduce(vec<T> x, vec<T>& r) {
    using I = typename Vec<T>::itype;
    constexpr bool f = sizeof(T) == 4;
    const T lo = f ? T(-87) : T(-708), hi = f ? T(88) : T(709);
    const T magic = f ? T(12582912.0) : T(6755399441055744.0);  // 1.5 * 2^23, 1.5 * 2^52
    // ln2 = ln2_hi + ln2_lo, ln2_hi with few enough bits that n ln2_hi is exact (Cephes)
    const T ln2_hi = f ? T(0.693359375) : T(6.93145751953125e-1);
    const T ln2_lo = f ? T(-2.12194440e-4) : T(1.42860682030941723212e-6);
    x = x < splat(lo) ? splat(lo) : x;
    x = x > splat(hi) ? splat(hi) : x;
    const vec<T> t = x * T(1.4426950408889634) + magic;
    const vec<T> n = t - magic;
    r = x - n * ln2_hi;
    r = r - n * ln2_lo;
    const I k = (I)t - (I)splat(magic);  // n as an integer
    return (vec<T>)((k + (f ? 127 : 1023)) << (f ? 23 : 52));
}

// expm1(r) for |r| <= ln2 / 2: r + r^2 (1/2! + r (1/3! + ...)), to r^7 in float (the next term
// is below 2e-8 r), to r^13 in double (below 2e-17 r).
template <typename T>
VAECPP_EW_INLINE static vec<T> expm1_reduced(vec<T> r) {
    constexpr double c[] = {1.0 / 2,          1.0 / 6,          1.0 / 24,          1.0 / 120,
                            1.0 / 720,        1.0 / 5040,       1.0 / 40320,       1.0 / 362880,
                            1.0 / 3628800,    1.0 / 39916800,   1.0 / 479001600,   1.0 / 6227020800};
    constexpr int deg = sizeof(T) == 4 ? 6 : 12;
    vec<T> p = splat(T(c[deg - 1]));
    for (int k = deg - 2; k >= 0; --k) p = p * r + T(c[k]);
    return r + r * r * p;
}

// e^x: 2^n (1 + expm1(r)); 0 below the normal range, inf above it.
template <typename T>
VAECPP_EW_INLINE static vec<T> vexp(vec<T> x) {
    vec<T> r;
    const vec<T> s = exp_reduce<T>(x, r);
    const vec<T> e = s + s * expm1_reduced<T>(r);
    const T lo = sizeof(T) == 4 ? T(-87) : T(-708), hi = sizeof(T) == 4 ? T(88) : T(709);
    const vec<T> big = x > splat(hi) ? splat(T(INFINITY)) : e;
    return x < splat(lo) ? vec<T>{} : big;
}

// e^x - 1: 2^n expm1(r) + (2^n - 1), exact in form for |x| <= ln2 / 2 (n = 0); -1 far below
// zero, inf above the range.
template <typename T>
VAECPP_EW_INLINE static vec<T> vexpm1(vec<T> x) {
    vec<T> r;
    const vec<T> s = exp_reduce<T>(x, r);
    const vec<T> e = s * expm1_reduced<T>(r) + (s - T(1));
    const T hi = sizeof(T) == 4 ? T(88) : T(709);
    return x > splat(hi) ? splat(T(INFINITY)) : e;
}

// log(1 + x) for x in [0, 1] (what softplus needs: x = e^-|l|). With m = 1 + x, or (1 + x) / 2
// where 1 + x > sqrt 2, log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, formed from x
// without cancellation: s = x / (x + 2), or (x - 1) / (x + 3).
template <typename T>
VAECPP_EW_INLINE static vec<T> vlog1p_unit(vec<T> x) {
    constexpr double c[] = {1.0 / 3,  1.0 / 5,  1.0 / 7,  1.0 / 9,  1.0 / 11, 1.0 / 13,
                            1.0 / 15, 1.0 / 17, 1.0 / 19, 1.0 / 21, 1.0 / 23};
    constexpr int deg = sizeof(T) == 4 ? 5 : 11;  // the next term: below 5e-11 s, 2e-20 s
    const auto big = x > splat(T(0.41421356237309503));
    const vec<T> s = (big ? x - T(1) : x) / (x + (big ? splat(T(3)) : splat(T(2))));
    const vec<T> s2 = s * s;
    vec<T> p = splat(T(c[deg - 1]));
    for (int k = deg - 2; k >= 0; --k) p = p * s2 + T(c[k]);
    const vec<T> at = T(2) * s + T(2) * s * s2 * p;
    return (big ? splat(T(0.6931471805599453)) : vec<T>{}) + at;
}

// f(x) of the transcendental activations, a register at a time (the formulas of act_value): the
// maps of map_vec, one functor per activation so that the switch stays out of the loop (functors
// rather than lambdas: GCC gives a lambda's operator() no `#pragma GCC target`).
template <typename T>
struct Elu {  // x > 0 ? x : alpha (e^x - 1)
    VAECPP_EW_INLINE vec<T> operator()(vec<T> x) const {
        return x > vec<T>{} ? x : T(kEluAlpha) * vexpm1<T>(x);
    }
};
template <typename T>
struct Tanh {  // sign(x) (1 - e^-2|x|) / (1 + e^-2|x|), through expm1
    VAECPP_EW_INLINE vec<T> operator()(vec<T> x) const {
        const vec<T> t = vexpm1<T>(T(-2) * (x < vec<T>{} ? -x : x));
        const vec<T> y = -t / (T(2) + t);
        return x < vec<T>{} ? -y : y;
    }
};
template <typename T>
struct Sigmoid {  // with e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) below
    VAECPP_EW_INLINE vec<T> operator()(vec<T> x) const {
        const vec<T> e = vexp<T>(x < vec<T>{} ? x : -x);
        return (x >= vec<T>{} ? splat(T(1)) : e) / (T(1) + e);
    }
};
template <typename T>
struct Softplus {  // max(x, 0) + log1p(exp(-|x|))
    VAECPP_EW_INLINE vec<T> operator()(vec<T> x) const {
        return (x > vec<T>{} ? x : vec<T>{}) + vlog1p_unit<T>(vexp<T>(x < vec<T>{} ? x : -x));
    }
};
template <typename T>
struct SoftplusGrad {  // softplus'(x) from y = softplus(x): 1 - e^-y
    VAECPP_EW_INLINE vec<T> operator()(vec<T> y) const { return -vexpm1<T>(-y); }
};

// out[i] = f(in[i]) for n elements, a register at a time; the last partial register is padded
// with zeros (every f here is finite at 0), so each element goes through the same instructions.
template <typename T, typename F>
VAECPP_EW_INLINE static void map_vec(T* out, const T* in, long n, F f) {
    constexpr int VL = Vec<T>::n;
    long i = 0;
    for (; i + VL <= n; i += VL) store(out + i, f(load(in + i)));
    if (i < n) {
        T buf[VL] = {};
        std::copy(in + i, in + n, buf);
        store(buf, f(load(buf)));
        std::copy(buf, buf + (n - i), out + i);
    }
}

// ---- activations --------------------------------------------------------------------------------
// y[r, j] = f(y[r, j] + b[j]) for r < rows, j < cols, row stride ld; b may be null (no bias).
template <typename T>
static void bias_act(T* y, const T* b, long rows, long cols, long ld, Act a) {
    for (long r = 0; r < rows; ++r) {
        T* __restrict row = y + r * ld;
        if (b)
            for (long j = 0; j < cols; ++j) row[j] += b[j];
        switch (a) {
            case Act::linear:
                break;
            case Act::relu:
                for (long j = 0; j < cols; ++j) row[j] = row[j] > 0 ? row[j] : T(0);
                break;
            case Act::leaky_relu:
                for (long j = 0; j < cols; ++j) row[j] = row[j] > 0 ? row[j] : T(kLeakySlope) * row[j];
                break;
            case Act::elu:
                map_vec(row, row, cols, Elu<T>{});
                break;
            case Act::tanh:
                map_vec(row, row, cols, Tanh<T>{});
                break;
            case Act::sigmoid:
                map_vec(row, row, cols, Sigmoid<T>{});
                break;
            case Act::softplus:
                map_vec(row, row, cols, Softplus<T>{});
                break;
        }
    }
}

// da = dout * f'(x) with f'(x) from y = f(x) (act_grad_from_output), on a block; da may alias dout.
template <typename T>
static void act_grad(T* da, const T* dout, const T* y, long rows, long cols, long ld, Act a) {
    for (long r = 0; r < rows; ++r) {
        T* d = da + r * ld;
        const T* g = dout + r * ld;
        const T* __restrict o = y + r * ld;
        switch (a) {
            case Act::linear:
                if (d != g) std::copy(g, g + cols, d);
                break;
            case Act::relu:
                for (long j = 0; j < cols; ++j) d[j] = o[j] > 0 ? g[j] : T(0);
                break;
            case Act::leaky_relu:
                for (long j = 0; j < cols; ++j) d[j] = o[j] > 0 ? g[j] : g[j] * T(kLeakySlope);
                break;
            case Act::elu:
                for (long j = 0; j < cols; ++j) d[j] = g[j] * (o[j] > 0 ? T(1) : o[j] + T(kEluAlpha));
                break;
            case Act::tanh:
                for (long j = 0; j < cols; ++j) d[j] = g[j] * (T(1) - o[j] * o[j]);
                break;
            case Act::sigmoid:
                for (long j = 0; j < cols; ++j) d[j] = g[j] * (o[j] * (T(1) - o[j]));
                break;
            case Act::softplus: {  // f'(x) = sigmoid(x) = 1 - e^-y
                constexpr long kChunk = 256;
                T s[kChunk];
                for (long j0 = 0; j0 < cols; j0 += kChunk) {
                    const long n = std::min(kChunk, cols - j0);
                    map_vec(s, o + j0, n, SoftplusGrad<T>{});
                    for (long j = 0; j < n; ++j) d[j0 + j] = g[j0 + j] * s[j];
                }
                break;
            }
        }
    }
}

// ---- the Bernoulli likelihood -------------------------------------------------------------------
// One row of D logits l against x: returns its nll, sum_d softplus(l) - x l, and sets
// dp = w (sigmoid(l) - x) when dp is not null; both from e = exp(-|l|):
//   softplus(l) = max(l, 0) + log1p(e),   sigmoid(l) = (l >= 0 ? 1 : e) / (1 + e).
// The sum: per lane in T over chunks of 256 values, each chunk's lanes then added in order in
// double (the last partial register's values one by one).
template <typename T>
VAECPP_EW_INLINE static vec<T> bernoulli_term(vec<T> lv, vec<T> xv, T w, vec<T>& g) {
    const vec<T> zero{}, one = splat(T(1));
    const vec<T> e = vexp<T>(lv < zero ? lv : -lv);
    g = w * ((lv >= zero ? one : e) / (one + e) - xv);
    return (lv > zero ? lv : zero) + vlog1p_unit<T>(e) - xv * lv;
}

template <typename T>
static double bernoulli_row(T* dp, const T* x, const T* l, long D, T w) {
    constexpr int VL = Vec<T>::n;
    constexpr long kChunk = 256;
    double acc = 0;
    long d = 0;
    for (long d0 = 0; d0 + VL <= D; d0 += kChunk) {
        vec<T> s{};
        for (d = d0; d + VL <= std::min(D, d0 + kChunk); d += VL) {
            vec<T> g;
            s += bernoulli_term<T>(load(l + d), load(x + d), w, g);
            if (dp) store(dp + d, g);
        }
        for (int k = 0; k < VL; ++k) acc += double(s[k]);
    }
    if (d < D) {
        T lb[VL] = {}, xb[VL] = {}, gb[VL], tb[VL];
        std::copy(l + d, l + D, lb);
        std::copy(x + d, x + D, xb);
        vec<T> g;
        store(tb, bernoulli_term<T>(load(lb), load(xb), w, g));
        store(gb, g);
        for (long k = 0; k < D - d; ++k) acc += double(tb[k]);
        if (dp) std::copy(gb, gb + (D - d), dp + d);
    }
    return acc;
}

// ---- bias gradients -----------------------------------------------------------------------------
// db[j] (+)= sum_r da[r, j] over a column block (+= when accumulate); the rows are summed in order
// (as the reference), a chunk of columns at a time so the partial sums stay in registers.
template <typename T>
static void colsum(T* db, const T* da, long rows, long cols, long ld, bool accumulate) {
    constexpr long kChunk = 256;
    T acc[kChunk];
    for (long j0 = 0; j0 < cols; j0 += kChunk) {
        const long n = std::min(kChunk, cols - j0);
        std::fill(acc, acc + n, T(0));
        for (long r = 0; r < rows; ++r) {
            const T* __restrict row = da + r * ld + j0;
            for (long j = 0; j < n; ++j) acc[j] += row[j];
        }
        for (long j = 0; j < n; ++j) db[j0 + j] = accumulate ? db[j0 + j] + acc[j] : acc[j];
    }
}

// ---- the optimizer rules ------------------------------------------------------------------------
// The rule of optimizer_rules.hpp over n elements. The coefficients by value and restrict pointers:
// nothing the loop writes can alias what it reads, so the compiler vectorises it (sqrt and division
// included, with -fno-math-errno); the vector and scalar forms of the loop do the same operations,
// so an element's result does not depend on where a part starts.
template <Opt K, typename T>
static void opt_rule_loop(const OptCoeffs<T> c, long n, T* __restrict p, const T* __restrict g,
                          T* __restrict m, T* __restrict v) {
    for (long i = 0; i < n; ++i) opt_rule<K>(c, i, p, g, m, v);
}

template <typename T>
static void opt_rules(const OptCoeffs<T>& c, long n, T* p, const T* g, T* m, T* v) {
    switch (c.kind) {  // one loop per rule, so that each vectorises
        case Opt::adam: return opt_rule_loop<Opt::adam>(c, n, p, g, m, v);
        case Opt::sgd: return opt_rule_loop<Opt::sgd>(c, n, p, g, m, v);
        case Opt::rmsprop: return opt_rule_loop<Opt::rmsprop>(c, n, p, g, m, v);
        case Opt::adagrad: return opt_rule_loop<Opt::adagrad>(c, n, p, g, m, v);
    }
}
