// Which instruction set the element-wise loops run in (activations, the Bernoulli likelihood, bias
// column sums, the optimizer rules), picked at run time like the matrix product's (gemm.hpp).
//
// elementwise_kernels.hpp is one source, compiled here once per set, each inside a struct of its
// own: the generic set with the build's own flags (x86-64's SSE2 in a portable build, everything
// the machine has with -march=native), and with GCC on x86-64 also x86-64-v3 (AVX2 + FMA) and
// x86-64-v4 (AVX-512) under `#pragma GCC target`, whatever the build's -march. The CPU picks the
// best set it runs once, from cpuid; VAECPP_ELEMENTWISE_KERNELS=generic / v3 / v4 / v4-on-avx2
// (the v4 source compiled for AVX2) forces one for tests (a set the CPU cannot run is never
// chosen). So a portable build (VAECPP_NATIVE=OFF, e.g. a wheel) runs the same loops as a
// native one.
//
// Each set is deterministic (its results depend only on the inputs, not on threads or alignment),
// but the sets' results differ in the last bits: v3 and v4 contract a * b + c into one rounding
// (FMA) where the generic set of a portable build rounds twice, and the Bernoulli sum adds as many
// lanes as the set's registers hold.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "core/cpu_isa.hpp"
#include "kernels/activation_formulas.hpp"
#include "kernels/optimizer_rules.hpp"

// The small vector functions of a set are inlined into its loops (a call per register would cost
// more than the work, and must not leave the set's instruction set).
#if defined(__GNUC__)
#define VAECPP_EW_INLINE inline __attribute__((always_inline))
#else
#define VAECPP_EW_INLINE inline
#endif

namespace vaecpp {

struct EwGeneric {
#if defined(__AVX512F__)
    static constexpr int kVecBytes = 64;
#elif defined(__AVX__)
    static constexpr int kVecBytes = 32;
#else
    static constexpr int kVecBytes = 16;
#endif
#include "kernels/elementwise_kernels.hpp"
};

}  // namespace vaecpp

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VAECPP_ELEMENTWISE_DISPATCH 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace vaecpp {
struct EwV3 {
    static constexpr int kVecBytes = 32;
#include "kernels/elementwise_kernels.hpp"
};
}  // namespace vaecpp
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
namespace vaecpp {
struct EwV4 {
    static constexpr int kVecBytes = 64;
#include "kernels/elementwise_kernels.hpp"
};
}  // namespace vaecpp
#pragma GCC pop_options
// The v4 set's source (64-byte vectors) compiled for AVX2, each vector two AVX2 registers: for
// tests only (VAECPP_ELEMENTWISE_KERNELS=v4-on-avx2), the v4 loops' logic on a CPU without
// AVX-512; never picked by itself.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace vaecpp {
struct EwV4OnAvx2 {
    static constexpr int kVecBytes = 64;
#include "kernels/elementwise_kernels.hpp"
};
}  // namespace vaecpp
#pragma GCC pop_options
#endif

namespace vaecpp {

enum class EwKernels { generic, v3, v4, v4_on_avx2 };

namespace ew_detail {
inline EwKernels pick_kernels() {
#if defined(VAECPP_ELEMENTWISE_DISPATCH)
    const char* e = std::getenv("VAECPP_ELEMENTWISE_KERNELS");
    const std::string want = e ? e : "auto";
    if (want == "generic") return EwKernels::generic;
    const CpuIsa isa = cpu_isa_level();
    if (want == "v4-on-avx2" && isa != CpuIsa::baseline) return EwKernels::v4_on_avx2;
    if (isa == CpuIsa::v4 && want != "v3") return EwKernels::v4;
    return isa != CpuIsa::baseline ? EwKernels::v3 : EwKernels::generic;
#else
    return EwKernels::generic;
#endif
}
}  // namespace ew_detail

inline EwKernels elementwise_kernels() {
    static const EwKernels k = ew_detail::pick_kernels();
    return k;
}

// The name build_info() and `vaecpp info` give the set in use.
inline std::string elementwise_kernels_name() {
    switch (elementwise_kernels()) {
        case EwKernels::v4: return cpu_isa_name(CpuIsa::v4);
        case EwKernels::v3: return cpu_isa_name(CpuIsa::v3);
        case EwKernels::v4_on_avx2: return kV4OnAvx2Name;
        default: break;
    }
#if defined(__AVX512F__)
    return "generic (build flags: AVX-512)";
#elif defined(__AVX2__) && defined(__FMA__)
    return "generic (build flags: AVX2+FMA)";
#elif defined(__x86_64__)
    return "generic (x86-64: SSE2)";
#else
    return "generic";
#endif
}

// Calls f(set) with a value of the struct of the set in use: decltype(set)::bias_act(...) is that
// set's loop.
template <typename F>
decltype(auto) with_elementwise(F&& f) {
    switch (elementwise_kernels()) {
#if defined(VAECPP_ELEMENTWISE_DISPATCH)
        case EwKernels::v4: return f(EwV4{});
        case EwKernels::v3: return f(EwV3{});
        case EwKernels::v4_on_avx2: return f(EwV4OnAvx2{});
#endif
        default: return f(EwGeneric{});
    }
}

}  // namespace vaecpp
