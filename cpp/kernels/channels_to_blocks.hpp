// ChannelsToBlocks's permutation and its inverse (the layer is in layers/basic_layers.hpp).
#pragma once

#include <algorithm>

#include "core/types.hpp"

namespace vaecpp {

// Channel groups to blocks: a decoder's last convolution emits the P parameters of each pixel
// as P groups of C channels, (H,W,P*C) with channel p*C + c; the likelihoods read P blocks of
// D = H*W*C values, (P,H,W,C). Forward and backward are the permutation and its inverse.

// Calls f(interleaved, blocked) with the offsets of each run of C values in the (B,HW,P,C) and
// (B,P,HW,C) layouts.
template <typename F>
void for_each_group(int B, long HW, int P, int C, F f) {
#pragma omp parallel for schedule(static) if (long(B) * HW * P * C >= kParallelMin)
    for (int b = 0; b < B; ++b)
        for (long i = 0; i < HW; ++i)
            for (int p = 0; p < P; ++p)
                f(((long(b) * HW + i) * P + p) * C, ((long(b) * P + p) * HW + i) * C);
}

// inp is (B,HW,P,C), out is (B,P,HW,C)
template <typename T>
void channels_to_blocks_forward(T* out, const T* inp, int B, long HW, int P, int C) {
    for_each_group(B, HW, P, C, [&](long in, long bl) { std::copy_n(inp + in, C, out + bl); });
}

// The adjoint of a permutation is its inverse: dinp[b,i,p,c] = dout[b,p,i,c].
// dout is (B,P,HW,C), dinp is (B,HW,P,C)
template <typename T>
void channels_to_blocks_backward(T* dinp, const T* dout, int B, long HW, int P, int C) {
    for_each_group(B, HW, P, C, [&](long in, long bl) { std::copy_n(dout + bl, C, dinp + in); });
}

}  // namespace vaecpp
