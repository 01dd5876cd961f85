"""Finite-difference checks (float64) of every MLP layer and activation, through the engine's
single-layer harness."""

import numpy as np
import pytest

from vaecpp import _testing
from vaecpp.layers import ACTIVATIONS
from gradcheck import assert_close_grad, numeric_grad


def check_layer(config, in_shape, batch=4, training=False, seed=0):
    h = _testing.LayerHarness(config, list(in_shape), seed)
    rng = np.random.default_rng(seed)
    n_in = int(np.prod(in_shape))
    x = rng.normal(size=(batch, n_in))
    params = h.get_params()
    if params.size:
        params += rng.normal(scale=0.1, size=params.shape)  # non-zero biases too
        h.set_params(params)
    out = h.forward(x, training, 7)
    r = rng.normal(size=out.shape)  # random projection: loss = sum(r * out)
    dinp, dparams = h.backward(x, r, training, 7)
    loss = lambda: float(np.sum(r * h.forward(x, training, 7)))
    assert_close_grad(dinp, numeric_grad(loss, x), what=f"{config} d/dinput")
    if params.size:
        def loss_p():
            h.set_params(params)
            return loss()
        assert_close_grad(dparams, numeric_grad(loss_p, params), what=f"{config} d/dparams")
    return h, x, out


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_with_activation(activation):
    check_layer({"kind": "dense", "units": 5, "activation": activation}, (6,))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_layer(activation):
    _, x, out = check_layer({"kind": "activation", "activation": activation}, (3, 4))
    ref = {
        "linear": x, "relu": np.maximum(x, 0), "leaky_relu": np.where(x > 0, x, 0.2 * x),
        "elu": np.where(x > 0, x, np.expm1(x)), "tanh": np.tanh(x),
        "sigmoid": 1 / (1 + np.exp(-x)), "softplus": np.log1p(np.exp(x)),
    }[activation]
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-15)


def test_dense_forward_is_x_w_plus_b():
    h = _testing.LayerHarness({"kind": "dense", "units": 3}, [4], 1)
    p = h.get_params()
    W, b = p[:12].reshape(4, 3), p[12:]
    x = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_allclose(h.forward(x), x @ W + b, rtol=1e-12)


def test_glorot_uniform_init_range_and_zero_bias():
    h = _testing.LayerHarness({"kind": "dense", "units": 300}, [500], 3)
    p = h.get_params()
    W, b = p[:150000], p[150000:]
    limit = np.sqrt(6 / 800)
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.99 * limit
    assert abs(W.mean()) < 0.01 * limit and np.all(b == 0)
    np.testing.assert_allclose(W.var(), limit ** 2 / 3, rtol=0.02)


def test_dropout_training_gradient_and_rate():
    h, x, out = check_layer({"kind": "dropout", "rate": 0.3}, (50,), batch=40, training=True)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / 0.7, rtol=1e-12)
    assert abs(1 - kept.mean() - 0.3) < 0.05
    # inference: identity
    np.testing.assert_array_equal(h.forward(x, False, 7), x)
    # the mask depends on the step, and is reproducible for the same step
    np.testing.assert_array_equal(h.forward(x, True, 7), out)
    assert not np.array_equal(h.forward(x, True, 8), out)


def test_flatten_and_reshape():
    check_layer({"kind": "flatten"}, (2, 3, 2))
    h, x, out = check_layer({"kind": "reshape", "shape0": 3, "shape1": 4}, (12,))
    assert h.out_shape == [3, 4]
    np.testing.assert_array_equal(out, x)
    with pytest.raises(ValueError, match="cannot reshape"):
        _testing.LayerHarness({"kind": "reshape", "shape0": 5}, [12])


def test_unknown_layer_and_activation_are_value_errors():
    with pytest.raises(ValueError, match="unknown layer kind"):
        _testing.LayerHarness({"kind": "lstm"}, [3])
    with pytest.raises(ValueError, match="unknown activation"):
        _testing.LayerHarness({"kind": "dense", "units": 2, "activation": "swish"}, [3])
