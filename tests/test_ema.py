"""The weights' moving average (Keras 3's ``use_ema``) against a NumPy version of its rule:
after the update of step t, ``avg = mu avg + (1 - mu) w`` with mu = 0 at the first step; every
``ema_overwrite_frequency`` steps the weights become the average; ``fit`` ends with the weights
set to it (Keras's ``finalize_variable_values``); the average is kept in the model file."""

import numpy as np
import pytest

import vaecpp
from vaecpp import optimizers


def small_vae(dtype="float32", seed=3):
    return vaecpp.VAE(6, latent_dim=2, hidden=(5,), seed=seed, dtype=dtype, threads=1)


def data(n=40, seed=0):
    return np.random.default_rng(seed).random((n, 6))


def params(vae):
    return vae._engine.get_params().copy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make_opt", [
    lambda **k: optimizers.Adam(learning_rate=0.05, **k),
    lambda **k: optimizers.SGD(learning_rate=0.1, momentum=0.9, **k),
], ids=["adam", "sgd-momentum"])
@pytest.mark.parametrize("overwrite", [None, 3])
def test_average_follows_the_numpy_rule(dtype, make_opt, overwrite):
    """Model A averages; twin B (same seed, no average) takes the same steps, its weights set to
    A's average where A's are overwritten, so B's weights are A's raw trajectory."""
    mu = 0.8
    a, b = small_vae(dtype), small_vae(dtype)
    a.compile(make_opt(use_ema=True, ema_momentum=mu, ema_overwrite_frequency=overwrite))
    b.compile(make_opt())
    x = data().astype(dtype)
    rtol = 2e-6 if dtype == "float32" else 1e-13
    avg = None
    for t in range(1, 10):
        a.train_on_batch(x)
        b.train_on_batch(x)
        w = params(b)  # the weights after update t, before any overwrite
        avg = w.copy() if t == 1 else (mu * avg + (1 - mu) * w).astype(dtype)
        state = a.get_optimizer_state()
        assert state["step"] == t
        np.testing.assert_allclose(state["ema"], avg, rtol=rtol, atol=rtol * 1e-3)
        if overwrite and t % overwrite == 0:
            np.testing.assert_array_equal(params(a), state["ema"])
            b._engine.set_params(state["ema"])  # B goes on from A's overwritten weights
            avg = state["ema"].copy()
        else:
            np.testing.assert_array_equal(params(a), w)
        if t > 1:
            assert not np.array_equal(state["ema"], w)  # the rule did something


def test_fit_ends_with_the_averaged_weights():
    vae = small_vae()
    vae.compile(optimizers.Adam(learning_rate=0.05, use_ema=True, ema_momentum=0.9))
    seen = {}

    class Capture(vaecpp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen["raw"] = params(vae)
            seen["ema"] = vae.get_optimizer_state()["ema"].copy()

    x = data()
    vae.fit(x, epochs=3, batch_size=8, verbose=0, callbacks=[Capture()])
    assert not np.array_equal(seen["raw"], seen["ema"])
    np.testing.assert_array_equal(params(vae), seen["ema"])
    # evaluate (and save, below) then see the averaged weights, as in Keras
    twin = small_vae()
    twin._engine.set_params(seen["ema"])
    assert vae.evaluate(x, verbose=0) == twin.evaluate(x, verbose=0)


def test_without_use_ema_there_is_no_average():
    vae = small_vae()
    vae.compile("adam")
    vae.fit(data(), epochs=1, batch_size=8, verbose=0)
    assert vae.get_optimizer_state()["ema"].size == 0
    assert vae.optimizer.get_config()["use_ema"] is False
    assert "use_ema" not in repr(vae.optimizer)


def test_average_is_saved_and_training_goes_on_identically(tmp_path):
    x = data()

    def make():
        vae = small_vae()
        vae.compile(optimizers.Adam(learning_rate=0.05, use_ema=True, ema_momentum=0.9,
                                    ema_overwrite_frequency=7))
        return vae

    a = make()
    a.fit(x, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "m.vaecpp"
    a.save(path)
    b = vaecpp.load_model(path)
    assert b.optimizer.get_config() == a.optimizer.get_config()
    np.testing.assert_array_equal(b.get_optimizer_state()["ema"], a.get_optimizer_state()["ema"])
    a.fit(x, epochs=2, batch_size=8, verbose=0)
    b.fit(x, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(params(b), params(a))
    np.testing.assert_array_equal(b.get_optimizer_state()["ema"], a.get_optimizer_state()["ema"])


def test_an_average_missing_from_the_state_starts_at_the_weights():
    vae = small_vae()
    vae.compile(optimizers.Adam(use_ema=True))
    state = vae.get_optimizer_state()
    del state["ema"]
    vae.set_optimizer_state(state)
    np.testing.assert_array_equal(vae.get_optimizer_state()["ema"], params(vae))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"use_ema": "yes"}, TypeError, "use_ema"),
    ({"use_ema": True, "ema_momentum": 1.5}, ValueError, "ema_momentum"),
    ({"use_ema": True, "ema_momentum": float("nan")}, ValueError, "ema_momentum"),
    ({"use_ema": True, "ema_overwrite_frequency": 0}, ValueError, "ema_overwrite_frequency"),
    ({"use_ema": True, "ema_overwrite_frequency": 2.5}, TypeError, "ema_overwrite_frequency"),
])
def test_bad_options_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        optimizers.Adam(**kwargs)


def test_config_round_trip():
    opt = optimizers.RMSprop(use_ema=True, ema_momentum=0.95, ema_overwrite_frequency=10)
    again = optimizers.Optimizer.from_config(opt.get_config())
    assert again.get_config() == opt.get_config()
    assert "ema_momentum=0.95" in repr(again)


class _Record(vaecpp.callbacks.Callback):
    """Keeps, at each epoch end, the model's weights and the optimizer's average."""

    def __init__(self):
        self.weights, self.avg = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(params(self.model))
        self.avg.append(self.model.get_optimizer_state()["ema"].copy())


def _evaluate_with(weights, x_val):
    """The validation loss of a model holding `weights` (the twins' seed: the same noise)."""
    judge = small_vae()
    judge.compile(optimizers.Adam(learning_rate=0.05))
    judge._engine.set_params(weights)
    return judge.evaluate(x_val, batch_size=16, verbose=0)


@pytest.mark.parametrize("swap_on_epoch", [False, True])
def test_swap_ema_weights_validates_with_the_average(swap_on_epoch):
    """With SwapEMAWeights each epoch's val_loss is that of the optimizer's average at that point
    (a twin trained without the callback gives the average; a third model evaluates it), while
    training steps the raw weights as without it: the twins' losses and final weights are the
    same bits. With swap_on_epoch the callbacks after it see the averaged weights at epoch end,
    and the average the raw ones (Keras swaps in place); without it, the raw weights."""
    x, x_val = data(64).astype("float32"), data(32, seed=1).astype("float32")
    a, b = small_vae(), small_vae()
    for m in (a, b):
        m.compile(optimizers.Adam(learning_rate=0.05, use_ema=True, ema_momentum=0.8))
    seen_a, seen_b = _Record(), _Record()
    ha = a.fit(x, batch_size=16, epochs=3, validation_data=x_val, verbose=0,
               callbacks=[vaecpp.callbacks.SwapEMAWeights(swap_on_epoch), seen_a])
    hb = b.fit(x, batch_size=16, epochs=3, validation_data=x_val, verbose=0, callbacks=[seen_b])
    assert ha.history["loss"] == hb.history["loss"]
    np.testing.assert_array_equal(params(a), params(b))  # fit ended with the average in both
    for epoch in range(3):
        raw, avg = seen_b.weights[epoch], seen_b.avg[epoch]
        assert not np.array_equal(raw, avg)
        assert ha.history["val_loss"][epoch] == pytest.approx(_evaluate_with(avg, x_val), rel=1e-6)
        assert hb.history["val_loss"][epoch] == pytest.approx(_evaluate_with(raw, x_val), rel=1e-6)
        if swap_on_epoch:
            np.testing.assert_array_equal(seen_a.weights[epoch], avg)
            np.testing.assert_array_equal(seen_a.avg[epoch], raw)
        else:
            np.testing.assert_array_equal(seen_a.weights[epoch], raw)
            np.testing.assert_array_equal(seen_a.avg[epoch], avg)


def test_swap_ema_weights_leaves_the_average_when_training_stops_early():
    """An early stop (here by a callback after SwapEMAWeights, with swap_on_epoch) still ends fit
    with the weights set to the average of the raw trajectory, as without the callback."""
    x, x_val = data(64).astype("float32"), data(32, seed=1).astype("float32")
    a, b = small_vae(), small_vae()
    for m in (a, b):
        m.compile(optimizers.Adam(learning_rate=0.05, use_ema=True, ema_momentum=0.8))

    def stop_after_two(epoch, logs):
        if epoch == 1:
            a.stop_training = True
    a.fit(x, batch_size=16, epochs=5, validation_data=x_val, verbose=0,
          callbacks=[vaecpp.callbacks.SwapEMAWeights(swap_on_epoch=True),
                     vaecpp.callbacks.LambdaCallback(on_epoch_end=stop_after_two)])
    b.fit(x, batch_size=16, epochs=2, validation_data=x_val, verbose=0)
    np.testing.assert_array_equal(params(a), params(b))
    np.testing.assert_array_equal(a.get_optimizer_state()["ema"], b.get_optimizer_state()["ema"])


def test_swap_ema_weights_needs_use_ema():
    vae = small_vae()
    vae.compile(optimizers.Adam(learning_rate=0.05))
    with pytest.raises(ValueError, match="use_ema=True"):
        vae.fit(data(), epochs=1, verbose=0, callbacks=[vaecpp.callbacks.SwapEMAWeights()])
    with pytest.raises(TypeError, match="swap_on_epoch"):
        vaecpp.callbacks.SwapEMAWeights(swap_on_epoch="yes")
