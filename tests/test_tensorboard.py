"""The TensorBoard callback (vaecpp.callbacks.TensorBoard): the event files parse back, record by record,
with the tags, steps and values written."""

import collections
import io
import json
import struct

import numpy as np
import pytest

pytest.importorskip("tensorboardX", reason="the TensorBoard callback's optional tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402

import vaecpp  # noqa: E402
from vaecpp.callbacks import TensorBoard  # noqa: E402


def read_events(log_dir):
    """Every Event in the directory's event files: TFRecord framing (length, its CRC, the data,
    its CRC) around serialized Event protos."""
    events = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            pos += 12
            event = event_pb2.Event()
            event.ParseFromString(data[pos:pos + length])
            events.append(event)
            pos += length + 4
    return events


def by_tag(events):
    out = collections.defaultdict(dict)
    for e in events:
        for v in e.summary.value:
            out[v.tag][e.step] = v
    return out


@pytest.fixture
def trained(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((64, 6, 5)).astype(np.float32)
    vae = vaecpp.VAE(input_shape=(6, 5), latent_dim=2, hidden=(16,), seed=1, threads=1, beta=0.5)
    vae.compile(vaecpp.optimizers.Adam(learning_rate=2e-3))
    tb = TensorBoard(tmp_path / "logs", histogram_freq=1, write_images=True, update_freq="batch",
                     x=x[:10], n_images=4)
    history = vae.fit(x, epochs=3, batch_size=16, validation_data=x[:16], callbacks=[tb],
                      verbose=0)
    return vae, tb, history, x, by_tag(read_events(tmp_path / "logs"))


def test_epoch_scalars_hold_the_history(trained):
    vae, _, history, _, tags = trained
    for key in ("loss", "reconstruction_loss", "kl_loss", "val_loss"):
        values = tags[f"epoch/{key}"]
        assert sorted(values) == [0, 1, 2]
        np.testing.assert_allclose([values[s].simple_value for s in range(3)],
                                   history.history[key], rtol=1e-6)
    assert [tags["epoch/learning_rate"][s].simple_value for s in range(3)] == pytest.approx([2e-3] * 3)
    assert [tags["epoch/beta"][s].simple_value for s in range(3)] == [0.5] * 3


def test_batch_scalars_at_global_steps(trained):
    vae, _, _, _, tags = trained
    steps = sorted(tags["batch/loss"])
    assert steps and steps[-1] == int(vae._core.step) == 12  # 3 epochs of 4 batches
    assert all(1 <= s <= 12 for s in steps)
    assert set(tags["batch/kl_loss"]) == set(steps)


def test_latent_histograms_match_the_posterior(trained):
    vae, _, _, x, tags = trained
    mu, log_var = vae.posterior(x[:10])  # after training: the last epoch's histograms
    for tag, values in (("latent/z_mean", mu), ("latent/z_log_var", log_var)):
        assert sorted(tags[tag]) == [0, 1, 2]
        histo = tags[tag][2].histo
        assert histo.num == values.size
        assert histo.sum == pytest.approx(float(np.sum(values, dtype=np.float64)), rel=1e-5)
        assert histo.min == pytest.approx(float(values.min()), rel=1e-6)


def test_images_are_pngs_of_the_right_size(trained):
    from PIL import Image

    _, _, _, _, tags = trained
    recon = tags["images/reconstructions"][2].image
    samples = tags["images/samples"][0].image
    for image, rows in ((recon, 8), (samples, 4)):  # 4 inputs + 4 reconstructions, 4 samples
        picture = Image.open(io.BytesIO(image.encoded_image_string))
        assert picture.format == "PNG"
        assert (image.height, image.width) == (picture.height, picture.width)
        assert picture.height * picture.width >= rows * 6 * 5  # the images are tiled in a grid


def test_config_is_written_as_text(trained):
    vae, _, _, _, tags = trained
    (step, value), = tags["config/text_summary"].items()
    assert step == 0
    text = value.tensor.string_val[0].decode()
    assert json.loads(text.strip("`\n"))["latent_dim"] == vae.latent_dim


def test_writer_is_closed_and_bad_arguments_refused(trained, tmp_path):
    _, tb, _, x, _ = trained
    assert tb.writer is None
    with pytest.raises(ValueError, match="update_freq"):
        TensorBoard(tmp_path, update_freq=0)
    with pytest.raises(ValueError, match="histogram_freq"):
        TensorBoard(tmp_path, histogram_freq=-1)
    with pytest.raises(ValueError, match="need data"):
        TensorBoard(tmp_path, histogram_freq=1)
