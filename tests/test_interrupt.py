"""Ctrl-C during fit: KeyboardInterrupt reaches the user between batches, the model stays usable
and the epochs finished so far stay in ``vae.history``."""

import os
import signal
import threading

import numpy as np
import pytest

import vaecpp


@pytest.fixture
def big():
    return np.random.default_rng(0).random((20000, 64)).astype(np.float32)


def test_sigint_during_an_epoch(big):
    vae = vaecpp.VAE(64, hidden=(256, 256), seed=0, threads=1)
    vae.fit(big[:500], epochs=1, verbose=0)
    before = vae.get_weights()
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            vae.fit(big, epochs=1000, batch_size=8, verbose=0)
    finally:
        timer.cancel()
    assert vae.history.epoch[0] == 0  # the first fit's epoch is kept
    after = vae.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # it did train
    assert all(np.isfinite(w).all() for w in after)
    h = vae.fit(big[:500], epochs=1, verbose=0)  # still usable
    assert np.isfinite(h.history["loss"][0])
    assert vae.encode(big[:3]).shape == (3, 2)


def test_keyboard_interrupt_from_a_callback_keeps_history(big):
    vae = vaecpp.VAE(64, hidden=(8,), seed=0)

    def stop(epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        vae.fit(big[:200], epochs=10, verbose=0,
                callbacks=[vaecpp.callbacks.LambdaCallback(on_epoch_end=stop)])
    assert vae.history.epoch == [0, 1, 2]  # epoch 2 finished before the callback raised
    vae.fit(big[:200], epochs=1, verbose=0)
