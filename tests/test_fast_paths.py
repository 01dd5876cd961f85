"""The engine's fast kernels agree with their readable references within rounding, and training
results depend on the thread count only through rounding (and not at all run to run)."""

import numpy as np
import vaecpp
import pytest

from vaecpp import _core, _testing

K = _testing.kernels
ACTS = ["linear", "relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus"]
# Sizes around the GEMM split points: 1 row, odd widths, widths below / at / above a 16-column block;
# more rows than columns (the forward splits rows then).
SHAPES = [(1, 3, 5), (7, 33, 17), (50, 784, 64), (64, 200, 300), (3, 2, 512), (301, 40, 20)]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def close(a, b, dtype, scale=1.0):
    """Max abs difference, relative to the size of the values, within a few roundings."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    tol = RTOL[dtype] * scale * max(1.0, np.abs(b).max(initial=0.0))
    err = np.abs(a - b).max(initial=0.0)
    assert err <= tol, f"max abs diff {err:.3g} > {tol:.3g}"


def rand(rng, shape, dtype, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("threads", [1, 2])
def test_dense_forward_matches_reference(dtype, shape, act, threads):
    B, C, OC = shape
    rng = np.random.default_rng(B * 1000 + C + OC)
    x, W, b = rand(rng, (B, C), dtype), rand(rng, (C, OC), dtype, -0.3, 0.3), rand(rng, OC, dtype)
    ref = K.dense_forward(x, W, b, act, fast=False)
    fast = K.dense_forward(x, W, b, act, fast=True, threads=threads)
    close(fast, ref, dtype, scale=np.sqrt(C))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_dense_backward_matches_reference(dtype, shape, act, accumulate, threads):
    B, C, OC = shape
    rng = np.random.default_rng(B + C * 1000 + OC)
    x, W, b = rand(rng, (B, C), dtype), rand(rng, (C, OC), dtype, -0.3, 0.3), rand(rng, OC, dtype)
    dout = rand(rng, (B, OC), dtype)
    dW0, db0, dinp0 = rand(rng, (C, OC), dtype), rand(rng, OC, dtype), rand(rng, (B, C), dtype)
    ref = K.dense_backward(x, W, b, dout, act, dW0, db0, dinp0, accumulate, False, 1)
    fast = K.dense_backward(x, W, b, dout, act, dW0, db0, dinp0, accumulate, True, threads)
    for f, r in zip(fast, ref):
        close(f, r, dtype, scale=np.sqrt(max(B, OC)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_dense_backward_sets_weight_gradients(dtype, shape, threads):
    """A training step's backward sets dW and db (whatever they held) instead of adding to them:
    the same numbers, bit for bit, as adding to zeros."""
    B, C, OC = shape
    rng = np.random.default_rng(B + C + OC)
    x, W, b = rand(rng, (B, C), dtype), rand(rng, (C, OC), dtype, -0.3, 0.3), rand(rng, OC, dtype)
    dout = rand(rng, (B, OC), dtype)
    stale = rand(rng, (C, OC), dtype, 1e3, 2e3), rand(rng, OC, dtype, 1e3, 2e3)
    zeros = np.zeros((C, OC), dtype), np.zeros(OC, dtype)
    dinp0 = np.zeros((B, C), dtype)
    for fast in (False, True):
        t = threads if fast else 1
        set_ = K.dense_backward(x, W, b, dout, "relu", *stale, dinp0, False, fast, t,
                                accumulate_grads=False)
        added = K.dense_backward(x, W, b, dout, "relu", *zeros, dinp0, False, fast, t)
        for s, a in zip(set_, added):
            np.testing.assert_array_equal(s, a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTS)
def test_activations_match_reference(dtype, act):
    rng = np.random.default_rng(1)
    # the whole range the functions branch on, including large |x|, plus a long array so the
    # parallel path runs
    x = np.concatenate([np.linspace(-30, 30, 1001), rand(rng, 70000, np.float64, -5, 5)]).astype(dtype)
    for threads in (1, 2):
        y_ref = K.act_forward(x, act, False, 1)
        close(K.act_forward(x, act, True, threads), y_ref, dtype, scale=4)
        dout = rand(rng, x.shape, dtype)
        close(K.act_backward(dout, y_ref, act, True, threads),
              K.act_backward(dout, y_ref, act, False, 1), dtype, scale=4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_loops_keep_nan_and_infinity_as_the_reference(dtype):
    """The vectorised exp / expm1 / log1p (elementwise_kernels.hpp) clamp their range: NaN must
    still come out as NaN (a NaN loss stops training) and +-inf give the reference's limits."""
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 100, -100, 1e-30],
                       dtype=dtype)
    x = np.concatenate([special, np.linspace(-3, 3, 23).astype(dtype)])  # off the vector width
    with np.errstate(invalid="ignore", over="ignore"):
        for act in ACTS:
            fast, ref = K.act_forward(x, act, True, 1), K.act_forward(x, act, False, 1)
            np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref), err_msg=act)
            # below the normal range (sigmoid(-100) in float32) the fast loops give 0, as the
            # engine's flushed denormals do
            np.testing.assert_allclose(fast, ref, rtol=RTOL[dtype], atol=np.finfo(dtype).tiny,
                                       err_msg=act)
        logits = np.stack([x, x[::-1]])
        pixels = np.tile((np.arange(x.size) % 2).astype(dtype), (2, 1))
        for got, want in zip(K.bernoulli_nll_grad(pixels, logits, 1.0, True, 1),
                             K.bernoulli_nll_grad(pixels, logits, 1.0, False, 1)):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_allclose(got, want, rtol=RTOL[dtype] * 8, atol=np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,D", [(1, 1), (3, 257), (50, 784)])
def test_bernoulli_matches_reference(dtype, B, D):
    rng = np.random.default_rng(D)
    x = rng.random((B, D)).astype(dtype)
    x[:, ::3] = np.round(x[:, ::3])  # binary pixels too
    logits = rand(rng, (B, D), dtype, -40, 40)
    logits[:, ::5] = rand(rng, (B, len(range(0, D, 5))), dtype, -1e-3, 1e-3)
    nll_r, dp_r = K.bernoulli_nll_grad(x, logits, 0.02, False, 1)
    for threads in (1, 2):
        nll_f, dp_f = K.bernoulli_nll_grad(x, logits, 0.02, True, threads)
        close(nll_f, nll_r, dtype, scale=8)
        close(dp_f, dp_r, dtype, scale=4)
        close(K.bernoulli_mean(logits, True, threads), K.bernoulli_mean(logits, False, 1), dtype, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop", "adagrad"])
def test_optimizer_matches_numpy(dtype, name):
    """The vectorised, threaded update against Keras's rules written in NumPy (float64)."""
    rng = np.random.default_rng(3)
    n, steps = 100003, 4
    p0 = rand(rng, n, dtype)
    gs = rand(rng, (steps, n), dtype)
    spec = dict(name=name, learning_rate=0.01, momentum=0.9)
    p, m, v = p0.astype(np.float64), np.zeros(n), np.zeros(n)
    if name == "adagrad":
        v += 0.1
    for t, g in enumerate(gs.astype(np.float64), 1):
        if name == "adam":
            alpha = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
            m += (g - m) * 0.1
            v += (g * g - v) * 0.001
            p -= alpha * m / (np.sqrt(v) + 1e-7)
        elif name == "sgd":
            m = 0.9 * m - 0.01 * g
            p += m
        elif name == "rmsprop":
            v = 0.9 * v + 0.1 * g * g
            p -= 0.01 * g / (np.sqrt(v) + 1e-7)
        else:
            v += g * g
            p -= 0.01 * g / (np.sqrt(v) + 1e-7)
    for threads in (1, 2):
        close(K.optimizer_run(spec, p0, gs, threads=threads), p, dtype, scale=10)


def test_paired_normals_are_the_engines_draws():
    """Drawing both numbers of each Box-Muller pair from one Philox block changes no value."""
    for first, n in [(0, 10), (1, 10), (7, 1), (4, 0), (3, 6)]:
        ref = K.normals(42, 2, 5, first, n, fast=False)
        np.testing.assert_array_equal(K.normals(42, 2, 5, first, n, 1.0), ref)
        np.testing.assert_array_equal(K.normals(42, 2, 5, first, n, 0.5), 0.5 * ref)


# ---- whole model ------------------------------------------------------------------------------------
def engine(threads, dtype=np.float32, hidden=(64, 48), latent=3, dropout=0.0, seed=5):
    def dense(units, act="relu"):
        return dict(kind="dense", units=units, activation=act)

    enc, dec = [], []
    for h in hidden:
        enc.append(dense(h))
        if dropout:
            enc.append(dict(kind="dropout", rate=dropout))
    for h in reversed(hidden):
        dec.append(dense(h, "tanh"))
    dec.append(dense(40, "linear"))
    cfg = dict(input_shape=[40], latent_dim=latent, encoder=enc, decoder=dec,
               likelihood="bernoulli", output_activation="linear", log_var_clip=5.0,
               laplace_scale=0.0, reduction="sum", beta=1.0, epsilon_std=1.0, prior_std=1.0,
               seed=seed, threads=threads)
    core = (_core.VaeF32 if dtype == np.float32 else _core.VaeF64)(cfg)
    core.set_optimizer(dict(name="adam", learning_rate=1e-3))
    return core


def train(threads, dtype=np.float32, **kw):
    x = np.random.default_rng(0).random((700, 40)).astype(dtype)
    core = engine(threads, dtype, **kw)
    losses = [core.train_epoch(x, 32, True, e, None)["loss"] for e in range(2)]
    z = np.random.default_rng(1).standard_normal((9, kw.get("latent", 3))).astype(dtype)
    return losses, core.get_params(), core.decode(z), core.encode(x[:9])[0]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_training_is_bit_identical_run_to_run(threads, dropout):
    a, b = train(threads, dropout=dropout), train(threads, dropout=dropout)
    assert a[0] == b[0]
    for u, v in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden,latent", [((300, 200), 3), ((256,), 64)])
def test_training_depends_on_threads_only_through_rounding(dtype, hidden, latent):
    """Big enough that every product is split between threads (and, with 64 latent dimensions,
    the two heads run side by side)."""
    one = train(1, dtype, hidden=hidden, latent=latent)
    two = train(2, dtype, hidden=hidden, latent=latent)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(one[0], two[0], rtol=tol)
    for u, v in zip(one[1:], two[1:]):
        np.testing.assert_allclose(u, v, rtol=0, atol=tol * 10)


def test_gradients_through_fast_kernels_match_finite_differences():
    """The model gradient through the fast kernels (2 threads, float64) against central finite
    differences of the loss (a spot check; the model tests check every parameter)."""
    core = engine(2, np.float64, hidden=(20,), latent=2)
    x = np.random.default_rng(1).random((6, 40))
    eps = np.random.default_rng(2).standard_normal((6, 2))
    sums, g = core.gradients(x, eps)
    p0 = core.get_params()
    rng = np.random.default_rng(3)
    for i in rng.choice(len(p0), 25, replace=False):
        h = 1e-6
        p = p0.copy()
        p[i] += h
        core.set_params(p)
        up = core.gradients(x, eps)[0]["loss"]
        p[i] -= 2 * h
        core.set_params(p)
        down = core.gradients(x, eps)[0]["loss"]
        fd = (up - down) / (2 * h) / len(x)
        assert abs(fd - g[i]) <= 1e-6 * max(1.0, abs(fd)), (i, fd, g[i])
    core.set_params(p0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_gemm_matches_eigen(dtype, trans_a, trans_b, accumulate):
    """Every tile and edge path of the register-blocked product: row counts around the 6- and
    12-row tiles (and the remainders merged into them), column counts around the 8/16/32-column
    strips, K across the 128..256-deep blocks and M across blocks of rows (a few hundred)."""
    rng = np.random.default_rng(7)
    for M, N, K in [(1, 1, 1), (3, 17, 5), (8, 48, 8), (9, 49, 257), (17, 100, 600), (50, 784, 512),
                    (13, 15, 70), (2, 64, 3), (130, 33, 1), (12, 32, 129), (25, 40, 31),
                    (600, 56, 300)]:
        a = rand(rng, (K, M) if trans_a else (M, K), dtype)
        b = rand(rng, (N, K) if trans_b else (K, N), dtype)
        c0 = rand(rng, (M, N), dtype)
        ref = K_.gemm(a, b, c0, trans_a, trans_b, accumulate, False)
        fast = K_.gemm(a, b, c0, trans_a, trans_b, accumulate, True)
        close(fast, ref, dtype, scale=np.sqrt(K))


K_ = K


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_sums_do_not_depend_on_how_c_is_cut(dtype):
    """Every element of C is the same sum in the same order however the product is cut into
    column and row blocks (as threads cut it): pieces of one or two rows, pieces narrower than a
    vector, transposed operands. Bit for bit."""
    rng = np.random.default_rng(11)
    for M, N, K, trans_a, trans_b in [(50, 200, 784, False, False), (784, 200, 50, True, False),
                                      (50, 784, 200, False, True), (7, 20, 300, False, False),
                                      (301, 37, 600, True, True), (3, 90, 513, False, True)]:
        a = rand(rng, (K, M) if trans_a else (M, K), dtype)
        b = rand(rng, (N, K) if trans_b else (K, N), dtype)
        c0 = rand(rng, (M, N), dtype)
        whole = K_.gemm(a, b, c0, trans_a, trans_b, True, True)
        for rows in ([0, M], [0, 1, 3, M], [0, M // 2, M]):
            for cols in ([0, N], [0, 16, N], [0, N - 4, N], [0, 5, 21, N]):
                cut = np.empty_like(whole)
                for r0, r1 in zip(rows, rows[1:]):
                    for j0, j1 in zip(cols, cols[1:]):
                        ap = a[:, r0:r1] if trans_a else a[r0:r1]
                        bp = b[j0:j1] if trans_b else b[:, j0:j1]
                        cut[r0:r1, j0:j1] = K_.gemm(np.ascontiguousarray(ap), np.ascontiguousarray(bp),
                                                    np.ascontiguousarray(c0[r0:r1, j0:j1]), trans_a,
                                                    trans_b, True, True)
                np.testing.assert_array_equal(cut, whole, err_msg=f"{(M, N, K)} rows {rows} cols {cols}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [True, False])
@pytest.mark.parametrize("keep_c", [True, False])
def test_gemm_then_rows_hands_over_each_final_element_once(dtype, trans_a, keep_c):
    """gemm_then_rows (a layer's weight gradient with the optimizer step fused in: dense.hpp)
    hands rows() every element of gemm()'s product exactly once, already final and bit for bit,
    and writes it to C (unless keep_c is false and K fits one block: then C is left alone and
    each tile is handed over from scratch): K within one block of kc (the fused path: tiles of
    rows, strips of B inside) and beyond it (gemm, then the rows), one or two rows, ragged
    strips, more columns than one packed panel of B (4096)."""
    rng = np.random.default_rng(13)
    kc_max = vaecpp.build_info()["gemm_blocking"].get(np.dtype(dtype).name, {}).get("kc_max", 0)
    for M, N, K in [(784, 200, 50), (1, 5, 3), (2, 17, 7), (7, 40, 128), (50, 33, 256),
                    (13, 100, 257), (9, 24, 600), (5, 4100, 3)]:
        a = rand(rng, (K, M) if trans_a else (M, K), dtype)
        b = rand(rng, (K, N), dtype)
        c, seen, visits = K_.gemm_then_rows(a, b, trans_a, keep_c)
        whole = K_.gemm(a, b, np.zeros((M, N), dtype), trans_a, False, False, True)
        np.testing.assert_array_equal(seen, whole, err_msg=f"{(M, N, K)}: rows() saw another C")
        assert visits.min() == visits.max() == 1, f"{(M, N, K)}: visits {visits.min()}..{visits.max()}"
        if keep_c or K > kc_max:  # kept, or formed whole before the rows (also Eigen: kc_max 0)
            np.testing.assert_array_equal(c, whole, err_msg=f"{(M, N, K)}")
        else:
            assert not c.any(), f"{(M, N, K)}: C was written"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(128, 400, 20), (256, 784, 1024), (1, 1024, 784)])
def test_dense_kernels_give_the_same_bits_at_any_thread_count(dtype, shape):
    """1 and 2 threads split the products differently (columns, or rows when there are more rows
    than columns) and must still give identical results, bit for bit."""
    B, C, OC = shape
    rng = np.random.default_rng(B + C + OC)
    x, W, b = rand(rng, (B, C), dtype), rand(rng, (C, OC), dtype, -0.3, 0.3), rand(rng, OC, dtype)
    dout = rand(rng, (B, OC), dtype)
    dW0, db0, dinp0 = rand(rng, (C, OC), dtype), rand(rng, OC, dtype), rand(rng, (B, C), dtype)
    one, two = (K.dense_forward(x, W, b, "relu", fast=True, threads=t) for t in (1, 2))
    np.testing.assert_array_equal(one, two)
    one, two = (K.dense_backward(x, W, b, dout, "relu", dW0, db0, dinp0, True, True, t) for t in (1, 2))
    for u, v in zip(one, two):
        np.testing.assert_array_equal(u, v)


def test_dropout_masks_four_per_philox_block():
    """Dropout draws one Philox block per four elements (chunked so that it vectorises): the
    masks keep 1 - rate of the values, scaled by 1 / (1 - rate), repeat for the same step and
    change with it, including a ragged tail (n not a multiple of 4 or of the chunk)."""
    h = _testing.LayerHarness(dict(kind="dropout", rate=0.3), [333], 11)
    x = np.ones((7, 333))
    a = h.forward(x, training=True, step=4)
    np.testing.assert_array_equal(a, h.forward(x, training=True, step=4))
    assert not np.array_equal(a, h.forward(x, training=True, step=5))
    assert set(np.unique(a)) <= {0.0, 1 / 0.7}
    n = a.size
    dropped = np.mean(a == 0)
    assert abs(dropped - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    big = _testing.LayerHarness(dict(kind="dropout", rate=0.5), [4096], 11).forward(
        np.ones((20, 4096)), training=True, step=1)  # the threaded path
    assert abs(np.mean(big == 0) - 0.5) < 4 * np.sqrt(0.25 / big.size)
