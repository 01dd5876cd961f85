// The convolutional layers (Conv2D, Conv2DTranspose, MaxPool2D) over the kernels of
// kernels/conv.hpp, and the helpers that read their window from a layer configuration.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "kernels/conv.hpp"
#include "layers/layer.hpp"

namespace vaecpp {

// Reads "<key>" and "<key>_w" (height and width; the width defaults to the height).
inline std::array<int, 2> config_hw(const LayerConfig& cfg, const std::string& key, double dflt) {
    const int h = cfg.get_int(key, dflt);
    return {h, cfg.get_int(key + "_w", h)};
}

inline bool config_same(const LayerConfig& cfg, const std::string& layer) {
    const std::string p = cfg.get_str("padding", "valid");
    if (p != "valid" && p != "same")
        throw ValueError(layer + " padding must be 'valid' or 'same', got '" + p + "'");
    return p == "same";
}

inline Window conv_window(const LayerConfig& cfg, const std::string& layer) {
    Window w;
    w.k = config_hw(cfg, "kernel_size", cfg.need("kernel_size"));
    w.s = config_hw(cfg, "strides", 1);
    w.same = config_same(cfg, layer);
    return w;
}

// Conv2D and Conv2DTranspose: a geometry g, a (KH,KW,g.C,F) kernel and a bias of `filters`, where
// F is the channel count on the grid side. For tests, cfg "naive" = 1 selects the direct loops and
// "chunk_rows" sets the rows per GEMM of the fast ones (1: one sample per chunk).
template <typename T>
struct ConvLayerBase : Layer<T> {
    ConvGeom g;
    int F = 0, filters = 0;
    Act act = Act::linear;
    bool naive = false;
    long chunk_rows = kChunkRows;
    ThreadScratch<T> col, dk;  // im2col and kernel-gradient scratch of the fast products

    ConvLayerBase(const LayerConfig& cfg, const std::string& layer) {
        filters = cfg.need_int("filters");
        if (filters < 1) throw ValueError(layer + " filters must be >= 1, got " + std::to_string(filters));
        act = act_from_name(cfg.get_str("activation", "linear"));
        naive = cfg.get("naive", 0) != 0;
        chunk_rows = cfg.get_int("chunk_rows", double(kChunkRows));
    }
    long kernel_size() const { return g.taps() * F; }
    const T* kernel() const { return this->params; }
    const T* bias() const { return this->params + kernel_size(); }
    T* dbias() { return this->grads + kernel_size(); }
    std::vector<ArrayInfo> weights() const override {
        return {{"kernel", {g.KH, g.KW, g.C, F}}, {"bias", {filters}}};
    }
    // Keras's fans for a conv kernel: receptive field x input / output channels.
    void init(const Philox& rng, uint64_t stream) override {
        const long field = long(g.KH) * g.KW;
        glorot_uniform(this->params, kernel_size(), field * g.C, field * F, rng, stream);
        std::fill_n(this->params + kernel_size(), filters, T(0));
    }
    // The three products with this layer's kernel, naive or fast.
    void conv(T* grid, const T* image, int B) {
        if (naive)
            conv2d_forward_naive(grid, image, kernel(), B, g, F);
        else
            conv2d_forward(grid, image, kernel(), B, g, F, col, chunk_rows);
    }
    void conv_input_grad(T* image, const T* grid, int B) {
        if (naive)
            conv2d_backward_input_naive(image, grid, kernel(), B, g, F);
        else
            conv2d_backward_input(image, grid, kernel(), B, g, F, col, chunk_rows);
    }
    void conv_kernel_grad(const T* image, const T* grid, int B) {
        if (naive)
            conv2d_backward_kernel_naive(this->grads, image, grid, B, g, F);
        else
            conv2d_backward_kernel(this->grads, image, grid, B, g, F, col, dk, chunk_rows);
    }
};

// y = f(conv(x) + bias): the input is the image side, the output the grid side.
// Backward: da = dout f'(a), dbias += sum da, dK += backward_kernel(x, da), dx = backward_input(da).
template <typename T>
struct Conv2DLayer : ConvLayerBase<T> {
    Conv2DLayer(const Shape& in, const LayerConfig& cfg) : ConvLayerBase<T>(cfg, "Conv2D") {
        this->g = window_geom(in, conv_window(cfg, "Conv2D"), "Conv2D");
        this->F = this->filters;
        this->in_shape = in;
        this->out_shape = {this->g.OH, this->g.OW, this->filters};
    }
    std::string kind() const override { return "Conv2D"; }
    void forward(T* out, const T* inp, int B, const Ctx&) override {
        this->conv(out, inp, B);
        add_bias_act(out, this->bias(), B * this->g.grid(), this->F, this->act);
    }
    void backward(T* dinp, T* dout, const T* inp, const T* out, int B, const Ctx&) override {
        act_bias_backward(this->dbias(), dout, out, B * this->g.grid(), this->F, this->act);
        this->conv_kernel_grad(inp, dout, B);
        if (dinp) this->conv_input_grad(dinp, dout, B);
    }
};

// y = f(backward_input(x) + bias): the input is the grid side, the output the image side.
// Backward: da = dout f'(a), dbias += sum da, dK += backward_kernel(da, x), dx = conv(da).
template <typename T>
struct Conv2DTransposeLayer : ConvLayerBase<T> {
    Conv2DTransposeLayer(const Shape& in, const LayerConfig& cfg)
        : ConvLayerBase<T>(cfg, "Conv2DTranspose") {
        this->g = transpose_geom(in, this->filters, conv_window(cfg, "Conv2DTranspose"), "Conv2DTranspose");
        this->F = in[2];
        this->in_shape = in;
        this->out_shape = {this->g.H, this->g.W, this->filters};
    }
    std::string kind() const override { return "Conv2DTranspose"; }
    void forward(T* out, const T* inp, int B, const Ctx&) override {
        this->conv_input_grad(out, inp, B);
        add_bias_act(out, this->bias(), B * long(this->g.H) * this->g.W, this->g.C, this->act);
    }
    void backward(T* dinp, T* dout, const T* inp, const T* out, int B, const Ctx&) override {
        act_bias_backward(this->dbias(), dout, out, B * long(this->g.H) * this->g.W, this->g.C, this->act);
        if (!this->naive && dinp) {  // both products read im2col(dout): one pass
            conv2d_backward_kernel(this->grads, dout, inp, B, this->g, this->F, this->col, this->dk,
                                   this->chunk_rows, dinp, this->kernel());
            return;
        }
        this->conv_kernel_grad(dout, inp, B);
        if (dinp) this->conv(dinp, dout, B);
    }
};

template <typename T>
struct MaxPool2DLayer : Layer<T> {
    ConvGeom g;
    std::vector<int> arg;  // (B, OH, OW, C) of the last forward, grown with B
    MaxPool2DLayer(const Shape& in, const LayerConfig& cfg) {
        Window w;
        w.k = config_hw(cfg, "pool_size", 2);
        w.s = cfg.num.count("strides") ? config_hw(cfg, "strides", 1) : w.k;
        w.same = config_same(cfg, "MaxPool2D");
        g = window_geom(in, w, "MaxPool2D", "pool");
        this->in_shape = in;
        this->out_shape = {g.OH, g.OW, g.C};
    }
    std::string kind() const override { return "MaxPool2D"; }
    void forward(T* out, const T* inp, int B, const Ctx&) override {
        if (arg.size() < size_t(B * this->out_size())) arg.resize(B * this->out_size());
        maxpool2d_forward(out, arg.data(), inp, B, g);
    }
    void backward(T* dinp, T* dout, const T*, const T*, int B, const Ctx&) override {
        if (dinp) maxpool2d_backward(dinp, dout, arg.data(), B, g);
    }
};

}  // namespace vaecpp
