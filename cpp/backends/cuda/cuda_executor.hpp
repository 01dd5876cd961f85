// The CUDA backend: the passes of a Model<float> on one device, for MLP models (Dense,
// Activation, Dropout, Flatten, Reshape; built-in likelihoods; the ELBO). Parameters, gradients,
// optimizer moments and activations stay on the device between calls; the data set goes to the
// device once per epoch when it fits (else batch by batch). The noise, dropout masks and shuffles
// are the CPU engine's Philox draws, so both backends see the same numbers and agree to float
// rounding. The loop that drives these passes is the engine's (model/engine.hpp), shared with the
// CPU backend, whose tests therefore cover it.
//
// The Model on the host holds what is not a tensor: configuration, the layer structure and weight
// layout, the initial weights, the optimizer's settings and step. Device tensors are
// authoritative between calls; pull() copies parameters and moments to the Model, push() back.
// Host code only: the kernels are in *.cu.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/executor.hpp"
#include "check.hpp"
#include "kernels.hpp"

namespace vaecpp::cuda {

class CudaExecutor final : public Executor<float> {
  public:
    CudaExecutor(Model<float>& model, int device) : m(supported(model)), device_(device) {
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
        for (auto [o, l] : m.weight_ranges) {
            off.push_back(o);
            len.push_back(l);
            max_range_ = std::max(max_range_, l);
        }
        range_off_.upload(off.data(), off.size());
        range_len_.upload(len.data(), len.size());
        range_ss_.reserve(off.size());
        sums_.reserve(2);
        grads_.reserve(m.params.size());
        push();
    }

    ~CudaExecutor() override { cudaSetDevice(device_); }  // the buffers free themselves on this device

    int device() const { return device_; }

    // Device -> host: parameters and optimizer moments (the step and settings live on the host).
    void pull() override {
        use_device();
        params_.download(m.params.data(), m.params.size());
        mom1_.download(m.opt.m.data(), m.opt.m.size());
        mom2_.download(m.opt.v.data(), m.opt.v.size());
        ema_.download(m.opt.ema.data(), m.opt.ema.size());
    }
    // Host -> device, e.g. after set_params, set_optimizer or loading a model.
    void push() override {
        use_device();
        params_.upload(m.params.data(), m.params.size());
        mom1_.upload(m.opt.m.data(), m.opt.m.size());
        mom2_.upload(m.opt.v.data(), m.opt.v.size());
        ema_.upload(m.opt.ema.data(), m.opt.ema.size());
    }

    void reserve(int B, int /*K: always 1, the ELBO*/) override {
        use_device();
        reserve_rows(B);
    }

    void attach(const float* X, long N) override {
        use_device();
        data_ = X;
        resident_ = stage_data(X, N);
    }

    void gather(const long* rows, int B) override {
        use_device();
        const int D = m.D;
        if (resident_) {  // B row numbers up, the rows gathered on the device
            std::vector<int64_t> idx(rows, rows + B);
            rows_.upload(idx.data(), idx.size());
            gather_rows(xb_.data(), X_.data(), rows_.data(), 0, B, D);
        } else {  // gathered on the host, one copy per batch
            stage_.resize(size_t(B) * D);
            for (int b = 0; b < B; ++b)
                std::copy(data_ + rows[b] * D, data_ + (rows[b] + 1) * D, stage_.begin() + long(b) * D);
            xb_.upload(stage_.data(), stage_.size());
        }
    }

    void load(const float* X, int B) override {
        use_device();
        xb_.upload(X, size_t(B) * m.D);
    }

    void draw_eps(uint64_t stream, long first, long rows) override {
        use_device();
        fill_normal(eps_.data(), rows, m.L, first, m.cfg.epsilon_std, m.rng, stream);
    }

    void set_eps(const float* eps, long rows) override {
        use_device();
        eps_.upload(eps, size_t(rows) * m.L);
    }

    LossSums forward(const Rows& rows, bool training, bool /*want_grad: backward computes it*/) override {
        use_device();
        first_row_ = rows.first;
        forward_pass(xb_.data(), rows.B, training);
        return batch_sums(rows.B);
    }

    void backward(const Rows& rows, bool /*training*/) override {
        use_device();
        backward_pass(xb_.data(), rows.B, 1.f / float(rows.mean_over()));
    }

    void zero_grads() override {
        use_device();
        grads_.zero();
    }

    void update() override {
        use_device();
        update_pass();
    }

    void average_weights() override {
        const OptSpec& s = m.opt.spec;
        if (!s.use_ema) return;
        use_device();
        weight_average(float(ema_momentum_at(s, m.opt.step)), ema_overwrite_at(s, m.opt.step),
                       ema_.data(), params_.data(), long(m.params.size()));
    }

    void read_grads(float* out) override {
        use_device();
        grads_.download(out, m.params.size());
    }
    void write_grads(const float* in) override {
        use_device();
        grads_.upload(in, m.params.size());
    }

    // The layers this backend runs have no state (BatchNorm is refused).
    void save_state() override {}
    void restore_state() override {}

    void encode(const float* X, int B, float* mu, float* lv) override {
        use_device();
        reserve_rows(B);
        xb_.upload(X, size_t(B) * m.D);
        encode_batch(xb_.data(), B, false);
        mu_.download(mu, size_t(B) * m.L);
        lv_.download(lv, size_t(B) * m.L);
    }

    void decode(const float* Z, int B, float* out, bool raw) override {
        use_device();
        const int D = m.D, P = m.P;
        reserve_rows(B);
        z_.upload(Z, size_t(B) * m.L);
        const float* p = run_stack(dec_, z_.data(), B, false);
        if (!raw) {
            lik_mean(dp_.data(), p, B, D, m.cfg.lik);
            p = dp_.data();
        }
        VAECPP_CUDA_CHECK(cudaMemcpy(out, p, sizeof(float) * B * (raw ? long(P) * D : D),
                                     cudaMemcpyDeviceToHost));
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

    Model<float>& m;
    int device_;
    std::unique_ptr<Blas, void (*)(Blas*)> blas_{nullptr, blas_destroy};
    Plan enc_, dec_;
    std::unique_ptr<DLayer> mu_head_, lv_head_;
    DeviceBuffer<float> params_, grads_, mom1_, mom2_, ema_;
    DeviceBuffer<long> range_off_, range_len_;
    DeviceBuffer<double> range_ss_, sums_;
    long max_range_ = 0;
    DeviceBuffer<float> X_, xb_, eps_, mu_, lv_, z_, nll_, kl_, dp_, dmu_, dlv_, dh_, ga_, gb_;
    DeviceBuffer<int64_t> rows_;
    std::vector<float> stage_;
    const float* data_ = nullptr;  // the attached data set (host)
    bool resident_ = false;        // ... and its copy in X_
    long cap_ = 0;                 // workspace capacity in samples
    long first_row_ = 0;           // of the last forward's rows in their batch (dropout draws)
    const float* h_ = nullptr;     // encoder output of the last forward
    const float* p_ = nullptr;     // decoder output of the last forward
    const float* x_ = nullptr;     // input of the last forward

    static Model<float>& supported(Model<float>& model) {
        const VaeConfig& c = model.cfg;
        if (c.custom_params_per_dim > 0)
            throw ValueError("custom Python likelihoods are not supported on the CUDA backend "
                             "(use a built-in likelihood or backend='cpu')");
        if (c.iwae)
            throw ValueError("objective='iwae' is not supported on the CUDA backend "
                             "(use objective='elbo' or backend='cpu')");
        return model;
    }

    void check_layers() const {
        auto layers = m.all_layers();
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
        auto layers = m.all_layers();
        const size_t ne = m.enc.layers.size();
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

    // Workspace for B samples. The capacity is raised only once every buffer has grown, so a
    // failed allocation is retried by the next call instead of leaving buffers too small.
    void reserve_rows(int B) {
        if (B <= cap_) return;
        const long n = B;
        const long L = m.L, D = m.D, P = m.P;
        for (Plan* st : {&enc_, &dec_})
            for (auto& l : *st) {
                if (l->kind != DLayer::reshape) l->out.reserve(n * l->width);
                if (l->kind == DLayer::dropout) l->mask.reserve(n * l->width);
            }
        for (auto* b : {&eps_, &mu_, &lv_, &z_, &dmu_, &dlv_}) b->reserve(n * L);
        nll_.reserve(n);
        kl_.reserve(n);
        xb_.reserve(n * D);
        dp_.reserve(n * P * D);
        dh_.reserve(n * m.enc.out_size());
        const long w = std::max(m.enc.max_width(), m.dec.max_width());
        ga_.reserve(n * w);
        gb_.reserve(n * w);
        cap_ = B;
    }

    // Copies X (N, D) to the device when it fits beside the workspace; false: batch by batch.
    bool stage_data(const float* X, long N) {
        const size_t bytes = sizeof(float) * size_t(N) * m.D;
        size_t free_b = 0, total_b = 0;
        VAECPP_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        const size_t have = X_.size() * sizeof(float);  // reusable without a new allocation
        if (bytes > have && bytes - have + (size_t(256) << 20) > free_b) return false;
        X_.upload(X, size_t(N) * m.D);
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
                            Purpose::dropout, uint64_t(m.opt.step) * 64 + uint64_t(l.index));
                        dropout_forward(l.out.data(), l.mask.data(), h, n, first_row_ * l.width,
                                        l.rate, m.rng, stream);
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
                    gemm(blas_.get(), true, false, l.C, l.OC, B, 1.f, l.in, g, 0.f, dW(l));
                    column_sums(dbias(l), g, B, l.OC, false);
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

    // The ELBO with one draw per sample, eps_ already drawn.
    void forward_pass(const float* x, int B, bool training) {
        const long BL = long(B) * m.L;
        x_ = x;
        encode_batch(x, B, training);
        reparam_forward(z_.data(), mu_.data(), lv_.data(), eps_.data(), BL);
        p_ = run_stack(dec_, z_.data(), B, training);
        lik_nll(nll_.data(), x, p_, B, m.D, m.cfg.lik);
        kl_forward(kl_.data(), mu_.data(), lv_.data(), B, m.L, m.cfg.prior_std);
    }

    // Sets grads_ to w times the gradient of the summed loss (every dense layer writes its dW and
    // db); w = 1 / B for the mean over the batch.
    void backward_pass(const float* x, int B, float w) {
        const int L = m.L;
        lik_grad(dp_.data(), x, p_, B, m.D, m.cfg.lik, w);
        const float* dz = back_stack(dec_, dp_.data(), B, true);
        latent_backward(dmu_.data(), dlv_.data(), dz, mu_.data(), lv_.data(), eps_.data(),
                        long(B) * L, m.cfg.prior_std, float(m.cfg.beta) * w);
        // the heads: dW = h^T d(head), db = column sums, dh = dmu Wmu^T + dlv Wlv^T
        const int E = int(m.enc.out_size());
        for (auto [head, d] : {std::pair{mu_head_.get(), dmu_.data()}, std::pair{lv_head_.get(), dlv_.data()}}) {
            gemm(blas_.get(), true, false, E, L, B, 1.f, h_, d, 0.f, dW(*head));
            column_sums(dbias(*head), d, B, L, false);
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
        out.loss = out.rec + m.cfg.beta * out.kl;
        out.n = B;
        return out;
    }

    // As Optimizer::update: clipvalue, clipnorm per weight array, then the rule; the step count
    // lives on the host.
    void update_pass() {
        const OptSpec& s = m.opt.spec;
        const long n = long(m.params.size());
        if (s.clipvalue > 0) clip_values(grads_.data(), n, float(s.clipvalue));
        if (s.clipnorm > 0)
            clip_norms(grads_.data(), range_off_.data(), range_len_.data(), int(range_off_.size()),
                       s.clipnorm, range_ss_.data(), max_range_);
        ++m.opt.step;
        optimizer_update(opt_coeffs<float>(s, m.opt.step), params_.data(), grads_.data(),
                         mom1_.size() ? mom1_.data() : nullptr, mom2_.size() ? mom2_.data() : nullptr, n);
    }
};

}  // namespace vaecpp::cuda
