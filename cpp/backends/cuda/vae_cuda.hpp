// The VAE on one CUDA device: Vae<float>'s training, evaluation, gradients, encoding and decoding
// for MLP models (Dense, Activation, Dropout, Flatten, Reshape; built-in likelihoods; the ELBO).
// Parameters, gradients, optimizer moments and activations stay on the device for the whole of
// fit; the data set goes to the device once per call when it fits (else batch by batch). The
// noise, dropout masks and shuffles are the CPU engine's Philox draws, so both backends see the
// same numbers and agree to float rounding.
//
// A Vae<float> on the host (`host`) holds what is not a tensor: configuration, the layer
// structure and weight layout, the initial weights (the same initialiser as the CPU backend), the
// optimizer's settings and step. Device tensors are authoritative between calls; pull() copies
// parameters and moments to `host`, push() back. Host code only: the kernels are in *.cu.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model.hpp"
#include "check.hpp"
#include "kernels.hpp"

namespace vaecpp::cuda {

class VaeCuda {
  public:
    using value_type = float;
    Vae<float> host;

    VaeCuda(const VaeConfig& c, int device) : host(supported(c)), device_(device) {
        check_layers();
        const int n = device_count();
        if (n == 0)
            throw CudaError("no CUDA device is available (the driver reports none): use backend='cpu'");
        if (device < 0 || device >= n)
            throw ValueError("device must be in 0.." + std::to_string(n - 1) + " (" +
                             std::to_string(n) + " CUDA device" + (n > 1 ? "s" : "") +
                             "), got " + std::to_string(device));
        VAECPP_CUDA_CHECK(cudaSetDevice(device_));
        blas_.reset(blas_create());
        plan();
        std::vector<long> off, len;
        for (auto [o, l] : host.weight_ranges) {
            off.push_back(o);
            len.push_back(l);
            max_range_ = std::max(max_range_, l);
        }
        range_off_.upload(off.data(), off.size());
        range_len_.upload(len.data(), len.size());
        range_ss_.reserve(off.size());
        sums_.reserve(2);
        grads_.reserve(host.params.size());
        push();
    }

    ~VaeCuda() { cudaSetDevice(device_); }  // the buffers free themselves on this device

    int device() const { return device_; }
    long num_params() const { return host.num_params(); }

    // Device -> host: parameters and optimizer moments (the step and settings live on the host).
    void pull() {
        use_device();
        params_.download(host.params.data(), host.params.size());
        m_.download(host.opt.m.data(), host.opt.m.size());
        v_.download(host.opt.v.data(), host.opt.v.size());
    }
    // Host -> device, e.g. after set_params, set_optimizer or loading a model.
    void push() {
        use_device();
        params_.upload(host.params.data(), host.params.size());
        m_.upload(host.opt.m.data(), host.opt.m.size());
        v_.upload(host.opt.v.data(), host.opt.v.size());
    }

    // As Vae::train_epoch: same permutation, noise streams, loss checks and update.
    LossSums train_epoch(const float* X, long N, int batch_size, bool shuffle, long epoch,
                         const Progress& progress) {
        use_device();
        const std::vector<long> order = epoch_order(host.rng, N, shuffle, epoch);
        const long nb = (N + batch_size - 1) / batch_size;
        reserve(int(std::min<long>(batch_size, N)));
        const bool resident = stage_data(X, N);
        if (resident) {
            std::vector<int64_t> perm(order.begin(), order.end());
            perm_.upload(perm.data(), perm.size());
        }
        const int D = host.D;
        LossSums tot;
        for (long k = 0; k < nb; ++k) {
            const int B = int(std::min<long>(batch_size, N - k * batch_size));
            if (resident) {
                gather_rows(xb_.data(), X_.data(), perm_.data(), k * batch_size, B, D);
            } else {  // gather on the host, one copy per batch
                stage_.resize(size_t(B) * D);
                for (int b = 0; b < B; ++b)
                    std::copy(X + order[k * batch_size + b] * D, X + (order[k * batch_size + b] + 1) * D,
                              stage_.begin() + long(b) * D);
                xb_.upload(stage_.data(), stage_.size());
            }
            fill_normal(eps_.data(), B, host.L, 0, host.cfg.epsilon_std, host.rng,
                        stream_id(Purpose::train_eps, uint64_t(host.opt.step)));
            forward(xb_.data(), B, true);
            LossSums s = batch_sums(B);
            if (!std::isfinite(s.loss)) throw NonFiniteLoss(k, nb, s.loss);
            grads_.zero();
            backward(xb_.data(), B);
            update();
            tot.add(s);
            if (progress && !progress(k + 1, nb, tot)) break;
        }
        return tot;
    }

    // As Vae::evaluate: sample i's noise depends only on (seed, i), X's rows being samples
    // first, first + 1, ...
    LossSums evaluate(const float* X, long N, int batch_size, long first = 0) {
        use_device();
        reserve(int(std::min<long>(batch_size, N)));
        const bool resident = stage_data(X, N);
        const int D = host.D;
        LossSums tot;
        for (long start = 0; start < N; start += batch_size) {
            const int B = int(std::min<long>(batch_size, N - start));
            if (!resident) xb_.upload(X + start * D, size_t(B) * D);
            const float* x = resident ? X_.data() + start * D : xb_.data();
            fill_normal(eps_.data(), B, host.L, first + start, host.cfg.epsilon_std, host.rng,
                        stream_id(Purpose::eval_eps, 0));
            forward(x, B, false);
            LossSums s = batch_sums(B);
            tot.add(s);
        }
        return tot;
    }

    // As Vae::gradients: loss sums and the gradient of the mean loss over all of X, no update.
    LossSums gradients(const float* X, long N, const float* eps, float* grad_out) {
        use_device();
        reserve(int(N));
        xb_.upload(X, size_t(N) * host.D);
        if (eps) {
            eps_.upload(eps, size_t(N) * host.L);
        } else {
            fill_normal(eps_.data(), N, host.L, 0, host.cfg.epsilon_std, host.rng,
                        stream_id(Purpose::eval_eps, 0));
        }
        forward(xb_.data(), int(N), false);
        LossSums s = batch_sums(int(N));
        grads_.zero();
        backward(xb_.data(), int(N));
        grads_.download(grad_out, host.params.size());
        return s;
    }

    // As Vae::encode: mu, lv are (N, L).
    void encode(const float* X, long N, float* mu, float* lv) {
        use_device();
        const int L = host.L;
        for (long start = 0; start < N; start += kChunk) {
            const int B = int(std::min<long>(kChunk, N - start));
            reserve(B);
            xb_.upload(X + start * host.D, size_t(B) * host.D);
            encode_batch(xb_.data(), B, false);
            mu_.download(mu + start * L, size_t(B) * L);
            lv_.download(lv + start * L, size_t(B) * L);
        }
    }

    // As Vae::decode: the likelihood's mean (N, D), or with raw the decoder's outputs (N, P*D).
    void decode(const float* Z, long N, float* out, bool raw = false) {
        use_device();
        const int D = host.D, P = host.P, L = host.L;
        const long width = raw ? long(P) * D : D;
        for (long start = 0; start < N; start += kChunk) {
            const int B = int(std::min<long>(kChunk, N - start));
            reserve(B);
            z_.upload(Z + start * L, size_t(B) * L);
            const float* p = run_stack(dec_, z_.data(), B, false);
            if (!raw) {
                lik_mean(dp_.data(), p, B, D, host.cfg.lik);
                p = dp_.data();
            }
            VAECPP_CUDA_CHECK(cudaMemcpy(out + start * width, p, sizeof(float) * B * width,
                                         cudaMemcpyDeviceToHost));
        }
    }

    // The importance-sampled log p(x) runs on the CPU engine with the current weights.
    void log_likelihood(const float* X, long N, long k, float* out) {
        pull();
        host.log_likelihood(X, N, k, out);
    }

  private:
    // A layer of the device plan; Flatten/Reshape and inactive Dropout pass their input on.
    struct DLayer {
        enum Kind { dense, activation, dropout, reshape } kind = reshape;
        int C = 0, OC = 0;     // dense: (C, OC) kernel, then OC biases, at `offset`
        long offset = 0;       // of the layer's parameters in the flat buffer
        long width = 0;        // values per sample out
        int index = 0;         // position in the whole model (dropout streams)
        Act act = Act::linear;
        double rate = 0;
        DeviceBuffer<float> out, mask;
        const float* in = nullptr;   // of the last forward
        const float* y = nullptr;
        bool masked = false;         // the last forward applied a dropout mask
    };
    using Plan = std::vector<std::unique_ptr<DLayer>>;

    static constexpr long kChunk = 1024;  // rows per pass of encode / decode
    int device_;
    std::unique_ptr<Blas, void (*)(Blas*)> blas_{nullptr, blas_destroy};
    Plan enc_, dec_;
    std::unique_ptr<DLayer> mu_head_, lv_head_;
    DeviceBuffer<float> params_, grads_, m_, v_;
    DeviceBuffer<long> range_off_, range_len_;
    DeviceBuffer<double> range_ss_, sums_;
    long max_range_ = 0;
    DeviceBuffer<float> X_, xb_, eps_, mu_, lv_, z_, nll_, kl_, dp_, dmu_, dlv_, dh_, ga_, gb_;
    DeviceBuffer<int64_t> perm_;
    std::vector<float> stage_;
    long cap_ = 0;                 // workspace capacity in samples
    const float* h_ = nullptr;     // encoder output of the last forward
    const float* p_ = nullptr;     // decoder output of the last forward
    const float* x_ = nullptr;     // input of the last forward

    static const VaeConfig& supported(const VaeConfig& c) {
        if (c.custom_params_per_dim > 0)
            throw ValueError("custom Python likelihoods are not supported on the CUDA backend "
                             "(use a built-in likelihood or backend='cpu')");
        if (c.iwae)
            throw ValueError("objective='iwae' is not supported on the CUDA backend "
                             "(use objective='elbo' or backend='cpu')");
        return c;
    }

    void check_layers() const {
        auto layers = host.all_layers();
        for (size_t i = 0; i < layers.size(); ++i) {
            Layer<float>* l = layers[i];
            if (dynamic_cast<DenseLayer<float>*>(l) || dynamic_cast<ActivationLayer<float>*>(l) ||
                dynamic_cast<DropoutLayer<float>*>(l) || dynamic_cast<ReshapeLayer<float>*>(l))
                continue;
            throw ValueError("layer '" + l->name + "' (" + l->kind() +
                             ") is not supported on the CUDA backend, which runs Dense, "
                             "Activation, Dropout, Flatten and Reshape layers: use backend='cpu'");
        }
    }

    void use_device() const { VAECPP_CUDA_CHECK(cudaSetDevice(device_)); }

    std::unique_ptr<DLayer> plan_layer(Layer<float>* l, long offset, int index) {
        auto d = std::make_unique<DLayer>();
        d->offset = offset;
        d->index = index;
        d->width = l->out_size();
        if (auto* x = dynamic_cast<DenseLayer<float>*>(l)) {
            d->kind = DLayer::dense;
            d->C = x->C;
            d->OC = x->OC;
            d->act = x->act;
        } else if (auto* a = dynamic_cast<ActivationLayer<float>*>(l)) {
            d->kind = DLayer::activation;
            d->act = a->act;
        } else if (auto* r = dynamic_cast<DropoutLayer<float>*>(l)) {
            d->kind = DLayer::dropout;
            d->rate = r->rate;
        }
        return d;
    }

    // The device plan, in parameter order: encoder, z_mean, z_log_var, decoder.
    void plan() {
        auto layers = host.all_layers();
        const size_t ne = host.enc.layers.size();
        long offset = 0;
        for (size_t i = 0; i < layers.size(); ++i) {
            auto d = plan_layer(layers[i], offset, int(i));
            offset += layers[i]->num_params();
            if (i < ne)
                enc_.push_back(std::move(d));
            else if (i == ne)
                mu_head_ = std::move(d);
            else if (i == ne + 1)
                lv_head_ = std::move(d);
            else
                dec_.push_back(std::move(d));
        }
    }

    // Workspace for B samples.
    void reserve(int B) {
        if (B <= cap_) return;
        cap_ = B;
        const long L = host.L, D = host.D, P = host.P;
        for (Plan* st : {&enc_, &dec_})
            for (auto& l : *st) {
                if (l->kind != DLayer::reshape) l->out.reserve(cap_ * l->width);
                if (l->kind == DLayer::dropout) l->mask.reserve(cap_ * l->width);
            }
        for (auto* b : {&eps_, &mu_, &lv_, &z_, &dmu_, &dlv_}) b->reserve(cap_ * L);
        nll_.reserve(cap_);
        kl_.reserve(cap_);
        xb_.reserve(cap_ * D);
        dp_.reserve(cap_ * P * D);
        dh_.reserve(cap_ * host.enc.out_size());
        const long w = std::max(host.enc.max_width(), host.dec.max_width());
        ga_.reserve(cap_ * w);
        gb_.reserve(cap_ * w);
    }

    // Copies X (N, D) to the device when it fits beside the workspace; false: batch by batch.
    bool stage_data(const float* X, long N) {
        const size_t bytes = sizeof(float) * size_t(N) * host.D;
        size_t free_b = 0, total_b = 0;
        VAECPP_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        const size_t have = X_.size() * sizeof(float);  // reusable without a new allocation
        if (bytes > have && bytes - have + (size_t(256) << 20) > free_b) return false;
        X_.upload(X, size_t(N) * host.D);
        return true;
    }

    const float* W(const DLayer& l) const { return params_.data() + l.offset; }
    const float* bias(const DLayer& l) const { return params_.data() + l.offset + long(l.C) * l.OC; }
    float* dW(const DLayer& l) { return grads_.data() + l.offset; }
    float* dbias(const DLayer& l) { return grads_.data() + l.offset + long(l.C) * l.OC; }

    // out (B, OC) = f(inp @ W + b): dense_forward
    void dense(DLayer& l, const float* inp, float* out, int B) {
        gemm(blas_.get(), false, false, B, l.OC, l.C, 1.f, inp, W(l), 0.f, out);
        bias_act_forward(out, bias(l), B, l.OC, l.act);
        l.in = inp;
        l.y = out;
    }

    // As Stack::forward; returns the stack's output (x itself when every layer passes through).
    const float* run_stack(Plan& st, const float* x, int B, bool training) {
        const float* h = x;
        for (auto& lp : st) {
            DLayer& l = *lp;
            const long n = long(B) * l.width;
            switch (l.kind) {
                case DLayer::dense:
                    dense(l, h, l.out.data(), B);
                    break;
                case DLayer::activation:
                    act_forward(l.out.data(), h, n, l.act);
                    l.in = h;
                    l.y = l.out.data();
                    break;
                case DLayer::dropout:
                    l.masked = training && l.rate > 0;
                    if (l.masked) {
                        const uint64_t stream = stream_id(
                            Purpose::dropout, uint64_t(host.opt.step) * 64 + uint64_t(l.index));
                        dropout_forward(l.out.data(), l.mask.data(), h, n, l.rate, host.rng, stream);
                        l.y = l.out.data();
                    } else {
                        l.y = h;
                    }
                    l.in = h;
                    break;
                case DLayer::reshape:
                    l.in = l.y = h;
                    break;
            }
            h = l.y;
        }
        return h;
    }

    // As Stack::backward: g (B, out) is overwritten; returns the gradient with respect to the
    // stack's input (in g's buffer or a scratch one), or null when need_dx is false.
    float* back_stack(Plan& st, float* g, int B, bool need_dx) {
        for (size_t i = st.size(); i-- > 0;) {
            DLayer& l = *st[i];
            const long n = long(B) * l.width;
            switch (l.kind) {
                case DLayer::dense: {
                    act_backward(g, g, l.y, n, l.act);
                    gemm(blas_.get(), true, false, l.C, l.OC, B, 1.f, l.in, g, 1.f, dW(l));
                    column_sums_add(dbias(l), g, B, l.OC);
                    if (i == 0 && !need_dx) return nullptr;
                    float* t = g == ga_.data() ? gb_.data() : ga_.data();
                    gemm(blas_.get(), false, true, B, l.C, l.OC, 1.f, g, W(l), 0.f, t);
                    g = t;
                    break;
                }
                case DLayer::activation:
                    act_backward(g, g, l.y, n, l.act);
                    break;
                case DLayer::dropout:
                    if (l.masked) multiply(g, g, l.mask.data(), n);
                    break;
                case DLayer::reshape:
                    break;
            }
        }
        return need_dx ? g : nullptr;
    }

    // Encoder stack and both heads: mu_, lv_ (B, L).
    void encode_batch(const float* x, int B, bool training) {
        h_ = run_stack(enc_, x, B, training);
        dense(*mu_head_, h_, mu_.data(), B);
        dense(*lv_head_, h_, lv_.data(), B);
    }

    // As Vae::forward (ELBO, one draw per sample) with eps_ already drawn.
    void forward(const float* x, int B, bool training) {
        const long BL = long(B) * host.L;
        x_ = x;
        encode_batch(x, B, training);
        reparam_forward(z_.data(), mu_.data(), lv_.data(), eps_.data(), BL);
        p_ = run_stack(dec_, z_.data(), B, training);
        lik_nll(nll_.data(), x, p_, B, host.D, host.cfg.lik);
        kl_forward(kl_.data(), mu_.data(), lv_.data(), B, host.L, host.cfg.prior_std);
    }

    // As Vae::backward: accumulates the gradient of the mean loss into grads_ (zeroed first).
    void backward(const float* x, int B) {
        const int L = host.L;
        const float w = 1.f / float(B);
        lik_grad(dp_.data(), x, p_, B, host.D, host.cfg.lik, w);
        const float* dz = back_stack(dec_, dp_.data(), B, true);
        latent_backward(dmu_.data(), dlv_.data(), dz, mu_.data(), lv_.data(), eps_.data(),
                        long(B) * L, host.cfg.prior_std, float(host.cfg.beta) * w);
        // the heads: dW += h^T d(head), db += column sums, dh = dmu Wmu^T + dlv Wlv^T
        const int E = int(host.enc.out_size());
        for (auto [head, d] : {std::pair{mu_head_.get(), dmu_.data()}, std::pair{lv_head_.get(), dlv_.data()}}) {
            gemm(blas_.get(), true, false, E, L, B, 1.f, h_, d, 1.f, dW(*head));
            column_sums_add(dbias(*head), d, B, L);
        }
        gemm(blas_.get(), false, true, B, E, L, 1.f, dmu_.data(), W(*mu_head_), 0.f, dh_.data());
        gemm(blas_.get(), false, true, B, E, L, 1.f, dlv_.data(), W(*lv_head_), 1.f, dh_.data());
        back_stack(enc_, dh_.data(), B, false);
    }

    LossSums batch_sums(int B) {
        loss_sums(sums_.data(), nll_.data(), kl_.data(), B);
        double s[2];
        sums_.download(s, 2);
        LossSums out;
        out.rec = s[0];
        out.kl = s[1];
        out.loss = out.rec + host.cfg.beta * out.kl;
        out.n = B;
        return out;
    }

    // As Optimizer::update: clipvalue, clipnorm per weight array, then the rule; step on the host.
    void update() {
        const OptSpec& s = host.opt.spec;
        const long n = long(host.params.size());
        if (s.clipvalue > 0) clip_values(grads_.data(), n, float(s.clipvalue));
        if (s.clipnorm > 0)
            clip_norms(grads_.data(), range_off_.data(), range_len_.data(), int(range_off_.size()),
                       s.clipnorm, range_ss_.data(), max_range_);
        ++host.opt.step;
        optimizer_update(opt_coeffs<float>(s, host.opt.step), params_.data(), grads_.data(),
                         m_.size() ? m_.data() : nullptr, v_.size() ? v_.data() : nullptr, n);
    }
};

}  // namespace vaecpp::cuda
