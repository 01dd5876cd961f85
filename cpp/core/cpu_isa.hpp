// The x86-64 microarchitecture level of the CPU running the process (cpuid, once), used by the
// matrix-product and element-wise dispatchers to pick their compiled kernel set.
#pragma once

namespace vaecpp {

enum class CpuIsa { baseline, v3, v4 };  // v3: AVX2 + FMA; v4: AVX-512 F/VL/BW/DQ as well

inline CpuIsa cpu_isa_level() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const CpuIsa level = [] {
        __builtin_cpu_init();
        const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        const bool v4 = v3 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq");
        return v4 ? CpuIsa::v4 : v3 ? CpuIsa::v3 : CpuIsa::baseline;
    }();
    return level;
#else
    return CpuIsa::baseline;
#endif
}

// The name build_info() and `vaecpp info` give the v4 sets' source compiled for AVX2 (gemm.hpp,
// elementwise_dispatch.hpp: forced by tests only).
constexpr const char* kV4OnAvx2Name = "x86-64-v4 source on AVX2+FMA (tests)";

// The name build_info() and `vaecpp info` give a kernel set compiled for the level.
inline const char* cpu_isa_name(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::v4: return "x86-64-v4 (AVX-512)";
        case CpuIsa::v3: return "x86-64-v3 (AVX2+FMA)";
        default: return "x86-64 baseline";
    }
}

}  // namespace vaecpp
