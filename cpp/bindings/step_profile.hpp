// A benchmark entry point (not used by the engine): the time of each kind of work in one training
// step of an MLP VAE, measured by running the engine's own kernels, with its thread splitting, on
// the shapes of that step. benchmarks/bench_train.py reports it as the breakdown of a step; the
// rest of the measured step (batch gathering, noise, reparameterisation, KL, the heads' sum, the
// denormal scope, Python callbacks) is what it calls "other".
//
// The engine fuses each Dense layer's bias and activation into its product's output pass; here the
// products run with a linear activation (bias add and db column sums included: they are part of
// the layer's product passes) and the activations run as separate passes over the same
// activations, so the activation share is an upper bound of the fused cost.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "kernels/dense.hpp"
#include "core/fp_mode.hpp"
#include "kernels/likelihoods_cpu.hpp"
#include "model/optimizer.hpp"
#include "core/rng.hpp"

namespace vaecpp {

// Encoder D -> hidden... (relu) -> two heads (latent, linear) and decoder latent -> reversed
// hidden (relu) -> D logits, Bernoulli likelihood, Adam; `steps` steps on random data after one
// warm-up step. Returns seconds per step of "products", "activations", "likelihood", "optimizer".
// per_layer: the optimizer as the engine runs it in training without a collective or clipping
// (CpuExecutor::backward_updating): each stack layer's weights stepped inside its backward, fused
// into its weight-gradient product (dense.hpp), the two heads' right after theirs. A fused
// backward's time is split by running 2 x `steps` steps, the stack layers' backward with the step
// fused in on odd steps and without it on even ones (their Adam pass then separate, not counted):
// "products" counts the backward without the step, "optimizer" the fused one's extra time (plus
// the heads' passes). Else: one pass over all parameters after the whole backward.
inline std::map<std::string, double> profile_mlp_step(int B, int D, const std::vector<int>& hidden,
                                                      int latent, int threads, int steps,
                                                      bool per_layer = true) {
    using T = float;
    using clock = std::chrono::steady_clock;
    if (B < 1 || D < 1 || latent < 1 || threads < 1 || steps < 1 || hidden.empty())
        throw ValueError("step_profile: B, D, latent, threads, steps >= 1 and one hidden layer at least");
    for (int h : hidden)
        if (h < 1) throw ValueError("step_profile: hidden widths must be >= 1");
    struct L {
        int C, OC;
        Act act;
        long w;  // offset of W (then b) in the flat parameters
    };
    std::vector<L> layers;
    long np = 0;
    auto add = [&](int C, int OC, Act a) {
        layers.push_back({C, OC, a, np});
        np += long(C) * OC + OC;
    };
    std::vector<int> widths{D};
    widths.insert(widths.end(), hidden.begin(), hidden.end());
    for (size_t i = 0; i + 1 < widths.size(); ++i) add(widths[i], widths[i + 1], Act::relu);
    const int H = widths.back();
    add(H, latent, Act::linear);  // z_mean
    add(H, latent, Act::linear);  // z_log_var
    std::vector<int> dec{latent};
    dec.insert(dec.end(), hidden.rbegin(), hidden.rend());
    dec.push_back(D);
    const size_t first_dec = layers.size();
    for (size_t i = 0; i + 1 < dec.size(); ++i)
        add(dec[i], dec[i + 1], i + 2 == dec.size() ? Act::linear : Act::relu);

    Philox rng{1};
    Buffer<T> params(np), grads(np), x(size_t(B) * D), nll(B);
    rng.normals(params.data(), stream_id(Purpose::init, 0), 0, np, 0.05);
    for (long i = 0; i < long(x.size()); ++i) x[i] = T(rng.uniform(stream_id(Purpose::init, 1), i));
    // acts[i]: layer i's input; outs[i]: its output; d[i]: the gradient at its output
    std::vector<Buffer<T>> outs(layers.size()), d(layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
        outs[i].resize(size_t(B) * layers[i].OC);
        d[i].resize(size_t(B) * layers[i].OC);
    }
    Buffer<T> dh(size_t(B) * H), dz(size_t(B) * latent);
    const size_t mu = first_dec - 2, lv = first_dec - 1;
    auto input_of = [&](size_t i) -> const T* {  // the heads read the encoder's output, the
        if (i == 0) return x.data();              // decoder mu (standing in for z)
        return outs[i == first_dec ? mu : i == lv ? mu - 1 : i - 1].data();
    };
    Optimizer<T> opt;
    opt.reset(np);
    const std::vector<std::pair<long, long>> ranges{{0, np}};

    use_threads(threads);
    DenormalScope fp_scope;
    // per step kind: "fused" / "unfused" (the stack layers' backward with / without the step)
    std::map<std::string, double> t{{"products", 0}, {"activations", 0}, {"likelihood", 0},
                                    {"optimizer", 0}, {"fused", 0}, {"unfused", 0}};
    auto timed = [&](const char* what, auto&& f) {
        const auto t0 = clock::now();
        f();
        t[what] += std::chrono::duration<double>(clock::now() - t0).count();
    };
    const int runs = per_layer ? 2 * steps : steps;
    for (int s = 0; s <= runs; ++s) {
        if (s == 1)
            for (auto& kv : t) kv.second = 0;  // step 0 warms up
        const bool fuse = per_layer && s % 2 == 1;
        for (size_t i = 0; i < layers.size(); ++i) {
            const L& l = layers[i];
            const T* W = params.data() + l.w;
            timed("products", [&] {
                dense_forward<T>(outs[i].data(), input_of(i), W, W + long(l.C) * l.OC, B, l.C, l.OC,
                                 Act::linear);
            });
            if (l.act != Act::linear)
                timed("activations", [&] {
                    act_forward<T>(outs[i].data(), outs[i].data(), long(B) * l.OC, l.act);
                });
        }
        timed("likelihood", [&] {
            bernoulli_nll_grad<T>(nll.data(), d.back().data(), x.data(), outs.back().data(), B, D,
                                  T(1.0 / B));
        });
        if (per_layer) opt.begin_step();
        for (size_t i = layers.size(); i-- > 0;) {
            const L& l = layers[i];
            const T* W = params.data() + l.w;
            T* g = grads.data() + l.w;
            if (l.act != Act::linear)
                timed("activations", [&] {
                    act_backward<T>(d[i].data(), d[i].data(), outs[i].data(), long(B) * l.OC, l.act);
                });
            // where the layer's input gradient goes: the layer below's output gradient; dz for
            // the decoder's first layer (then dmu := dz); dh for the heads, z_log_var's first and
            // z_mean's added to it (then the encoder's output gradient := dh)
            T* dinp = i == 0 ? nullptr
                      : i == first_dec ? dz.data()
                      : i == mu || i == lv ? dh.data()
                                           : d[i - 1].data();
            const bool head = i == mu || i == lv, fused = fuse && !head;
            const WeightStep<T> ws = opt.weight_step(params.data() + l.w, l.w);
            timed(fused ? "fused" : per_layer && !head ? "unfused" : "products", [&] {
                dense_backward<T>(dinp, g, g + long(l.C) * l.OC, d[i].data(), input_of(i),
                                  outs[i].data(), W, B, l.C, l.OC, Act::linear, i == mu, false,
                                  fused ? &ws : nullptr);
            });
            auto step_layer = [&] {
                opt.apply(params.data(), grads.data(), l.w, long(l.C) * l.OC + l.OC, ranges);
            };
            if (per_layer && head)
                timed("optimizer", step_layer);
            else if (per_layer && !fused)  // the even steps' separate pass (not counted)
                step_layer();
            if (i == first_dec) std::copy(dz.begin(), dz.end(), d[mu].begin());
            if (i == mu) std::copy(dh.begin(), dh.end(), d[mu - 1].begin());
        }
        if (!per_layer)
            timed("optimizer", [&] { opt.update(params.data(), grads.data(), np, ranges); });
    }
    for (auto& kv : t) kv.second /= runs;
    if (per_layer) {  // each kind of stack-layer backward ran on half of the steps
        const double fused = 2 * t["fused"], unfused = 2 * t["unfused"];
        t["products"] += unfused;
        t["optimizer"] += std::max(0.0, fused - unfused);
    }
    t.erase("fused");
    t.erase("unfused");
    return t;
}

}  // namespace vaecpp
