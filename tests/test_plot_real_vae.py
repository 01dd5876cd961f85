"""plot and widgets with a small trained vaecpp.VAE (skipped where the build has no VAE yet)."""

import numpy as np
import pytest

import vaecpp

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from vaecpp import datasets, plot  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(vaecpp, "VAE"), reason="vaecpp.VAE not in this build")


@pytest.fixture(scope="module")
def trained():
    x, y = datasets.digits()
    vae = vaecpp.VAE(input_shape=(8, 8), latent_dim=2, hidden=(32,), seed=0, threads=1)
    history = vae.fit(x, epochs=2, batch_size=64, verbose=0, validation_split=0.1)
    return vae, x, y, history


def test_loss_curves_of_a_real_history(trained):
    history = trained[3]
    lines = plot.loss_curves(history).axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), history.history["loss"])
    np.testing.assert_allclose(lines[1].get_ydata(), history.history["val_loss"])


def test_loss_curves_with_validation_every_other_epoch():
    """validation_freq=2 over 4 epochs: val_loss at epochs 2 and 4; vae.history after a second
    fit without validation keeps them there (before: drawn at epochs 1 and 2)."""
    rng = np.random.default_rng(0)
    x = (rng.random((64, 16)) > 0.5).astype("float32")
    vae = vaecpp.VAE(16, latent_dim=2, hidden=(8,), seed=1, threads=1)
    history = vae.fit(x, epochs=4, batch_size=16, verbose=0, validation_data=x[:16],
                      validation_freq=2)
    assert history.key_epochs["val_loss"] == [1, 3] and history.epoch == [0, 1, 2, 3]
    lines = plot.loss_curves(history).axes[0].get_lines()
    np.testing.assert_array_equal(lines[1].get_xdata(), [2, 4])
    np.testing.assert_allclose(lines[1].get_ydata(), history.history["val_loss"])
    vae.fit(x, epochs=2, batch_size=16, verbose=0)
    lines = plot.loss_curves(vae.history).axes[0].get_lines()
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(lines[1].get_xdata(), [2, 4])


def test_latent_scatter_and_manifold_of_a_real_vae(trained):
    vae, x, y, _ = trained
    fig = plot.latent_scatter((vae, x[:100]), y[:100])
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    np.testing.assert_allclose(np.sort(points, axis=0), np.sort(vae.encode(x[:100]), axis=0),
                               rtol=1e-5, atol=1e-6)
    canvas, xs, ys = plot.manifold_grid(vae, n=3)
    np.testing.assert_allclose(canvas[8:16, 16:24], vae.decode([[xs[2], ys[1]]])[0], atol=1e-6)


def test_reconstructions_and_sliders_of_a_real_vae(trained):
    vae, x, _, _ = trained
    fig = plot.reconstructions(vae, x[:3], n=3)
    np.testing.assert_allclose(fig.axes[4].images[0].get_array(), vae.reconstruct(x[1:2])[0],
                               atol=1e-6)
    widgets = pytest.importorskip("vaecpp.widgets")
    ui = widgets.latent_sliders(vae, names=["a", "b"])
    ui.update(0.5, -1.0)
    np.testing.assert_allclose(ui.current_image, vae.decode([[0.5, -1.0]])[0], atol=1e-6)
