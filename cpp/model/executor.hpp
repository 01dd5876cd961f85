// What the training loop (model/engine.hpp) asks of a backend: the model's passes over one batch
// held in the backend's own memory. The CPU backend (backends/cpu_executor.hpp) runs them on the
// host with the layers' kernels; the CUDA backend (backends/cuda/cuda_executor.hpp) on a device.
// The loop itself — batch order, noise streams, loss checks, chunking, the importance-sampled
// likelihood — is written once, in the engine, for both.
#pragma once

#include <cstdint>

#include "model/model.hpp"

namespace vaecpp {

template <typename T>
struct Executor {
    virtual ~Executor() = default;

    // Workspace for B samples with K latent draws each (the decoder sees B*K rows).
    virtual void reserve(int B, int K) = 0;

    // ---- the batch x (B, D) ------------------------------------------------------------------
    // X (N, D) is the data set the following gather() calls read (valid until the call returns;
    // a device backend may copy it once).
    virtual void attach(const T* X, long N) = 0;
    // x = the rows rows[0..B) of the attached data set.
    virtual void gather(const long* rows, int B) = 0;
    // x = X (B, D) given by the caller.
    virtual void load(const T* X, int B) = 0;

    // ---- the noise eps (rows, L) ---------------------------------------------------------------
    // eps[r, j] = epsilon_std * N(0, 1) draw number (first + r) * L + j of the stream.
    virtual void draw_eps(uint64_t stream, long first, long rows) = 0;
    virtual void set_eps(const T* eps, long rows) = 0;

    // ---- the passes ----------------------------------------------------------------------------
    // The objective over x with eps: returns the loss sums of its rows.B rows. With want_grad the
    // backend may compute the likelihood's gradient in the same pass, for the backward() that
    // follows.
    virtual LossSums forward(const Rows& rows, bool training, bool want_grad) = 0;
    // Sets the model's gradients to those of the loss of the last forward's rows, divided by
    // rows.mean_over() (every parameter is written; nothing is accumulated across calls).
    virtual void backward(const Rows& rows, bool training) = 0;
    // Gradients of nothing: zeros (a rank without rows in a global batch).
    virtual void zero_grads() = 0;
    // One optimizer step with the gradients of the last backward (clipping included).
    virtual void update() = 0;
    // After update(): the weights' moving average, where the optimizer keeps one (use_ema).
    virtual void average_weights() = 0;
    // backward(rows, true) of a training step whose gradients need no all-reduce, after which
    // update() follows. A backend may apply the step to each layer's weights as soon as their
    // gradient is complete, while it is in cache; update() then does what is left (nothing).
    virtual void backward_updating(const Rows& rows) { backward(rows, true); }
    // grads (num_params,) of the last backward, to the host, and back (the ranks' sum).
    virtual void read_grads(T* out) = 0;
    virtual void write_grads(const T* in) = 0;
    // The non-trainable state (BatchNorm's moving statistics) before a training forward, and
    // back when that forward's loss is not finite.
    virtual void save_state() = 0;
    virtual void restore_state() = 0;

    // ---- inference over caller rows, one pass each --------------------------------------------
    // mu, lv (B, L): the posterior's parameters of X (B, D).
    virtual void encode(const T* X, int B, T* mu, T* lv) = 0;
    // out (B, D): the likelihood's mean at Z (B, L); with raw, out (B, P*D): the decoder's outputs.
    virtual void decode(const T* Z, int B, T* out, bool raw) = 0;

    // ---- the model's host buffers ---------------------------------------------------------------
    // A device backend copies parameters and optimizer moments to the Model before they are read
    // (pull) and back after they were changed (push); no-ops where the Model's buffers are the
    // ones the passes use.
    virtual void pull() {}
    virtual void push() {}
};

}  // namespace vaecpp
