"""Each optimizer against a NumPy implementation of its published (Keras) update rule."""

import numpy as np
import pytest

import vaecpp
from vaecpp import _testing, optimizers


def numpy_run(cfg, p, grads, ranges):
    p = p.copy()
    m = np.zeros_like(p)
    v = np.full_like(p, cfg.get("initial_accumulator_value", 0.1)) if cfg["name"] == "adagrad" \
        else np.zeros_like(p)
    lr, eps = cfg["learning_rate"], cfg.get("epsilon", 1e-7)
    for t, g in enumerate(grads, start=1):
        g = g.copy()
        if cfg.get("clipvalue"):
            g = np.clip(g, -cfg["clipvalue"], cfg["clipvalue"])
        if cfg.get("clipnorm"):
            for off, n in ranges:
                norm = np.linalg.norm(g[off:off + n])
                if norm > cfg["clipnorm"]:
                    g[off:off + n] *= cfg["clipnorm"] / norm
        p *= 1 - lr * cfg.get("weight_decay", 0.0)
        if cfg["name"] == "adam":
            b1, b2 = cfg["beta_1"], cfg["beta_2"]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p -= lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
        elif cfg["name"] == "sgd":
            mu = cfg.get("momentum", 0.0)
            if mu == 0:
                p -= lr * g
            else:
                m = mu * m - lr * g
                p += mu * m - lr * g if cfg.get("nesterov") else m
        elif cfg["name"] == "rmsprop":
            v = cfg["rho"] * v + (1 - cfg["rho"]) * g * g
            p -= lr * g / (np.sqrt(v) + eps)
        elif cfg["name"] == "adagrad":
            v += g * g
            p -= lr * g / (np.sqrt(v) + eps)
    return p


CASES = [
    optimizers.Adam(),
    optimizers.Adam(learning_rate=0.01, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
    optimizers.SGD(learning_rate=0.1),
    optimizers.SGD(learning_rate=0.1, momentum=0.9),
    optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
    optimizers.RMSprop(learning_rate=0.01),
    optimizers.Adagrad(learning_rate=0.1),
    optimizers.Adam(clipnorm=0.5),
    optimizers.SGD(learning_rate=0.1, clipvalue=0.2),
    optimizers.Adam(weight_decay=0.1, learning_rate=0.01),
]


@pytest.mark.parametrize("opt", CASES, ids=repr)
def test_optimizer_matches_numpy_reference(opt):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=12)
    grads = rng.normal(size=(6, 12))
    ranges = [(0, 8), (8, 4)]
    cfg = opt.get_config()
    got = _testing.kernels.optimizer_run(cfg, p0, grads, ranges)
    np.testing.assert_allclose(got, numpy_run(cfg, p0, grads, ranges), rtol=1e-12, atol=1e-15)
    assert not np.allclose(got, p0)


def test_optimizer_names_and_errors():
    assert isinstance(optimizers.get("adam"), optimizers.Adam)
    assert isinstance(optimizers.get("RMSprop"), optimizers.RMSprop)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers.get("adamw2")
    with pytest.raises(TypeError, match="unknown option"):
        optimizers.Adam(learning_rte=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.SGD(learning_rate=-1)
    with pytest.raises(TypeError):
        optimizers.get(3)
    with pytest.raises(TypeError, match="nesterov must be True or False, got 'no'"):
        optimizers.SGD(momentum=0.9, nesterov="no")


def test_optimizers_take_numpy_scalars():
    """np.float32(0.01) is a learning rate as 0.01 is (Keras takes both)."""
    adam = optimizers.Adam(learning_rate=np.float32(0.5), beta_1=np.float64(0.8))
    sgd = optimizers.SGD(learning_rate=np.int64(1), momentum=np.float32(0.5), nesterov=np.bool_(True))
    assert (adam.learning_rate, adam.options["beta_1"]) == (0.5, 0.8)
    assert (sgd.learning_rate, sgd.options["momentum"], sgd.options["nesterov"]) == (1.0, 0.5, True)
    assert all(type(v) in (float, bool) for v in (*adam.get_config().values(), *sgd.get_config().values())
               if not isinstance(v, str) and v is not None)


# ---- the optimizer step inside backward, bit for bit the one after it ----------------------------
# Training without a collective steps each layer's weights as soon as its gradient is complete
# (CpuExecutor::backward_updating); with one (and before), the step is one pass over the flat
# buffer after the whole backward. Same rule, same coefficients, same clipping per weight array:
# the weights and moments must be identical, not close.
UPDATE_CASES = {
    "adam": optimizers.Adam(learning_rate=3e-3),
    "adam-clipnorm-wd": optimizers.Adam(learning_rate=3e-3, clipnorm=0.05, weight_decay=0.05),
    "sgd-momentum": optimizers.SGD(learning_rate=0.05, momentum=0.9),
    "sgd-nesterov-clipvalue": optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True,
                                             clipvalue=0.01),
    "rmsprop-clipnorm": optimizers.RMSprop(learning_rate=1e-3, clipnorm=0.1),
    "adagrad-wd": optimizers.Adagrad(learning_rate=0.05, weight_decay=0.01),
}


def engine_config(dtype, threads, dropout=0.2, hidden=(300, 19), input_dim=240):
    # 240 x 300 weights: large enough that two threads split each layer's update (and the
    # products); odd widths, so that parts start and end off the vector width
    from vaecpp import _config
    return _config.resolve(input_dim, latent_dim=3, hidden=hidden, dropout=dropout, seed=5,
                           dtype=dtype, threads=threads).engine


def binary_rows(n, d, dtype, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n, d)) < 0.3).astype(dtype)


def train(dtype, threads, opt, update_in_backward, first_step=0, epochs=2, batch=32,
          keep_grads=True, **model):
    cfg = engine_config(dtype, threads, **model)
    x = binary_rows(150 if batch < 150 else 2 * batch + 7, cfg["input_shape"][0], dtype)
    fn = _testing.train_f32 if dtype == np.float32 else _testing.train_f64
    # batch 32 of 150 rows: a short last batch
    return fn(cfg, opt.get_config(), x, batch, epochs, update_in_backward, first_step, keep_grads)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_state(fused, after, gradients=True):
    """The weights, moments and (with `gradients`) last gradients of two train() results are the
    same bits."""
    names = ("weights", "m", "v", "gradients")[:4 if gradients else 3]
    for what, f, a in zip(names, fused[:3] + fused[4:5], after[:3] + after[4:5]):
        assert same_bits(f, a), f"{what} differ: max abs diff {np.abs(f - a).max(initial=0):.3g}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UPDATE_CASES)
def test_update_in_backward_is_bit_identical_to_one_pass_after(name, dtype, threads):
    """Without clipping, each Dense layer's weights step inside its backward, fused into the
    weight gradient's product (dense.hpp); with it, each layer's after its backward."""
    opt = UPDATE_CASES[name]
    fused = train(dtype, threads, opt, True)
    after = train(dtype, threads, opt, False)
    assert fused[3] == after[3] == 10  # 2 epochs of 5 batches: one step each
    # every Dense layer of the stacks (not the two 19 -> 3 heads) inside its backward, unless the
    # optimizer clips (which needs a whole weight array's gradient first)
    clips = opt.get_config().get("clipnorm") or opt.get_config().get("clipvalue")
    assert fused[5] == (0 if clips else fused[0].size - 2 * (19 * 3 + 3)) and after[5] == 0
    assert_same_state(fused, after)
    assert not np.array_equal(fused[0], train(dtype, threads, opt, True, epochs=0)[0])
    # as in training: a layer stepping inside backward forms its weight gradient tile by tile in
    # scratch and does not write it to the gradient buffer; the same steps all the same
    lean = train(dtype, threads, opt, True, keep_grads=False)
    assert_same_state(lean, after, gradients=False)
    if not clips and vaecpp.build_info()["fast_gemm"]:
        assert not same_bits(lean[4], after[4]), "the gradients were written after all"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_fused_into_a_product_over_more_rows_than_one_block(dtype, threads):
    """A batch of 300 rows is more than one block of k of the weight gradient's product (kc is at
    most 256 on CPUs with a 32 KiB L1d, for float32 and float64 alike): the product, then the
    step."""
    opt = UPDATE_CASES["adam"]
    fused = train(dtype, threads, opt, True, batch=300, dropout=0.0)
    after = train(dtype, threads, opt, False, batch=300, dropout=0.0)
    assert fused[5] > 0
    assert_same_state(fused, after)
    assert_same_state(train(dtype, threads, opt, True, batch=300, dropout=0.0, keep_grads=False),
                      after, gradients=False)


@pytest.mark.parametrize("threads", [1, 2])
def test_update_in_backward_with_conv_and_batchnorm_layers(threads):
    """Dense layers step inside their backward, the convolution and batch-norm layers beside them
    after theirs: the same bits as one pass after backward."""
    from vaecpp import _config
    from vaecpp import layers as L
    enc = [L.Conv2D(3, 3, 2, "same", activation="tanh"), L.BatchNorm(), L.Flatten(),
           L.Dense(16, activation="relu")]
    dec = [L.Dense(48, activation="relu"), L.Reshape((4, 4, 3)), L.Conv2DTranspose(1, 3, 2, "same")]
    cfg = _config.resolve((8, 8, 1), latent_dim=3, encoder=enc, decoder=dec, seed=5,
                          dtype="float32", threads=threads).engine
    x = binary_rows(150, 64, np.float32)
    opt = UPDATE_CASES["adam"].get_config()
    fused = _testing.train_f32(cfg, opt, x, 32, 2, True, 0)
    after = _testing.train_f32(cfg, opt, x, 32, 2, False, 0)
    assert fused[5] == 48 * 16 + 16 + 3 * 48 + 48  # the two Dense layers of the stacks
    assert_same_state(fused, after)
    assert not np.array_equal(fused[0], _testing.train_f32(cfg, opt, x, 32, 0, True, 0)[0])


def test_update_fused_with_eigens_product_is_bit_identical():
    """The same comparison with the product forced to Eigen's (VAECPP_GEMM_KERNELS=eigen, read once
    per process: a child process): dW is then Eigen's product by columns, as without the step, and
    the step follows it."""
    import os
    import subprocess
    import sys
    code = ("import sys; sys.path.insert(0, {!r}); import numpy as np; import test_optimizers as t\n"
            "for th in (1, 2):\n"
            "    f = t.train(np.float32, th, t.UPDATE_CASES['adam'], True)\n"
            "    a = t.train(np.float32, th, t.UPDATE_CASES['adam'], False)\n"
            "    assert f[5] > 0\n"
            "    t.assert_same_state(f, a)\n"
            "from vaecpp import _core; print(_core.build_info()['gemm_kernels'])\n"
            ).format(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, VAECPP_GEMM_KERNELS="eigen")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "eigen"


def test_the_comparison_sees_a_step_shifted_by_one():
    """The check above can fail: had the step count moved before backward read it (the dropout
    masks) or the coefficients been those of another step, the weights would differ."""
    opt = UPDATE_CASES["adam"]
    base = train(np.float32, 1, opt, False)
    shifted = train(np.float32, 1, opt, True, first_step=1)
    assert shifted[3] == base[3] + 1
    assert not same_bits(base[0], shifted[0])
    no_dropout = dict(dropout=0.0)
    assert same_bits(train(np.float32, 2, opt, True, **no_dropout)[0],
                     train(np.float32, 2, opt, False, **no_dropout)[0])


@pytest.mark.parametrize("name", ["adam", "adam-clipnorm-wd"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_runs_the_update_in_backward(dtype, name):
    """VAE.fit trains as the in-backward path above (the entry point is the engine's own)."""
    import vaecpp
    opt = UPDATE_CASES[name]
    cfg = engine_config(dtype, 2)
    x = binary_rows(150, cfg["input_shape"][0], dtype)
    vae = vaecpp.VAE(240, latent_dim=3, hidden=(300, 19), dropout=0.2, seed=5, dtype=dtype,
                     threads=2)
    vae.compile(opt)
    vae.fit(x, epochs=2, batch_size=32, verbose=0)
    fused = train(np.dtype(dtype).type, 2, opt, True)
    assert same_bits(np.concatenate([w.ravel() for w in vae.get_weights()]), fused[0])
    assert vae.step == fused[3]
