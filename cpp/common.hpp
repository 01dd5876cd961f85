// Shared small types of the engine: shapes, errors, Eigen views, threading helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace vaecpp {

// The per-sample shape of a tensor, e.g. {784} or {28, 28, 1} (channels last, like Keras).
using Shape = std::vector<int>;

inline long shape_size(const Shape& s) {
    long n = 1;
    for (int d : s) n *= d;
    return n;
}

inline std::string shape_str(const Shape& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) {
        if (i) out += ", ";
        out += std::to_string(s[i]);
    }
    if (s.size() == 1) out += ",";
    return out + ")";
}

// Errors the bindings map to Python exceptions: bad arguments -> ValueError.
struct ValueError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

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

// Below this many elements an element-wise loop is not worth waking a thread team.
constexpr long kParallelMin = 1 << 15;

constexpr double kLog2Pi = 1.8378770664093453;  // log(2 pi)

}  // namespace vaecpp
