"""A model is used by one call at a time: a second call from another thread, or from inside a pass,
gets a clear RuntimeError instead of corrupting the engine's workspace; inference from a callback
between batches keeps working."""

import threading

import numpy as np
import pytest

import vaecpp
from vaecpp import callbacks as cb


def data(n=2000, d=20, seed=0):
    return (np.random.default_rng(seed).random((n, d)) > 0.5).astype(np.float32)


def test_fit_from_a_second_thread_is_refused_while_the_first_runs():
    x = data()
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=0, threads=1)
    vae.compile("adam")
    started, release = threading.Event(), threading.Event()
    errors = []

    class Hold(cb.Callback):
        # keeps the first fit inside its epoch (between batches) until the main thread has tried
        def on_train_batch_end(self, step, logs=None):
            started.set()
            release.wait(30)

    def first():
        try:
            vae.fit(x, batch_size=100, epochs=1, verbose=0, callbacks=[Hold()])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    assert started.wait(30)
    with pytest.raises(RuntimeError, match="busy.*another thread"):
        vae.fit(x, batch_size=100, epochs=1, verbose=0)
    with pytest.raises(RuntimeError, match="busy"):
        vae.encode(x[:5])
    release.set()
    t.join(60)
    assert not errors
    # the model is usable again once the first call returned, and its weights are finite
    assert np.isfinite(vae.encode(x[:5])).all()
    assert all(np.isfinite(w).all() for w in vae.get_weights())


def test_other_models_run_in_parallel_threads():
    x = data(400)
    models = [vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=s, threads=1) for s in range(3)]
    out = [None] * 3

    def work(i):
        out[i] = models[i].encode(x)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for i in range(3):
        np.testing.assert_array_equal(out[i], models[i].encode(x))


class ReentrantLikelihood(vaecpp.Likelihood):
    """A Bernoulli likelihood that calls back into its own model from inside a pass."""

    params_per_dim = 1

    def __init__(self):
        self.model = None

    def nll(self, x, logits):
        if self.model is not None:
            self.model.decode(np.zeros((1, 2), np.float32))
        return np.sum(np.logaddexp(0, logits) - x * logits, axis=1)

    def grad(self, x, logits):
        return 1 / (1 + np.exp(-logits)) - x

    def mean(self, logits):
        return 1 / (1 + np.exp(-logits))


def test_custom_likelihood_calling_its_model_gets_a_clear_error():
    lik = ReentrantLikelihood()
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(8,), likelihood=lik, seed=0)
    vae.compile("adam")
    lik.model = vae
    with pytest.raises(RuntimeError, match="middle of a pass"):
        vae.fit(data(200), batch_size=50, epochs=1, verbose=0)
    lik.model = None  # the model is free again and trains
    vae.fit(data(200), batch_size=50, epochs=1, verbose=0)


class KeepingLikelihood(ReentrantLikelihood):
    """Keeps every array the engine passes it."""

    def __init__(self):
        super().__init__()
        self.kept = []

    def nll(self, x, logits):
        self.kept.append((x, logits, x.copy(), logits.copy()))
        return super().nll(x, logits)


def test_custom_likelihood_may_keep_its_arrays():
    lik = KeepingLikelihood()
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(8,), likelihood=lik, seed=0)
    vae.compile("adam")
    vae.fit(data(300), batch_size=50, epochs=2, verbose=0)
    vae.encode(data(5000))  # reuses and grows the engine's workspace
    assert len(lik.kept) >= 12
    for x, logits, x0, l0 in lik.kept:  # what it kept was never overwritten
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(logits, l0)


def test_callbacks_between_batches_may_run_inference_but_not_train():
    x = data(600)
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(8,), seed=0, threads=1)
    vae.compile("adam")
    seen, refused = [], []

    class Peek(cb.Callback):
        def on_train_batch_end(self, step, logs=None):
            seen.append(vae.decode(np.zeros((2, 2), np.float32)))
            try:
                vae.fit(x[:50], batch_size=50, epochs=1, verbose=0)
            except RuntimeError as e:
                refused.append(str(e))

    vae.fit(x, batch_size=50, epochs=1, verbose=0, callbacks=[Peek()])
    assert seen and all(np.isfinite(s).all() for s in seen)
    assert refused and all("train inside a callback is not allowed" in r for r in refused)
