"""Every public call validates its input and raises ValueError / TypeError naming the problem."""

import numpy as np
import pytest

import vaecpp


@pytest.fixture
def vae():
    return vaecpp.VAE((4, 5), latent_dim=2, hidden=(8,), seed=0)


@pytest.fixture
def x():
    return np.random.default_rng(0).random((10, 4, 5))


def test_wrong_feature_count(vae):
    with pytest.raises(ValueError, match=r"shape \(n, 4, 5\) or \(n, 20\)"):
        vae.fit(np.zeros((10, 21)), verbose=0)
    with pytest.raises(ValueError, match="shape"):
        vae.encode(np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        vae.decode(np.zeros((3, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf(vae, x, bad):
    x[3, 1, 2] = bad
    for call in (lambda: vae.fit(x, verbose=0), lambda: vae.evaluate(x), lambda: vae.encode(x),
                 lambda: vae.gradients(x)):
        with pytest.raises(ValueError, match="NaN or inf"):
            call()
    with pytest.raises(ValueError, match="NaN or inf"):
        vae.decode(np.array([[0.0, bad]]))


def test_bernoulli_support_and_uint8_hint(vae, x):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        vae.fit(x * 2 - 0.5, verbose=0)
    pixels = (x * 255).astype(np.uint8)
    with pytest.raises(ValueError, match="divide by 255"):
        vae.fit(pixels, verbose=0)
    vae.fit((x > 0.5).astype(np.uint8), verbose=0, epochs=1)  # integer 0/1 data is fine
    gauss = vaecpp.VAE(20, likelihood="mse", hidden=(4,), seed=0)
    gauss.fit(x.reshape(10, 20) * 10 - 3, verbose=0)  # no support limit for mse


def test_non_numeric_arrays(vae):
    with pytest.raises(TypeError, match="real numbers"):
        vae.fit(np.array([["a"] * 20] * 3), verbose=0)
    with pytest.raises(TypeError, match="real numbers"):
        vae.encode(np.zeros((2, 20), dtype=complex))
    with pytest.raises(TypeError, match="NumPy array"):
        vae.fit("images", verbose=0)
    with pytest.raises(ValueError, match="empty"):
        vae.fit(np.zeros((0, 20)), verbose=0)


def test_fit_arguments(vae, x):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        vae.fit(x, batch_size=0, verbose=0)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        vae.fit(x, batch_size=2.5, verbose=0)
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        vae.fit(x, epochs=-1, verbose=0)
    with pytest.raises(ValueError, match="verbose"):
        vae.fit(x, verbose=3)
    with pytest.raises(ValueError, match="validation_split"):
        vae.fit(x, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        vae.evaluate(x, batch_size=0)
    assert vae.fit(x, epochs=0, verbose=0).epoch == []


def test_constructor_arguments():
    with pytest.raises(ValueError, match="unknown likelihood"):
        vaecpp.VAE(10, likelihood="poisson")
    with pytest.raises(ValueError, match="unknown activation"):
        vaecpp.VAE(10, activation="swish")
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        vaecpp.VAE(10, latent_dim=0)
    with pytest.raises(ValueError, match="dtype"):
        vaecpp.VAE(10, dtype="float16")
    with pytest.raises(ValueError, match="input_shape dimension must be >= 1"):
        vaecpp.VAE((28, 0))
    with pytest.raises(TypeError, match="input_shape"):
        vaecpp.VAE("28x28")
    with pytest.raises(ValueError, match="dropout"):
        vaecpp.VAE(10, dropout=1.0)
    with pytest.raises(ValueError, match="beta"):
        vaecpp.VAE(10, beta=-1)
    with pytest.raises(ValueError, match="output_activation"):
        vaecpp.VAE(10, likelihood="bernoulli", output_activation="tanh")
    with pytest.raises(TypeError, match="unexpected keyword"):
        vaecpp.VAE(10, hiden=(3,))
    with pytest.raises(ValueError, match="threads"):
        vaecpp.VAE(10, threads=0)
    with pytest.raises(ValueError, match="decoder's output"):
        vaecpp.VAE(10, decoder=[vaecpp.layers.Dense(7)])


def test_sizes_and_stacks_in_the_wrong_form_say_the_form_asked_for():
    with pytest.raises(TypeError, match=r"hidden must be a list or tuple \(e\.g\. hidden=\[\.\.\.\]"):
        vaecpp.VAE(16, hidden=8)
    with pytest.raises(TypeError, match="decoder_hidden must be a list or tuple"):
        vaecpp.VAE(16, hidden=(8,), decoder_hidden=4)
    with pytest.raises(TypeError, match="encoder must be a list of vaecpp.layers.Layer objects"):
        vaecpp.VAE(16, encoder=vaecpp.layers.Dense(4))
    with pytest.raises(TypeError, match="monitor must be the name of a logged metric"):
        vaecpp.callbacks.EarlyStopping(monitor=None)
    assert vaecpp.VAE(16, hidden=np.array([8, 4]), seed=0).count_params() == \
        vaecpp.VAE(16, hidden=[8, 4], seed=0).count_params()  # any sequence of widths


@pytest.mark.parametrize("bad, error, message", [
    (float("nan"), ValueError, "learning_rate must be finite"),
    (-0.5, ValueError, r"learning_rate must be > 0\.0"),
    (1e-50, ValueError, "learning_rate 1e-50 is 0 as float32"),
    ("fast", TypeError, "learning_rate must be a number"),
])
def test_a_learning_rate_set_after_compile_is_checked_by_every_training_call(vae, x, bad, error,
                                                                           message):
    """fit and train_on_batch read optimizer.learning_rate (a schedule or the user may have set
    it) through one check: train_on_batch took a NaN rate and left every weight NaN."""
    vae.compile("adam")
    before = vae.get_weights()
    vae.optimizer.learning_rate = bad
    for call in (lambda: vae.train_on_batch(x), lambda: vae.fit(x, verbose=0)):
        with pytest.raises(error, match=message):
            call()
    for a, b in zip(before, vae.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_compile_unknown_optimizer(vae):
    with pytest.raises(ValueError, match="unknown optimizer"):
        vae.compile("adamm")


def test_set_weights_count_and_shapes(vae):
    w = vae.get_weights()
    with pytest.raises(ValueError, match="expects 10 arrays"):
        vae.set_weights(w[:-1])
    w[0] = w[0].T
    with pytest.raises(ValueError, match=r"dense/kernel must have shape \(20, 8\)"):
        vae.set_weights(w)
    w[0] = np.full((20, 8), np.nan)
    with pytest.raises(ValueError, match="finite"):
        vae.set_weights(w)


def test_gradients_eps_shape(vae, x):
    with pytest.raises(ValueError, match="one row per sample"):
        vae.gradients(x, eps=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        vae.gradients(x, eps=np.zeros((10, 3)))


def test_private_engine_rejects_bad_shapes_without_crashing():
    vae = vaecpp.VAE(6, hidden=(4,), seed=0)
    with pytest.raises(ValueError):
        vae._engine.train_epoch(np.zeros((3, 5), np.float32), 2, True, 0, None)
    with pytest.raises(ValueError):
        vae._engine.decode(np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError):
        vae._engine.set_params(np.zeros(3, np.float32))
