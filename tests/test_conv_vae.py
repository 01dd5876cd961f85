"""Convolutional VAEs end to end: ChannelsToBlocks for two-value likelihoods, the reference
architectures, BatchNorm's moving statistics outside fit, streamed training (generators, data
sources, image folders), the per-step hook and the long-run callbacks."""

import os
import signal

import numpy as np
import pytest

import vaecpp
from vaecpp import _core, _testing, callbacks as cb, datasets, layers as L, sources
from gradcheck import assert_close_grad, numeric_grad


# ---- ChannelsToBlocks -----------------------------------------------------------------------

def blocks_reference(x, in_shape, groups):
    """(B, H, W, P*C) -> (B, P, H, W, C), channel p*C + c to block p."""
    B = x.shape[0]
    H, W, PC = in_shape
    return x.reshape(B, H, W, groups, PC // groups).transpose(0, 3, 1, 2, 4).reshape(B, -1)


@pytest.mark.parametrize("in_shape,groups", [((3, 4, 6), 2), ((2, 5, 3), 3), ((4, 2), 2), ((3, 3, 4), 1)])
def test_channels_to_blocks_is_the_permutation_and_its_adjoint(in_shape, groups):
    h = _testing.LayerHarness(L.ChannelsToBlocks(groups).config(), list(in_shape), 0)
    C = in_shape[-1] // groups
    assert h.out_shape == [groups, *in_shape[:-1], C] and h.kind == "ChannelsToBlocks"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, int(np.prod(in_shape))))
    padded = (1,) * (3 - len(in_shape)) + tuple(in_shape)  # (H, W) as (1, H, W)
    np.testing.assert_array_equal(h.forward(x), blocks_reference(x, padded, groups))
    R = rng.normal(size=x.shape)
    dinp, dparams = h.backward(x, R)
    assert dparams.size == 0
    # sum(R * f(x)) is linear: its gradient is the inverse permutation of R, checked by FD too
    np.testing.assert_array_equal(blocks_reference(dinp, padded, groups), R)
    num = numeric_grad(lambda: float(np.sum(R * h.forward(x))), x)
    assert_close_grad(dinp, num)


@pytest.mark.parametrize("in_shape,groups,match", [((4, 6), 4, "do not split"), ((8,), 2, "channel axis")])
def test_channels_to_blocks_bad_shapes(in_shape, groups, match):
    with pytest.raises(ValueError, match=match):
        _testing.LayerHarness(L.ChannelsToBlocks(groups).config(), list(in_shape), 0)


def tiny_conv_vae(likelihood="gaussian", extra=(), in_shape=(4, 4, 2), **kw):
    H, W, C = in_shape
    P = 2 if likelihood == "gaussian" or likelihood == "laplace" and "laplace_scale" not in kw else 1
    encoder = [L.Conv2D(3, 3, 2, "same", activation="tanh"), L.BatchNorm(), L.Flatten()]
    decoder = [L.Dense(2 * 2 * 3, activation="tanh"), L.Reshape((2, 2, 3)),
               L.Conv2DTranspose(P * C, 3, 2, "same"), *extra]
    kw = {"seed": 3, "dtype": "float64", "latent_dim": 2, **kw}
    return vaecpp.VAE(in_shape, likelihood=likelihood, encoder=encoder, decoder=decoder, **kw)


def layer_kinds(vae):
    return [layer.kind for layer in vae.layer_summary()]


def test_vae_appends_channels_to_blocks_for_two_value_likelihoods(capsys):
    vae = tiny_conv_vae("gaussian")
    assert layer_kinds(vae)[-1] == "ChannelsToBlocks"
    vae.summary()
    assert "channels_to_blocks (ChannelsToBlocks)" in capsys.readouterr().out
    assert vae.decode(np.zeros((3, 2))).shape == (3, 4, 4, 2)
    assert layer_kinds(tiny_conv_vae("laplace"))[-1] == "ChannelsToBlocks"
    # one value per pixel, or a fixed Laplace scale: nothing to rearrange
    assert layer_kinds(tiny_conv_vae("bernoulli"))[-1] == "Conv2DTranspose"
    assert layer_kinds(tiny_conv_vae("laplace", laplace_scale=0.1))[-1] == "Conv2DTranspose"
    # placed by hand: not appended twice, same numbers
    explicit = tiny_conv_vae("gaussian", extra=[L.ChannelsToBlocks(2)])
    assert layer_kinds(explicit)[-2:] == ["Conv2DTranspose", "ChannelsToBlocks"]
    explicit.set_weights(vae.get_weights())
    x = np.random.default_rng(0).random((5, 4, 4, 2))
    np.testing.assert_array_equal(explicit.evaluate(x), vae.evaluate(x))


def test_grey_images_without_channel_axis_get_blocks_too():
    encoder = [L.Reshape((4, 4, 1)), L.Flatten()]
    decoder = [L.Dense(16), L.Reshape((2, 2, 4)), L.Conv2DTranspose(2, 3, 2, "same")]
    vae = vaecpp.VAE((4, 4), likelihood="gaussian", encoder=encoder, decoder=decoder, seed=0)
    assert layer_kinds(vae)[-1] == "ChannelsToBlocks"
    assert vae.reconstruct(np.random.default_rng(0).random((2, 4, 4))).shape == (2, 4, 4)


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace"])
def test_conv_two_value_likelihood_gradient_finite_differences(likelihood):
    vae = tiny_conv_vae(likelihood)
    rng = np.random.default_rng(1)
    x = rng.random((3, 4, 4, 2))
    eps = rng.normal(size=(3, 2))
    weights = [w + rng.normal(scale=0.2, size=w.shape) for w in vae.get_weights()]
    weights = [np.abs(w) + 0.5 if "moving_variance" in n else w
               for w, n in zip(weights, vae.weight_names())]
    vae.set_weights(weights)
    losses, grads = vae.gradients(x, eps=eps)

    def loss():
        vae.set_weights(weights)
        return vae.gradients(x, eps=eps)[0]["loss"]

    for w, g, name in zip(weights, grads, vae.weight_names()):
        if "moving" in name:
            assert not g.any()  # not trainable
            continue
        assert_close_grad(g, numeric_grad(loss, w), what=name)


def test_conv_gaussian_trains():
    vae = tiny_conv_vae("gaussian", dtype="float32")
    vae.compile(vaecpp.optimizers.Adam(1e-2))
    x = np.random.default_rng(2).random((32, 4, 4, 2)).astype(np.float32)
    h = vae.fit(x, epochs=15, batch_size=8, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


# ---- shape errors name the layer ------------------------------------------------------------

def test_shape_mismatch_between_layers_names_the_layer():
    decoder = [L.Dense(12), L.Conv2DTranspose(1, 3, 2, "same", name="up")]
    with pytest.raises(ValueError, match=r"decoder layer 1 'up' \(conv2d_transpose\) with input "
                                         r"shape \(12,\): Conv2DTranspose needs a 3-D"):
        vaecpp.VAE((4, 4, 1), encoder=[L.Flatten()], decoder=decoder)
    encoder = [L.Conv2D(2, 3), L.Reshape((5, 5))]
    with pytest.raises(ValueError, match=r"encoder layer 1 'reshape' \(reshape\) with input shape "
                                         r"\(2, 2, 2\): cannot reshape"):
        vaecpp.VAE((4, 4, 1), encoder=encoder)


def test_decoder_output_mismatch_names_the_last_layer():
    decoder = [L.Dense(8), L.Reshape((2, 2, 2)), L.Conv2DTranspose(3, 3, 2, "same", name="out")]
    with pytest.raises(ValueError, match=r"decoder's output shape \(4, 4, 3\) \(layer 'out'\) "
                                         r"has 48 values .* needs 2 x 16 .*2 x channels"):
        vaecpp.VAE((4, 4, 1), likelihood="gaussian", encoder=[L.Flatten()], decoder=decoder)


# ---- the reference architectures ------------------------------------------------------------

CELEBA_SHAPES = [
    ("conv2d", (64, 64, 64)), ("conv2d_1", (32, 32, 128)), ("conv2d_2", (16, 16, 256)),
    ("conv2d_3", (8, 8, 512)), ("conv2d_4", (4, 4, 1024)), ("flatten", (16384,)),
    ("z_mean", (64,)), ("z_log_var", (64,)), ("dense", (1024,)), ("reshape", (1, 1, 1024)),
    ("conv2d_transpose", (4, 4, 1024)), ("conv2d_transpose_1", (8, 8, 512)),
    ("conv2d_transpose_2", (16, 16, 256)), ("conv2d_transpose_3", (32, 32, 128)),
    ("conv2d_transpose_4", (64, 64, 64)), ("decoder_output", (128, 128, 3)),
]


@pytest.fixture(scope="module")
def celeba():
    return vaecpp.celeba_conv_vae(seed=0, threads=2)


def test_celeba_reference_model_shapes(celeba, capsys):
    shapes = {layer.name: layer.output_shape for layer in celeba.layer_summary()}
    for name, shape in CELEBA_SHAPES:
        assert shapes[name] == shape, name
    kinds = layer_kinds(celeba)
    assert kinds.count("BatchNorm") == 10 and kinds.count("Activation(relu)") == 10
    cfg = celeba.get_config()
    assert (cfg["likelihood"], cfg["reduction"], cfg["output_activation"]) == ("mse", "mean", "tanh")
    assert celeba.beta == 1e-4 and celeba.latent_dim == 64
    assert celeba.count_params() == 53_775_491
    celeba.summary()
    out = capsys.readouterr().out
    for name, shape in CELEBA_SHAPES:
        assert str((None, *shape)) in out
    assert "Total params: 53,775,491" in out


def test_celeba_one_step_lowers_the_loss(celeba):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 128, 128, 3)).astype(np.float32)
    x = np.repeat(np.repeat(x[:, ::16, ::16], 16, axis=1), 16, axis=2)  # smooth images
    celeba.compile(vaecpp.architectures.celeba_optimizer(learning_rate=1e-5))
    assert celeba.optimizer.get_config()["beta_1"] == 0.5
    rows = x.reshape(2, -1)
    before = celeba.train_on_batch(rows)  # the loss before the step
    after = celeba.train_on_batch(rows)   # ... and after it
    assert np.isfinite(after) and after < before
    assert celeba.step == celeba.optimizer.iterations == 2


@pytest.mark.parametrize("side,filters", [(16, (64, 128)), (32, (64, 128, 256))])
def test_celeba_architecture_for_other_powers_of_two(side, filters):
    vae = vaecpp.celeba_conv_vae((side, side, 1), latent_dim=4, num_filters=[f // 16 for f in filters])
    assert vaecpp.architectures.default_num_filters(side) == filters
    assert vae.decode(np.zeros((1, 4))).shape == (1, side, side, 1)
    assert vae.encode(np.zeros((2, side, side, 1))).shape == (2, 4)


def test_celeba_architecture_errors():
    with pytest.raises(ValueError, match="power of two"):
        vaecpp.celeba_conv_vae((96, 96, 3))
    with pytest.raises(ValueError, match="power of two"):
        vaecpp.celeba_conv_vae((8, 8, 3))
    with pytest.raises(ValueError, match=r"side, side, channels"):
        vaecpp.celeba_conv_vae((64, 32, 3))
    with pytest.raises(ValueError, match="one width per stride-2 encoder block: 3 for 32x32"):
        vaecpp.celeba_conv_vae((32, 32, 3), num_filters=(8, 16))


def test_keras_mnist_model_shapes():
    vae = vaecpp.keras_mnist_conv_vae(seed=0)
    shapes = [layer.output_shape for layer in vae.layer_summary()]
    assert shapes == [(14, 14, 32), (7, 7, 64), (3136,), (16,), (2,), (2,), (3136,), (7, 7, 64),
                      (14, 14, 64), (28, 28, 32), (28, 28, 1)]
    assert vae.likelihood == "bernoulli" and vae.input_shape == (28, 28, 1)
    assert vae.optimizer is None  # uncompiled


def test_keras_mnist_model_learns_mnist(mnist_test_images):
    x = mnist_test_images[:3000].reshape(-1, 28, 28, 1)
    vae = vaecpp.keras_mnist_conv_vae(seed=0, threads=1)
    vae.compile("adam")
    start = vae.evaluate(x[-500:])
    h = vae.fit(x[:2500], epochs=3, batch_size=64, verbose=0, validation_data=x[-500:])
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["val_loss"][-1] < 0.5 * start
    assert h.history["val_loss"][-1] < 220  # nats per image (the Keras example ends near 150)


# ---- BatchNorm: moving statistics everywhere outside fit -------------------------------------

def bn_vae(**kw):
    """BatchNorm right after the input (encoder) and before the output (decoder)."""
    encoder = [L.BatchNorm(epsilon=1e-2), L.Flatten()]
    decoder = [L.Dense(2 * 2 * 3), L.Reshape((2, 2, 3)), L.BatchNorm(epsilon=1e-2)]
    return vaecpp.VAE((2, 2, 3), latent_dim=2, likelihood="mse", encoder=encoder,
                      decoder=decoder, seed=0, dtype="float64", **kw)


def random_state(vae, rng):
    w = vae.get_weights()
    names = vae.weight_names()
    for i, n in enumerate(names):
        if n.endswith("moving_mean"):
            w[i] = rng.normal(size=w[i].shape)
        elif n.endswith("moving_variance"):
            w[i] = rng.uniform(0.5, 2.0, size=w[i].shape)
        elif n.endswith("gamma") or n.endswith("beta"):
            w[i] = rng.normal(size=w[i].shape)
    vae.set_weights(w)
    return w


def test_weight_order_puts_moving_statistics_after_gamma_and_beta():
    names = bn_vae().weight_names()
    assert names[:4] == ["batchnorm/gamma", "batchnorm/beta", "batchnorm/moving_mean",
                         "batchnorm/moving_variance"]
    assert names[-4:] == ["batchnorm_1/gamma", "batchnorm_1/beta", "batchnorm_1/moving_mean",
                          "batchnorm_1/moving_variance"]


def test_inference_uses_moving_statistics_and_never_moves_them():
    vae = bn_vae()
    rng = np.random.default_rng(0)
    w = random_state(vae, rng)
    x = rng.normal(size=(5, 2, 2, 3))
    # encode by hand with the moving statistics: BN, then the z_mean head
    gamma, beta, mm, mv = w[:4]
    h = (gamma * (x - mm) / np.sqrt(mv + 1e-2) + beta).reshape(5, -1)
    np.testing.assert_allclose(vae.encode(x), h @ w[4] + w[5], rtol=1e-12)
    mu, lv = vae.posterior(x)
    np.testing.assert_allclose(lv, h @ w[6] + w[7], rtol=1e-12)
    # decode by hand: Dense, then BN with the decoder's moving statistics
    z = rng.normal(size=(4, 2))
    g2, b2, m2, v2 = w[-4:]
    a = (z @ w[8] + w[9]).reshape(4, 2, 2, 3)
    np.testing.assert_allclose(vae.decode(z), g2 * (a - m2) / np.sqrt(v2 + 1e-2) + b2, rtol=1e-12)
    # samples are independent of the batch they are in (no batch statistics)
    np.testing.assert_allclose(vae.decode(z[:1]), vae.decode(z)[:1], rtol=1e-12)
    ev = vae.evaluate(x, return_dict=True)
    losses, grads = vae.gradients(x)
    for k in ("loss", "reconstruction_loss", "kl_loss"):
        np.testing.assert_allclose(losses[k], ev[k], rtol=1e-12)
    # with moving statistics each sample's gradient is its own: the batch's is their mean
    eps = rng.normal(size=(5, 2))
    g_all = vae.gradients(x, eps)[1]
    g_one = [vae.gradients(x[i:i + 1], eps[i:i + 1])[1] for i in range(5)]
    for j, g in enumerate(g_all):
        np.testing.assert_allclose(g, np.mean([gi[j] for gi in g_one], axis=0), atol=1e-12)
    vae.sample(3)
    vae.reconstruct(x)
    vae.log_likelihood(x, k=4)
    vae.decode(z, sample=True)
    for a, b in zip(vae.get_weights(), w):
        np.testing.assert_array_equal(a, b)  # nothing outside fit moves the statistics
    vae.fit(x, epochs=1, batch_size=5, verbose=0)
    moved = [not np.array_equal(a, b) for a, b, n in zip(vae.get_weights(), w, vae.weight_names())
             if "moving" in n]
    assert all(moved)


def test_save_and_load_keep_the_moving_statistics(tmp_path):
    vae = bn_vae()
    vae.fit(np.random.default_rng(1).normal(size=(20, 12)), epochs=2, batch_size=5, verbose=0)
    x = np.random.default_rng(2).normal(size=(4, 12))
    vae.save(tmp_path / "m.vae")
    back = vaecpp.load_model(tmp_path / "m.vae")
    moving = [i for i, name in enumerate(vae.weight_names()) if "/moving_" in name]
    assert moving and any(vae.get_weights()[i].any() for i in moving)
    for a, b in zip(back.get_weights(), vae.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.reconstruct(x), vae.reconstruct(x))
    other = bn_vae()
    vae.save_weights(tmp_path / "w.npz")
    other.load_weights(tmp_path / "w.npz")
    for a, b in zip(other.get_weights(), vae.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---- streamed training ----------------------------------------------------------------------

def small(**kw):
    return vaecpp.VAE(20, hidden=(8,), seed=0, **kw)


def batches_of(x, size):
    for i in range(0, len(x), size):
        yield x[i:i + size]


def test_train_epoch_on_one_batch_is_one_step_like_train_batch(blobs):
    a, b = small(), small()
    a.compile("adam")
    b.compile("adam")
    x = blobs[:16].astype(np.float32)
    sa = a.fit(x, batch_size=len(x), shuffle=False, epochs=1, verbose=0).history
    sb = b.train_on_batch(x, return_dict=True)
    assert a.step == b.step == 1
    assert {k: v[0] for k, v in sa.items()} == sb
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_generator_fit_matches_array_fit_without_shuffle(blobs):
    a, b = small(), small()
    ha = a.fit(blobs, epochs=3, batch_size=50, shuffle=False, verbose=0)

    def gen():
        while True:
            yield from batches_of(blobs, 50)
    hb = b.fit(gen(), steps_per_epoch=8, epochs=3, verbose=0)
    assert hb.epoch == ha.epoch == [0, 1, 2]
    for k in ha.history:
        np.testing.assert_allclose(hb.history[k], ha.history[k], rtol=1e-12)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert b.step == 24 and b.history.epoch == [0, 1, 2]


def test_stream_validation_and_evaluate(blobs):
    vae = small()
    val = blobs[:100]
    h = vae.fit(batches_of(np.tile(blobs, (2, 1)), 40), steps_per_epoch=10, epochs=2, verbose=0,
                validation_data=(val, None))
    assert len(h.history["val_loss"]) == 2
    # a generator as validation data needs validation_steps; one of 4 batches of 25
    h = vae.fit(blobs, epochs=1, verbose=0, validation_data=batches_of(val, 25), validation_steps=4)
    np.testing.assert_allclose(h.history["val_loss"][0], vae.evaluate(val, batch_size=25),
                               rtol=1e-6)
    ev = vae.evaluate(batches_of(val, 25), steps=4, batch_size=25)
    np.testing.assert_allclose(ev, vae.evaluate(val, batch_size=25), rtol=1e-6)
    with pytest.raises(ValueError, match="validation_steps="):
        vae.fit(blobs, verbose=0, validation_data=batches_of(val, 25))


def test_stream_argument_errors(blobs):
    vae = small()
    with pytest.raises(ValueError, match="steps_per_epoch="):
        vae.fit(batches_of(blobs, 10), verbose=0)
    with pytest.raises(ValueError, match="y must be None"):
        vae.fit(batches_of(blobs, 10), blobs, steps_per_epoch=2, verbose=0)
    with pytest.raises(ValueError, match="validation_split needs array data"):
        vae.fit(batches_of(blobs, 10), steps_per_epoch=2, validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch is for data sources"):
        vae.fit(blobs, steps_per_epoch=2, verbose=0)
    with pytest.raises(ValueError, match=r"batch 2 of x must have shape"):
        vae.fit(iter([blobs[:10], blobs[:10, :5]]), steps_per_epoch=2, verbose=0)
    assert vae.step == 1  # the good first batch was trained


def test_generator_running_dry_stops_with_a_warning(blobs):
    vae = small()
    with pytest.warns(UserWarning, match="ran out of batches after 2 of the 3"):
        h = vae.fit(batches_of(blobs[:80], 16), steps_per_epoch=3, epochs=5, verbose=0)
    assert h.epoch == [0, 1] and vae.step == 5  # 3 + the 2 left; epoch 2 recorded


def test_a_validation_generator_running_dry_stops_training_with_a_warning(blobs):
    """It said training stops, then trained on and failed an epoch later ("yielded no
    batches"); the warning names validation_steps."""
    vae = small()
    with pytest.warns(UserWarning, match=r"validation_data ran out of batches after 1 of the 2 "
                                         r"steps .* must yield validation_steps batches"):
        h = vae.fit(blobs, epochs=3, verbose=0, validation_data=iter([blobs[:10]]),
                    validation_steps=2)
    assert h.epoch == [0] and len(h.history["val_loss"]) == 1


def test_a_source_without_len_trains_through_map_batches(blobs):
    """map_batches over a source that has no len(): the step count is unknown, as for the
    source itself (it raised TypeError from len())."""
    class NoLen:
        def batches(self, batch_size, shuffle=True, seed=0, epoch=0):
            for i in range(0, 200, batch_size):
                yield blobs[i:i + batch_size]
    a, b = small(), small()
    ha = a.fit(NoLen(), batch_size=50, epochs=2, verbose=0)
    hb = b.fit(sources.map_batches(NoLen(), lambda x: x), batch_size=50, epochs=2, verbose=0)
    assert ha.history == hb.history and a.step == b.step == 8
    with pytest.raises(TypeError, match="map_batches needs a function of a batch, got int"):
        sources.map_batches(NoLen(), 3)
    with pytest.raises(ValueError, match=r"batch 1 of x must have shape \(n, 20\), got \(0,\)"):
        small().fit(iter([()]), steps_per_epoch=1, verbose=0)


def test_reiterable_and_tuple_batches(blobs):
    class Loader:  # like a DataLoader: iterated afresh each epoch, yields (x, y)
        def __iter__(self):
            return ((b, None) for b in batches_of(blobs, 100))
    vae = small()
    h = vae.fit(Loader(), epochs=3, verbose=0)
    assert len(h.epoch) == 3 and vae.step == 12


def test_ctrl_c_during_a_streamed_fit(blobs):
    vae = small(threads=1)
    steps = []

    def endless():
        while True:
            yield blobs[:16]

    def interrupt(step, logs):
        steps.append(step)
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives between batches
    with pytest.raises(KeyboardInterrupt):
        vae.fit(endless(), steps_per_epoch=10**6, epochs=2, verbose=0,
                callbacks=[cb.LambdaCallback(on_train_batch_end=interrupt)])
    assert 3 <= vae.step <= 4 and vae.history.epoch == []
    h = vae.fit(blobs, epochs=1, verbose=0)  # still usable
    assert np.isfinite(h.history["loss"][0])


def test_stream_progress_output(blobs, capsys):
    small().fit(batches_of(blobs, 50), steps_per_epoch=4, epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "loss:" in out
    small().fit(batches_of(blobs, 50), steps_per_epoch=4, epochs=1, verbose=1)
    assert "4/4" in capsys.readouterr().out


def test_non_finite_loss_in_a_stream_keeps_the_last_good_step():
    vae = vaecpp.VAE((2, 2, 3), latent_dim=2, likelihood="mse", seed=0,
                     encoder=[L.BatchNorm(), L.Flatten()], decoder=[L.Dense(12)])
    rng = np.random.default_rng(0)
    good = rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
    bad = np.full((4, 2, 2, 3), 3e19, np.float32)  # squared errors overflow float32
    seen = []
    with pytest.raises(FloatingPointError, match="epoch 1: the loss became inf at batch 2;"):
        vae.fit(iter([good, bad]), steps_per_epoch=2, verbose=0,
                callbacks=[cb.LambdaCallback(on_train_batch_end=lambda s, l: seen.append(
                    vae.get_weights()))])
    assert len(seen) == 1 and vae.step == 1
    for a, b in zip(vae.get_weights(), seen[0]):
        np.testing.assert_array_equal(a, b)  # weights and moving statistics of step 1
    h = vae.fit(iter([good, bad]), steps_per_epoch=2, verbose=0, callbacks=[cb.TerminateOnNaN()])
    assert np.isnan(h.history["loss"][0])


# ---- image folders --------------------------------------------------------------------------

@pytest.fixture
def png_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(10):
        img = np.repeat(np.repeat(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8), 4, 0), 4, 1)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    return folder


def test_fit_on_an_image_folder_source(png_folder):
    source = datasets.image_folder(png_folder, size=(8, 8), stream=True)
    vae = vaecpp.celeba_conv_vae((16, 16, 3), latent_dim=4, num_filters=(4, 8), seed=0, beta=1.0)
    with pytest.raises(ValueError, match=r"must have shape \(n, 16, 16, 3\)"):
        vae.fit(source, epochs=1, batch_size=4, verbose=0)  # 8x8 images for a 16x16 model
    source = sources.map_batches(datasets.image_folder(png_folder, size=(16, 16), stream=True),
                                 lambda b: 2 * b - 1)
    vae.compile(vaecpp.architectures.celeba_optimizer(1e-3))
    h = vae.fit(source, epochs=4, batch_size=4, verbose=0, validation_data=source)
    assert h.epoch == [0, 1, 2, 3] and vae.step == 12  # 3 batches (4, 4, 2) per epoch
    assert set(h.history) == {"loss", "reconstruction_loss", "kl_loss", "val_loss",
                              "val_reconstruction_loss", "val_kl_loss"}
    assert all(np.isfinite(v).all() for v in h.history.values())
    ev = vae.evaluate(source, batch_size=4, return_dict=True)
    np.testing.assert_allclose(ev["loss"], h.history["val_loss"][-1], rtol=1e-6)
    # the same images as an array give the same evaluation (the same noise per sample)
    arr = 2 * datasets.image_folder(png_folder, size=(16, 16)) - 1
    np.testing.assert_allclose(vae.evaluate(arr, batch_size=4), ev["loss"], rtol=1e-6)
    # fit asked the source for an epoch-dependent shuffled order; steps_per_epoch caps an epoch
    vae.fit(source, epochs=1, batch_size=4, steps_per_epoch=2, verbose=0)
    assert vae.step == 14


def test_a_batch_of_unreadable_images_is_skipped_whole(png_folder):
    """on_error="skip": a batch none of whose images could be read is left out, not handed to
    fit as an empty batch (which stopped training with "batch 6 of x is empty")."""
    for name in ("zz_bad1.png", "zz_bad2.png"):
        (png_folder / name).write_bytes(b"not a png")
    source = datasets.image_folder(png_folder, size=(16, 16), stream=True, on_error="skip")
    vae = vaecpp.celeba_conv_vae((16, 16, 3), latent_dim=4, num_filters=(4, 8), seed=0, beta=1.0)
    with pytest.warns(UserWarning, match=r"skipped .*zz_bad\d\.png: cannot read image"):
        vae.fit(source, epochs=1, batch_size=2, shuffle=False, verbose=0)
    assert vae.step == 5  # the 10 readable images; the sixth batch, both unreadable, left out
    with pytest.warns(UserWarning, match="skipped"):
        assert np.isfinite(vae.evaluate(source, batch_size=2))


# ---- the per-step hook and the long-run callbacks -------------------------------------------

class Steps(cb.Callback):
    def __init__(self):
        self.steps, self.logs = [], []

    def on_train_batch_end(self, step, logs=None):
        self.steps.append(step)
        self.logs.append(logs)


def test_batch_hook_sees_every_streamed_step(blobs):
    vae = small()
    spy = Steps()
    vae.fit(batches_of(np.tile(blobs, (2, 1)), 100), steps_per_epoch=4, epochs=2, verbose=0,
            callbacks=[spy])
    assert spy.steps == list(range(1, 9))
    assert set(spy.logs[0]) == {"loss", "reconstruction_loss", "kl_loss"}


def test_batch_hook_with_arrays_is_throttled_but_reports_true_steps(blobs):
    vae = small()
    spy = Steps()
    h = vae.fit(blobs, epochs=3, batch_size=10, verbose=0, callbacks=[spy])
    # at least the last batch of each epoch (the rest is throttled to 0.1 s)
    assert {40, 80, 120} <= set(spy.steps) and spy.steps == sorted(spy.steps)
    np.testing.assert_allclose(spy.logs[-1]["loss"], h.history["loss"][-1], rtol=1e-12)


def test_stop_training_from_the_batch_hook_ends_the_epoch(blobs):
    vae = small()

    def stop(step, logs):
        if step == 2:
            vae.stop_training = True
    h = vae.fit(batches_of(blobs, 50), steps_per_epoch=8, epochs=3, verbose=0,
                callbacks=[cb.LambdaCallback(on_train_batch_end=stop)])
    assert h.epoch == [0] and vae.step == 2


def test_periodic_checkpoint_keeps_the_last_files(tmp_path, blobs):
    vae = small()
    ckpt = cb.PeriodicCheckpoint(tmp_path / "ckpt" / "vae-{step:03d}-e{epoch}.vae",
                                 every_seconds=0, keep=2)
    vae.fit(batches_of(blobs, 80), steps_per_epoch=5, epochs=1, verbose=0, callbacks=[ckpt])
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["vae-004-e1.vae", "vae-005-e1.vae"]  # steps 1-3 deleted; epoch end = step 5
    back = vaecpp.load_model(tmp_path / "ckpt" / "vae-005-e1.vae")
    for a, b in zip(back.get_weights(), vae.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a long interval: nothing more is written
    quiet = cb.PeriodicCheckpoint(tmp_path / "never-{step}.vae", every_seconds=1e9)
    vae.fit(blobs, epochs=2, verbose=0, callbacks=[quiet])
    assert not list(tmp_path.glob("never-*")) and quiet.saved == []
    with pytest.raises(ValueError, match="keep"):
        cb.PeriodicCheckpoint(keep=0)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"samples": 0}, ValueError, "samples must be >= 1"),
    ({"interpolation_steps": 1}, ValueError, "interpolation_steps must be >= 2"),
    ({"value_range": (1, 0)}, ValueError, "value_range must be"),
    ({"zoom": 2.5}, TypeError, "zoom must be an integer"),
    ({"n": 0}, ValueError, "n must be >= 1"),
])
def test_image_snapshots_check_their_arguments_when_made(tmp_path, kwargs, error, message):
    """Not at the first snapshot, half way through training (as they were)."""
    with pytest.raises(error, match=message):
        cb.ImageSnapshots(tmp_path, np.zeros((4, 16)), **kwargs)


def test_celeba_model_with_a_unit_interval_likelihood_and_numpy_sides():
    """likelihood="bernoulli" decodes sigmoid(logits): no tanh is imposed on it (it was refused,
    "output_activation must be None, got 'tanh'", an argument the caller never passed); a side
    given as np.int64(16) is 16 (it was refused as not a power of two)."""
    vae = vaecpp.celeba_conv_vae((np.int64(16), 16, 3), latent_dim=4, num_filters=(4, 8),
                                 likelihood="bernoulli", seed=0)
    assert vae.likelihood == "bernoulli" and vae.get_config()["output_activation"] is None
    assert vae.input_shape == (16, 16, 3)


def test_image_snapshots_of_flat_inputs_that_are_not_square(tmp_path):
    """A flat model of 20 inputs cannot be shown square: fit refuses it as training begins, and
    image_shape=(4, 5) shows it (ImageSnapshots had no way to say the shape)."""
    pytest.importorskip("PIL.Image")
    x = np.random.default_rng(0).random((8, 20)).astype(np.float32)
    vae = vaecpp.VAE(20, hidden=(8,), seed=0, threads=1)
    with pytest.raises(ValueError, match=r"pass image_shape=\(h, w\)"):
        vae.fit(x, epochs=1, verbose=0, callbacks=[cb.ImageSnapshots(tmp_path / "a", x)])
    assert vae.step == 0
    snaps = cb.ImageSnapshots(tmp_path / "b", x, every_steps=1, n=2, samples=4,
                              image_shape=(4, 5))
    vae.fit(x, epochs=1, batch_size=4, verbose=0, callbacks=[snaps])
    assert snaps.written and len(snaps.written[-1][1]) == 3


def test_image_snapshots_write_png_grids(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    vae = vaecpp.keras_mnist_conv_vae(seed=0, threads=1)
    x = np.random.default_rng(0).random((12, 28, 28, 1)).astype(np.float32)
    snaps = cb.ImageSnapshots(tmp_path / "img", x, every_steps=2, n=4, samples=9,
                              interpolation_steps=5)
    vae.fit(batches_of(np.concatenate([x, x]), 5), steps_per_epoch=4, epochs=1, verbose=0,
            callbacks=[snaps])
    assert [s for s, _ in snaps.written] == [2, 4]
    names = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert names == [f"{kind}-{s:08d}.png" for kind in ("interpolations", "reconstructions", "samples")
                     for s in (2, 4)]
    zoom = 3  # 28-pixel images are enlarged 3 times to reach 64 pixels
    with Image.open(tmp_path / "img" / "samples-00000004.png") as im:
        assert im.size == (3 * 28 * zoom + 4 * 2 * zoom, 3 * 28 * zoom + 4 * 2 * zoom)
    with Image.open(tmp_path / "img" / "reconstructions-00000002.png") as im:
        assert im.size[1] == 2 * 28 * zoom + 3 * 2 * zoom  # inputs above reconstructions
    with Image.open(tmp_path / "img" / "interpolations-00000002.png") as im:
        assert im.size == (5 * 28 * zoom + 6 * 2 * zoom, 2 * 28 * zoom + 3 * 2 * zoom)
    # with arrays the hook is throttled; it still fires after the last batch of the epoch
    arr = cb.ImageSnapshots(tmp_path / "arr", x, every_steps=1, n=2, samples=4)
    vae.fit(x, epochs=1, batch_size=4, verbose=0, callbacks=[arr])
    assert arr.written and arr.written[-1][0] == vae.step
