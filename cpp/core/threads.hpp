// Threading helpers of the CPU engine: team sizes, how work is split between OpenMP threads, and
// the thread count of a call (OpenMP and Eigen).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

#include "core/types.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace vaecpp {

inline bool have_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

// The size of the team a parallel region opened here would get, and this thread's number in it:
// per-thread scratch is sized by the first and indexed by the second.
inline int team_size() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline int thread_num() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// The machine's physical memory in bytes (0 where unknown).
inline double physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? double(pages) * double(size) : 0.0;
#else
    return 0.0;
#endif
}

// A thread count a model may ask for: far above any machine's cores is an error (a model file or a
// typo asking for millions would otherwise reach the OpenMP runtime and exhaust the process).
constexpr int kMaxThreads = 1024;
inline void check_threads(long n) {
    if (n < 1 || n > kMaxThreads)
        throw ValueError("threads must be between 1 and " + std::to_string(kMaxThreads) + ", got " +
                         std::to_string(n));
}

// Sets the thread count of this (calling) thread's OpenMP and of Eigen's GEMM.
inline void use_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    Eigen::setNbThreads(n);
}

// Below this many multiply-adds per thread a GEMM is not worth splitting (a fork/join costs a few
// microseconds; 2^18 multiply-adds take about as long on one core).
constexpr double kGemmMinPerThread = double(1 << 18);

// Threads worth using for `work` units when each thread should get at least `min_per_thread`,
// never more than the team size set by use_threads() nor than `max_parts`.
inline int threads_for(double work, double min_per_thread, long max_parts) {
#ifdef _OPENMP
    if (omp_in_parallel()) return 1;
    long t = std::min<long>(omp_get_max_threads(), max_parts);
    t = std::min<long>(t, long(work / min_per_thread));
    return int(std::max<long>(t, 1));
#else
    return 1;
#endif
}

// Part `i` of `parts` of the range [0, n), cut at multiples of `align` (SIMD / GEMM panel width)
// so every part but the last starts and ends on a panel boundary. The split depends only on
// (n, parts, align), so a given thread count always does the same arithmetic.
inline std::pair<long, long> split_range(long n, int parts, int i, long align) {
    const long units = (n + align - 1) / align;
    const long lo = units * i / parts, hi = units * (i + 1) / parts;
    return {std::min(n, lo * align), std::min(n, hi * align)};
}

// Runs f and g at once on two threads when `worth` it and two are available; else one by one.
template <typename F, typename G>
void parallel_pair(bool worth, F&& f, G&& g) {
    if (!worth || threads_for(2.0, 1.0, 2) < 2) {
        f();
        g();
        return;
    }
#pragma omp parallel num_threads(2)
    {
#ifdef _OPENMP
        if (omp_get_thread_num() == 0)
            f();
        else
            g();
#endif
    }
}

// Runs body(begin, end) on `nt` threads, each on its own part of [0, n); serially when nt <= 1.
template <typename F>
void parallel_parts(long n, int nt, long align, F&& body) {
    if (nt <= 1) {
        body(0L, n);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        auto r = split_range(n, omp_get_num_threads(), omp_get_thread_num(), align);
        if (r.first < r.second) body(r.first, r.second);
#endif
    }
}

}  // namespace vaecpp
