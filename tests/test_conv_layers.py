"""Conv2D, Conv2DTranspose, MaxPool2D and BatchNorm: shapes and errors, forward results against
NumPy (and torch when installed) references written here, the fast kernels against the engine's
naive direct loops, and every gradient against central finite differences (float64)."""

import itertools

import numpy as np
import pytest

from vaecpp import _core, _testing
from vaecpp import layers as L

H_EPS = 1e-5   # finite-difference step
TOL = 1e-6     # relative error of an analytic gradient


def harness(layer, in_shape, seed=0, naive=False, chunk_rows=None):
    cfg = layer.config() if isinstance(layer, L.Layer) else dict(layer)
    if naive:
        cfg["naive"] = 1
    if chunk_rows is not None:
        cfg["chunk_rows"] = chunk_rows
    return _testing.LayerHarness(cfg, list(in_shape), seed)


def randomise(h, rng, scale=0.5):
    """Random weights (and states, kept positive where they are variances)."""
    h.set_params(rng.normal(0, scale, h.get_params().size))
    if h.get_state().size:
        h.set_state(rng.uniform(0.5, 1.5, h.get_state().size))


def rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)


def fd_check(h, x, training=False, rng=None):
    """Analytic (dinp, dparams) of loss = sum(R * forward(x)) against central differences."""
    rng = rng or np.random.default_rng(1)
    R = rng.normal(size=(x.shape[0], int(np.prod(h.out_shape))))
    dinp, dparams = h.backward(x, R.copy(), training)

    def loss():
        return float(np.sum(R * h.forward(x, training)))

    num_x = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + H_EPS
        up = loss()
        x[i] = old - H_EPS
        num_x[i] = (up - loss()) / (2 * H_EPS)
        x[i] = old
    assert rel_err(dinp, num_x) < TOL

    p = h.get_params()
    num_p = np.zeros_like(p)
    for i in range(p.size):
        q = p.copy()
        q[i] += H_EPS
        h.set_params(q)
        up = loss()
        q[i] -= 2 * H_EPS
        h.set_params(q)
        num_p[i] = (up - loss()) / (2 * H_EPS)
    h.set_params(p)
    if p.size:
        assert rel_err(dparams, num_p) < TOL
    return dinp, dparams


# ---- NumPy references: direct loops, TensorFlow padding -------------------------------------

def tf_dim(n, k, s, padding):
    """(output size, pad before, pad after) of TensorFlow's convolution geometry."""
    if padding == "valid":
        return (n - k) // s + 1, 0, 0
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def np_conv2d(x, K, bias, strides, padding):
    B, H, W, _ = x.shape
    KH, KW, _, F = K.shape
    (OH, pt, _), (OW, pl, _) = tf_dim(H, KH, strides[0], padding), tf_dim(W, KW, strides[1], padding)
    out = np.zeros((B, OH, OW, F)) + bias
    for b, oh, ow, kh, kw in itertools.product(range(B), range(OH), range(OW), range(KH), range(KW)):
        ih, iw = oh * strides[0] - pt + kh, ow * strides[1] - pl + kw
        if 0 <= ih < H and 0 <= iw < W:
            out[b, oh, ow] += x[b, ih, iw] @ K[kh, kw]
    return out


def np_conv2d_transpose(x, K, bias, strides, padding):
    """Scatter every input pixel through the kernel, then crop like Keras/TF."""
    B, H, W, _ = x.shape
    KH, KW, F, _ = K.shape
    sh, sw = strides
    full = np.zeros((B, (H - 1) * sh + KH + sh, (W - 1) * sw + KW + sw, F))
    for i, j, kh, kw in itertools.product(range(H), range(W), range(KH), range(KW)):
        full[:, i * sh + kh, j * sw + kw] += x[:, i, j] @ K[kh, kw].T
    if padding == "valid":
        OH, OW, top, left = H * sh + max(KH - sh, 0), W * sw + max(KW - sw, 0), 0, 0
    else:
        OH, OW, top, left = H * sh, W * sw, max(KH - sh, 0) // 2, max(KW - sw, 0) // 2
    return full[:, top:top + OH, left:left + OW] + bias


def np_maxpool(x, pool, strides, padding):
    B, H, W, C = x.shape
    (OH, pt, _), (OW, pl, _) = tf_dim(H, pool[0], strides[0], padding), tf_dim(W, pool[1], strides[1], padding)
    out = np.full((B, OH, OW, C), -np.inf)
    for oh, ow, kh, kw in itertools.product(range(OH), range(OW), range(pool[0]), range(pool[1])):
        ih, iw = oh * strides[0] - pt + kh, ow * strides[1] - pl + kw
        if 0 <= ih < H and 0 <= iw < W:
            out[:, oh, ow] = np.maximum(out[:, oh, ow], x[:, ih, iw])
    return out


def conv_weights(h):
    """(kernel, bias) as Keras shapes them, from the harness's flat parameters."""
    (_, _, _, kshape), (_, _, _, bshape) = h.weight_info()
    p = h.get_params()
    n = int(np.prod(kshape))
    return p[:n].reshape(kshape), p[n:].reshape(bshape)


CONV_CASES = [
    # (in_shape, filters, kernel, strides, padding)
    ((7, 5, 2), 3, 3, 1, "valid"),
    ((7, 5, 2), 3, 3, 2, "valid"),
    ((7, 5, 2), 3, 3, 1, "same"),
    ((7, 5, 2), 3, 3, 2, "same"),
    ((7, 5, 2), 2, 4, 1, "valid"),
    ((7, 5, 2), 2, 4, 2, "same"),
    ((7, 5, 3), 2, 5, 2, "valid"),
    ((7, 5, 3), 2, 5, 1, "same"),
    ((6, 6, 1), 4, (2, 3), (2, 1), "same"),
    ((5, 4, 2), 3, 1, 2, "valid"),
]
CONV_IDS = [f"{s[0]}x{s[1]}x{s[2]}-f{f}-k{k}-s{st}-{p}" for s, f, k, st, p in CONV_CASES]


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def transpose_in_shape(in_shape):
    """Smaller inputs for the upsampling layer keep the finite differences quick."""
    return (max(in_shape[0] // 2, 2), max(in_shape[1] // 2, 2), in_shape[2])


# ---- shapes, initialisation, errors ---------------------------------------------------------

@pytest.mark.parametrize("in_shape,filters,k,s,padding", CONV_CASES, ids=CONV_IDS)
def test_conv2d_output_shape_and_weights(in_shape, filters, k, s, padding):
    h = harness(L.Conv2D(filters, k, s, padding), in_shape)
    (kh, kw), (sh, sw) = pair(k), pair(s)
    oh, ow = tf_dim(in_shape[0], kh, sh, padding)[0], tf_dim(in_shape[1], kw, sw, padding)[0]
    assert h.out_shape == [oh, ow, filters]
    assert [(n, s) for _, _, n, s in h.weight_info()] == [("kernel", (kh, kw, in_shape[2], filters)),
                                                       ("bias", (filters,))]


@pytest.mark.parametrize("in_shape,filters,k,s,padding", CONV_CASES, ids=CONV_IDS)
def test_conv2d_transpose_output_shape_and_weights(in_shape, filters, k, s, padding):
    h = harness(L.Conv2DTranspose(filters, k, s, padding), in_shape)
    (kh, kw), (sh, sw) = pair(k), pair(s)
    if padding == "same":
        expect = [in_shape[0] * sh, in_shape[1] * sw, filters]
    else:
        expect = [in_shape[0] * sh + max(kh - sh, 0), in_shape[1] * sw + max(kw - sw, 0), filters]
    assert h.out_shape == expect
    assert [(n, s) for _, _, n, s in h.weight_info()] == [("kernel", (kh, kw, filters, in_shape[2])),
                                                       ("bias", (filters,))]


@pytest.mark.parametrize("cls", [L.Conv2D, L.Conv2DTranspose])
def test_conv_glorot_uniform_init(cls):
    h = harness(cls(8, 3), (9, 9, 4), seed=3)
    kernel, bias = conv_weights(h)
    # Keras fans for conv kernels: kh * kw * (channels in / out of the kernel's last two axes)
    limit = np.sqrt(6.0 / (9 * kernel.shape[2] + 9 * kernel.shape[3]))
    assert np.all(np.abs(kernel) <= limit) and np.max(np.abs(kernel)) > 0.9 * limit
    assert abs(np.mean(kernel)) < 0.1 * limit
    assert np.all(bias == 0)
    assert not np.array_equal(kernel, conv_weights(harness(cls(8, 3), (9, 9, 4), seed=4))[0])


def test_batchnorm_init_and_arrays():
    h = harness(L.BatchNorm(), (4, 3, 5))
    assert h.out_shape == [4, 3, 5]
    assert [(n, s) for _, _, n, s in h.weight_info()] == [("gamma", (5,)), ("beta", (5,))]
    assert [(n, s) for _, _, n, s in h.state_info()] == [("moving_mean", (5,)), ("moving_variance", (5,))]
    np.testing.assert_array_equal(h.get_params(), [1] * 5 + [0] * 5)
    np.testing.assert_array_equal(h.get_state(), [0] * 5 + [1] * 5)


@pytest.mark.parametrize("pool,strides,padding,expect", [
    (2, None, "valid", [3, 2, 3]), (3, None, "valid", [2, 1, 3]), (2, 1, "valid", [6, 4, 3]),
    (3, 2, "same", [4, 3, 3]), (2, None, "same", [4, 3, 3]), ((3, 2), (2, 1), "valid", [3, 4, 3]),
])
def test_maxpool_output_shape(pool, strides, padding, expect):
    h = harness(L.MaxPool2D(pool, strides, padding), (7, 5, 3))
    assert h.out_shape == expect
    assert h.weight_info() == [] and h.state_info() == []


@pytest.mark.parametrize("cfg,in_shape,match", [
    ({"kind": "conv2d", "filters": 2, "kernel_size": 3}, [784], "3-D"),
    ({"kind": "conv2d", "filters": 2, "kernel_size": 3}, [4, 4, 2, 1], "3-D"),
    ({"kind": "conv2d_transpose", "filters": 2, "kernel_size": 3}, [16], "3-D"),
    ({"kind": "maxpool2d"}, [10, 3], "3-D"),
    ({"kind": "conv2d", "filters": 2, "kernel_size": 5}, [4, 7, 1], "kernel 5x5 is larger"),
    ({"kind": "conv2d", "filters": 2, "kernel_size": 3, "kernel_size_w": 8}, [9, 7, 1], "larger"),
    ({"kind": "maxpool2d", "pool_size": 3}, [2, 7, 1], "pool 3x3 is larger"),
    ({"kind": "conv2d", "filters": 2, "kernel_size": 3, "padding": "full"}, [8, 8, 1], "padding"),
    ({"kind": "conv2d", "filters": 0, "kernel_size": 3}, [8, 8, 1], "filters"),
    ({"kind": "conv2d", "filters": 2, "kernel_size": 3, "strides": 0}, [8, 8, 1], "strides"),
    ({"kind": "conv2d", "filters": 2}, [8, 8, 1], "kernel_size"),
    ({"kind": "conv2d", "filters": 2, "kernel_size": 3, "activation": "swish"}, [8, 8, 1], "activation"),
    ({"kind": "batchnorm", "momentum": 1.5}, [8], "momentum"),
    ({"kind": "batchnorm", "epsilon": 0.0}, [8], "epsilon"),
])
def test_bad_configurations_raise_value_error(cfg, in_shape, match):
    with pytest.raises(ValueError, match=match):
        _testing.LayerHarness(cfg, in_shape, 0)


def test_kernel_larger_than_input_is_fine_with_same_padding():
    assert harness(L.Conv2D(2, 5, padding="same"), (3, 2, 1)).out_shape == [3, 2, 2]


def test_python_descriptions_validate_and_round_trip():
    conv = L.Conv2D(16, (3, 5), strides=2, padding="SAME", activation="relu", name="c1")
    assert conv.config() == {"kind": "conv2d", "filters": 16, "activation": "relu",
                             "kernel_size": 3, "kernel_size_w": 5, "strides": 2, "strides_w": 2,
                             "padding": "same", "name": "c1"}
    assert L.MaxPool2D(3).config() == {"kind": "maxpool2d", "pool_size": 3, "pool_size_w": 3,
                                       "strides": 3, "strides_w": 3, "padding": "valid"}
    assert L.BatchNormalization is L.BatchNorm and L.MaxPooling2D is L.MaxPool2D
    assert L.BatchNorm(0.9, 1e-5).config() == {"kind": "batchnorm", "momentum": 0.9, "epsilon": 1e-5}
    for layer in (conv, L.Conv2DTranspose(4, 3, 2, "same"), L.MaxPool2D(2, 1, "same"), L.BatchNorm(0.9)):
        again = L.from_config(layer.get_config())
        assert type(again) is type(layer) and again.config() == layer.config()
    for name in ("Conv2D", "Conv2DTranspose", "MaxPool2D", "BatchNorm", "BatchNormalization"):
        assert name in L.__all__
    with pytest.raises(ValueError, match="padding"):
        L.Conv2D(2, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        L.Conv2DTranspose(2, 0)
    with pytest.raises(ValueError, match="kernel_size"):
        L.Conv2D(2, (3, 3, 3))
    with pytest.raises(TypeError):
        L.Conv2D(2.5, 3)
    with pytest.raises(ValueError, match="filters"):
        L.Conv2D(0, 3)
    with pytest.raises(ValueError, match="strides"):
        L.MaxPool2D(2, strides=0)
    with pytest.raises(ValueError, match="activation"):
        L.Conv2D(2, 3, activation="swish")
    with pytest.raises(ValueError, match="momentum"):
        L.BatchNorm(momentum=-0.1)
    with pytest.raises(ValueError, match="epsilon"):
        L.BatchNorm(epsilon=0)


# ---- forward results against the references ------------------------------------------------

@pytest.mark.parametrize("cls,ref", [(L.Conv2D, np_conv2d), (L.Conv2DTranspose, np_conv2d_transpose)],
                         ids=["conv", "transpose"])
@pytest.mark.parametrize("in_shape,filters,k,s,padding", CONV_CASES, ids=CONV_IDS)
def test_conv_forward_matches_numpy(cls, ref, in_shape, filters, k, s, padding):
    rng = np.random.default_rng(0)
    h = harness(cls(filters, k, s, padding), in_shape)
    randomise(h, rng)
    x = rng.normal(size=(3, *in_shape))
    K, b = conv_weights(h)
    out = h.forward(x.reshape(3, -1)).reshape(3, *h.out_shape)
    np.testing.assert_allclose(out, ref(x, K, b, pair(s), padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("cls,ref", [(L.Conv2D, np_conv2d), (L.Conv2DTranspose, np_conv2d_transpose)])
def test_conv_fused_activation(cls, ref, act):
    rng = np.random.default_rng(5)
    h = harness(cls(3, 3, 2, "same", activation=act), (5, 6, 2))
    randomise(h, rng)
    x = rng.normal(size=(2, 5, 6, 2))
    K, b = conv_weights(h)
    a = ref(x, K, b, (2, 2), "same")
    f = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[act]
    np.testing.assert_allclose(h.forward(x.reshape(2, -1)).reshape(a.shape), f(a), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool,strides,padding", [
    (2, None, "valid"), (3, None, "valid"), (2, 1, "valid"), (3, 2, "same"), (2, None, "same"),
    ((3, 2), (2, 1), "valid"),
])
def test_maxpool_forward_matches_numpy(pool, strides, padding):
    x = np.random.default_rng(0).normal(size=(3, 7, 5, 3))
    h = harness(L.MaxPool2D(pool, strides, padding), (7, 5, 3))
    ref = np_maxpool(x, pair(pool), pair(pool if strides is None else strides), padding)
    np.testing.assert_array_equal(h.forward(x.reshape(3, -1)).reshape(ref.shape), ref)


# ---- the fast kernels against the naive direct loops ----------------------------------------

@pytest.mark.parametrize("chunk_rows", [None, 1, 40], ids=["one-chunk", "per-sample", "chunks"])
@pytest.mark.parametrize("cls", [L.Conv2D, L.Conv2DTranspose])
@pytest.mark.parametrize("in_shape,filters,k,s,padding", CONV_CASES, ids=CONV_IDS)
def test_conv_fast_matches_naive(cls, in_shape, filters, k, s, padding, chunk_rows):
    rng = np.random.default_rng(2)
    layer = cls(filters, k, s, padding, activation="tanh")
    fast, naive = harness(layer, in_shape, chunk_rows=chunk_rows), harness(layer, in_shape, naive=True)
    randomise(fast, rng)
    naive.set_params(fast.get_params())
    for B in (9, 2, 9):  # the scratch is reused across batch sizes; 9 = chunks of 2 or 3 and 1
        x = rng.normal(size=(B, int(np.prod(in_shape))))
        dout = rng.normal(size=(B, int(np.prod(fast.out_shape))))
        np.testing.assert_allclose(fast.forward(x), naive.forward(x), rtol=1e-12, atol=1e-12)
        for a, b in zip(fast.backward(x, dout), naive.backward(x, dout)):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("cls", [L.Conv2D, L.Conv2DTranspose])
def test_conv_fast_matches_naive_on_threaded_sizes(cls):
    # large enough for the threaded im2col / col2im loops and for several chunks
    rng = np.random.default_rng(17)
    layer = cls(6, 5, 2, "same", activation="relu")
    fast = harness(layer, (24, 20, 8), chunk_rows=200)
    naive = harness(layer, (24, 20, 8), naive=True)
    randomise(fast, rng)
    naive.set_params(fast.get_params())
    x = rng.normal(size=(7, 24 * 20 * 8))
    dout = rng.normal(size=(7, int(np.prod(fast.out_shape))))
    np.testing.assert_allclose(fast.forward(x), naive.forward(x), rtol=1e-12, atol=1e-12)
    for a, b in zip(fast.backward(x, dout), naive.backward(x, dout)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


# ---- gradients against finite differences ---------------------------------------------------

@pytest.mark.parametrize("naive", [False, True], ids=["fast", "naive"])
@pytest.mark.parametrize("in_shape,filters,k,s,padding", CONV_CASES, ids=CONV_IDS)
def test_conv2d_gradients(in_shape, filters, k, s, padding, naive):
    rng = np.random.default_rng(3)
    h = harness(L.Conv2D(filters, k, s, padding), in_shape, naive=naive)
    randomise(h, rng)
    fd_check(h, rng.normal(size=(2, int(np.prod(in_shape)))))


@pytest.mark.parametrize("naive", [False, True], ids=["fast", "naive"])
@pytest.mark.parametrize("in_shape,filters,k,s,padding", CONV_CASES, ids=CONV_IDS)
def test_conv2d_transpose_gradients(in_shape, filters, k, s, padding, naive):
    rng = np.random.default_rng(4)
    in_shape = transpose_in_shape(in_shape)
    h = harness(L.Conv2DTranspose(filters, k, s, padding), in_shape, naive=naive)
    randomise(h, rng)
    fd_check(h, rng.normal(size=(2, int(np.prod(in_shape)))))


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "elu"])
@pytest.mark.parametrize("cls", [L.Conv2D, L.Conv2DTranspose])
def test_conv_gradients_through_activation(cls, act):
    rng = np.random.default_rng(6)
    h = harness(cls(3, 3, 2, "same", activation=act), (4, 5, 2))
    randomise(h, rng)
    fd_check(h, rng.normal(size=(2, 40)))


def test_conv_backward_accumulates_into_parameter_gradients():
    # The harness zeroes the gradients before each backward; two samples' gradients add up.
    rng = np.random.default_rng(7)
    h = harness(L.Conv2D(3, 3, 1, "same"), (5, 5, 2))
    randomise(h, rng)
    x, d = rng.normal(size=(2, 50)), rng.normal(size=(2, 75))
    g = h.backward(x, d)[1]
    np.testing.assert_allclose(g, h.backward(x[:1], d[:1])[1] + h.backward(x[1:], d[1:])[1], rtol=1e-12)


@pytest.mark.parametrize("pool,strides,padding", [(2, None, "valid"), (3, 2, "same"), (2, 1, "valid")])
def test_maxpool_gradient(pool, strides, padding):
    rng = np.random.default_rng(8)
    n = 2 * 7 * 5 * 3
    x = (rng.permutation(n) / n).reshape(2, -1)  # distinct values: no ties within the step
    h = harness(L.MaxPool2D(pool, strides, padding), (7, 5, 3))
    dinp, _ = fd_check(h, x)
    # each window routes its gradient to one input: as many non-zeros as (distinct) maxima
    assert np.count_nonzero(dinp) <= np.prod(h.out_shape) * 2


# ---- BatchNorm ------------------------------------------------------------------------------

def np_batchnorm(x, gamma, beta, mean, var, eps):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


@pytest.mark.parametrize("in_shape", [(4, 3, 5), (6,)])
def test_batchnorm_training_forward_and_moving_update(in_shape):
    rng = np.random.default_rng(9)
    momentum, eps = 0.9, 1e-3
    h = harness(L.BatchNorm(momentum, eps), in_shape)
    randomise(h, rng)
    C = in_shape[-1]
    gamma, beta = h.get_params()[:C], h.get_params()[C:]
    mm, mv = h.get_state()[:C].copy(), h.get_state()[C:].copy()
    x = rng.normal(2.0, 3.0, size=(5, *in_shape))
    rows = x.reshape(-1, C)
    mean, var = rows.mean(axis=0), rows.var(axis=0)  # biased variance, like Keras
    out = h.forward(x.reshape(5, -1), training=True).reshape(rows.shape)
    np.testing.assert_allclose(out, np_batchnorm(rows, gamma, beta, mean, var, eps), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h.get_state()[:C], mm * momentum + mean * (1 - momentum), rtol=1e-12)
    np.testing.assert_allclose(h.get_state()[C:], mv * momentum + var * (1 - momentum), rtol=1e-12)
    # a second batch moves the statistics again, from where they are now
    state = h.get_state().copy()
    h.forward(x[:2].reshape(2, -1), training=True)
    mean2 = x[:2].reshape(-1, C).mean(axis=0)
    np.testing.assert_allclose(h.get_state()[:C], state[:C] * momentum + mean2 * (1 - momentum), rtol=1e-12)


def test_batchnorm_inference_uses_moving_stats_and_keeps_them():
    rng = np.random.default_rng(10)
    h = harness(L.BatchNorm(epsilon=1e-2), (3, 2, 4))
    randomise(h, rng)
    state = h.get_state().copy()
    p = h.get_params()
    x = rng.normal(size=(3, 3, 2, 4))
    out = h.forward(x.reshape(3, -1), training=False).reshape(x.shape)
    np.testing.assert_allclose(out, np_batchnorm(x, p[:4], p[4:], state[:4], state[4:], 1e-2), rtol=1e-12)
    np.testing.assert_array_equal(h.get_state(), state)


@pytest.mark.parametrize("in_shape,B", [((3, 4, 3), 2), ((5,), 4), ((2, 2, 1), 1)])
def test_batchnorm_training_gradients_through_batch_statistics(in_shape, B):
    rng = np.random.default_rng(11)
    h = harness(L.BatchNorm(), in_shape)
    randomise(h, rng)
    x = rng.normal(1.0, 2.0, size=(B, int(np.prod(in_shape))))
    dinp, _ = fd_check(h, x, training=True)
    # the batch statistics make dx sum to zero over each channel (the mean's gradient)
    np.testing.assert_allclose(dinp.reshape(-1, in_shape[-1]).sum(axis=0), 0, atol=1e-10)


@pytest.mark.parametrize("in_shape", [(3, 4, 3), (5,)])
def test_batchnorm_inference_gradients(in_shape):
    rng = np.random.default_rng(12)
    h = harness(L.BatchNorm(), in_shape)
    randomise(h, rng)
    fd_check(h, rng.normal(size=(3, int(np.prod(in_shape)))), training=False)


def test_batchnorm_large_batch_threads_match_numpy():
    # big enough for the threaded reductions
    rng = np.random.default_rng(13)
    h = harness(L.BatchNorm(momentum=0.5), (16, 16, 8))
    randomise(h, rng)
    x = rng.normal(size=(64, 16 * 16 * 8))
    rows = x.reshape(-1, 8)
    p, s = h.get_params(), h.get_state().copy()
    out = h.forward(x, training=True).reshape(rows.shape)
    np.testing.assert_allclose(out, np_batchnorm(rows, p[:8], p[8:], rows.mean(0), rows.var(0), 1e-3), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(h.get_state()[8:], 0.5 * s[8:] + 0.5 * rows.var(0), rtol=1e-12)
    R = rng.normal(size=x.shape)
    dinp, dp = h.backward(x, R, training=True)
    xhat = (rows - rows.mean(0)) / np.sqrt(rows.var(0) + 1e-3)
    dr = R.reshape(rows.shape)
    np.testing.assert_allclose(dp, np.concatenate([(dr * xhat).sum(0), dr.sum(0)]), rtol=1e-10)
    N = rows.shape[0]
    ref = p[:8] / np.sqrt(rows.var(0) + 1e-3) / N * (N * dr - dr.sum(0) - xhat * (dr * xhat).sum(0))
    np.testing.assert_allclose(dinp.reshape(rows.shape), ref, rtol=1e-8, atol=1e-12)


# ---- torch (optional): same weights, same outputs -------------------------------------------

@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("in_shape,filters,k,s", [((7, 5, 2), 3, 3, 1), ((7, 5, 2), 3, 3, 2),
                                                  ((8, 6, 3), 4, 4, 2), ((6, 7, 2), 2, (2, 3), (3, 2))])
def test_conv_matches_torch(in_shape, filters, k, s, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(14)
    x = rng.normal(size=(2, *in_shape))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # NHWC -> NCHW
    (kh, kw), (sh, sw) = pair(k), pair(s)

    h = harness(L.Conv2D(filters, k, s, padding), in_shape)
    randomise(h, rng)
    K, b = conv_weights(h)
    _, pt, pb = tf_dim(in_shape[0], kh, sh, padding)
    _, pl, pr = tf_dim(in_shape[1], kw, sw, padding)
    ref = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), torch.from_numpy(K.transpose(3, 2, 0, 1).copy()),
                   torch.from_numpy(b), stride=(sh, sw)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(h.forward(x.reshape(2, -1)).reshape(ref.shape), ref, rtol=1e-10, atol=1e-10)

    h = harness(L.Conv2DTranspose(filters, k, s, padding), in_shape)
    randomise(h, rng)
    K, b = conv_weights(h)  # (kh, kw, filters, in) -> torch's (in, filters, kh, kw)
    full = F.conv_transpose2d(xt, torch.from_numpy(K.transpose(3, 2, 0, 1).copy()), torch.from_numpy(b),
                              stride=(sh, sw), output_padding=(max(sh - kh, 0), max(sw - kw, 0)))
    oh, ow = h.out_shape[:2]
    top, left = (max(kh - sh, 0) // 2, max(kw - sw, 0) // 2) if padding == "same" else (0, 0)
    ref = full[:, :, top:top + oh, left:left + ow].permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(h.forward(x.reshape(2, -1)).reshape(ref.shape), ref, rtol=1e-10, atol=1e-10)


# ---- a whole convolutional VAE in the engine ------------------------------------------------

def conv_vae_config(**kw):
    cfg = dict(
        input_shape=[8, 8, 1], latent_dim=2,
        encoder=[L.Conv2D(4, 3, 2, "same", activation="tanh").config(), L.BatchNorm().config(),
                 L.MaxPool2D(2).config(), L.Flatten().config()],
        decoder=[L.Dense(4 * 4 * 3, activation="tanh").config(), L.Reshape((4, 4, 3)).config(),
                 L.BatchNorm().config(), L.Conv2DTranspose(2, 3, 2, "same", activation="tanh").config(),
                 L.Conv2D(1, 3, 1, "same").config()],
        likelihood="bernoulli", output_activation="linear", log_var_clip=5.0, laplace_scale=0.0,
        reduction="sum", beta=1.0, epsilon_std=1.0, prior_std=1.0, seed=1, threads=2)
    cfg.update(kw)
    return cfg


def test_conv_vae_gradients_and_training():
    vae = _core.VaeF64(conv_vae_config())
    rng = np.random.default_rng(15)
    X = (rng.uniform(size=(6, 64)) > 0.5).astype(np.float64)
    eps = rng.normal(size=(6, 2))
    vae.set_state(rng.uniform(0.5, 1.5, vae.num_state))
    p0 = vae.get_params()
    _, g = vae.gradients(X, eps)

    def loss(p):
        vae.set_params(p)
        return vae.gradients(X, eps)[0]["loss"] / len(X)

    idx = rng.choice(p0.size, 60, replace=False)
    num = []
    for i in idx:
        q = p0.copy()
        q[i] += H_EPS
        up = loss(q)
        q[i] -= 2 * H_EPS
        num.append((up - loss(q)) / (2 * H_EPS))
    vae.set_params(p0)
    assert rel_err(g[idx], np.array(num)) < TOL

    vae.set_optimizer({"name": "adam", "learning_rate": 1e-2})
    state = vae.get_state().copy()
    first = vae.train_epoch(X, 3, True, 0, None)["loss"]
    for epoch in range(1, 20):
        last = vae.train_epoch(X, 3, True, epoch, None)["loss"]
    assert np.isfinite(last) and last < first
    assert not np.allclose(vae.get_state(), state)  # the moving statistics moved


def test_conv_vae_float32_builds_and_trains():
    vae = _core.VaeF32(conv_vae_config())
    X = (np.random.default_rng(16).uniform(size=(8, 64)) > 0.5).astype(np.float32)
    vae.set_optimizer({"name": "adam", "learning_rate": 1e-3})
    assert np.isfinite(vae.train_epoch(X, 4, True, 0, None)["loss"])
    mu, lv = vae.encode(X)
    assert mu.shape == (8, 2) and np.all(np.isfinite(lv))
