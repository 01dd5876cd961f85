// The layers of the MLP stacks (Dense, Activation, Dropout, Flatten/Reshape) and ChannelsToBlocks,
// each over the kernels of its family in kernels/.
#pragma once

#include <cmath>
#include <vector>

#include "kernels/activations_cpu.hpp"
#include "kernels/channels_to_blocks.hpp"
#include "kernels/dense.hpp"
#include "layers/layer.hpp"

namespace vaecpp {

template <typename T>
struct DenseLayer : Layer<T> {
    int C, OC;
    Act act;
    DenseLayer(const Shape& in, int units, Act a) : C(int(shape_size(in))), OC(units), act(a) {
        if (units < 1) throw ValueError("Dense units must be >= 1, got " + std::to_string(units));
        this->in_shape = in;
        this->out_shape = {units};
    }
    std::string kind() const override { return "Dense"; }
    std::vector<ArrayInfo> weights() const override { return {{"kernel", {C, OC}}, {"bias", {OC}}}; }
    void init(const Philox& rng, uint64_t stream) override {
        glorot_uniform(this->params, long(C) * OC, C, OC, rng, stream);
        std::fill(this->params + long(C) * OC, this->params + long(C) * OC + OC, T(0));
    }
    void forward(T* out, const T* inp, int B, const Ctx&) override {
        dense_forward(out, inp, this->params, this->params + long(C) * OC, B, C, OC, act);
    }
    void backward(T* dinp, T* dout, const T* inp, const T* out, int B, const Ctx& ctx) override {
        dense_backward(dinp, this->grads, this->grads + long(C) * OC, dout, inp, out, this->params,
                       B, C, OC, act, false, !ctx.set_grads);
    }
    bool writes_grads() const override { return true; }
    bool backward_stepping(T* dinp, T* dout, const T* inp, const T* out, int B, const Ctx& ctx,
                           const WeightStep<T>& step) override {
        if (!ctx.set_grads) return false;
        dense_backward(dinp, this->grads, this->grads + long(C) * OC, dout, inp, out, this->params,
                       B, C, OC, act, false, false, &step);
        return true;
    }
};

template <typename T>
struct ActivationLayer : Layer<T> {
    Act act;
    ActivationLayer(const Shape& in, Act a) : act(a) { this->in_shape = this->out_shape = in; }
    std::string kind() const override { return std::string("Activation(") + act_name(act) + ")"; }
    void forward(T* out, const T* inp, int B, const Ctx&) override {
        act_forward(out, inp, B * this->in_size(), act);
    }
    void backward(T* dinp, T* dout, const T*, const T* out, int B, const Ctx&) override {
        if (dinp) act_backward(dinp, dout, out, B * this->in_size(), act);
    }
};

// Inverted dropout: out = inp * mask, mask = [u >= rate] / (1 - rate) while training, 1 otherwise.
template <typename T>
struct DropoutLayer : Layer<T> {
    double rate;
    Buffer<T> mask;  // (B, n) of the last training forward
    DropoutLayer(const Shape& in, double r) : rate(r) {
        if (!(r >= 0.0 && r < 1.0)) throw ValueError("Dropout rate must be in [0, 1)");
        this->in_shape = this->out_shape = in;
    }
    std::string kind() const override { return "Dropout"; }
    void forward(T* out, const T* inp, int B, const Ctx& ctx) override {
        const long n = B * this->in_size();
        if (!ctx.training || rate == 0.0) {
            std::copy(inp, inp + n, out);
            return;
        }
        mask.resize(n);
        const uint64_t stream = stream_id(Purpose::dropout, ctx.step * 64 + ctx.layer_index);
        const T keep = T(1.0 / (1.0 - rate));
        // Element i of the batch keeps with probability 1 - rate, by word i % 4 of Philox block
        // i / 4 as a 32-bit uniform, i counted from row ctx.row_offset's first element (0 but in a
        // data-parallel rank). Chunks of 64 blocks: the blocks in one loop, the elements in
        // another, so that both vectorise.
        constexpr long kBlocks = 64;
        const long first = ctx.row_offset * this->in_size();
        const long chunks = (n + 4 * kBlocks - 1) / (4 * kBlocks);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
        for (long c = 0; c < chunks; ++c) {
            uint32_t words[4 * (kBlocks + 1)];
            const long i0 = 4 * kBlocks * c, m = std::min(n - i0, 4 * kBlocks);
            const long g0 = first + i0, k0 = g0 / 4, k1 = (g0 + m + 3) / 4;  // blocks [k0, k1)
            for (long k = 0; k < k1 - k0; ++k) {
                const auto w = (*ctx.rng)(stream, uint64_t(k0 + k));
                for (int j = 0; j < 4; ++j) words[4 * k + j] = w[j];
            }
            const uint32_t* wd = words + (g0 - 4 * k0);
            for (long j = 0; j < m; ++j) {
                mask[i0 + j] = Philox::to_unit32(wd[j]) >= rate ? keep : T(0);
                out[i0 + j] = inp[i0 + j] * mask[i0 + j];
            }
        }
    }
    // dinp = dout * mask
    void backward(T* dinp, T* dout, const T*, const T*, int B, const Ctx& ctx) override {
        if (!dinp) return;
        const long n = B * this->in_size();
        if (!ctx.training || rate == 0.0) {
            std::copy(dout, dout + n, dinp);
            return;
        }
        for (long i = 0; i < n; ++i) dinp[i] = dout[i] * mask[i];
    }
};

// Flatten and Reshape only relabel the per-sample shape; the data is already contiguous.
template <typename T>
struct ReshapeLayer : Layer<T> {
    ReshapeLayer(const Shape& in, const Shape& out) {
        if (shape_size(in) != shape_size(out))
            throw ValueError("cannot reshape " + shape_str(in) + " to " + shape_str(out));
        this->in_shape = in;
        this->out_shape = out;
    }
    std::string kind() const override {
        return this->out_shape.size() == 1 ? "Flatten" : "Reshape";
    }
    void forward(T* out, const T* inp, int B, const Ctx&) override {
        std::copy(inp, inp + B * this->in_size(), out);
    }
    void backward(T* dinp, T* dout, const T*, const T*, int B, const Ctx&) override {
        if (dinp) std::copy(dout, dout + B * this->in_size(), dinp);
    }
};

// (..., P*C) -> (P, ..., C); "groups" = P.
template <typename T>
struct ChannelsToBlocksLayer : Layer<T> {
    int P, C;
    long HW;
    ChannelsToBlocksLayer(const Shape& in, int groups) : P(groups) {
        if (in.size() < 2)
            throw ValueError("ChannelsToBlocks needs an input with a channel axis, got " + shape_str(in));
        if (groups < 1 || in.back() % groups != 0)
            throw ValueError("ChannelsToBlocks: " + std::to_string(in.back()) +
                             " channels do not split into " + std::to_string(groups) + " groups");
        C = in.back() / groups;
        HW = shape_size(in) / in.back();
        this->in_shape = in;
        this->out_shape = in;
        this->out_shape.back() = C;
        this->out_shape.insert(this->out_shape.begin(), P);
    }
    std::string kind() const override { return "ChannelsToBlocks"; }
    void forward(T* out, const T* inp, int B, const Ctx&) override {
        channels_to_blocks_forward(out, inp, B, HW, P, C);
    }
    void backward(T* dinp, T* dout, const T*, const T*, int B, const Ctx&) override {
        if (dinp) channels_to_blocks_backward(dinp, dout, B, HW, P, C);
    }
};

}  // namespace vaecpp
