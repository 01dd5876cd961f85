// The training loop, written once for every backend (llm.c's one `main` over forward / backward /
// update): epochs of minibatches in a seeded order, evaluation, whole-data gradients, encoding and
// decoding in chunks, and the importance-sampled log-likelihood. An Engine owns the Model and the
// backend that runs its passes (an Executor); nothing here knows where the tensors live.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "core/fp_mode.hpp"
#include "kernels/iwae.hpp"
#include "kernels/kl.hpp"
#include "model/collective.hpp"
#include "model/executor.hpp"

namespace vaecpp {

template <typename T>
class Engine {
  public:
    using value_type = T;
    // Builds the backend for a model (e.g. a CpuExecutor<T> over it).
    using MakeExecutor = std::function<std::unique_ptr<Executor<T>>(Model<T>&)>;

    Model<T> model;

    Engine(const VaeConfig& c, const MakeExecutor& make) : model(c), exec_(make(model)) {}

    Executor<T>& executor() { return *exec_; }
    long num_params() const { return model.num_params(); }

    // Called between the chunks of every long loop outside training (evaluate, encode, decode,
    // log_likelihood); it may throw to abort the call (the bindings' Ctrl-C check).
    std::function<void()> poll;

    // One epoch of minibatch training over X (N, D). Stops early (returning the sums so far)
    // when progress says so; throws NonFiniteLoss before applying a bad update.
    //
    // With a collective of several ranks (data-parallel training), every rank holds the same X
    // and computes the same order; batch_size is the global batch, of which each rank takes a
    // contiguous share. The ranks' gradients, loss sums and stop/interrupt flags are added up in
    // one all-reduce per step, between backward and the update, so every rank applies the same
    // update and stops after the same batch. The returned sums are the global ones.
    LossSums train_epoch(const T* X, long N, int batch_size, bool shuffle, long epoch,
                         const Progress& progress, const Collective<T>* coll = nullptr) {
        use_threads(model.cfg.threads);
        DenormalScope fp_scope;  // denormals flushed in every thread of this call (core/fp_mode.hpp)
        const std::vector<long> order = epoch_order(model.rng, N, shuffle, epoch);
        const long nb = (N + batch_size - 1) / batch_size;
        const int ranks = coll ? coll->size : 1, rank = coll ? coll->rank : 0;
        const long most = (std::min<long>(batch_size, N) + ranks - 1) / ranks;  // the largest share
        exec_->reserve(int(std::max<long>(most, 1)), model.K());
        exec_->attach(X, N);
        LossSums tot;
        Next next = Next::go_on;  // this rank's word for the ranks at the next all-reduce
        for (long k = 0; k < nb; ++k) {
            const long B = std::min<long>(batch_size, N - k * batch_size);
            const auto [lo, hi] = split_range(B, ranks, rank, 1);
            const Rows rows{int(hi - lo), lo, coll ? B : 0};
            if (rows.B > 0) exec_->gather(order.data() + k * batch_size + lo, rows.B);
            LossSums s;
            if (!step(rows, k, nb, coll, next, s)) break;  // a rank asked to stop before batch k
            tot.add(s);
            // The callback may run inference on this model (encode, decode, save): every buffer
            // the next step reads is refilled by its forward pass.
            next = progress ? progress(k + 1, nb, tot) : Next::go_on;
            if (!coll && next == Next::interrupted) throw Interrupted();
            if (!coll && next == Next::stop) break;
        }
        if (coll) agree(*coll, next);  // a word said after the last batch
        return tot;
    }

    // One optimizer step on a batch X (rows.B, D) given by the caller (streamed data); `batch`
    // only names the batch in a NonFiniteLoss message.
    //
    // With a collective of several ranks, X is this rank's share of a global batch: rows
    // [rows.first, rows.first + rows.B) of its rows.total (rows.B may be 0: an empty share, or a
    // stream that ran dry). The ranks add up their gradients and loss sums as in train_epoch and
    // return the global sums; `next` is this rank's word: Next::interrupted makes every rank
    // throw Interrupted with nothing changed.
    LossSums train_batch(const T* X, const Rows& rows, long batch,
                         const Collective<T>* coll = nullptr, Next next = Next::go_on) {
        use_threads(model.cfg.threads);
        DenormalScope fp_scope;  // denormals flushed in every thread of this call (core/fp_mode.hpp)
        exec_->reserve(std::max(rows.B, 1), model.K());
        if (rows.B > 0) exec_->load(X, rows.B);
        LossSums s;
        if (!step(rows, batch, 0, coll, next, s)) return LossSums();  // a rank said stop
        return s;
    }

    // Loss sums over X (N, D) without training; sample i's noise depends only on (seed, i), where
    // X's rows are samples first, first + 1, ... of the data (first > 0 for streamed batches).
    LossSums evaluate(const T* X, long N, int batch_size, long first = 0) {
        use_threads(model.cfg.threads);
        DenormalScope fp_scope;  // denormals flushed in every thread of this call (core/fp_mode.hpp)
        const int K = model.K();
        LossSums tot;
        for (long start = 0; start < N; start += batch_size) {
            const int B = int(std::min<long>(batch_size, N - start));
            exec_->reserve(B, K);
            exec_->draw_eps(stream_id(Purpose::eval_eps, 0), (first + start) * K, long(B) * K);
            exec_->load(X + start * model.D, B);
            tot.add(exec_->forward(Rows{B}, false, false));
            if (poll) poll();
        }
        return tot;
    }

    // Loss sums and the gradient of the mean loss over all of X (N, D), dropout off, no update.
    // eps (N*K, L) is used as given when not null, else drawn as in evaluate().
    LossSums gradients(const T* X, long N, const T* eps, T* grad_out) {
        use_threads(model.cfg.threads);
        DenormalScope fp_scope;  // denormals flushed in every thread of this call (core/fp_mode.hpp)
        const long R = N * model.K();
        exec_->reserve(int(N), model.K());
        if (eps)
            exec_->set_eps(eps, R);
        else
            exec_->draw_eps(stream_id(Purpose::eval_eps, 0), 0, R);
        exec_->load(X, int(N));
        LossSums s = exec_->forward(Rows{int(N)}, false, true);
        exec_->backward(Rows{int(N)}, false);
        exec_->read_grads(grad_out);
        return s;
    }

    // mu, lv are (N, L): the posterior's parameters.
    void encode(const T* X, long N, T* mu, T* lv) {
        use_threads(model.cfg.threads);
        DenormalScope fp_scope;  // denormals flushed in every thread of this call (core/fp_mode.hpp)
        const long D = model.D, L = model.L;
        for (long start = 0; start < N; start += kChunk) {
            const int B = int(std::min<long>(kChunk, N - start));
            exec_->encode(X + start * D, B, mu + start * L, lv + start * L);
            if (poll) poll();
        }
    }

    // out is (N, D): the likelihood's mean for each latent point of Z (N, L); with raw = true,
    // out is (N, P*D): the decoder's outputs (the likelihood's parameters) themselves.
    void decode(const T* Z, long N, T* out, bool raw = false) {
        use_threads(model.cfg.threads);
        DenormalScope fp_scope;  // denormals flushed in every thread of this call (core/fp_mode.hpp)
        const long L = model.L, width = raw ? long(model.P) * model.D : model.D;
        for (long start = 0; start < N; start += kChunk) {
            const int B = int(std::min<long>(kChunk, N - start));
            exec_->decode(Z + start * L, B, out + start * width, raw);
            if (poll) poll();
        }
    }

    // out (N,): the importance-sampled estimate of log p(x) with k draws per sample (the IWAE
    // bound), accumulated with a running log-sum-exp in double precision. The likelihood is
    // summed over dimensions even where the model trains with reduction="mean". The backend encodes
    // and decodes; the draws, the likelihood and the weights are computed here on the host.
    void log_likelihood(const T* X, long N, long k, T* out) {
        use_threads(model.cfg.threads);
        DenormalScope fp_scope;  // denormals flushed in every thread of this call (core/fp_mode.hpp)
        const int L = model.L, D = model.D, P = model.P;
        const long kc = std::min<long>(k, kChunk * 4);           // draws per decoder pass
        const int bs = int(std::max<long>(1, kChunk * 4 / kc));  // samples per pass
        const uint64_t stream = stream_id(Purpose::iwae, 0);
        Buffer<T> mu(size_t(bs) * L), lv(size_t(bs) * L), eps(size_t(bs) * kc * L),
            z(size_t(bs) * kc * L), p(size_t(bs) * kc * P * D), xr(size_t(bs) * kc * D),
            nll(size_t(bs) * kc);
        std::vector<double> c, m, s;
        for (long start = 0; start < N; start += bs) {
            const int B = int(std::min<long>(bs, N - start));
            const T* x = X + start * D;
            exec_->encode(x, B, mu.data(), lv.data());
            m.assign(B, -INFINITY);
            s.assign(B, 0.0);
            for (long k0 = 0; k0 < k; k0 += kc) {
                const int K = int(std::min<long>(kc, k - k0));
                const long R = long(B) * K;
                for (long r = 0; r < R; ++r) {
                    const long b = r / K, draw = (start + b) * k + k0 + r % K;
                    for (int j = 0; j < L; ++j)
                        eps[r * L + j] = T(model.rng.normal(stream, uint64_t(draw * L + j)));
                    reparam_forward(z.data() + r * L, mu.data() + b * L, lv.data() + b * L,
                                    eps.data() + r * L, L);
                    std::copy(x + b * D, x + (b + 1) * D, xr.data() + r * D);
                }
                exec_->decode(z.data(), int(R), p.data(), true);
                model.nll_rows(nll.data(), xr.data(), p.data(), R, true);  // log p(x|z), summed
                c.resize(R);
                iwae_neg_log_weights(c.data(), nll.data(), z.data(), eps.data(), lv.data(), B, K,
                                     L, model.cfg.prior_std);
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
                if (poll) poll();
            }
            for (int b = 0; b < B; ++b) out[start + b] = T(m[b] + std::log(s[b]) - std::log(double(k)));
        }
    }

  private:
    static constexpr long kChunk = 1024;  // rows per pass of encode / decode
    std::unique_ptr<Executor<T>> exec_;

    // The training step on the batch in the backend: noise from the step number, forward, a
    // finiteness check before anything changes, backward and the update. Batch k of nb (nb = 0:
    // of a stream) in error messages. With a collective, `next` is this rank's word from the last
    // batch; false: a rank asked to stop, and this step changed nothing.
    bool step(const Rows& rows, long k, long nb, const Collective<T>* coll, Next next, LossSums& s) {
        const int K = model.K();
        if (rows.B > 0)
            exec_->draw_eps(stream_id(Purpose::train_eps, uint64_t(model.opt.step)), rows.first * K,
                            long(rows.B) * K);
        exec_->save_state();  // the forward moves BatchNorm's statistics
        if (rows.B > 0) s = exec_->forward(rows, true, true);
        if (!coll) {
            if (!std::isfinite(s.loss)) {
                exec_->restore_state();
                throw NonFiniteLoss(k, nb, s.loss);
            }
            exec_->backward_updating(rows);  // the update of each layer may start here
        } else {
            if (rows.B > 0)
                exec_->backward(rows, true);
            else
                exec_->zero_grads();
            const Next all = all_reduce(*coll, s, next);
            if (all != Next::go_on) {
                exec_->restore_state();
                if (all == Next::interrupted) throw Interrupted();
                return false;
            }
            if (!std::isfinite(s.loss)) {
                exec_->restore_state();
                throw NonFiniteLoss(k, nb, s.loss);
            }
        }
        exec_->update();
        exec_->average_weights();
        return true;
    }

    // ---- data-parallel: one all-reduce per step -------------------------------------------------
    // Buffer: the gradients, then each loss sum as a (hi, lo) pair of T (their sum over ranks
    // keeps about twice T's precision), the row count and the two flag counts.
    static constexpr int kExtra = 3 * 2 + 3;
    Buffer<T> reduce_;

    static void split(T* out, double v) {
        out[0] = T(v);
        out[1] = T(v - double(out[0]));
    }

    // Adds up the gradients and loss sums of all ranks (s becomes the global sums); returns what
    // the ranks said after the last batch: stop if any asked to stop, interrupted if any was.
    Next all_reduce(const Collective<T>& coll, LossSums& s, Next next) {
        const long np = model.num_params();
        reduce_.resize(np + kExtra);
        T* b = reduce_.data();
        exec_->read_grads(b);
        T* e = b + np;
        split(e, s.loss);
        split(e + 2, s.rec);
        split(e + 4, s.kl);
        e[6] = T(s.n);
        e[7] = T(next == Next::stop);
        e[8] = T(next == Next::interrupted);
        coll.sum(b, np + kExtra);
        exec_->write_grads(b);
        s.loss = double(e[0]) + double(e[1]);
        s.rec = double(e[2]) + double(e[3]);
        s.kl = double(e[4]) + double(e[5]);
        s.n = long(e[6]);
        return e[8] > 0 ? Next::interrupted : (e[7] > 0 ? Next::stop : Next::go_on);
    }

    // The ranks' last words of an epoch (said after its last batch).
    void agree(const Collective<T>& coll, Next next) {
        T f[2] = {T(next == Next::stop), T(next == Next::interrupted)};
        coll.sum(f, 2);
        if (f[1] > 0) throw Interrupted();
    }
};

}  // namespace vaecpp
