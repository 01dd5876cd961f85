// Test hooks for fp_mode.hpp (exported by vaecpp._testing; not for users): read the
// floating-point mode register of each thread of an OpenMP team.
#pragma once

#include <cstdint>
#include <vector>

#include "core/fp_mode.hpp"

namespace vaecpp {

// The mode register (x86-64: MXCSR) of each thread of a region opened from the calling thread,
// by team number. scoped: read inside a DenormalScope opened for a team of `threads`. grow > 0:
// inside that scope the thread count is then raised to threads + grow (as a nested engine call
// from a callback may do) and the region read has that many threads, the extra ones started by a
// flushing thread. The thread count is left at the last one set.
inline std::vector<uint64_t> team_fp_bits(int threads, bool scoped, int grow) {
    if (threads < 1 || grow < 0) throw ValueError("threads must be >= 1 and grow >= 0");
    use_threads(threads);
    DenormalScope scope(scoped && flush_denormal());
    const int n = threads + grow;
    use_threads(n);
    std::vector<uint64_t> out(n, 0);
#ifdef _OPENMP
#pragma omp parallel num_threads(n)
    out[omp_get_thread_num()] = fp_mode::get();
#else
    out[0] = fp_mode::get();
#endif
    return out;
}

}  // namespace vaecpp
