// Fully connected layer with a fused activation: out = f(inp @ W + b), W stored (C, OC) like Keras.
//
// dense_forward / dense_backward are the fast kernels: each product (gemm.hpp) is cut into column
// blocks of the weight matrix, one per thread, so every thread streams only its own part of W and
// writes a disjoint part of the result (no reductions between threads, so no thread count changes
// the order of any sum). Bias, activation and their gradients run on a block while it is still
// in cache. dense_forward_ref / dense_backward_ref are the readable versions they are
// tested against.
#pragma once

#include "kernels/activations_cpu.hpp"
#include "core/buffers.hpp"
#include "core/threads.hpp"
#include "kernels/gemm.hpp"
#include "kernels/weight_step.hpp"

namespace vaecpp {

// Column blocks are cut at multiples of this (a whole number of SIMD registers).
constexpr long kColAlign = 16;

// inp is (B,C), W is (C,OC), b is (OC,), out is (B,OC)
template <typename T>
void dense_forward_ref(T* out, const T* inp, const T* W, const T* b, int B, int C, int OC, Act act) {
    MatMap<T>(out, B, OC).noalias() = CMatMap<T>(inp, B, C) * CMatMap<T>(W, C, OC);
    for (int r = 0; r < B; ++r)
        for (int j = 0; j < OC; ++j) out[long(r) * OC + j] = act_value(act, out[long(r) * OC + j] + b[j]);
}

// With a = inp @ W + b and y = f(a):  da = dout * f'(a) (from y),
//   dW += inp^T @ da,   db += sum_rows(da),   dinp = da @ W^T  (dinp += when accumulate_dinp).
// dout is overwritten with da; dinp may be null (first layer); dW/db accumulate (are set when
// accumulate_grads is false).
template <typename T>
void dense_backward_ref(T* dinp, T* dW, T* db, T* dout, const T* inp, const T* out, const T* W,
                        int B, int C, int OC, Act act, bool accumulate_dinp = false,
                        bool accumulate_grads = true) {
    if (!accumulate_grads) {
        std::fill(dW, dW + long(C) * OC, T(0));
        std::fill(db, db + OC, T(0));
    }
    for (long i = 0; i < long(B) * OC; ++i) dout[i] *= act_grad_from_output(act, out[i]);
    CMatMap<T> da(dout, B, OC);
    MatMap<T>(dW, C, OC).noalias() += CMatMap<T>(inp, B, C).transpose() * da;
    for (int j = 0; j < OC; ++j) {
        T s = 0;
        for (int r = 0; r < B; ++r) s += dout[long(r) * OC + j];
        db[j] += s;
    }
    if (!dinp) return;
    if (accumulate_dinp)
        MatMap<T>(dinp, B, C).noalias() += da * CMatMap<T>(W, C, OC).transpose();
    else
        MatMap<T>(dinp, B, C).noalias() = da * CMatMap<T>(W, C, OC).transpose();
}

// ---- fast kernels ----------------------------------------------------------------------------------

// db[j] (+)= sum_r da[r, j] over a column block (+= when accumulate), the rows summed in order
// (as the reference), in the instruction set picked at run time (elementwise_kernels.hpp).
template <typename T>
void colsum(T* db, const T* da, long rows, long cols, long ld, bool accumulate) {
    with_elementwise([&](auto set) { decltype(set)::colsum(db, da, rows, cols, ld, accumulate); });
}

// Threads worth using for a (B,C) x (C,OC)-sized GEMM split over `n` columns. With only a few
// rows the product is bound by reading W, and splitting W between the cores' own caches pays
// off at far less arithmetic (a one-point decode: 2 x 0.8 MB of W stays in two L2 caches).
inline int gemm_threads(int B, int C, int OC, long n) {
    const double work = double(B < 4 ? 16 : B) * C * OC;  // multiply-adds, or their cost in reads
    return threads_for(work, kGemmMinPerThread, (n + kColAlign - 1) / kColAlign);
}

// Row blocks are cut at multiples of this (a whole GEMM row tile).
constexpr long kRowAlign = 8;

// inp is (B,C), W is (C,OC), b is (OC,), out is (B,OC). More rows than columns (inference on many
// rows): each thread takes a block of rows and all of W, so it packs W once and multiplies full-
// width strips; otherwise (training batches, one-point decodes) a block of W's columns, so each
// thread reads only its part of W. Either way every output is the same sum in the same order.
template <typename T>
void dense_forward(T* out, const T* inp, const T* W, const T* b, int B, int C, int OC, Act act) {
    if (B > OC) {
        const int nt = threads_for(double(B) * C * OC, kGemmMinPerThread, B / kRowAlign);
        parallel_parts(B, nt, kRowAlign, [&](long r0, long r1) {
            // out[r0:r1, :] = f(inp[r0:r1, :] @ W + b)
            gemm<T>(r1 - r0, OC, C, inp + r0 * C, C, 1, W, OC, false, out + r0 * OC, OC, false);
            bias_act_block(out + r0 * OC, b, r1 - r0, OC, OC, act);
        });
        return;
    }
    const int nt = gemm_threads(B, C, OC, OC);
    parallel_parts(OC, nt, kColAlign, [&](long j0, long j1) {
        // out[:, j0:j1] = f(inp @ W[:, j0:j1] + b[j0:j1])
        const long n = j1 - j0;
        gemm<T>(B, n, C, inp, C, 1, W + j0, OC, false, out + j0, OC, false);
        bias_act_block(out + j0, b + j0, B, n, OC, act);
    });
}

// As dense_backward_ref, except that dW and db are set rather than added to when accumulate_grads
// is false (a training step: no pass to clear them first). Phase 1 (split over OC): da, dW[:, blk]
// and db[blk] of each thread's columns. Phase 2 (split over C, after a barrier since it reads all
// of da): dinp[:, blk].
// With `step` (accumulate_grads false), the optimizer step of this layer's weights as well
// (weight_step.hpp; step->p is W then b): the bias's right after db, in phase 1; W's fused into
// its gradient's product in a phase 3 split over W's rows as phase 2 is (each thread steps the
// rows of W its dinp product has read, after it), each tile of rows stepped as soon as its dW
// rows are final, while they are in cache (gemm_then_rows), a thread's rows one stretch of
// memory; dW is then written only if step->keep_grads (the tiles are formed in L1 and stepped
// from there). db is set as without it (dW too where written), and every element steps by the
// same rule as in a later pass over them.
template <typename T>
void dense_backward(T* dinp, T* dW, T* db, T* dout, const T* inp, const T* out, const T* W, int B,
                    int C, int OC, Act act, bool accumulate_dinp = false, bool accumulate_grads = true,
                    const WeightStep<T>* step = nullptr) {
    if (step && accumulate_grads) throw std::logic_error("dense_backward: a step needs set gradients");
    // Eigen's product (no fast kernel set) sums in an order that depends on the shape it is given:
    // there dW is formed by columns as without a step, and phase 3 only steps.
    const bool fused = step && have_fast_gemm();
    auto grads = [&](long j0, long j1) {
        // da = dout * f'(y);  dW[:, j0:j1] (+)= inp^T @ da[:, j0:j1];  db[j0:j1] (+)= colsum(da)
        const long n = j1 - j0;
        act_grad_block(dout + j0, dout + j0, out + j0, B, n, OC, act);
        if (!fused) gemm<T>(C, n, B, inp, 1, C, dout + j0, OC, false, dW + j0, OC, accumulate_grads);  // A = inp^T
        colsum(db + j0, dout + j0, B, n, OC, accumulate_grads);
        if (step) step_elements(*step, long(C) * OC + j0, n, db + j0);  // b[j0:j1]
    };
    auto input_grad = [&](long c0, long c1) {
        // dinp[:, c0:c1] (+)= da @ W[c0:c1, :]^T
        gemm<T>(B, c1 - c0, OC, dout, OC, 1, W + c0 * OC, OC, true, dinp + c0, C, accumulate_dinp);
    };
    auto grads_stepping = [&](long c0, long c1) {
        // dW[c0:c1, :] = inp[:, c0:c1]^T @ da, then W[rows, :] stepped on each tile of its rows
        if (!fused) return step_elements(*step, c0 * OC, (c1 - c0) * OC, dW + c0 * OC);
        gemm_then_rows<T>(c1 - c0, OC, B, inp + c0, 1, C, dout, OC, dW + c0 * OC, OC,
                          step->keep_grads, [&](long i, long r, long j, long n, const T* g, long ldg) {
                              for (long u = 0; u < r; ++u)
                                  step_elements(*step, (c0 + i + u) * OC + j, n, g + u * ldg);
                          });
    };
    const int nt = gemm_threads(B, C, OC, std::min(C, OC));
    if (nt <= 1) {
        grads(0, OC);
        if (dinp) input_grad(0, C);
        if (step) grads_stepping(0, C);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), p = omp_get_num_threads();
        const auto cols = split_range(OC, p, t, kColAlign);
        if (cols.first < cols.second) grads(cols.first, cols.second);
        if (dinp || step) {
#pragma omp barrier
            const auto r = split_range(C, p, t, kColAlign);
            if (dinp && r.first < r.second) input_grad(r.first, r.second);
            if (step && r.first < r.second) grads_stepping(r.first, r.second);
        }
#endif
    }
}

}  // namespace vaecpp
