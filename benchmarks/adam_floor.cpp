// The arithmetic floor of Adam's element rule on this core: how fast the divide/square-root unit
// runs p -= a m / (sqrt(v) + eps) over floats already in L1 (4,096 of each, stepped 20,000
// times), next to the same loop with the square root or the division alone. The engine's rule
// (cpp/kernels/optimizer_rules.hpp) does this plus the moment updates, reading g, m, v and p
// from wherever they are; benchmarks/RESULTS.md compares the two (issue #12's optimizer target).
// Build and run (x86-64 with AVX2 + FMA):
//   g++ -O2 -mavx2 -mfma benchmarks/adam_floor.cpp -o /tmp/adam_floor && /tmp/adam_floor
#include <immintrin.h>

#include <chrono>
#include <cstdio>

int main() {
    constexpr long n = 4096, reps = 20000;
    alignas(64) static float m[n], v[n], p[n];
    for (long i = 0; i < n; ++i) m[i] = 1e-3f * float(i % 13 + 1), v[i] = 1e-6f * float(i % 7 + 1), p[i] = 0.1f;
    const __m256 eps = _mm256_set1_ps(1e-7f), a = _mm256_set1_ps(1e-3f);
    const char* names[] = {"sqrt and div (Adam's)", "div only", "sqrt only"};
    std::printf("| loop over 8-float vectors in L1 | ns per element |\n|---|---:|\n");
    for (int mode = 0; mode < 3; ++mode) {
        double best = 1e300;
        for (int round = 0; round < 3; ++round) {
            const auto t0 = std::chrono::steady_clock::now();
            for (long r = 0; r < reps; ++r)
                for (long i = 0; i < n; i += 8) {
                    const __m256 mv = _mm256_load_ps(m + i), vv = _mm256_load_ps(v + i);
                    const __m256 d = _mm256_add_ps(mode == 1 ? vv : _mm256_sqrt_ps(vv), eps);
                    const __m256 q = mode == 2 ? _mm256_mul_ps(mv, d) : _mm256_div_ps(mv, d);
                    _mm256_store_ps(p + i, _mm256_fnmadd_ps(a, q, _mm256_load_ps(p + i)));
                }
            const std::chrono::duration<double> s = std::chrono::steady_clock::now() - t0;
            best = s.count() < best ? s.count() : best;
        }
        std::printf("| %s | %.3f |\n", names[mode], best / double(reps * n) * 1e9);
    }
    std::printf("(p[5] = %g, so that the loops are not optimised away)\n", double(p[5]));
}
