// Memory of the CPU engine: aligned buffers and the row-major Eigen views over them.
#pragma once

#include <vector>

#include <Eigen/Core>

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

}  // namespace vaecpp
