// The VAE: encoder stack -> (z_mean, z_log_var) heads -> reparameterised z -> decoder stack ->
// likelihood. Owns the flat parameter / gradient / state buffers, the optimizer and the workspace,
// and runs whole epochs without returning to the caller between batches.
#pragma once

#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "kl.hpp"
#include "likelihoods.hpp"
#include "optimizers.hpp"
#include "stack.hpp"

namespace vaecpp {

struct VaeConfig {
    Shape input_shape;
    int latent_dim = 2;
    std::vector<LayerConfig> encoder, decoder;  // the decoder ends with the likelihood's outputs
    LikSpec lik;
    double beta = 1.0, epsilon_std = 1.0, prior_std = 1.0;
    uint64_t seed = 0;
    int threads = 1;
};

// Loss sums over the samples seen (divide by n for the per-sample means that are reported).
struct LossSums {
    double loss = 0, rec = 0, kl = 0;
    long n = 0;
};

// Thrown when a batch's loss is NaN or inf; no update was applied for that batch.
struct NonFiniteLoss : std::runtime_error {
    long batch;
    NonFiniteLoss(long b, const std::string& msg) : std::runtime_error(msg), batch(b) {}
};

// Called after each batch with (batches done, batches in the epoch, running sums); false stops.
using Progress = std::function<bool(long, long, const LossSums&)>;

template <typename T>
class Vae {
  public:
    VaeConfig cfg;
    Philox rng;
    Stack<T> enc, dec;
    std::unique_ptr<DenseLayer<T>> mu_head, lv_head;
    Buffer<T> params, grads, state;
    std::vector<std::pair<long, long>> weight_ranges;  // (offset, size) of each weight array
    Optimizer<T> opt;
    int D = 0, L = 0, P = 1;

    explicit Vae(const VaeConfig& c) : cfg(c) {
        if (c.latent_dim < 1) throw ValueError("latent_dim must be >= 1");
        if (c.threads < 1) throw ValueError("threads must be >= 1");
        rng.seed = c.seed;
        D = int(shape_size(c.input_shape));
        L = c.latent_dim;
        P = c.lik.params_per_dim();
        if (D < 1) throw ValueError("input_shape must have at least one element");
        enc.build(c.encoder, c.input_shape, "encoder");
        mu_head.reset(new DenseLayer<T>(enc.out_shape, L, Act::linear));
        lv_head.reset(new DenseLayer<T>(enc.out_shape, L, Act::linear));
        mu_head->name = "z_mean";
        lv_head->name = "z_log_var";
        dec.build(c.decoder, {L}, "decoder");
        if (dec.out_size() != long(P) * D)
            throw ValueError("the decoder's output has " + std::to_string(dec.out_size()) +
                             " values per sample but the likelihood needs " + std::to_string(P) +
                             " x " + std::to_string(D));
        enc.first_index = 0;
        dec.first_index = int(enc.layers.size()) + 2;
        bind();
        init_weights();
        opt.reset(long(params.size()));
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

    // ---- one batch ------------------------------------------------------------------------
    // Forward pass over x (B, D) with noise eps (B, L) already scaled; fills nll and kl (B,).
    void forward(const T* x, int B, bool training) {
        reserve(B);
        Ctx ctx = context(training);
        h_ = enc.forward(x, B, ctx);
        mu_head->forward(mu_.data(), h_, B, ctx);
        lv_head->forward(lv_.data(), h_, B, ctx);
        reparam_forward(z_.data(), mu_.data(), lv_.data(), eps_.data(), long(B) * L);
        p_ = dec.forward(z_.data(), B, ctx);
        lik_nll(nll_.data(), x, p_, B, D, cfg.lik);
        kl_forward(kl_.data(), mu_.data(), lv_.data(), B, L, cfg.prior_std);
    }

    // Accumulates the gradient of mean_b(nll_b + beta kl_b) into grads (zero them first).
    void backward(const T* x, int B, bool training) {
        Ctx ctx = context(training);
        const T w = T(1.0 / B);
        lik_grad(dp_.data(), x, p_, B, D, cfg.lik, w);
        dec.backward(dz_.data(), dp_.data(), z_.data(), B, ctx, ga_.data(), gb_.data());
        std::fill(dmu_.begin(), dmu_.begin() + long(B) * L, T(0));
        std::fill(dlv_.begin(), dlv_.begin() + long(B) * L, T(0));
        reparam_backward(dmu_.data(), dlv_.data(), dz_.data(), lv_.data(), eps_.data(), long(B) * L);
        kl_backward(dmu_.data(), dlv_.data(), mu_.data(), lv_.data(), long(B) * L, cfg.prior_std,
                    T(cfg.beta) * w);
        mu_head->backward(dh_.data(), dmu_.data(), h_, mu_.data(), B, ctx);
        lv_head->backward(dh2_.data(), dlv_.data(), h_, lv_.data(), B, ctx);
        const long nh = long(B) * enc.out_size();
        for (long i = 0; i < nh; ++i) dh_[i] += dh2_[i];
        enc.backward(nullptr, dh_.data(), x, B, ctx, ga_.data(), gb_.data());
    }

    LossSums batch_sums(int B) const {
        LossSums s;
        for (int b = 0; b < B; ++b) {
            s.rec += nll_[b];
            s.kl += kl_[b];
        }
        s.loss = s.rec + cfg.beta * s.kl;
        s.n = B;
        return s;
    }

    // ---- whole data sets ------------------------------------------------------------------
    // One epoch of minibatch training over X (N, D). Stops early (returning the sums so far)
    // when progress returns false; throws NonFiniteLoss before applying a bad update.
    LossSums train_epoch(const T* X, long N, int batch_size, bool shuffle, long epoch,
                         const Progress& progress) {
        use_threads(cfg.threads);
        std::vector<long> perm(N);
        std::iota(perm.begin(), perm.end(), 0L);
        if (shuffle) {  // Fisher-Yates with counter-based uniforms
            const uint64_t s = stream_id(Purpose::shuffle, uint64_t(epoch));
            for (long i = N - 1; i > 0; --i) {
                long j = long(rng.uniform(s, uint64_t(i)) * double(i + 1));
                std::swap(perm[i], perm[std::min(j, i)]);
            }
        }
        const long nb = (N + batch_size - 1) / batch_size;
        reserve(int(std::min<long>(batch_size, N)));
        LossSums tot;
        for (long k = 0; k < nb; ++k) {
            const int B = int(std::min<long>(batch_size, N - k * batch_size));
            T* xb = xbatch_.data();
#pragma omp parallel for schedule(static) if (long(B) * D >= kParallelMin)
            for (int b = 0; b < B; ++b)
                std::memcpy(xb + long(b) * D, X + perm[k * batch_size + b] * D, sizeof(T) * D);
            fill_eps(stream_id(Purpose::train_eps, uint64_t(opt.step)), 0, B, cfg.epsilon_std);
            forward(xb, B, true);
            LossSums s = batch_sums(B);
            if (!std::isfinite(s.loss))
                throw NonFiniteLoss(k, "the loss became " + std::to_string(s.loss / B) +
                                           " at batch " + std::to_string(k + 1) + " of " +
                                           std::to_string(nb));
            std::fill(grads.begin(), grads.end(), T(0));
            backward(xb, B, true);
            opt.update(params.data(), grads.data(), long(params.size()), weight_ranges);
            tot.loss += s.loss;
            tot.rec += s.rec;
            tot.kl += s.kl;
            tot.n += B;
            if (progress && !progress(k + 1, nb, tot)) break;
        }
        return tot;
    }

    // Loss sums over X (N, D) without training; sample i's noise depends only on (seed, i).
    LossSums evaluate(const T* X, long N, int batch_size) {
        use_threads(cfg.threads);
        LossSums tot;
        for (long start = 0; start < N; start += batch_size) {
            const int B = int(std::min<long>(batch_size, N - start));
            reserve(B);
            fill_eps(stream_id(Purpose::eval_eps, 0), start, B, cfg.epsilon_std);
            forward(stage(xbatch_, X + start * D, long(B) * D), B, false);
            LossSums s = batch_sums(B);
            tot.loss += s.loss;
            tot.rec += s.rec;
            tot.kl += s.kl;
            tot.n += B;
        }
        return tot;
    }

    // Loss sums and the gradient of the mean loss over all of X (N, D), dropout off, no update.
    // eps (N, L) is used as given when not null, else drawn as in evaluate().
    LossSums gradients(const T* X, long N, const T* eps, T* grad_out) {
        use_threads(cfg.threads);
        reserve(int(N));
        if (eps)
            std::copy(eps, eps + N * L, eps_.data());
        else
            fill_eps(stream_id(Purpose::eval_eps, 0), 0, int(N), cfg.epsilon_std);
        const T* x = stage(xbatch_, X, N * D);
        forward(x, int(N), false);
        std::fill(grads.begin(), grads.end(), T(0));
        backward(x, int(N), false);
        std::copy(grads.begin(), grads.end(), grad_out);
        return batch_sums(int(N));
    }

    // mu, lv are (N, L): the posterior's parameters.
    void encode(const T* X, long N, T* mu, T* lv) {
        use_threads(cfg.threads);
        Ctx ctx = context(false);
        for (long start = 0; start < N; start += kChunk) {
            const int B = int(std::min<long>(kChunk, N - start));
            reserve(B);
            const T* h = enc.forward(stage(xbatch_, X + start * D, long(B) * D), B, ctx);
            mu_head->forward(mu + start * L, h, B, ctx);
            lv_head->forward(lv + start * L, h, B, ctx);
        }
    }

    // out is (N, D): the likelihood's mean for each latent point of Z (N, L).
    void decode(const T* Z, long N, T* out) {
        use_threads(cfg.threads);
        Ctx ctx = context(false);
        for (long start = 0; start < N; start += kChunk) {
            const int B = int(std::min<long>(kChunk, N - start));
            reserve(B);
            const T* p = dec.forward(stage(z_, Z + start * L, long(B) * L), B, ctx);
            lik_mean(out + start * D, p, B, D, cfg.lik);
        }
    }

    long num_params() const { return long(params.size()); }

  private:
    static constexpr long kChunk = 1024;
    int cap_ = 0;
    const T* h_ = nullptr;  // encoder output of the last forward
    const T* p_ = nullptr;  // decoder output of the last forward
    Buffer<T> mu_, lv_, eps_, z_, nll_, kl_, dmu_, dlv_, dz_, dh_, dh2_, dp_, ga_, gb_, xbatch_;

    Ctx context(bool training) const {
        Ctx ctx;
        ctx.training = training;
        ctx.rng = &rng;
        ctx.step = uint64_t(opt.step);
        return ctx;
    }

    // Copies caller data into an aligned buffer (same alignment every run; see Buffer<T>).
    static const T* stage(Buffer<T>& buf, const T* src, long n) {
        std::copy(src, src + n, buf.data());
        return buf.data();
    }

    // eps[b, j] = std * N(0, 1) number (first + b) * L + j of the stream
    void fill_eps(uint64_t stream, long first, int B, double std_) {
        for (long i = 0; i < long(B) * L; ++i)
            eps_[i] = T(std_ * rng.normal(stream, uint64_t(first * L + i)));
    }

    void bind() {
        long np = 0, ns = 0;
        for (auto* l : all_layers()) {
            for (auto& a : l->weights()) weight_ranges.push_back({np, a.size()}), np += a.size();
            ns += l->num_state();
        }
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

    void reserve(int B) {
        if (B <= cap_) return;
        cap_ = B;
        enc.reserve(B);
        dec.reserve(B);
        const long bl = long(B) * L, h = enc.out_size();
        for (auto* v : {&mu_, &lv_, &eps_, &z_, &dmu_, &dlv_, &dz_}) v->resize(bl);
        nll_.resize(B);
        kl_.resize(B);
        dh_.resize(long(B) * h);
        dh2_.resize(long(B) * h);
        dp_.resize(long(B) * P * D);
        const long w = std::max(enc.max_width(), dec.max_width());
        ga_.resize(long(B) * w);
        gb_.resize(long(B) * w);
        xbatch_.resize(long(B) * D);
    }
};

}  // namespace vaecpp
