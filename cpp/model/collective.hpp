// How the ranks of a data-parallel run add up their numbers. The bindings fill it from an mpi4py
// communicator (one Allreduce through Python per training step), so the engine knows no MPI.
#pragma once

#include <functional>

namespace vaecpp {

template <typename T>
struct Collective {
    int rank = 0, size = 1;
    // buf (n,) = the sum over the ranks of every rank's buf, in place; the same call on every rank.
    std::function<void(T* buf, long n)> sum;
};

}  // namespace vaecpp
