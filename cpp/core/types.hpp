// The smallest shared pieces of the engine: shapes, errors, constants and the annotation that lets
// a scalar formula run both on the CPU and in a CUDA kernel. No Eigen here, so that the CUDA
// kernels (cpp/cuda/*.cu) can include the formulas' headers.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

// Functions marked VAECPP_HD are compiled for the host and, under nvcc, for the device too;
// for any other compiler the macro is empty and they are plain C++.
#ifdef __CUDACC__
#define VAECPP_HD __host__ __device__
#else
#define VAECPP_HD
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

// Joins a name table for error messages: "a, b, c".
template <int N>
inline std::string join_names(const char* const (&names)[N]) {
    std::string out;
    for (int i = 0; i < N; ++i) out += (i ? ", " : "") + std::string(names[i]);
    return out;
}

// Errors the bindings map to Python exceptions: bad arguments -> ValueError.
struct ValueError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// Below this many elements an element-wise loop is not worth waking a thread team.
constexpr long kParallelMin = 1 << 15;

constexpr double kLog2Pi = 1.8378770664093453;  // log(2 pi)

}  // namespace vaecpp
