// The CPU backend: the model's passes on the host, over the Model's own buffers, with the layers'
// kernels (kernels/) threaded by OpenMP. Every buffer is an aligned Buffer<T> (see
// core/buffers.hpp), so a given thread count does the same arithmetic run after run.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/iwae.hpp"
#include "kernels/kl.hpp"
#include "model/executor.hpp"

namespace vaecpp {

template <typename T>
class CpuExecutor final : public Executor<T> {
  public:
    // update_in_backward: a training step without a collective updates each layer's weights as
    // soon as their gradient is complete (backward_updating); false: in one pass after the whole
    // backward, as a step with a collective does (the tests compare the two, bit for bit).
    // keep_grads: a layer that steps its weights inside backward writes their gradient to the
    // gradient buffer too (read only by the tests: a training step does not need it there).
    explicit CpuExecutor(Model<T>& model, bool update_in_backward = true, bool keep_grads = false)
        : m(model), update_in_backward_(update_in_backward), keep_grads_(keep_grads) {
        long off = 0;
        for (Layer<T>* l : m.all_layers()) {
            const long n = l->num_params();
            if (n > 0) parts_.push_back({l, off, n});
            off += n;
        }
    }

    // Grows the buffers for batches of B samples, K draws each. The capacities are raised only
    // once every buffer has grown, so a failed allocation leaves a model that still works at its
    // old sizes; sizes beyond the engine's int rows or this machine's memory are a ValueError
    // before anything is allocated.
    void reserve(int B, int K) override {
        const long R = long(B) * K;
        if (B <= capB_ && R <= capR_) return;
        const long nB = std::max<long>(capB_, B), nR = std::max(capR_, R);
        const long L = m.L, D = m.D, P = m.P;
        const long w = std::max(nB * m.enc.max_width(), nR * m.dec.max_width());
        if (nR > INT_MAX)
            throw ValueError("a batch of " + std::to_string(B) + " samples with " +
                             std::to_string(K) + " draws each is " + std::to_string(R) +
                             " decoder rows, more than the engine's " + std::to_string(INT_MAX));
        const double floats = double(nB) * (m.enc.row_floats() + 4 * L + 2 * m.enc.out_size() + D + 2) +
                              double(nR) * (m.dec.row_floats() + 3 * L + P * D + 3) + 2.0 * w;
        const double need = floats * sizeof(T), have = physical_memory_bytes();
        if (have > 0 && need > have)
            throw ValueError("a batch of " + std::to_string(B) + " samples with " +
                             std::to_string(K) + " draws each needs about " +
                             std::to_string(long(need / 1e9)) + " GB of working memory, more "
                             "than this machine's " + std::to_string(long(have / 1e9)) + " GB");
        m.enc.reserve(int(nB));
        m.dec.reserve(int(nR));
        for (auto* v : {&mu_, &lv_, &dmu_, &dlv_}) v->resize(nB * L);
        for (auto* v : {&eps_, &z_, &dz_}) v->resize(nR * L);
        nll_.resize(nR);
        kl_.resize(nB);
        dh_.resize(nB * m.enc.out_size());
        dh2_.resize(nB * m.enc.out_size());
        dp_.resize(nR * P * D);
        ga_.resize(w);
        gb_.resize(w);
        xbatch_.resize(nB * D);
        c_.resize(nR);
        wn_.resize(nR);
        bound_.resize(nB);
        capB_ = nB, capR_ = nR;
    }

    void attach(const T* X, long /*N*/) override { data_ = X; }

    void gather(const long* rows, int B) override {
        const long D = m.D;
        T* xb = xbatch_.data();
        const T* X = data_;
#pragma omp parallel for schedule(static) if (long(B) * D >= kParallelMin)
        for (int b = 0; b < B; ++b) std::memcpy(xb + long(b) * D, X + rows[b] * D, sizeof(T) * D);
    }

    void load(const T* X, int B) override { stage(xbatch_, X, long(B) * m.D); }

    void draw_eps(uint64_t stream, long first, long rows) override {
        // each number is a function of its index alone, so the split changes no value
        const long L = m.L, n = rows * L;
        const double sd = m.cfg.epsilon_std;
        parallel_parts(n, threads_for(double(n), 2048.0, n / 2), 2, [&](long i0, long i1) {
            m.rng.normals(eps_.data() + i0, stream, uint64_t(first * L + i0), i1 - i0, sd);
        });
    }

    void set_eps(const T* eps, long rows) override { stage(eps_, eps, rows * m.L); }

    // Fills nll (B*K,) and kl (B,), and for the IWAE objective the bound (B,) and normalised
    // weights (B*K,); with want_grad the likelihood's gradient for backward() comes out of the
    // same pass.
    LossSums forward(const Rows& rows, bool training, bool want_grad) override {
        const int B = rows.B, K = m.K(), L = m.L;
        const long R = long(B) * K;
        const T* x = xbatch_.data();
        Ctx ctx = context(training, rows.first);
        h_ = m.enc.forward(x, B, ctx);
        heads_forward(mu_.data(), lv_.data(), h_, B, ctx);
        for (long r = 0; r < R; ++r)  // z_r = mu_b + exp(lv_b / 2) eps_r,  r = b*K + k
            reparam_forward(z_.data() + r * L, mu_.data() + (r / K) * L, lv_.data() + (r / K) * L,
                            eps_.data() + r * L, L);
        ctx.row_offset = rows.first * K;  // the decoder sees K rows per sample
        p_ = m.dec.forward(z_.data(), int(R), ctx);
        xr_ = K == 1 ? x : replicate(x, B, K);
        m.nll_grad_rows(nll_.data(), want_grad ? dp_.data() : nullptr, xr_, p_, R,
                        T(1.0 / rows.mean_over()));
        dp_ready_ = want_grad;
        kl_forward(kl_.data(), mu_.data(), lv_.data(), B, L, m.cfg.prior_std);
        if (m.cfg.iwae) {
            iwae_neg_log_weights(c_.data(), nll_.data(), z_.data(), eps_.data(), lv_.data(), B, K,
                                 L, m.cfg.prior_std);
            iwae_bound(bound_.data(), wn_.data(), c_.data(), B, K);
        }
        return sums(B);
    }

    // Sets every gradient (backward_pass below); backward_updating also steps the optimizer.
    void backward(const Rows& rows, bool training) override { backward_pass(rows, training, false); }

    void backward_updating(const Rows& rows) override {
        backward_pass(rows, true, update_in_backward_);
    }

    void zero_grads() override { std::fill(m.grads.begin(), m.grads.end(), T(0)); }

    void update() override {
        if (updated_ > 0) {  // backward_updating() has stepped every layer
            if (updated_ != m.num_params())
                throw std::logic_error("vaecpp: the layers updated in backward hold " +
                                       std::to_string(updated_) + " of the model's " +
                                       std::to_string(m.num_params()) + " parameters");
            updated_ = 0;
            return;
        }
        m.opt.update(m.params.data(), m.grads.data(), long(m.params.size()), m.weight_ranges);
    }

    // Parameters the last training step stepped inside their layer's backward (tests).
    long stepped_in_layers() const { return stepped_in_layers_; }

    void average_weights() override { m.opt.average(m.params.data(), long(m.params.size())); }

    void read_grads(T* out) override { std::copy(m.grads.begin(), m.grads.end(), out); }
    void write_grads(const T* in) override { std::copy(in, in + m.grads.size(), m.grads.begin()); }

    void save_state() override { state_before_.assign(m.state.begin(), m.state.end()); }
    void restore_state() override {
        std::copy(state_before_.begin(), state_before_.end(), m.state.begin());
    }

    void encode(const T* X, int B, T* mu, T* lv) override {
        reserve(B, 1);
        Ctx ctx = context(false);
        const T* h = m.enc.forward(stage(xbatch_, X, long(B) * m.D), B, ctx);
        heads_forward(mu, lv, h, B, ctx);
    }

    void decode(const T* Z, int B, T* out, bool raw) override {
        reserve(B, 1);
        const T* p = m.dec.forward(stage(z_, Z, long(B) * m.L), B, context(false));
        if (raw)
            std::copy(p, p + long(B) * m.P * m.D, out);
        else
            m.mean_rows(out, p, B);
    }

  private:
    // A layer's weights in the flat buffers, for the update of one layer.
    struct Part {
        const Layer<T>* layer;
        long off, n;
    };

    Model<T>& m;
    const bool update_in_backward_, keep_grads_;
    std::vector<Part> parts_;  // the layers with weights, in parameter order
    long updated_ = 0;         // parameters stepped by the last backward_updating()
    long stepped_in_layers_ = 0;  // of those, stepped by their layer's own backward

    // ELBO: the loss is mean_b(nll_b + beta kl_b); IWAE: mean_b(-bound_b). Every layer's backward
    // runs once, setting its part of the gradient; with `update`, the optimizer step of each
    // layer's weights follows as soon as its gradient is complete (they are not read again), on
    // coefficients computed once (the step count moves after ctx took it for the dropout masks).
    void backward_pass(const Rows& rows, bool training, bool update) {
        const int B = rows.B, K = m.K(), L = m.L, P = m.P, D = m.D;
        const long R = long(B) * K;
        const T* x = xbatch_.data();
        Ctx ctx = context(training, rows.first * K);
        ctx.set_grads = true;
        const T w = T(1.0 / rows.mean_over());
        if (!dp_ready_) m.grad_rows(dp_.data(), xr_, p_, R, w);
        dp_ready_ = false;
        if (m.cfg.iwae)  // row r's gradient is weighted by its normalised importance weight
            for (long r = 0; r < R; ++r)
                for (long i = 0; i < long(P) * D; ++i) dp_[r * P * D + i] *= T(wn_[r]);
        updated_ = stepped_in_layers_ = 0;
        if (update) m.opt.begin_step();  // after the last call that may throw (grad_rows)
        StepHook done{*this, update, update && m.opt.steps_in_backward()};
        m.dec.backward(dz_.data(), dp_.data(), z_.data(), int(R), ctx, ga_.data(), gb_.data(),
                       done);
        if (m.cfg.iwae) {
            iwae_latent_backward(dmu_.data(), dlv_.data(), dz_.data(), z_.data(), eps_.data(),
                                 lv_.data(), wn_.data(), B, K, L, m.cfg.prior_std);
        } else {
            std::fill(dmu_.begin(), dmu_.begin() + long(B) * L, T(0));
            std::fill(dlv_.begin(), dlv_.begin() + long(B) * L, T(0));
            reparam_backward(dmu_.data(), dlv_.data(), dz_.data(), lv_.data(), eps_.data(),
                             long(B) * L);
            kl_backward(dmu_.data(), dlv_.data(), mu_.data(), lv_.data(), long(B) * L,
                        m.cfg.prior_std, T(m.cfg.beta) * w);
        }
        heads_backward(B);
        if (update) {
            update_layer(*m.mu_head);
            update_layer(*m.lv_head);
        }
        ctx.row_offset = rows.first;
        m.enc.backward(nullptr, dh_.data(), x, B, ctx, ga_.data(), gb_.data(), done);
    }

    // A layer's part of the flat buffers (null for a layer without weights).
    const Part* part_of(const Layer<T>& l) const {
        for (const Part& part : parts_)
            if (part.layer == &l) return &part;
        return nullptr;
    }

    // The optimizer step of one layer's weights (its part of the flat buffers).
    void update_layer(const Layer<T>& l) {
        if (const Part* part = part_of(l)) {
            m.opt.apply(m.params.data(), m.grads.data(), part->off, part->n, m.weight_ranges);
            updated_ += part->n;
        }
    }

    // The stacks' backward hook (Stack::backward). In a training step that updates, a layer steps
    // its own weights inside backward where the optimizer allows it (in_backward) and the layer
    // can (Dense), else it is stepped here as soon as its gradient is complete.
    struct StepHook {
        CpuExecutor& ex;
        bool update, in_backward;
        WeightStep<T> step{};
        const WeightStep<T>* step_for(const Layer<T>& l) {
            const Part* part = in_backward ? ex.part_of(l) : nullptr;
            if (!part) return nullptr;
            step = ex.m.opt.weight_step(ex.m.params.data() + part->off, part->off);
            step.keep_grads = ex.keep_grads_;
            return &step;
        }
        void operator()(const Layer<T>& l, bool stepped) {
            if (!update) return;
            if (!stepped) {
                ex.update_layer(l);
            } else if (const Part* part = ex.part_of(l)) {
                ex.updated_ += part->n;
                ex.stepped_in_layers_ += part->n;
            }
        }
    };

    const T* data_ = nullptr;  // the attached data set
    const T* h_ = nullptr;     // encoder output of the last forward
    const T* p_ = nullptr;     // decoder output of the last forward
    const T* xr_ = nullptr;    // x, or x replicated K times (IWAE), of the last forward
    Buffer<T> mu_, lv_, eps_, z_, nll_, kl_, dmu_, dlv_, dz_, dh_, dh2_, dp_, ga_, gb_, xbatch_,
        xrep_, state_before_;
    std::vector<double> c_, bound_, wn_;  // IWAE: -log weights, bounds, normalised weights
    bool dp_ready_ = false;     // dp_ holds the likelihood gradient of the last forward
    long capB_ = 0, capR_ = 0;  // workspace capacity: samples, decoder rows

    LossSums sums(int B) const {
        const int K = m.K();
        LossSums s;
        for (int b = 0; b < B; ++b) {
            for (int k = 0; k < K; ++k) s.rec += nll_[long(b) * K + k] / double(K);
            s.kl += kl_[b];
            if (m.cfg.iwae) s.loss -= bound_[b];
        }
        if (!m.cfg.iwae) s.loss = s.rec + m.cfg.beta * s.kl;
        s.n = B;
        return s;
    }

    // The two latent heads are equal-sized products of the same input: with two threads each
    // head gets one (splitting each one's few columns would leave a thread idle half the time).
    bool heads_in_parallel(int B) const {
        return double(B) * m.enc.out_size() * m.L >= kGemmMinPerThread;
    }

    void heads_forward(T* mu, T* lv, const T* h, int B, const Ctx& ctx) {
        parallel_pair(heads_in_parallel(B), [&] { m.mu_head->forward(mu, h, B, ctx); },
                      [&] { m.lv_head->forward(lv, h, B, ctx); });
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
        DenseLayer<T>& mu_head = *m.mu_head;
        DenseLayer<T>& lv_head = *m.lv_head;
        if (!heads_in_parallel(B) || threads_for(2.0, 1.0, 2) < 2) {
            head_backward(mu_head, dh_.data(), dmu_.data(), h_, mu_.data(), B, false);
            head_backward(lv_head, dh_.data(), dlv_.data(), h_, lv_.data(), B, true);
            return;
        }
        parallel_pair(true,
                      [&] { head_backward(mu_head, dh_.data(), dmu_.data(), h_, mu_.data(), B, false); },
                      [&] { head_backward(lv_head, dh2_.data(), dlv_.data(), h_, lv_.data(), B, false); });
        const long n = long(B) * m.enc.out_size();
        T* __restrict a = dh_.data();
        const T* __restrict b = dh2_.data();
        parallel_parts(n, threads_for(double(n), double(kParallelMin), n), 64, [&](long i0, long i1) {
            for (long i = i0; i < i1; ++i) a[i] += b[i];
        });
    }

    // xrep_ (B*K, D): row b*K + k is x[b]
    const T* replicate(const T* x, int B, int K) {
        const long D = m.D;
        if (xrep_.size() < size_t(B) * K * D) xrep_.resize(size_t(B) * K * D);
        for (long r = 0; r < long(B) * K; ++r)
            std::copy(x + (r / K) * D, x + (r / K + 1) * D, xrep_.data() + r * D);
        return xrep_.data();
    }

    Ctx context(bool training, long row_offset = 0) const {
        Ctx ctx;
        ctx.training = training;
        ctx.rng = &m.rng;
        ctx.step = uint64_t(m.opt.step);
        ctx.row_offset = row_offset;
        return ctx;
    }

    // Copies caller data into an aligned buffer (same alignment every run; see Buffer<T>).
    static const T* stage(Buffer<T>& buf, const T* src, long n) {
        std::copy(src, src + n, buf.data());
        return buf.data();
    }
};

}  // namespace vaecpp
