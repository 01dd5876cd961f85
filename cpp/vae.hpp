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

#include "fp_mode.hpp"
#include "iwae.hpp"
#include "kl.hpp"
#include "likelihood_kernels.hpp"
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

// Called after each batch with (batches done, batches in the epoch, running sums); false stops.
using Progress = std::function<bool(long, long, const LossSums&)>;

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
class Vae {
  public:
    using value_type = T;
    VaeConfig cfg;
    Philox rng;
    Stack<T> enc, dec;
    std::unique_ptr<DenseLayer<T>> mu_head, lv_head;
    Buffer<T> params, grads, state;
    std::vector<std::pair<long, long>> weight_ranges;  // (offset, size) of each weight array
    Optimizer<T> opt;
    CustomLik<T> custom;  // used when cfg.custom_params_per_dim > 0
    int D = 0, L = 0, P = 1;

    explicit Vae(const VaeConfig& c) : cfg(c) {
        if (c.latent_dim < 1) throw ValueError("latent_dim must be >= 1");
        if (c.threads < 1) throw ValueError("threads must be >= 1");
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

    // ---- one batch ------------------------------------------------------------------------
    // Importance samples per data point in the training objective (1 for the ELBO).
    int K() const { return cfg.iwae ? cfg.iwae_k : 1; }

    // Forward pass over x (B, D) with the noise eps_ (B*K, L) already drawn; fills nll (B*K,) and
    // kl (B,), and for the IWAE objective the bound (B,) and normalised weights (B*K,). With
    // want_grad the likelihood's gradient for backward() comes out of the same pass.
    void forward(const T* x, int B, bool training, bool want_grad = false) {
        const int K = this->K();
        const long R = long(B) * K;
        Ctx ctx = context(training);
        h_ = enc.forward(x, B, ctx);
        heads_forward(mu_.data(), lv_.data(), h_, B, ctx);
        for (long r = 0; r < R; ++r)  // z_r = mu_b + exp(lv_b / 2) eps_r,  r = b*K + k
            reparam_forward(z_.data() + r * L, mu_.data() + (r / K) * L, lv_.data() + (r / K) * L,
                            eps_.data() + r * L, L);
        p_ = dec.forward(z_.data(), int(R), ctx);
        xr_ = K == 1 ? x : replicate(x, B, K);
        nll_grad_rows(nll_.data(), want_grad ? dp_.data() : nullptr, xr_, p_, R, T(1.0 / B));
        dp_ready_ = want_grad;
        kl_forward(kl_.data(), mu_.data(), lv_.data(), B, L, cfg.prior_std);
        if (cfg.iwae) {
            iwae_neg_log_weights(c_.data(), nll_.data(), z_.data(), eps_.data(), lv_.data(), B, K,
                                 L, cfg.prior_std);
            iwae_bound(bound_.data(), wn_.data(), c_.data(), B, K);
        }
    }

    // Sets grads to the gradient of the mean loss (every layer's backward runs once, setting its
    // part). ELBO: the loss is mean_b(nll_b + beta kl_b); IWAE: mean_b(-bound_b).
    void backward(const T* x, int B, bool training) {
        const int K = this->K();
        const long R = long(B) * K;
        Ctx ctx = context(training);
        ctx.set_grads = true;
        const T w = T(1.0 / B);
        if (!dp_ready_) grad_rows(dp_.data(), xr_, p_, R, w);
        dp_ready_ = false;
        if (cfg.iwae)  // row r's gradient is weighted by its normalised importance weight
            for (long r = 0; r < R; ++r)
                for (long i = 0; i < long(P) * D; ++i) dp_[r * P * D + i] *= T(wn_[r]);
        dec.backward(dz_.data(), dp_.data(), z_.data(), int(R), ctx, ga_.data(), gb_.data());
        if (cfg.iwae) {
            iwae_latent_backward(dmu_.data(), dlv_.data(), dz_.data(), z_.data(), eps_.data(),
                                 lv_.data(), wn_.data(), B, K, L, cfg.prior_std);
        } else {
            std::fill(dmu_.begin(), dmu_.begin() + long(B) * L, T(0));
            std::fill(dlv_.begin(), dlv_.begin() + long(B) * L, T(0));
            reparam_backward(dmu_.data(), dlv_.data(), dz_.data(), lv_.data(), eps_.data(),
                             long(B) * L);
            kl_backward(dmu_.data(), dlv_.data(), mu_.data(), lv_.data(), long(B) * L,
                        cfg.prior_std, T(cfg.beta) * w);
        }
        heads_backward(B);
        enc.backward(nullptr, dh_.data(), x, B, ctx, ga_.data(), gb_.data());
    }

    LossSums batch_sums(int B) const {
        const int K = this->K();
        LossSums s;
        for (int b = 0; b < B; ++b) {
            for (int k = 0; k < K; ++k) s.rec += nll_[long(b) * K + k] / double(K);
            s.kl += kl_[b];
            if (cfg.iwae) s.loss -= bound_[b];
        }
        if (!cfg.iwae) s.loss = s.rec + cfg.beta * s.kl;
        s.n = B;
        return s;
    }

    // The likelihood, built in or supplied by the caller, over R rows.
    void nll_rows(T* nll, const T* x, const T* p, long R) {
        if (cfg.custom_params_per_dim > 0)
            custom.nll(x, p, R, nll);
        else
            lik_nll(nll, x, p, int(R), D, cfg.lik);
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

    // ---- whole data sets ------------------------------------------------------------------
    // One epoch of minibatch training over X (N, D). Stops early (returning the sums so far)
    // when progress returns false; throws NonFiniteLoss before applying a bad update.
    LossSums train_epoch(const T* X, long N, int batch_size, bool shuffle, long epoch,
                         const Progress& progress) {
        use_threads(cfg.threads);
        DenormalScope fp_scope;  // flush denormals in every thread of this call (fp_mode.hpp)
        const std::vector<long> perm = epoch_order(rng, N, shuffle, epoch);
        const long nb = (N + batch_size - 1) / batch_size;
        reserve(int(std::min<long>(batch_size, N)), K());
        LossSums tot;
        for (long k = 0; k < nb; ++k) {
            const int B = int(std::min<long>(batch_size, N - k * batch_size));
            T* xb = xbatch_.data();
#pragma omp parallel for schedule(static) if (long(B) * D >= kParallelMin)
            for (int b = 0; b < B; ++b)
                std::memcpy(xb + long(b) * D, X + perm[k * batch_size + b] * D, sizeof(T) * D);
            LossSums s = step(xb, B, k, nb);
            tot.add(s);
            // The callback may run inference on this model (encode, decode, save): every buffer
            // the next step reads is refilled by its forward pass.
            if (progress && !progress(k + 1, nb, tot)) break;
        }
        return tot;
    }

    // One optimizer step on a batch X (B, D) given by the caller (streamed data); `batch` only
    // names the batch in a NonFiniteLoss message.
    LossSums train_batch(const T* X, int B, long batch) {
        use_threads(cfg.threads);
        DenormalScope fp_scope;  // flush denormals in every thread of this call (fp_mode.hpp)
        reserve(B, K());
        return step(stage(xbatch_, X, long(B) * D), B, batch, 0);
    }

    // Loss sums over X (N, D) without training; sample i's noise depends only on (seed, i), where
    // X's rows are samples first, first + 1, ... of the data (first > 0 for streamed batches).
    LossSums evaluate(const T* X, long N, int batch_size, long first = 0) {
        use_threads(cfg.threads);
        DenormalScope fp_scope;  // flush denormals in every thread of this call (fp_mode.hpp)
        LossSums tot;
        for (long start = 0; start < N; start += batch_size) {
            const int B = int(std::min<long>(batch_size, N - start));
            reserve(B, K());
            fill_eps(stream_id(Purpose::eval_eps, 0), (first + start) * K(), long(B) * K(),
                     cfg.epsilon_std);
            forward(stage(xbatch_, X + start * D, long(B) * D), B, false);
            LossSums s = batch_sums(B);
            tot.add(s);
        }
        return tot;
    }

    // Loss sums and the gradient of the mean loss over all of X (N, D), dropout off, no update.
    // eps (N*K, L) is used as given when not null, else drawn as in evaluate().
    LossSums gradients(const T* X, long N, const T* eps, T* grad_out) {
        use_threads(cfg.threads);
        DenormalScope fp_scope;  // flush denormals in every thread of this call (fp_mode.hpp)
        reserve(int(N), K());
        if (eps)
            std::copy(eps, eps + N * K() * L, eps_.data());
        else
            fill_eps(stream_id(Purpose::eval_eps, 0), 0, N * K(), cfg.epsilon_std);
        const T* x = stage(xbatch_, X, N * D);
        forward(x, int(N), false, true);
        backward(x, int(N), false);
        std::copy(grads.begin(), grads.end(), grad_out);
        return batch_sums(int(N));
    }

    // mu, lv are (N, L): the posterior's parameters.
    void encode(const T* X, long N, T* mu, T* lv) {
        use_threads(cfg.threads);
        DenormalScope fp_scope;  // flush denormals in every thread of this call (fp_mode.hpp)
        Ctx ctx = context(false);
        for (long start = 0; start < N; start += kChunk) {
            const int B = int(std::min<long>(kChunk, N - start));
            reserve(B, 1);
            const T* h = enc.forward(stage(xbatch_, X + start * D, long(B) * D), B, ctx);
            heads_forward(mu + start * L, lv + start * L, h, B, ctx);
        }
    }

    // out is (N, D): the likelihood's mean for each latent point of Z (N, L); with raw = true,
    // out is (N, P*D): the decoder's outputs (the likelihood's parameters) themselves.
    void decode(const T* Z, long N, T* out, bool raw = false) {
        use_threads(cfg.threads);
        DenormalScope fp_scope;  // flush denormals in every thread of this call (fp_mode.hpp)
        Ctx ctx = context(false);
        const long width = raw ? long(P) * D : D;
        for (long start = 0; start < N; start += kChunk) {
            const int B = int(std::min<long>(kChunk, N - start));
            reserve(B, 1);
            const T* p = dec.forward(stage(z_, Z + start * L, long(B) * L), B, ctx);
            if (raw)
                std::copy(p, p + long(B) * P * D, out + start * width);
            else
                mean_rows(out + start * D, p, B);
        }
    }

    // out (N,): the importance-sampled estimate of log p(x) with k draws per sample (the IWAE
    // bound), accumulated with a running log-sum-exp in double precision.
    void log_likelihood(const T* X, long N, long k, T* out) {
        use_threads(cfg.threads);
        DenormalScope fp_scope;  // flush denormals in every thread of this call (fp_mode.hpp)
        Ctx ctx = context(false);
        const long kc = std::min<long>(k, kChunk * 4);     // draws per decoder pass
        const int bs = int(std::max<long>(1, kChunk * 4 / kc));  // samples per pass
        const uint64_t stream = stream_id(Purpose::iwae, 0);
        std::vector<double> c, m, s;
        for (long start = 0; start < N; start += bs) {
            const int B = int(std::min<long>(bs, N - start));
            reserve(B, int(kc));
            const T* x = stage(xbatch_, X + start * D, long(B) * D);
            const T* h = enc.forward(x, B, ctx);
            heads_forward(mu_.data(), lv_.data(), h, B, ctx);
            m.assign(B, -INFINITY);
            s.assign(B, 0.0);
            for (long k0 = 0; k0 < k; k0 += kc) {
                const int K = int(std::min<long>(kc, k - k0));
                const long R = long(B) * K;
                for (long r = 0; r < R; ++r) {
                    const long b = r / K, draw = (start + b) * k + k0 + r % K;
                    for (int j = 0; j < L; ++j)
                        eps_[r * L + j] = T(rng.normal(stream, uint64_t(draw * L + j)));
                    reparam_forward(z_.data() + r * L, mu_.data() + b * L, lv_.data() + b * L,
                                    eps_.data() + r * L, L);
                }
                const T* p = dec.forward(z_.data(), int(R), ctx);
                nll_rows(nll_.data(), replicate(x, B, K), p, R);
                c.resize(R);
                iwae_neg_log_weights(c.data(), nll_.data(), z_.data(), eps_.data(), lv_.data(), B,
                                     K, L, cfg.prior_std);
                for (long r = 0; r < R; ++r) {  // running log-sum-exp of -c per sample
                    const long b = r / K;
                    const double v = -c[r];
                    if (v > m[b]) {
                        s[b] = s[b] * std::exp(m[b] - v) + 1.0;
                        m[b] = v;
                    } else {
                        s[b] += std::exp(v - m[b]);
                    }
                }
            }
            for (int b = 0; b < B; ++b) out[start + b] = T(m[b] + std::log(s[b]) - std::log(double(k)));
        }
    }

    long num_params() const { return long(params.size()); }

  private:
    static constexpr long kChunk = 1024;
    const T* h_ = nullptr;  // encoder output of the last forward
    const T* p_ = nullptr;  // decoder output of the last forward
    const T* xr_ = nullptr; // x, or x replicated K times (IWAE), of the last forward
    Buffer<T> mu_, lv_, eps_, z_, nll_, kl_, dmu_, dlv_, dz_, dh_, dh2_, dp_, ga_, gb_, xbatch_,
        xrep_, state_before_;
    bool dp_ready_ = false;  // dp_ holds the likelihood gradient of the last forward

    // The two latent heads are equal-sized products of the same input: with two threads each
    // head gets one (splitting each one's few columns would leave a thread idle half the time).
    bool heads_in_parallel(int B) const {
        return double(B) * enc.out_size() * L >= kGemmMinPerThread;
    }

    void heads_forward(T* mu, T* lv, const T* h, int B, const Ctx& ctx) {
        parallel_pair(heads_in_parallel(B), [&] { mu_head->forward(mu, h, B, ctx); },
                      [&] { lv_head->forward(lv, h, B, ctx); });
    }

    // A latent head's backward (setting its weight gradients, as every backward here does);
    // dinp accumulates when `accumulate`.
    void head_backward(DenseLayer<T>& h, T* dinp, T* dout, const T* inp, const T* out, int B,
                       bool accumulate) {
        dense_backward(dinp, h.grads, h.grads + long(h.C) * h.OC, dout, inp, out, h.params, B, h.C,
                       h.OC, h.act, accumulate, false);
    }

    // dh_ = dmu @ Wmu^T + dlv @ Wlv^T (and the heads' weight gradients): the heads run side by
    // side into dh_ and dh2_, which are then added; or one after the other, the second
    // accumulating into the first's result.
    void heads_backward(int B) {
        if (!heads_in_parallel(B) || threads_for(2.0, 1.0, 2) < 2) {
            head_backward(*mu_head, dh_.data(), dmu_.data(), h_, mu_.data(), B, false);
            head_backward(*lv_head, dh_.data(), dlv_.data(), h_, lv_.data(), B, true);
            return;
        }
        parallel_pair(true,
                      [&] { head_backward(*mu_head, dh_.data(), dmu_.data(), h_, mu_.data(), B, false); },
                      [&] { head_backward(*lv_head, dh2_.data(), dlv_.data(), h_, lv_.data(), B, false); });
        const long n = long(B) * enc.out_size();
        T* __restrict a = dh_.data();
        const T* __restrict b = dh2_.data();
        parallel_parts(n, threads_for(double(n), double(kParallelMin), n), 64, [&](long i0, long i1) {
            for (long i = i0; i < i1; ++i) a[i] += b[i];
        });
    }
    std::vector<double> c_, bound_, wn_;  // IWAE: -log weights, bounds, normalised weights
    long capB_ = 0, capR_ = 0;  // workspace capacity: samples, decoder rows

    // The training step on the batch xb (B, D) in xbatch_: noise from the step number, forward,
    // a finiteness check before anything changes, backward and the update. Batch k of nb (nb = 0:
    // of a stream) in error messages.
    LossSums step(const T* xb, int B, long k, long nb) {
        fill_eps(stream_id(Purpose::train_eps, uint64_t(opt.step)), 0, long(B) * K(), cfg.epsilon_std);
        state_before_.assign(state.begin(), state.end());  // the forward moves BatchNorm's statistics
        forward(xb, B, true, true);
        LossSums s = batch_sums(B);
        if (!std::isfinite(s.loss)) {
            std::copy(state_before_.begin(), state_before_.end(), state.begin());
            throw NonFiniteLoss(k, nb, s.loss);
        }
        backward(xb, B, true);
        opt.update(params.data(), grads.data(), long(params.size()), weight_ranges);
        return s;
    }

    // xrep_ (B*K, D): row b*K + k is x[b]
    const T* replicate(const T* x, int B, int K) {
        if (xrep_.size() < size_t(B) * K * D) xrep_.resize(size_t(B) * K * D);
        for (long r = 0; r < long(B) * K; ++r)
            std::copy(x + (r / K) * D, x + (r / K + 1) * D, xrep_.data() + r * D);
        return xrep_.data();
    }

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

    // eps[r, j] = std * N(0, 1) number (first + r) * L + j of the stream, for `rows` rows
    void fill_eps(uint64_t stream, long first, long rows, double std_) {
        // each number is a function of its index alone, so the split changes no value
        const long n = rows * L;
        parallel_parts(n, threads_for(double(n), 2048.0, n / 2), 2, [&](long i0, long i1) {
            rng.normals(eps_.data() + i0, stream, uint64_t(first * L + i0), i1 - i0, std_);
        });
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

    // Workspace for B samples with K latent draws each (the decoder sees B*K rows).
    void reserve(int B, int K) {
        const long R = long(B) * K;
        if (B <= capB_ && R <= capR_) return;
        capB_ = std::max<long>(capB_, B);
        capR_ = std::max(capR_, R);
        enc.reserve(int(capB_));
        dec.reserve(int(capR_));
        for (auto* v : {&mu_, &lv_, &dmu_, &dlv_}) v->resize(capB_ * L);
        for (auto* v : {&eps_, &z_, &dz_}) v->resize(capR_ * L);
        nll_.resize(capR_);
        kl_.resize(capB_);
        dh_.resize(capB_ * enc.out_size());
        dh2_.resize(capB_ * enc.out_size());
        dp_.resize(capR_ * P * D);
        const long w = std::max(capB_ * enc.max_width(), capR_ * dec.max_width());
        ga_.resize(w);
        gb_.resize(w);
        xbatch_.resize(capB_ * D);
        c_.resize(capR_);
        wn_.resize(capR_);
        bound_.resize(capB_);
    }
};

}  // namespace vaecpp
