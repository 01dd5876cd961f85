"""vaecpp.plot on the Agg backend: the data each figure shows."""

import io
from statistics import NormalDist

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stub_vae import StubVAE  # noqa: E402
from vaecpp import plot  # noqa: E402


class FakeHistory:
    def __init__(self, history):
        self.history = history
        self.epoch = list(range(len(history["loss"])))


def shown(fig):
    """The arrays of every image drawn in the figure, axes by axes."""
    return [np.asarray(im.get_array()) for ax in fig.axes for im in ax.images]


def test_figures_are_returned_and_not_left_in_pyplot():
    stub_vae = StubVAE()
    before = plt.get_fignums()
    fig = plot.manifold(stub_vae, n=3)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert plt.get_fignums() == before
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_loss_curves_from_history_and_dict():
    history = FakeHistory({"loss": [3.0, 2.0, 1.5], "val_loss": [3.1, 2.2, 1.9], "kl_loss": [1, 2, 3]})
    fig = plot.loss_curves(history)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["loss", "val_loss"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(lines[1].get_ydata(), [3.1, 2.2, 1.9])
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks)  # whole epochs only
    fig = plot.loss_curves({"loss": [1.0, 0.5]}, logy=True, title="t")  # no val_loss: skipped
    assert len(fig.axes[0].get_lines()) == 1 and fig.axes[0].get_yscale() == "log"
    fig = plot.loss_curves(history, keys=("kl_loss",))
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_ydata(), [1, 2, 3])
    with pytest.raises(ValueError, match="none of"):
        plot.loss_curves(history, keys=("elbo",))


def test_loss_curves_draw_each_value_at_the_epoch_it_was_logged():
    """val_* logged only at validated epochs (validation_freq=2, then a fit without validation)
    are drawn at those epochs, not at 1, 2, ... (before: any key shorter than .epoch fell back
    to 1..len)."""
    from vaecpp.callbacks import History
    history = History()
    for epoch in range(6):  # validated after epochs 2 and 4 (1-based)
        logs = {"loss": 10.0 - epoch}
        if epoch in (1, 3):
            logs["val_loss"] = 20.0 - epoch
        history.on_epoch_end(epoch, logs)
    assert history.key_epochs == {"loss": [0, 1, 2, 3, 4, 5], "val_loss": [1, 3]}
    lines = plot.loss_curves(history).axes[0].get_lines()
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(lines[1].get_xdata(), [2, 4])
    np.testing.assert_array_equal(lines[1].get_ydata(), [19.0, 17.0])


def test_loss_curves_warn_where_the_epochs_of_a_key_are_unknown():
    """A history without the per-key record (a dict, an older History) whose val_loss is shorter
    than its epochs: drawn at 1..n with a warning saying the epochs are unknown."""
    history = FakeHistory({"loss": [3.0, 2.0, 1.5, 1.0], "val_loss": [3.1, 2.2]})
    with pytest.warns(UserWarning, match="'val_loss' has 2 values for 4 epochs"):
        lines = plot.loss_curves(history).axes[0].get_lines()
    np.testing.assert_array_equal(lines[1].get_xdata(), [1, 2])
    with pytest.warns(UserWarning, match="does not say which epochs"):
        plot.loss_curves(history.history)


def test_loss_curves_keys_and_log_scale():
    """One string is one key, not its characters; a log axis of losses <= 0 (a Gaussian
    model's) is a ValueError (before: matplotlib's warning and an empty axis)."""
    history = FakeHistory({"loss": [3.0, 2.0], "val_loss": [3.1, 2.2]})
    lines = plot.loss_curves(history, keys="val_loss").axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["val_loss"]
    with pytest.raises(TypeError, match="keys"):
        plot.loss_curves(history, keys=[1])
    with pytest.raises(TypeError, match="keys"):
        plot.loss_curves(history, keys=5)
    with pytest.raises(ValueError, match="logy=True needs positive values, but 'loss' has -5"):
        plot.loss_curves({"loss": [-5.0, -6.0]}, logy=True)
    with pytest.raises(ValueError, match="logy"):
        plot.loss_curves({"loss": [1.0, 0.0]}, logy=True)


def test_latent_scatter_with_classes():
    stub_vae = StubVAE()
    rng = np.random.default_rng(0)
    z = rng.standard_normal((30, 3))
    labels = np.arange(30) % 3
    fig = plot.latent_scatter(z, labels, dims=(0, 2))
    collections = fig.axes[0].collections
    assert len(collections) == 3
    np.testing.assert_allclose(collections[1].get_offsets(), z[labels == 1][:, [0, 2]])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["0", "1", "2"]


def test_latent_scatter_encodes_vae_input_and_continuous_labels():
    stub_vae = StubVAE()
    x = np.random.default_rng(1).random((20, 6, 5))
    t = np.linspace(-1, 1, 20)
    fig = plot.latent_scatter((stub_vae, x), labels=t)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), stub_vae.encode(x))
    assert len(fig.axes) == 2  # with a colour bar
    fig = plot.latent_scatter(np.linspace(0, 1, 5)[:, None])  # 1-D latent space
    assert len(fig.axes[0].collections[0].get_offsets()) == 5
    fig = plot.latent_scatter(np.zeros((3, 2)), labels=["shoe", "bag", "shoe"])
    assert len(fig.axes[0].collections) == 2
    with pytest.raises(ValueError, match="labels"):
        plot.latent_scatter(np.zeros((4, 2)), labels=[1, 2])


def test_latent_scatter_checks_dims_labels_and_shape():
    """dims out of range or repeated, 2-D labels and 3-D codes are ValueErrors naming them
    (before: IndexErrors)."""
    z = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"dims must be latent dimensions in 0\.\.1"):
        plot.latent_scatter(z, dims=(0, 5))
    with pytest.raises(ValueError, match="two different"):
        plot.latent_scatter(z, dims=(1, 1))
    with pytest.raises(ValueError, match=r"labels must be 1-D, one per point, got shape \(4, 1\)"):
        plot.latent_scatter(z, labels=np.zeros((4, 1), dtype=int))
    with pytest.raises(ValueError, match="argmax"):
        plot.latent_scatter(z, labels=np.eye(4))
    with pytest.raises(ValueError, match="z must be"):
        plot.latent_scatter(np.zeros((4, 2, 2)))


def expected_block(vae, z):
    return vae.decode(np.asarray([z]))[0]


def test_manifold_ppf_grid_shows_the_decoded_images():
    stub_vae = StubVAE()
    n = 4
    fig = plot.manifold(stub_vae, n=n)
    (canvas,) = shown(fig)
    assert canvas.shape == (n * 7 - 1, n * 6 - 1)  # 6 x 5 tiles, one white pixel between
    coords = [NormalDist().inv_cdf(q) for q in np.linspace(0.05, 0.95, n)]
    for i in range(n):  # rows: z[1] decreasing downwards
        for j in range(n):  # columns: z[0] increasing to the right
            block = canvas[i * 7 : i * 7 + 6, j * 6 : j * 6 + 5]
            np.testing.assert_allclose(block, expected_block(stub_vae, [coords[j], coords[-1 - i]]))
    assert np.all(canvas[6::7] == 1.0) and np.all(canvas[:, 5::6] == 1.0)  # the gaps
    ax = fig.axes[0]
    assert "quantiles" in ax.get_xlabel() and ax.get_xlabel().startswith("z[0]")
    assert ax.get_ylabel().startswith("z[1]")
    np.testing.assert_allclose(ax.get_xticks()[:2], [2, 8])  # tile centres
    (no_gap,) = shown(plot.manifold(stub_vae, n=n, gap=0))
    assert no_gap.shape == (n * 6, n * 5)


def test_manifold_grid_linear_scale_fixed_dims():
    vae = StubVAE(input_shape=(4, 4), latent_dim=3)
    canvas, xs, ys = plot.manifold_grid(vae, n=3, grid="linear", limits=(-1, 1), scale=2.0,
                                        dims=(2, 0), fixed=[0.0, 0.5, 0.0])
    np.testing.assert_allclose(xs, [-2, 0, 2])
    np.testing.assert_allclose(ys, [2, 0, -2])
    np.testing.assert_allclose(canvas[4:8, 8:12], expected_block(vae, [0.0, 0.5, 2.0]))
    canvas, xs, _ = plot.manifold_grid(vae, grid=[0.1, 0.2])
    assert canvas.shape == (8, 8)
    with pytest.raises(ValueError, match="grid must be"):
        plot.manifold(vae, grid="log")


def test_manifold_checks_dims_and_fixed():
    """dims: two different dimensions of the latent space; fixed: one finite value per latent
    dimension (before: dims=(0, 0) drew identical columns, dims out of range and a short fixed
    were IndexErrors, a long fixed a message not naming it)."""
    vae = StubVAE(latent_dim=2)
    for dims, match in [((0, 0), "two different"), ((0, 2), r"0\.\.1"), ((-1, 0), "dims must be >= 0")]:
        with pytest.raises(ValueError, match=match):
            plot.manifold_grid(vae, n=3, dims=dims)
        with pytest.raises(ValueError, match="dims"):
            plot.manifold(vae, n=3, dims=dims)
    for dims in [(0,), "01", (0.0, 1.0)]:
        with pytest.raises(TypeError, match="dims"):
            plot.manifold_grid(vae, n=3, dims=dims)
    for fixed in [[0.0], [0.0, 0.0, 0.0], [[0.0, 0.0]]]:
        with pytest.raises(ValueError, match=r"fixed must hold one value per latent dimension \(2\)"):
            plot.manifold_grid(vae, n=3, fixed=fixed)
    with pytest.raises(ValueError, match="fixed must be finite"):
        plot.manifold(vae, n=3, fixed=[0.0, np.nan])
    with pytest.raises(TypeError, match="fixed"):
        plot.manifold_grid(vae, n=3, fixed=["a", "b"])
    assert len(vae.decoded) == 0  # refused before anything was decoded
    canvas, _, _ = plot.manifold_grid(vae, n=2, dims=(1, 0), fixed=np.array([5.0, 5.0]), gap=0)
    np.testing.assert_allclose(canvas[:6, :5], expected_block(vae, [1.6448536, -1.6448536]),
                               atol=1e-6)  # column: z[1], row: z[0]


def test_manifold_labels_small_quantiles():
    """(0.001, 0.999) is labelled 0.1%–99.9%, not 0%–100%."""
    stub_vae = StubVAE()
    label = plot.manifold(stub_vae, n=2, quantiles=(0.001, 0.999)).axes[0].get_xlabel()
    assert "prior's 0.1%–99.9% quantiles" in label
    assert "5%–95% quantiles" in plot.manifold(stub_vae, n=2).axes[0].get_xlabel()


def test_manifold_one_latent_dimension_and_flat_rgb_inputs():
    vae = StubVAE(input_shape=(48,), latent_dim=1)
    fig = plot.manifold(vae, n=5, image_shape=(4, 4, 3))
    (canvas,) = shown(fig)
    assert canvas.shape == (4, 24, 3)
    np.testing.assert_allclose(canvas[:, 10:14], vae.decode([[0.0]])[0].reshape(4, 4, 3))
    flat = StubVAE(input_shape=(16,), latent_dim=2)
    assert shown(plot.manifold(flat, n=2, gap=0))[0].shape == (8, 8)  # 16 = 4 x 4
    odd = StubVAE(input_shape=(15,), latent_dim=2)
    with pytest.raises(ValueError, match="image_shape"):
        plot.manifold(odd)


def test_manifold_value_range_for_tanh_decoders():
    vae = StubVAE(tanh=True)
    canvas, xs, ys = plot.manifold_grid(vae, n=2, value_range=(-1, 1))
    np.testing.assert_allclose(canvas[:6, :5], (expected_block(vae, [xs[0], ys[0]]) + 1) / 2)


@pytest.mark.parametrize("shape", [(3, 6, 5), (3, 6, 5, 1), (3, 6, 5, 3)])
def test_image_grid_shapes(shape):
    images = np.random.default_rng(0).random(shape)
    fig = plot.image_grid(images, ncols=2, titles=["a", "b", "c"])
    arrays = shown(fig)
    assert len(arrays) == 3 and len(fig.axes) == 4  # 2 x 2, one empty
    np.testing.assert_allclose(arrays[2], images[2].reshape(arrays[2].shape))
    assert fig.axes[1].get_title() == "b"
    assert plot.image_grid(images, title="samples").get_suptitle() == "samples"


def test_image_grid_value_range_and_flat_images():
    images = np.array([[-1.0, 0.0, 1.0, 3.0]])
    (array,) = shown(plot.image_grid(images, image_shape=(2, 2), value_range=(-1, 1)))
    np.testing.assert_allclose(array, [[0.0, 0.5], [1.0, 1.0]])  # clipped above 1
    with pytest.raises(ValueError, match="expected images"):
        plot.image_grid(np.zeros((2, 3, 3, 2)))
    with pytest.raises(ValueError, match="no images"):
        plot.image_grid(np.zeros((0, 3, 3)))


def test_image_grid_checks_titles_and_ncols():
    """One title per image and ncols >= 1 (before: an IndexError for too few titles, and
    ncols=0 or -3 silently one column)."""
    images = np.zeros((3, 4, 4))
    with pytest.raises(ValueError, match=r"titles must have one per image \(3\), got 1"):
        plot.image_grid(images, titles=["a"])
    with pytest.raises(ValueError, match="titles"):
        plot.image_grid(images, titles=list("abcd"))
    for ncols in (0, -3):
        with pytest.raises(ValueError, match="ncols must be >= 1"):
            plot.image_grid(images, ncols=ncols)
    with pytest.raises(TypeError, match="ncols"):
        plot.image_grid(images, ncols=2.5)
    assert len(plot.image_grid(images, ncols=1).axes) == 3


def test_reconstructions():
    stub_vae = StubVAE()
    x = np.random.default_rng(2).random((7, 6, 5))
    fig = plot.reconstructions(stub_vae, x, n=4)
    arrays = shown(fig)
    assert len(arrays) == 8
    np.testing.assert_allclose(arrays[1], x[1])
    np.testing.assert_allclose(arrays[4 + 3], stub_vae.decode(stub_vae.encode(x[3:4]))[0])
    assert fig.axes[0].get_ylabel() == "input" and fig.axes[4].get_ylabel() == "reconstruction"
    assert plot.reconstructions(stub_vae, x, n=2, title="t").get_suptitle() == "t"


def test_reconstructions_and_interpolation_check_n_and_inputs():
    """n must be an integer >= 1 (before: n=2.5 a slicing TypeError, n=-1 all but the last
    input); no inputs are a ValueError naming them (before: an unpacking error)."""
    stub_vae = StubVAE()
    x = np.random.default_rng(6).random((4, 6, 5))
    with pytest.raises(TypeError, match="n must be an integer"):
        plot.reconstructions(stub_vae, x, n=2.5)
    for n in (0, -1):
        with pytest.raises(ValueError, match="n must be >= 1"):
            plot.reconstructions(stub_vae, x, n=n)
    with pytest.raises(ValueError, match="x holds no inputs"):
        plot.reconstructions(stub_vae, x[:0])
    with pytest.raises(ValueError, match="x_a holds no inputs"):
        plot.interpolation(stub_vae, x[:0], x[1])
    with pytest.raises(ValueError, match="x_b holds no inputs"):
        plot.interpolation(stub_vae, x[0], x[:0])
    assert len(shown(plot.reconstructions(stub_vae, x, n=10))) == 8  # n beyond x: all of them


def test_interpolation_linear_and_slerp():
    stub_vae = StubVAE()
    rng = np.random.default_rng(3)
    x_a, x_b = rng.random((6, 5)), rng.random((1, 6, 5))
    z_a, z_b = stub_vae.encode(np.stack([x_a, x_b[0]]))
    arrays = shown(plot.interpolation(stub_vae, x_a, x_b, steps=5))
    assert len(arrays) == 7
    np.testing.assert_allclose(arrays[0], x_a)
    np.testing.assert_allclose(arrays[-1], x_b[0])
    np.testing.assert_allclose(arrays[3], stub_vae.decode([(z_a + z_b) / 2])[0])
    plot.interpolation(stub_vae, x_a, x_b, steps=3, method="slerp", include_inputs=False)
    z_path = stub_vae.decoded[-1]
    assert len(z_path) == 3
    np.testing.assert_allclose(z_path[[0, -1]], [z_a, z_b], atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        plot.interpolation(stub_vae, x_a, x_b, method="cubic")


def test_nearest_neighbours_finds_copies():
    rng = np.random.default_rng(4)
    train = rng.random((50, 6, 5))
    samples = train[[7, 31]] + 1e-3
    idx, dist = plot.nearest_neighbour_indices(samples, train, k=3, chunk=16)
    assert idx[:, 0].tolist() == [7, 31]
    assert np.all(dist[:, 0] < 0.01) and np.all(np.diff(dist, axis=1) >= 0)
    brute = np.sqrt(((samples.reshape(2, 1, -1) - train.reshape(1, 50, -1)) ** 2).sum(-1))
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :3], atol=1e-9)
    fig = plot.nearest_neighbours(samples, train, k=3)
    arrays = shown(fig)
    assert len(arrays) == 8
    np.testing.assert_allclose(arrays[5], train[31])
    assert fig.axes[1].get_title().startswith("#7 d=0.0")
    with pytest.raises(ValueError, match="values each"):
        plot.nearest_neighbours(samples, train[:, :5], k=1)


def test_nearest_neighbour_indices_in_blocks_match_brute_force():
    """Blocks of samples and of training images (ragged ends, k larger than a block, ties) give
    the brute-force answer; memory stays at a few blocks' worth (before: a samples x training
    images float64 matrix, 2 GB for 4,096 samples against 60,000 images)."""
    import tracemalloc
    rng = np.random.default_rng(9)
    train = rng.integers(0, 3, size=(103, 4)).astype(np.uint8)  # many equal distances
    samples = rng.integers(0, 3, size=(37, 4)).astype(np.float32)
    brute = ((samples[:, None, :].astype(np.float64) - train[None, :, :]) ** 2).sum(-1)
    for k, chunk, sample_chunk in [(1, 10, 5), (5, 7, 36), (12, 5, 1), (103, 64, 64), (200, 1000, 1000)]:
        idx, dist = plot.nearest_neighbour_indices(samples, train, k=k, chunk=chunk,
                                                   sample_chunk=sample_chunk)
        kk = min(k, len(train))
        assert idx.shape == dist.shape == (37, kk)
        np.testing.assert_allclose(dist ** 2, np.sort(brute, axis=1)[:, :kk], atol=1e-9)
        np.testing.assert_allclose(dist ** 2, np.take_along_axis(brute, idx, axis=1), atol=1e-9)
        assert all(len(set(row)) == kk for row in idx.tolist())
        # equal distances in index order
        d_sorted = np.round(dist ** 2, 6)
        same = d_sorted[:, 1:] == d_sorted[:, :-1]
        assert (idx[:, 1:][same] > idx[:, :-1][same]).all()
    big_samples, big_train = rng.random((2000, 64)), rng.random((6000, 64)).astype(np.float32)
    tracemalloc.start()
    plot.nearest_neighbour_indices(big_samples, big_train, k=3, chunk=1024, sample_chunk=128)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16e6, f"peak {peak / 1e6:.1f} MB (the whole distance matrix is 96 MB)"
    with pytest.raises(ValueError, match="k must be"):
        plot.nearest_neighbour_indices(samples, train, k=0)


def test_nearest_neighbour_indices_refuse_empty_and_non_finite_images():
    """No samples or no training images, and a NaN or inf in either, are ValueErrors naming
    them (before: a reshape error, or indices of inf distances for a NaN sample)."""
    rng = np.random.default_rng(5)
    train, samples = rng.random((20, 6, 5)), rng.random((3, 6, 5))
    with pytest.raises(ValueError, match="samples is empty"):
        plot.nearest_neighbour_indices(samples[:0], train)
    with pytest.raises(ValueError, match="train_images is empty"):
        plot.nearest_neighbour_indices(samples, train[:0])
    with pytest.raises(ValueError, match="samples contains NaN"):
        plot.nearest_neighbour_indices(np.where(samples == samples[1, 2, 3], np.nan, samples), train)
    bad_train = train.copy()
    bad_train[13, 0, 0] = np.inf
    with pytest.raises(ValueError, match="train_images contains NaN or inf"):
        plot.nearest_neighbour_indices(samples, bad_train, chunk=4)
    with pytest.raises(ValueError, match="samples"):
        plot.nearest_neighbours(samples[:0], train)
    with pytest.raises(TypeError, match="train_images"):
        plot.nearest_neighbour_indices(samples, np.array([["a"] * 30] * 2))

