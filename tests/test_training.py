"""Learning, determinism and the fit loop's Keras behaviour."""

import numpy as np
import pytest

import vaecpp


def test_learns_generated_data(blobs):
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(32,), seed=0, threads=1)
    vae.compile(vaecpp.optimizers.Adam(3e-3))
    h = vae.fit(blobs, epochs=15, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < 0.7 * h.history["loss"][0]  # floor: ~6.5 nats of flip noise
    assert h.epoch == list(range(15))


def test_learns_real_mnist_test_images(mnist_test_images):
    x = mnist_test_images[:3000]
    vae = vaecpp.VAE(784, latent_dim=2, hidden=(128,), seed=0)
    h = vae.fit(x, epochs=6, batch_size=100, verbose=0, validation_data=mnist_test_images[-500:])
    loss = h.history["loss"]
    assert loss[-1] < loss[0] - 25, loss  # well below the first epoch (nats per image)
    assert h.history["val_loss"][-1] < h.history["val_loss"][0] - 15


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_threads_same_numbers(blobs, dtype):
    def run():
        vae = vaecpp.VAE(20, hidden=(16,), seed=7, threads=2, dtype=dtype, dropout=0.2)
        h = vae.fit(blobs, epochs=3, batch_size=16, verbose=0)
        return h.history["loss"], vae.get_weights()
    (l1, w1), (l2, w2) = run(), run()
    assert l1 == l2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_differ(blobs):
    a = vaecpp.VAE(20, hidden=(8,), seed=1).get_weights()[0]
    b = vaecpp.VAE(20, hidden=(8,), seed=2).get_weights()[0]
    assert not np.array_equal(a, b)


def test_fit_accepts_y_equal_x_and_validation_forms(blobs):
    vae = vaecpp.VAE(20, hidden=(8,), seed=0)
    h = vae.fit(blobs, blobs, epochs=2, batch_size=50, verbose=0, validation_data=(blobs, blobs))
    assert set(h.history) == {"loss", "reconstruction_loss", "kl_loss", "val_loss",
                              "val_reconstruction_loss", "val_kl_loss"}
    h = vae.fit(blobs, epochs=1, verbose=0, validation_split=0.25)
    assert len(h.history["val_loss"]) == 1
    with pytest.raises(ValueError, match="reconstructs its input"):
        vae.fit(blobs, 1 - blobs, verbose=0)


def test_initial_epoch_and_lifetime_history(blobs):
    vae = vaecpp.VAE(20, hidden=(8,), seed=0)
    vae.fit(blobs, epochs=2, verbose=0)
    h = vae.fit(blobs, epochs=5, initial_epoch=2, verbose=0)
    assert h.epoch == [2, 3, 4]
    assert vae.history.epoch == [0, 1, 2, 3, 4]
    assert len(vae.history.history["loss"]) == 5


def test_verbose_2_prints_keras_lines(blobs, capsys):
    vae = vaecpp.VAE(20, hidden=(8,), seed=0)
    vae.fit(blobs, epochs=2, verbose=2, validation_data=blobs)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2
    assert out[1].startswith("Epoch 2/2 - ") and " - loss: " in out[1] and "val_loss: " in out[1]


def test_verbose_1_shows_a_progress_bar(blobs, capsys):
    vae = vaecpp.VAE(20, hidden=(8,), seed=0)
    vae.fit(blobs, epochs=1, verbose=1, batch_size=10)
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and "40/40" in out


def test_verbose_0_is_silent(blobs, capsys):
    vaecpp.VAE(20, hidden=(8,), seed=0).fit(blobs, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_encode_decode_sample_shapes_and_submodels(blobs):
    vae = vaecpp.VAE((4, 5), latent_dim=3, hidden=(8,), seed=0)
    x = blobs[:7].reshape(7, 4, 5)
    z = vae.encode(x)
    assert z.shape == (7, 3)
    mu, lv = vae.posterior(x)
    np.testing.assert_array_equal(mu, z)
    zs = vae.encode(x, sample=True, seed=1)
    assert zs.shape == (7, 3) and not np.allclose(zs, z)
    np.testing.assert_array_equal(vae.encode(x, sample=True, seed=1), zs)
    assert vae.decode(z).shape == (7, 4, 5)
    assert vae.reconstruct(x).shape == (7, 4, 5)
    np.testing.assert_array_equal(vae.predict(x), vae.reconstruct(x))
    np.testing.assert_array_equal(vae.encoder.predict(x), z)
    np.testing.assert_array_equal(vae.decoder.predict(z), vae.decode(z))
    s = vae.sample(5, seed=3)
    assert s.shape == (5, 4, 5) and np.all((s >= 0) & (s <= 1))
    np.testing.assert_array_equal(vae.sample(5, seed=3), s)
    assert vae.decode([0.0, 0.0, 0.0]).shape == (1, 4, 5)


def test_beta_zero_is_a_plain_autoencoder(blobs):
    vae = vaecpp.VAE(20, hidden=(8,), seed=0, beta=0.0, epsilon_std=1e-8)
    h = vae.fit(blobs, epochs=2, verbose=0)
    np.testing.assert_allclose(h.history["loss"], h.history["reconstruction_loss"])


def test_summary_lists_every_layer(capsys):
    vaecpp.VAE(784, hidden=(64,), seed=0).summary()
    out = capsys.readouterr().out
    for needle in ("z_mean", "z_log_var", "Sampling", "decoder_output", "(None, 784)",
                   "Total params: 101,652"):
        assert needle in out


def test_vaecpp_threads_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("VAECPP_THREADS", "1")
    assert vaecpp.VAE(4, 2, hidden=(3,), seed=0).threads == 1
    assert vaecpp.VAE(4, 2, hidden=(3,), seed=0, threads=2).threads == 2  # the argument wins
    monkeypatch.setenv("VAECPP_THREADS", "zero")
    with pytest.raises(ValueError, match="VAECPP_THREADS"):
        vaecpp.VAE(4, 2, hidden=(3,), seed=0)
    monkeypatch.delenv("VAECPP_THREADS")
    assert vaecpp.VAE(4, 2, hidden=(3,), seed=0).threads == vaecpp.build_info()["max_threads"]
