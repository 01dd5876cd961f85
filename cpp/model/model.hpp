// The VAE as data: encoder stack -> (z_mean, z_log_var) heads -> reparameterised z -> decoder stack
// -> likelihood. A Model owns its configuration, its layers, the flat parameter / gradient / state
// buffers on the host, the optimizer's settings and moments, and the likelihood. It runs nothing:
// the passes are a backend's (model/executor.hpp), the loop is the engine's (model/engine.hpp).
#pragma once

#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/likelihoods_cpu.hpp"
#include "model/optimizer.hpp"
#include "layers/stack.hpp"

namespace vaecpp {

struct VaeConfig {
    Shape input_shape;
    int latent_dim = 2;
    std::vector<LayerConfig> encoder, decoder;  // the decoder ends with the likelihood's outputs
    LikSpec lik;
    double beta = 1.0, epsilon_std = 1.0, prior_std = 1.0;
    uint64_t seed = 0;
    int threads = 1;
    bool iwae = false;             // train on the importance-weighted bound instead of the ELBO
    int iwae_k = 1;                // importance samples per data point for that bound
    int custom_params_per_dim = 0; // > 0: the likelihood is computed by CustomLik callbacks
};

// A likelihood supplied by the caller (e.g. Python): R rows of x (R, D) and decoder outputs
// p (R, P*D); nll writes (R,), grad writes d nll / d p (R, P*D), mean writes (R, D).
template <typename T>
struct CustomLik {
    std::function<void(const T* x, const T* p, long R, T* nll)> nll;
    std::function<void(const T* x, const T* p, long R, T* dp)> grad;
    std::function<void(const T* p, long R, T* mean)> mean;
};

// Loss sums over the samples seen (divide by n for the per-sample means that are reported).
struct LossSums {
    double loss = 0, rec = 0, kl = 0;
    long n = 0;
    void add(const LossSums& s) {
        loss += s.loss;
        rec += s.rec;
        kl += s.kl;
        n += s.n;
    }
};

// Thrown when a batch's loss is NaN or inf; no update was applied for that batch.
struct NonFiniteLoss : std::runtime_error {
    long batch;
    // batches = 0: a batch of a stream, whose length is unknown
    NonFiniteLoss(long b, long batches, double loss)
        : std::runtime_error(std::string("the loss became ") + (std::isnan(loss) ? "NaN" : "inf") +
                             " at batch " + std::to_string(b + 1) +
                             (batches > 0 ? " of " + std::to_string(batches) : std::string())),
          batch(b) {}
};

// What the training loop does after a batch: go on, stop (the epoch ends there, as Keras's
// stop_training), or stop because the caller was interrupted (Ctrl-C).
enum class Next { go_on, stop, interrupted };

// Called after each batch with (batches done, batches in the epoch, running sums).
using Progress = std::function<Next(long, long, const LossSums&)>;

// Thrown by a data-parallel epoch on every rank when any rank was interrupted; no update was
// applied for the batch in flight.
struct Interrupted : std::runtime_error {
    Interrupted() : std::runtime_error("training was interrupted on one of the ranks") {}
};

// Where the B rows of a pass sit in the batch whose mean the loss is: rows first .. first + B - 1
// of `total` (a rank's share of a global batch), or the whole batch (total 0). The random draws
// (noise, dropout masks) of a row depend on its place in that batch.
struct Rows {
    int B = 0;
    long first = 0, total = 0;
    long mean_over() const { return total > 0 ? total : B; }
};

// The order in which an epoch visits the N samples: Fisher-Yates with counter-based uniforms of
// stream shuffle|epoch (or 0..N-1 without shuffling). The CUDA backend uses it too.
inline std::vector<long> epoch_order(const Philox& rng, long N, bool shuffle, long epoch) {
    std::vector<long> perm(N);
    std::iota(perm.begin(), perm.end(), 0L);
    if (shuffle) {
        const uint64_t s = stream_id(Purpose::shuffle, uint64_t(epoch));
        for (long i = N - 1; i > 0; --i) {
            long j = long(rng.uniform(s, uint64_t(i)) * double(i + 1));
            std::swap(perm[i], perm[std::min(j, i)]);
        }
    }
    return perm;
}

template <typename T>
struct Model {
    VaeConfig cfg;
    Philox rng;
    Stack<T> enc, dec;
    std::unique_ptr<DenseLayer<T>> mu_head, lv_head;
    Buffer<T> params, grads, state;
    std::vector<std::pair<long, long>> weight_ranges;  // (offset, size) of each weight array
    Optimizer<T> opt;
    CustomLik<T> custom;  // used when cfg.custom_params_per_dim > 0
    int D = 0, L = 0, P = 1;

    explicit Model(const VaeConfig& c) : cfg(c) {
        if (c.latent_dim < 1) throw ValueError("latent_dim must be >= 1");
        check_threads(c.threads);
        rng.seed = c.seed;
        D = int(shape_size(c.input_shape));
        L = c.latent_dim;
        P = c.custom_params_per_dim > 0 ? c.custom_params_per_dim : c.lik.params_per_dim();
        if (c.iwae_k < 1) throw ValueError("the number of importance samples k must be >= 1");
        if (D < 1) throw ValueError("input_shape must have at least one element");
        enc.build(c.encoder, c.input_shape, "encoder");
        mu_head.reset(new DenseLayer<T>(enc.out_shape, L, Act::linear));
        lv_head.reset(new DenseLayer<T>(enc.out_shape, L, Act::linear));
        mu_head->name = "z_mean";
        lv_head->name = "z_log_var";
        dec.build(c.decoder, {L}, "decoder");
        if (P > 1 && interleaves_parameters(dec.out_shape)) {
            dec.append(LayerPtr<T>(new ChannelsToBlocksLayer<T>(dec.out_shape, P)));
            dec.layers.back()->name = "channels_to_blocks";
        }
        if (dec.out_size() != long(P) * D) {
            const std::string last = dec.layers.empty() ? "" : " (layer '" + dec.layers.back()->name + "')";
            throw ValueError("the decoder's output shape " + shape_str(dec.out_shape) + last + " has " +
                             std::to_string(dec.out_size()) + " values per sample but the likelihood needs " +
                             std::to_string(P) + " x " + std::to_string(D) + " for input_shape " +
                             shape_str(c.input_shape) +
                             (P > 1 && c.input_shape.size() >= 2
                                  ? ": end the decoder with " + std::to_string(P) + " x channels of the input"
                                  : ""));
        }
        enc.first_index = 0;
        dec.first_index = int(enc.layers.size()) + 2;
        bind();
        init_weights();
        opt.reset(long(params.size()));
    }
    // Layers point into the flat buffers: a model stays where it was built.
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    // A decoder ending in (H, W, P*C) for images (H, W, C) or (H, W) (C = 1) gives the P values of
    // each pixel side by side; the likelihoods want P blocks of D, so the model appends a
    // ChannelsToBlocks layer. Decoders that already end in P*D flat values or in blocks are kept.
    bool interleaves_parameters(const Shape& out) const {
        const Shape& in = cfg.input_shape;
        if (out.size() != 3 || (in.size() != 2 && in.size() != 3)) return false;
        const int C = in.size() == 3 ? in[2] : 1;
        return out[0] == in[0] && out[1] == in[1] && out[2] == P * C;
    }

    // Every layer in parameter order: encoder, z_mean, z_log_var, decoder.
    std::vector<Layer<T>*> all_layers() const {
        std::vector<Layer<T>*> v;
        for (auto& l : enc.layers) v.push_back(l.get());
        v.push_back(mu_head.get());
        v.push_back(lv_head.get());
        for (auto& l : dec.layers) v.push_back(l.get());
        return v;
    }

    void init_weights() {
        auto layers = all_layers();
        for (size_t i = 0; i < layers.size(); ++i)
            layers[i]->init(rng, stream_id(Purpose::init, i));
    }

    // Importance samples per data point in the training objective (1 for the ELBO).
    int K() const { return cfg.iwae ? cfg.iwae_k : 1; }

    long num_params() const { return long(params.size()); }

    // The likelihood, built in or supplied by the caller, over R rows; with `summed`, the sum
    // over dimensions whatever the reduction (a log-density, e.g. for log_likelihood).
    void nll_rows(T* nll, const T* x, const T* p, long R, bool summed = false) {
        if (cfg.custom_params_per_dim > 0) {
            custom.nll(x, p, R, nll);
        } else {
            LikSpec s = cfg.lik;
            if (summed) s.mean_reduction = false;
            lik_nll(nll, x, p, int(R), D, s);
        }
    }
    // nll and, when dp is not null, w * d nll / d p in one pass where the likelihood allows.
    void nll_grad_rows(T* nll, T* dp, const T* x, const T* p, long R, T w) {
        if (cfg.custom_params_per_dim > 0) {
            nll_rows(nll, x, p, R);
            if (dp) grad_rows(dp, x, p, R, w);
        } else {
            lik_nll_grad(nll, dp, x, p, int(R), D, cfg.lik, w);
        }
    }
    void grad_rows(T* dp, const T* x, const T* p, long R, T w) {
        if (cfg.custom_params_per_dim > 0) {
            custom.grad(x, p, R, dp);
            for (long i = 0; i < R * P * D; ++i) dp[i] *= w;
        } else {
            lik_grad(dp, x, p, int(R), D, cfg.lik, w);
        }
    }
    void mean_rows(T* out, const T* p, long R) {
        if (cfg.custom_params_per_dim > 0)
            custom.mean(p, R, out);
        else
            lik_mean_fast(out, p, int(R), D, cfg.lik);
    }

  private:
    // Parameters, gradients and two optimizer moments must fit in this machine's memory: a
    // configuration asking for more is an error before anything is allocated.
    void check_memory(long np) const {
        const double need = 4.0 * double(np) * sizeof(T);
        const double have = physical_memory_bytes();
        if (have > 0 && need > have)
            throw ValueError("this model has " + std::to_string(np) + " parameters: with their "
                             "gradients and optimizer moments they need " +
                             std::to_string(long(need / 1e9)) + " GB, more than this machine's " +
                             std::to_string(long(have / 1e9)) + " GB of memory");
    }

    void bind() {
        long np = 0, ns = 0;
        for (auto* l : all_layers()) {
            for (auto& a : l->weights()) weight_ranges.push_back({np, a.size()}), np += a.size();
            ns += l->num_state();
        }
        check_memory(np);
        params.assign(np, T(0));
        grads.assign(np, T(0));
        state.assign(ns, T(0));
        np = ns = 0;
        for (auto* l : all_layers()) {
            l->params = params.data() + np;
            l->grads = grads.data() + np;
            l->state = state.data() + ns;
            np += l->num_params();
            ns += l->num_state();
        }
    }
};

}  // namespace vaecpp
