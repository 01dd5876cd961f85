// Shared types of the CPU engine: aligned buffers, Eigen views, threading helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "base.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace vaecpp {

// Every internal buffer uses Eigen's aligned allocator. Besides speed this makes results
// reproducible: Eigen's vectorised loops peel a different number of leading elements depending on
// a pointer's alignment, so buffers whose alignment varied from run to run gave results that
// differed in the last bits.
template <typename T>
using Buffer = std::vector<T, Eigen::aligned_allocator<T>>;

// Row-major matrix views over raw buffers: rows are samples, columns features.
template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatMap = Eigen::Map<Mat<T>>;
template <typename T>
using CMatMap = Eigen::Map<const Mat<T>>;
template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <typename T>
using VecMap = Eigen::Map<Vec<T>>;
template <typename T>
using CVecMap = Eigen::Map<const Vec<T>>;

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

// Sets the thread count of this (calling) thread's OpenMP and of Eigen's GEMM.
inline void use_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    Eigen::setNbThreads(n);
}

// b (n,) += the sum of the rows of a (rows, n). A plain row-order loop: Eigen's colwise().sum()
// on a row-major matrix walks it column by column, several times slower on tall matrices.
template <typename T>
void add_column_sums(T* b, const T* a, long rows, int n) {
    for (long r = 0; r < rows; ++r)
        for (int j = 0; j < n; ++j) b[j] += a[r * n + j];
}

}  // namespace vaecpp
