// A sequential stack of layers with one output buffer per layer (kept for the backward pass).
#pragma once

#include <vector>

#include "layers/make_layer.hpp"

namespace vaecpp {

// The default of Stack::backward's `hook`: no optimizer step inside backward, nothing to do when a
// layer's gradient is complete.
template <typename T>
struct NoHook {
    const WeightStep<T>* step_for(const Layer<T>&) const { return nullptr; }
    void operator()(const Layer<T>&, bool /*stepped*/) const {}
};

template <typename T>
struct Stack {
    std::vector<LayerPtr<T>> layers;
    std::vector<Buffer<T>> outs;  // (cap, out_size) per layer
    Shape in_shape, out_shape;
    int first_index = 0;               // index of layers[0] in the whole model (for RNG streams)

    void build(const std::vector<LayerConfig>& cfgs, const Shape& in, const std::string& where) {
        in_shape = out_shape = in;
        for (size_t i = 0; i < cfgs.size(); ++i) {
            try {
                layers.push_back(make_layer<T>(cfgs[i], out_shape));
            } catch (const ValueError& e) {
                throw ValueError(where + " layer " + std::to_string(i) + " '" +
                                 cfgs[i].get_str("name", cfgs[i].kind) + "' (" + cfgs[i].kind +
                                 ") with input shape " + shape_str(out_shape) + ": " + e.what());
            }
            out_shape = layers.back()->out_shape;
        }
        outs.resize(layers.size());
    }
    // Adds a layer the model chose (not the caller's configuration) at the end.
    void append(LayerPtr<T> layer) {
        out_shape = layer->out_shape;
        layers.push_back(std::move(layer));
        outs.resize(layers.size());
    }
    long in_size() const { return shape_size(in_shape); }
    long out_size() const { return shape_size(out_shape); }
    long max_width() const {
        long m = in_size();
        for (auto& l : layers) m = std::max(m, l->out_size());
        return m;
    }
    long row_floats() const {  // the outputs' values per sample: what reserve(cap) keeps, per row
        long n = 0;
        for (auto& l : layers) n += l->out_size();
        return n;
    }
    void reserve(int cap) {
        for (size_t i = 0; i < layers.size(); ++i) outs[i].resize(long(cap) * layers[i]->out_size());
    }

    // x is (B, in_size); returns the (B, out_size) output (x itself for an empty stack).
    const T* forward(const T* x, int B, Ctx ctx) {
        const T* h = x;
        for (size_t i = 0; i < layers.size(); ++i) {
            ctx.layer_index = first_index + int(i);
            layers[i]->forward(outs[i].data(), h, B, ctx);
            h = outs[i].data();
        }
        return h;
    }

    // dout is (B, out_size) and is overwritten; dx (B, in_size) may be null. ga/gb are scratch
    // buffers of (B, max_width). For an empty stack dx = dout. hook.step_for(layer) is the
    // optimizer step the layer may apply inside its backward (Layer::backward_stepping) or null;
    // hook(layer, stepped) is called as soon as a layer's gradient is complete (its weights are
    // not read again by this backward), stepped telling whether the layer applied that step.
    template <typename Hook = NoHook<T>>
    void backward(T* dx, T* dout, const T* x, int B, Ctx ctx, T* ga, T* gb, Hook&& hook = Hook{}) {
        if (layers.empty()) {
            if (dx) std::copy(dout, dout + long(B) * out_size(), dx);
            return;
        }
        T* g = dout;
        for (size_t i = layers.size(); i-- > 0;) {
            ctx.layer_index = first_index + int(i);
            const T* inp = i == 0 ? x : outs[i - 1].data();
            T* dinp = i == 0 ? dx : (g == ga ? gb : ga);
            Layer<T>& l = *layers[i];
            if (ctx.set_grads && !l.writes_grads()) std::fill(l.grads, l.grads + l.num_params(), T(0));
            const WeightStep<T>* step = hook.step_for(l);
            const bool stepped = step && l.backward_stepping(dinp, g, inp, outs[i].data(), B, ctx, *step);
            if (!stepped) l.backward(dinp, g, inp, outs[i].data(), B, ctx);
            hook(l, stepped);
            g = dinp;
        }
    }
};

}  // namespace vaecpp
