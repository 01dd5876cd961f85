// BatchNormalization as a layer: parameters gamma and beta, state the moving statistics, over the
// kernels of kernels/batchnorm.hpp.
#pragma once

#include <string>
#include <vector>

#include "kernels/batchnorm.hpp"
#include "layers/layer.hpp"

namespace vaecpp {

template <typename T>
struct BatchNormLayer : Layer<T> {
    int C;
    double momentum, eps;
    std::vector<double> mean, rstd;  // (C,) of the last forward: what backward needs
    std::vector<double> part, sums;  // reduction scratch

    BatchNormLayer(const Shape& in, double momentum_, double eps_)
        : momentum(momentum_), eps(eps_) {
        if (in.empty() || shape_size(in) < 1)
            throw ValueError("BatchNorm needs a non-empty input, got " + shape_str(in));
        if (!(momentum >= 0.0 && momentum <= 1.0))
            throw ValueError("BatchNorm momentum must be in [0, 1], got " + std::to_string(momentum));
        if (!(eps > 0.0)) throw ValueError("BatchNorm epsilon must be > 0, got " + std::to_string(eps));
        C = in.back();
        mean.assign(C, 0.0);
        rstd.assign(C, 1.0);
        this->in_shape = this->out_shape = in;
    }
    std::string kind() const override { return "BatchNorm"; }
    std::vector<ArrayInfo> weights() const override { return {{"gamma", {C}}, {"beta", {C}}}; }
    std::vector<ArrayInfo> states() const override {
        return {{"moving_mean", {C}}, {"moving_variance", {C}}};
    }
    void init(const Philox&, uint64_t) override {
        std::fill_n(this->params, C, T(1));
        std::fill_n(this->params + C, C, T(0));
        std::fill_n(this->state, C, T(0));
        std::fill_n(this->state + C, C, T(1));
    }
    void forward(T* out, const T* inp, int B, const Ctx& ctx) override {
        const long N = B * (this->in_size() / C);
        T* moving_mean = this->state;
        T* moving_var = this->state + C;
        if (ctx.training) {
            batchnorm_batch_stats(mean.data(), rstd.data(), moving_mean, moving_var, inp, N, C,
                                  momentum, eps, part);
        } else {
            for (int c = 0; c < C; ++c) {
                mean[c] = double(moving_mean[c]);
                rstd[c] = 1.0 / std::sqrt(double(moving_var[c]) + eps);
            }
        }
        batchnorm_forward(out, inp, mean.data(), rstd.data(), this->params, this->params + C, N, C);
    }
    void backward(T* dinp, T* dout, const T* inp, const T*, int B, const Ctx& ctx) override {
        const long N = B * (this->in_size() / C);
        batchnorm_backward(dinp, this->grads, this->grads + C, dout, inp, mean.data(), rstd.data(),
                           this->params, N, C, ctx.training, part, sums);
    }
};

}  // namespace vaecpp
