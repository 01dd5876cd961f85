// 2-D convolution, transposed convolution and max pooling over channels-last (NHWC) tensors with
// TensorFlow's "valid"/"same" geometry and Keras's kernel layouts. The fast kernels lower a chunk
// of samples to one matrix product (im2col + Eigen GEMM, threaded by Eigen), with the im2col and
// col2im loops spread over OpenMP threads; the naive direct loops beside them are the reference
// they are tested against (config "naive"). Conv2DTranspose reuses Conv2D's products: its forward
// is a convolution's input gradient.
#pragma once

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "core/buffers.hpp"
#include "kernels/activations_cpu.hpp"

namespace vaecpp {

// ---- geometry ---------------------------------------------------------------------------------

// A sliding window from an image (H, W, C) to a grid (OH, OW): grid point (oh, ow) reads the image
// rows oh*SH - PT + kh for kh < KH (columns likewise); rows outside the image are padding.
struct ConvGeom {
    int H = 0, W = 0, C = 0;  // image side
    int OH = 0, OW = 0;       // grid side
    int KH = 1, KW = 1, SH = 1, SW = 1, PT = 0, PL = 0;
    long image() const { return long(H) * W * C; }  // values of one image
    long grid() const { return long(OH) * OW; }     // grid points
    long taps() const { return long(KH) * KW * C; } // im2col columns = kernel rows
};

// Kernel (or pool) size, strides and padding, as the configuration gives them.
struct Window {
    std::array<int, 2> k, s;
    bool same = false;
};

// TensorFlow's output size and leading pad along one dimension:
//   valid: out = floor((n - k) / s) + 1, no pad;
//   same:  out = ceil(n / s), pad_total = max((out - 1) s + k - n, 0), leading pad = pad_total / 2.
inline std::array<int, 2> window_dim(int n, int k, int s, bool same) {
    if (!same) return {(n - k) / s + 1, 0};
    const int out = (n + s - 1) / s;
    return {out, std::max((out - 1) * s + k - n, 0) / 2};
}

inline void check_window(const Window& w, const std::string& what) {
    if (std::min(w.k[0], w.k[1]) < 1 || std::min(w.s[0], w.s[1]) < 1)
        throw ValueError(what + " size and strides must be >= 1, got " + std::to_string(w.k[0]) +
                         "x" + std::to_string(w.k[1]) + " with strides " + std::to_string(w.s[0]) +
                         "x" + std::to_string(w.s[1]));
}

inline void check_image(const Shape& in, const std::string& layer) {
    if (in.size() != 3)
        throw ValueError(layer + " needs a 3-D (height, width, channels) input, got " + shape_str(in) +
                         "; add a Reshape layer before it");
}

// The geometry of a convolution or pooling window over an input image `in` (H, W, C).
inline ConvGeom window_geom(const Shape& in, const Window& w, const std::string& layer,
                            const std::string& what = "kernel") {
    check_image(in, layer);
    check_window(w, layer + " " + what);
    if (!w.same && (w.k[0] > in[0] || w.k[1] > in[1]))
        throw ValueError(layer + " " + what + " " + std::to_string(w.k[0]) + "x" + std::to_string(w.k[1]) +
                         " is larger than its " + std::to_string(in[0]) + "x" + std::to_string(in[1]) +
                         " input with padding='valid'");
    ConvGeom g;
    g.H = in[0], g.W = in[1], g.C = in[2];
    g.KH = w.k[0], g.KW = w.k[1], g.SH = w.s[0], g.SW = w.s[1];
    auto r = window_dim(g.H, g.KH, g.SH, w.same), c = window_dim(g.W, g.KW, g.SW, w.same);
    g.OH = r[0], g.PT = r[1], g.OW = c[0], g.PL = c[1];
    return g;
}

// A transposed convolution is the adjoint of the convolution from its output image (C channels)
// back to its input (the grid). Keras's output size: valid: n s + max(k - s, 0), same: n s.
inline ConvGeom transpose_geom(const Shape& in, int C, const Window& w, const std::string& layer) {
    check_image(in, layer);
    check_window(w, layer + " kernel");
    auto out = [&](int n, int d) { return n * w.s[d] + (w.same ? 0 : std::max(w.k[d] - w.s[d], 0)); };
    ConvGeom g = window_geom({out(in[0], 0), out(in[1], 1), C}, w, layer);
    if (g.OH != in[0] || g.OW != in[1])
        throw ValueError(layer + ": internal geometry error for input " + shape_str(in));
    return g;
}

// Calls f(o, t, i) for every grid point o (flat over OH*OW), kernel tap t (flat over KH*KW) and
// image pixel i (flat over H*W) that the tap reads, i = -1 for a tap in the padding.
template <typename F>
inline void for_each_tap(const ConvGeom& g, F f) {
    // grid is (OH,OW), taps are (KH,KW), image pixels (H,W)
    for (int oh = 0; oh < g.OH; ++oh)
        for (int ow = 0; ow < g.OW; ++ow)
            for (int kh = 0; kh < g.KH; ++kh) {
                const int ih = oh * g.SH - g.PT + kh;
                for (int kw = 0; kw < g.KW; ++kw) {
                    const int iw = ow * g.SW - g.PL + kw;
                    const bool inside = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
                    f(long(oh) * g.OW + ow, long(kh) * g.KW + kw, inside ? long(ih) * g.W + iw : -1L);
                }
            }
}

// The taps kw of a window starting at image column iw0 that fall inside the image: [lo, hi).
inline std::array<int, 2> inside_taps(int iw0, int KW, int W) {
    return {std::max(0, -iw0), std::min(KW, W - iw0)};
}

// im2col, one grid row at a time so that threads can share out (sample, row) pairs: col is
// (OH*OW, KH*KW*C), its row o holds the C values under each tap (0 in the padding), and
// im2col_row fills the OW rows of grid row oh. A window row reads KW*C consecutive image values.
template <typename T>
void im2col_row(T* col, const T* x, const ConvGeom& g, int oh) {
    // col rows (OW, KH*KW*C) of grid row oh, x is (H,W,C)
    const long run = long(g.KW) * g.C;
    for (int ow = 0; ow < g.OW; ++ow) {
        T* dst = col + (long(oh) * g.OW + ow) * g.taps();
        const int iw0 = ow * g.SW - g.PL;
        const auto in = inside_taps(iw0, g.KW, g.W);
        for (int kh = 0; kh < g.KH; ++kh, dst += run) {
            const int ih = oh * g.SH - g.PT + kh;
            if (ih < 0 || ih >= g.H || in[0] >= in[1]) {
                std::fill_n(dst, run, T(0));
                continue;
            }
            std::fill_n(dst, long(in[0]) * g.C, T(0));
            const T* src = x + (long(ih) * g.W + iw0 + in[0]) * g.C;
            T* d = dst + long(in[0]) * g.C;
            for (long i = 0, n = long(in[1] - in[0]) * g.C; i < n; ++i) d[i] = src[i];
            std::fill(dst + long(in[1]) * g.C, dst + run, T(0));
        }
    }
}

// col2im, the adjoint of im2col, for one image row ih (W,C): the sum of the column entries that
// read it, from the grid rows oh and taps kh with oh * SH - PT + kh = ih. Each image row is
// written by one thread in a fixed order: no races, and the same sums for any team size.
template <typename T>
void col2im_row(T* x, const T* col, const ConvGeom& g, int ih) {
    // x row (W,C) of image row ih, col is (OH*OW, KH*KW*C)
    T* row = x + long(ih) * g.W * g.C;
    std::fill_n(row, long(g.W) * g.C, T(0));
    for (int kh = 0; kh < g.KH; ++kh) {
        const int th = ih + g.PT - kh;
        if (th < 0 || th % g.SH != 0 || th / g.SH >= g.OH) continue;
        const int oh = th / g.SH;
        for (int ow = 0; ow < g.OW; ++ow) {
            const int iw0 = ow * g.SW - g.PL;
            const auto in = inside_taps(iw0, g.KW, g.W);
            if (in[0] >= in[1]) continue;
            const T* src = col + (long(oh) * g.OW + ow) * g.taps() + (long(kh) * g.KW + in[0]) * g.C;
            T* d = row + (long(iw0) + in[0]) * g.C;
            for (long i = 0, n = long(in[1] - in[0]) * g.C; i < n; ++i) d[i] += src[i];
        }
    }
}

// ---- shared pieces ----------------------------------------------------------------------------

// out is (rows, n): out = f(out + bias), in place
// b (n,) += the sum of the rows of a (rows, n). A plain row-order loop: Eigen's colwise().sum()
// on a row-major matrix walks it column by column, several times slower on tall matrices.
template <typename T>
void add_column_sums(T* b, const T* a, long rows, int n) {
    for (long r = 0; r < rows; ++r)
        for (int j = 0; j < n; ++j) b[j] += a[r * n + j];
}

template <typename T>
void add_bias_act(T* out, const T* bias, long rows, int n, Act act) {
    with_act(act, [&](auto A) {
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
        for (long r = 0; r < rows; ++r)
            for (int j = 0; j < n; ++j) out[r * n + j] = act_value(A(), out[r * n + j] + bias[j]);
    });
}

// With y = f(a), a = ... + bias: da = dout f'(a) (from y) overwrites dout, db += column sums of da.
// dout and out are (rows, n).
template <typename T>
void act_bias_backward(T* db, T* dout, const T* out, long rows, int n, Act act) {
    act_backward(dout, dout, out, rows * n, act);
    add_column_sums(db, dout, rows, n);
}

// One slab of scratch per thread, grown when the team or the sizes grow and never in the steady
// state; thread t owns [t * per, (t + 1) * per).
template <typename T>
struct ThreadScratch {
    Buffer<T> buf;
    long per = 0;
    int slabs = 0;
    void prepare(long n, int threads, bool zero = false) {
        per = n;
        slabs = threads;
        const size_t need = size_t(n) * slabs;
        if (buf.size() < need) buf.resize(need);
        if (zero) std::fill_n(buf.begin(), need, T(0));
    }
    T* mine() { return buf.data() + (slabs > 1 ? long(thread_num()) * per : 0); }
    // dst (per,) += the slabs in thread order, so a given team size always sums alike
    void sum_into(T* dst) const {
        for (int t = 0; t < slabs; ++t)
            VecMap<T>(dst, per) += CVecMap<T>(buf.data() + long(t) * per, per);
    }
};

// ---- the three products of a convolution ------------------------------------------------------
// A convolution maps an image side (B,H,W,C) to a grid side (B,OH,OW,F) with a Keras kernel K
// (KH,KW,C,F), seen as a (KH*KW*C, F) matrix. Conv2D and Conv2DTranspose (which TensorFlow defines
// as the input gradient of a convolution) are both made of these three products:
//   forward:          grid[o,f]  = sum_{t,c} image[pixel(o,t), c] K[t,c,f]  = im2col(image) @ K
//   backward_input:   image[i,c] = sum_{o,t: pixel(o,t)=i} sum_f grid[o,f] K[t,c,f]
//                                                                          = col2im(grid @ K^T)
//   backward_kernel:  dK[t,c,f] += sum_o image[pixel(o,t), c] grid[o,f]   = im2col(image)^T @ grid

// Naive direct loops, the reference for the fast versions: fn(image index, grid index, kernel
// index) for every sample, grid point, tap inside the image, channel c and filter f.
template <typename Fn>
void for_each_product(int B, const ConvGeom& g, int F, Fn fn) {
    // image is (B,H,W,C), grid is (B,OH,OW,F), K is (KH*KW,C,F)
    for (int b = 0; b < B; ++b)
        for_each_tap(g, [&](long o, long t, long i) {
            if (i < 0) return;
            for (int c = 0; c < g.C; ++c)
                for (int f = 0; f < F; ++f)
                    fn(b * g.image() + i * g.C + c, (b * g.grid() + o) * F + f, (t * g.C + c) * F + f);
        });
}

template <typename T>
void conv2d_forward_naive(T* grid, const T* image, const T* K, int B, const ConvGeom& g, int F) {
    std::fill_n(grid, B * g.grid() * F, T(0));
    for_each_product(B, g, F, [&](long x, long y, long k) { grid[y] += image[x] * K[k]; });
}

template <typename T>
void conv2d_backward_input_naive(T* image, const T* grid, const T* K, int B, const ConvGeom& g, int F) {
    std::fill_n(image, B * g.image(), T(0));
    for_each_product(B, g, F, [&](long x, long y, long k) { image[x] += grid[y] * K[k]; });
}

template <typename T>
void conv2d_backward_kernel_naive(T* dK, const T* image, const T* grid, int B, const ConvGeom& g, int F) {
    for_each_product(B, g, F, [&](long x, long y, long k) { dK[k] += image[x] * grid[y]; });
}

// Fast versions: the samples go in chunks, each lowered to one GEMM on the chunk's stacked im2col
// matrices (n*OH*OW, KH*KW*C). Stacking matters for the deep layers, whose 4x4 or 8x8 grids would
// make per-sample products matrix-vector-like, each rereading a kernel of many megabytes; past
// kChunkRows rows a product is efficient, and a smaller col stays in cache.
//
// Threads: with several chunks, each thread takes whole chunks (its own col scratch, a
// single-threaded GEMM, one parallel region per product); with one chunk, Eigen threads the GEMM
// and OpenMP the im2col / col2im loops. The first way synchronises least, which matters on a
// busy machine; the second is the only way to share out one big product.
constexpr long kChunkRows = 512;
constexpr long kColBudget = 1L << 23;  // at most this many values of scratch per chunk (or one sample)

// How the B samples are cut into chunks of (up to) `size` samples, `count` of them, and whether
// threads share out the chunks (`spread`). The count is rounded up to a multiple of the team so
// that the threads get equal shares.
struct Chunks {
    int size = 1, count = 1;
    bool spread = false;
    Chunks(const ConvGeom& g, int B, long chunk_rows, int threads) {
        long n = (chunk_rows + g.grid() - 1) / g.grid();
        n = std::max<long>(1, std::min<long>({long(B), n, kColBudget / std::max<long>(1, g.grid() * g.taps())}));
        long c = (B + n - 1) / n;
        if (c > 1 && threads > 1) {
            c = (c + threads - 1) / threads * threads;
            n = (B + c - 1) / c;
            c = (B + n - 1) / n;
            spread = true;
        }
        size = int(n), count = int(c);
    }
    int first(int k) const { return k * size; }
    int samples(int k, int B) const { return std::min(size, B - k * size); }
};

// col (m*OH*OW, KH*KW*C) = im2col of the m images at image (m,H,W,C); `par`: share out the rows
template <typename T>
void im2col_chunk(T* col, const T* image, int m, const ConvGeom& g, bool par) {
    const long rows = long(m) * g.OH;  // (sample, grid row) pairs
#pragma omp parallel for schedule(static) if (par && rows * g.OW * g.taps() >= kParallelMin)
    for (long r = 0; r < rows; ++r)
        im2col_row(col + (r / g.OH) * g.grid() * g.taps(), image + (r / g.OH) * g.image(), g, int(r % g.OH));
}

// image (m,H,W,C) = col2im of col (m*OH*OW, KH*KW*C), overwriting
template <typename T>
void col2im_chunk(T* image, const T* col, int m, const ConvGeom& g, bool par) {
    const long rows = long(m) * g.H;  // (sample, image row) pairs
#pragma omp parallel for schedule(static) if (par && rows * g.W * g.C * g.KH >= kParallelMin)
    for (long r = 0; r < rows; ++r)
        col2im_row(image + (r / g.H) * g.image(), col + (r / g.H) * g.grid() * g.taps(), g, int(r % g.H));
}

// Calls body(first sample, samples, col, par) for every chunk, where col (m*OH*OW, KH*KW*C) is
// the calling thread's scratch, filled with the chunk's im2col rows when `fill`, and `par` says
// whether body may open parallel loops (false inside a thread's share of chunks).
template <typename T, typename Fn>
void per_chunk(const T* image, int B, const ConvGeom& g, const Chunks& ch, ThreadScratch<T>& col,
               bool fill, Fn body) {
    col.prepare(long(ch.size) * g.grid() * g.taps(), ch.spread ? team_size() : 1);
    auto run = [&](int k, bool par) {
        const int b0 = ch.first(k), m = ch.samples(k, B);
        T* c = col.mine();
        if (fill) im2col_chunk(c, image + b0 * g.image(), m, g, par);
        body(b0, m, MatMap<T>(c, long(m) * g.grid(), g.taps()), par);
    };
    if (ch.spread) {
#pragma omp parallel for schedule(static)
        for (int k = 0; k < ch.count; ++k) run(k, false);
    } else {
        for (int k = 0; k < ch.count; ++k) run(k, true);
    }
}

// image is (B,H,W,C), K is (KH*KW*C, F), grid is (B,OH,OW,F)
template <typename T>
void conv2d_forward(T* grid, const T* image, const T* K, int B, const ConvGeom& g, int F,
                    ThreadScratch<T>& col, long chunk_rows = kChunkRows) {
    Chunks ch(g, B, chunk_rows, team_size());
    per_chunk(image, B, g, ch, col, true, [&](int b0, int m, MatMap<T> c, bool) {
        MatMap<T>(grid + b0 * g.grid() * F, m * g.grid(), F).noalias() = c * CMatMap<T>(K, g.taps(), F);
    });
}

// image is overwritten
template <typename T>
void conv2d_backward_input(T* image, const T* grid, const T* K, int B, const ConvGeom& g, int F,
                           ThreadScratch<T>& col, long chunk_rows = kChunkRows) {
    Chunks ch(g, B, chunk_rows, team_size());
    per_chunk(image, B, g, ch, col, false, [&](int b0, int m, MatMap<T> c, bool par) {
        c.noalias() = CMatMap<T>(grid + b0 * g.grid() * F, m * g.grid(), F) *
                      CMatMap<T>(K, g.taps(), F).transpose();
        col2im_chunk(image + b0 * g.image(), c.data(), m, g, par);
    });
}

// dK (KH*KW*C, F) += the chunks' im2col^T @ grid; with spread chunks each thread sums into its own
// slab of dk, and the slabs are added in thread order (the same sums for a given team size).
// With `out` given, also out (B,OH,OW,F) = conv2d_forward(image): a transposed convolution's
// backward needs both products of its output gradient, and shares the im2col between them.
template <typename T>
void conv2d_backward_kernel(T* dK, const T* image, const T* grid, int B, const ConvGeom& g, int F,
                            ThreadScratch<T>& col, ThreadScratch<T>& dk, long chunk_rows = kChunkRows,
                            T* out = nullptr, const T* K = nullptr) {
    Chunks ch(g, B, chunk_rows, team_size());
    if (ch.spread) dk.prepare(g.taps() * F, team_size(), true);
    per_chunk(image, B, g, ch, col, true, [&](int b0, int m, MatMap<T> c, bool) {
        MatMap<T>(ch.spread ? dk.mine() : dK, g.taps(), F).noalias() +=
            c.transpose() * CMatMap<T>(grid + b0 * g.grid() * F, m * g.grid(), F);
        if (out)
            MatMap<T>(out + b0 * g.grid() * F, m * g.grid(), F).noalias() = c * CMatMap<T>(K, g.taps(), F);
    });
    if (ch.spread) dk.sum_into(dK);
}

// ---- MaxPool2D --------------------------------------------------------------------------------

// inp is (B,H,W,C), out is (B,OH,OW,C); arg (B,OH,OW,C) keeps the index of each max within its
// sample. Windows are clipped to the image (TF's "same" pads with -inf); the first max wins ties.
template <typename T>
void maxpool2d_forward(T* out, int* arg, const T* inp, int B, const ConvGeom& g) {
    const long n = g.grid() * g.C;
#pragma omp parallel for schedule(static) if (B * g.image() >= kParallelMin)
    for (int b = 0; b < B; ++b) {
        const T* x = inp + b * g.image();
        T* y = out + b * n;
        int* a = arg + b * n;
        std::fill_n(a, n, -1);
        for_each_tap(g, [&](long o, long, long i) {
            if (i < 0) return;
            for (int c = 0; c < g.C; ++c) {
                const long k = o * g.C + c, j = i * g.C + c;
                if (a[k] < 0 || x[j] > y[k]) y[k] = x[j], a[k] = int(j);
            }
        });
    }
}

// Only the max depends on its window: dinp[arg] += dout, zero elsewhere.
// dout and arg are (B,OH,OW,C), dinp is (B,H,W,C)
template <typename T>
void maxpool2d_backward(T* dinp, const T* dout, const int* arg, int B, const ConvGeom& g) {
    const long n = g.grid() * g.C;
#pragma omp parallel for schedule(static) if (B * g.image() >= kParallelMin)
    for (int b = 0; b < B; ++b) {
        T* dx = dinp + b * g.image();
        std::fill_n(dx, g.image(), T(0));
        for (long k = 0; k < n; ++k) dx[arg[b * n + k]] += dout[b * n + k];
    }
}

}  // namespace vaecpp
