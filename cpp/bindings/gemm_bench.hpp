// The products of a Dense layer, timed alone (vaecpp._testing.gemm_layer_bench): what the
// benchmarks compare with other libraries at the VAE's own shapes. Each runs as dense_forward /
// dense_backward run it: the engine's gemm() on the same layout, split between threads by the
// same rules (columns, or rows for a forward with more rows than columns); or, kernel "eigen",
// Eigen's own (multi-threaded) product of the same layout.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>

#include "core/buffers.hpp"
#include "core/threads.hpp"
#include "core/types.hpp"
#include "kernels/dense.hpp"

namespace vaecpp {

// GFLOP/s of the best of `reps` runs of one product of a (B, C) -> (B, OC) layer, float32:
// "forward" out = X @ W, "dW" dW = X^T @ dY (as a training step forms it, the optimizer step
// left out), "dX" dX = dY @ W^T.
inline double gemm_layer_rate(const std::string& layout, int B, int C, int OC, int reps, int threads,
                              const std::string& kernel) {
    if (B < 1 || C < 1 || OC < 1 || reps < 1 || threads < 1)
        throw ValueError("B, C, OC, reps and threads must be >= 1");
    if (layout != "forward" && layout != "dW" && layout != "dX")
        throw ValueError("layout must be 'forward', 'dW' or 'dX'");
    if (kernel != "engine" && kernel != "eigen") throw ValueError("kernel must be 'engine' or 'eigen'");
    use_threads(threads);
    const Mat<float> X = Mat<float>::Random(B, C), W = Mat<float>::Random(C, OC),
                     dY = Mat<float>::Random(B, OC);
    Mat<float> out(layout == "forward" ? B : layout == "dW" ? C : B, layout == "dX" ? C : OC);
    auto run = [&] {
        if (kernel == "eigen") {
            if (layout == "forward") out.noalias() = X * W;
            else if (layout == "dW") out.noalias() = X.transpose() * dY;
            else out.noalias() = dY * W.transpose();
            return;
        }
        const int nt_back = gemm_threads(B, C, OC, std::min(C, OC));  // dense_backward's team
        if (layout == "forward" && B > OC) {  // out[r0:r1, :] = X[r0:r1, :] @ W
            const int nt = threads_for(double(B) * C * OC, kGemmMinPerThread, B / kRowAlign);
            parallel_parts(B, nt, kRowAlign, [&](long r0, long r1) {
                gemm<float>(r1 - r0, OC, C, X.data() + r0 * C, C, 1, W.data(), OC, false,
                            out.data() + r0 * OC, OC, false);
            });
        } else if (layout == "forward") {  // out[:, j0:j1] = X @ W[:, j0:j1]
            parallel_parts(OC, gemm_threads(B, C, OC, OC), kColAlign, [&](long j0, long j1) {
                gemm<float>(B, j1 - j0, C, X.data(), C, 1, W.data() + j0, OC, false, out.data() + j0,
                            OC, false);
            });
        } else if (layout == "dW") {  // dW[c0:c1, :] = X[:, c0:c1]^T @ dY, as in a training step
            // (gemm_then_rows, split over W's rows, writing dW as the libraries' products do; here
            // with nothing to do on each tile of rows)
            parallel_parts(C, nt_back, kColAlign, [&](long c0, long c1) {
                gemm_then_rows<float>(c1 - c0, OC, B, X.data() + c0, 1, C, dY.data(), OC,
                                      out.data() + c0 * OC, OC, true,
                                      [](long, long, long, long, const float*, long) {});
            });
        } else {  // dX[:, c0:c1] = dY @ W[c0:c1, :]^T
            parallel_parts(C, nt_back, kColAlign, [&](long c0, long c1) {
                gemm<float>(B, c1 - c0, OC, dY.data(), OC, 1, W.data() + c0 * OC, OC, true,
                            out.data() + c0, C, false);
            });
        }
    };
    run();  // warm-up
    double best = 1e300;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return 2.0 * double(B) * C * OC / best * 1e-9;
}

}  // namespace vaecpp
