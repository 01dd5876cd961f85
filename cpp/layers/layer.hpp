// The layer interface of the engine's sequential stacks, and the plain configuration record the
// Python side fills in (kind + named numbers + named strings) to build one.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/threads.hpp"
#include "core/rng.hpp"
#include "kernels/weight_step.hpp"

namespace vaecpp {

struct LayerConfig {
    std::string kind;                           // "dense", "activation", "dropout", ...
    std::map<std::string, double> num;          // e.g. units, rate, filters, kernel_size
    std::map<std::string, std::string> str;     // e.g. activation, padding, name

    double get(const std::string& k, double dflt) const {
        auto it = num.find(k);
        return it == num.end() ? dflt : it->second;
    }
    double need(const std::string& k) const {
        auto it = num.find(k);
        if (it == num.end()) throw ValueError(kind + " layer needs '" + k + "'");
        return it->second;
    }
    // An integer setting: a whole number in [lo, hi] (checked before the cast, so that 1e30 or
    // 2^40 is an error rather than a wrapped-around int).
    int get_int(const std::string& k, double dflt, long lo = 1, long hi = kMaxInt) const {
        return checked_int(k, get(k, dflt), lo, hi);
    }
    int need_int(const std::string& k, long lo = 1, long hi = kMaxInt) const {
        return checked_int(k, need(k), lo, hi);
    }
    std::string get_str(const std::string& k, const std::string& dflt) const {
        auto it = str.find(k);
        return it == str.end() ? dflt : it->second;
    }

    static constexpr long kMaxInt = 1L << 30;  // no width, kernel or count is larger

  private:
    int checked_int(const std::string& k, double v, long lo, long hi) const {
        if (!(v >= double(lo) && v <= double(hi)) || v != std::floor(v))
            throw ValueError(kind + " layer: '" + k + "' must be a whole number in [" +
                             std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                             (std::isfinite(v) ? std::to_string(v) : std::string(std::isnan(v) ? "nan" : "inf")));
        return int(v);
    }
};

// A named array of a layer: a trainable weight (kernel, bias, gamma...) or a state (moving mean).
struct ArrayInfo {
    std::string name;
    Shape shape;
    long size() const { return shape_size(shape); }
};

// What a forward/backward call may need besides tensors.
struct Ctx {
    bool training = false;
    const Philox* rng = nullptr;
    uint64_t step = 0;     // global optimisation step, for dropout masks
    int layer_index = 0;   // position in the whole model, for independent streams
    // Row 0 of this call is row `row_offset` of the batch the random draws are numbered in (a
    // rank of a data-parallel run holds rows row_offset.. of the global batch and draws their
    // dropout masks as one process would).
    long row_offset = 0;
    // backward sets the gradients instead of adding to them (a training step: whatever grads
    // held before is stale, and a layer that can write its gradient directly skips a pass).
    bool set_grads = false;
};

template <typename T>
struct Layer {
    std::string name;
    Shape in_shape, out_shape;
    T* params = nullptr;  // views into the model's flat buffers, set by bind()
    T* grads = nullptr;
    T* state = nullptr;

    virtual ~Layer() = default;
    virtual std::string kind() const = 0;
    virtual std::vector<ArrayInfo> weights() const { return {}; }  // trainable, in order
    virtual std::vector<ArrayInfo> states() const { return {}; }   // non-trainable, in order
    virtual void init(const Philox&, uint64_t /*stream*/) {}        // fill params and state
    long in_size() const { return shape_size(in_shape); }
    long out_size() const { return shape_size(out_shape); }
    long num_params() const {
        long n = 0;
        for (auto& a : weights()) n += a.size();
        return n;
    }
    long num_state() const {
        long n = 0;
        for (auto& a : states()) n += a.size();
        return n;
    }
    // inp is (B, in_size), out is (B, out_size)
    virtual void forward(T* out, const T* inp, int B, const Ctx& ctx) = 0;
    // Adds its gradients to grads (sets them when ctx.set_grads and writes_grads()); dinp is
    // (B, in_size) and may be null; dout may be overwritten.
    virtual void backward(T* dinp, T* dout, const T* inp, const T* out, int B, const Ctx& ctx) = 0;
    // Whether backward honours ctx.set_grads itself; for the other layers the stack zeroes grads
    // first.
    virtual bool writes_grads() const { return false; }
    // backward (with ctx.set_grads) and the optimizer step of this layer's weights (step.p is
    // params), the step applied inside it as soon as each part of the gradient is final; grads are
    // set as by backward. Returns false, having done nothing, where the layer cannot (the caller
    // then runs backward and steps the weights after it).
    virtual bool backward_stepping(T* /*dinp*/, T* /*dout*/, const T* /*inp*/, const T* /*out*/,
                                   int /*B*/, const Ctx& /*ctx*/, const WeightStep<T>& /*step*/) {
        return false;
    }
};

// Glorot-uniform (Keras's default kernel initialiser): U(-r, r), r = sqrt(6 / (fan_in + fan_out)).
template <typename T>
void glorot_uniform(T* w, long n, long fan_in, long fan_out, const Philox& rng, uint64_t stream) {
    const double r = std::sqrt(6.0 / double(fan_in + fan_out));
    for (long i = 0; i < n; ++i) w[i] = T((2.0 * rng.uniform(stream, i) - 1.0) * r);
}

template <typename T>
using LayerPtr = std::unique_ptr<Layer<T>>;

// Builds a layer from its configuration for a given input shape (defined in layers.hpp).
template <typename T>
LayerPtr<T> make_layer(const LayerConfig& cfg, const Shape& in_shape);

}  // namespace vaecpp
