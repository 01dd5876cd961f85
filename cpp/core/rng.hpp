// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11 "Parallel random numbers:
// as easy as 1, 2, 3"). Every draw is a pure function of (seed, stream, index), so results do not
// depend on the thread count, the batch size or the order in which threads run, and a GPU kernel
// can reproduce the CPU's draws exactly.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/types.hpp"  // VAECPP_HD: the CUDA kernels draw the same numbers with this code

namespace vaecpp {

// What a stream of draws is for; the tag goes into the top byte of the 64-bit stream id.
enum class Purpose : uint64_t {
    init = 1,          // weight initialisation, stream = layer index
    train_eps = 2,     // reparameterisation noise while training, stream = global step
    dropout = 3,       // dropout masks, stream = global step * 64 + layer index; element i
                       // uses word i % 4 of block i / 4 (a 32-bit uniform)
    eval_eps = 4,      // noise of evaluate()/gradients(), index = sample * latent + j
    shuffle = 5,       // epoch permutation, stream = epoch
    prior = 6,         // sample(), stream = user seed
    likelihood = 7,    // decode(sample=True)
    iwae = 8,          // importance samples
};

VAECPP_HD inline uint64_t stream_id(Purpose p, uint64_t n) {
    return (static_cast<uint64_t>(p) << 56) ^ (n & ((uint64_t(1) << 56) - 1));
}

// Four 32-bit words of one Philox block.
struct PhiloxBlock {
    uint32_t w[4];
    VAECPP_HD uint32_t operator[](int i) const { return w[i]; }
};

struct Philox {
    uint64_t seed = 0;

    VAECPP_HD static inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
        uint64_t p = static_cast<uint64_t>(a) * b;
        hi = static_cast<uint32_t>(p >> 32);
        lo = static_cast<uint32_t>(p);
    }

    // Four independent 32-bit words for (stream, index).
    VAECPP_HD PhiloxBlock operator()(uint64_t stream, uint64_t index) const {
        uint32_t c0 = uint32_t(index), c1 = uint32_t(index >> 32);
        uint32_t c2 = uint32_t(stream), c3 = uint32_t(stream >> 32);
        uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
        for (int round = 0; round < 10; ++round) {
            uint32_t hi0, lo0, hi1, lo1;
            mulhilo(0xD2511F53u, c0, hi0, lo0);
            mulhilo(0xCD9E8D57u, c2, hi1, lo1);
            c0 = hi1 ^ c1 ^ k0;
            c1 = lo1;
            c2 = hi0 ^ c3 ^ k1;
            c3 = lo0;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        return {{c0, c1, c2, c3}};
    }

    // Two 53-bit uniforms in the open interval (0, 1) from one Philox block.
    VAECPP_HD static inline double to_unit(uint32_t a, uint32_t b) {
        uint64_t u = (static_cast<uint64_t>(a) << 21) ^ (b >> 11);
        return (static_cast<double>(u) + 0.5) * 0x1.0p-53;
    }

    // A 32-bit uniform in (0, 1) from one word (dropout masks: four per Philox block).
    VAECPP_HD static inline double to_unit32(uint32_t w) {
        return (static_cast<double>(w) + 0.5) * 0x1.0p-32;
    }

    VAECPP_HD double uniform(uint64_t stream, uint64_t index) const {
        PhiloxBlock w = (*this)(stream, index);
        return to_unit(w[0], w[1]);
    }

    // Standard normal number `index` of `stream` (Box-Muller; even/odd indices share a block).
    VAECPP_HD double normal(uint64_t stream, uint64_t index) const {
        PhiloxBlock w = (*this)(stream, index >> 1);
        double u1 = to_unit(w[0], w[1]), u2 = to_unit(w[2], w[3]);
        double r = sqrt(-2.0 * log(u1));  // unqualified: the C library's on the host, CUDA's on the device
        double theta = 6.283185307179586 * u2;
        return (index & 1) ? r * sin(theta) : r * cos(theta);
    }

    // out[i] = normal(stream, first + i) for i < n, computing each Philox block (and its log and
    // sqrt) once for both numbers of a pair instead of once per number.
    template <typename T>
    void normals(T* out, uint64_t stream, uint64_t first, long n, double scale = 1.0) const {
        long i = 0;
        if (n > 0 && (first & 1)) out[i++] = T(scale * normal(stream, first));
        for (; i + 1 < n; i += 2) {
            auto w = (*this)(stream, (first + i) >> 1);
            double u1 = to_unit(w[0], w[1]), u2 = to_unit(w[2], w[3]);
            double r = std::sqrt(-2.0 * std::log(u1));
            double theta = 6.283185307179586 * u2;
            out[i] = T(scale * (r * std::cos(theta)));  // bit-identical to scale * normal(...)
            out[i + 1] = T(scale * (r * std::sin(theta)));
        }
        if (i < n) out[i] = T(scale * normal(stream, first + i));
    }
};

}  // namespace vaecpp
