"""``TensorBoard``: Keras's callback of that name, writing event files with tensorboardX.

Needs the optional ``tensorboardX`` package (its own event-file writer; TensorFlow is not
needed), imported when the callback is created: ``vaecpp.callbacks.TensorBoard``
(``pip install "vaecpp[tensorboard]"``).

What it writes, under ``log_dir`` (view with ``tensorboard --logdir LOG_DIR``):

* ``epoch/<metric>`` at each epoch end (step = epoch number): every value in the epoch's logs
  (``loss``, ``reconstruction_loss``, ``kl_loss``, ``val_...``), the optimizer's
  ``learning_rate`` and the KL weight ``beta``;
* ``batch/<metric>`` every ``update_freq`` optimizer steps (step = global step) when
  ``update_freq`` is an int (Keras: ``"batch"`` = every step); with array data ``fit`` reports at
  most every 0.1 s, so a point lands at the first report at or after each multiple;
* every ``histogram_freq`` epochs, histograms ``latent/z_mean`` and ``latent/z_log_var`` of the
  posterior of ``x`` (the data given to the callback);
* with ``write_images`` and image data ``x``, every ``histogram_freq`` epochs (or each epoch when
  it is 0): ``images/reconstructions`` (inputs above their reconstructions) and
  ``images/samples`` (decoded prior draws, the same draws each time);
* once, at the start of training, the model's configuration as JSON text (``config``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from .base import Callback

__all__ = ["TensorBoard"]


class TensorBoard(Callback):
    """Writes scalars, latent histograms, images and the config for TensorBoard.

    Parameters
    ----------
    log_dir : str or os.PathLike
        Where the event files go (created if needed).
    histogram_freq : int
        Every how many epochs to write the latent histograms (0: never).
    write_images : bool
        Write reconstructions of ``x`` and decoded prior samples (image models only).
    update_freq : "epoch", "batch" or int
        ``"epoch"``: scalars at each epoch's end only; an int ``n``: also every ``n``
        optimizer steps; ``"batch"``: every step that ``fit`` reports.
    x : array_like, optional
        Data for the histograms and the images (e.g. some validation samples).
    n_images : int
        How many of ``x`` to reconstruct, and how many prior samples to decode.
    value_range : (float, float)
        The decoder values shown black and white, ``(-1, 1)`` for a tanh decoder.
    seed : int
        Seed of the prior draws shown.
    """
    rank_zero_only = True  # in distributed training only rank 0 writes files

    def __init__(self, log_dir="logs", histogram_freq=0, write_images=False, update_freq="epoch",
                 x=None, n_images=8, value_range=(0.0, 1.0), seed=0):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError("vaecpp's TensorBoard callback needs tensorboardX: "
                              "pip install tensorboardX") from e
        self._writer_class = SummaryWriter
        self.log_dir = os.fspath(log_dir)
        if isinstance(histogram_freq, bool) or int(histogram_freq) != histogram_freq \
                or histogram_freq < 0:
            raise ValueError(f"histogram_freq must be an integer >= 0, got {histogram_freq!r}")
        self.histogram_freq = int(histogram_freq)
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (isinstance(update_freq, bool) or
                                       not isinstance(update_freq, (int, np.integer)) or
                                       update_freq < 1):
            raise ValueError(f"update_freq must be 'epoch', 'batch' or an integer >= 1, "
                             f"got {update_freq!r}")
        self.update_freq = update_freq
        self.x = None if x is None else np.asarray(x)
        if (histogram_freq or write_images) and (self.x is None or len(self.x) == 0):
            raise ValueError("histograms and images need data: pass x (e.g. validation samples)")
        self.write_images = bool(write_images)
        self.n_images = int(n_images)
        self.value_range, self.seed = value_range, seed
        self.writer = None
        self._next_step = None

    # ---- hooks -----------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self.writer = self._writer_class(self.log_dir)
        step = int(self.model._core.step)
        if self.update_freq != "epoch":
            self._next_step = (step // self.update_freq + 1) * self.update_freq
        config = json.dumps(self.model.get_config(), indent=1, default=str)
        self.writer.add_text("config", "```\n" + config + "\n```", step)

    def on_train_batch_end(self, step, logs=None):
        if self._next_step is None or step < self._next_step:
            return
        for key, value in (logs or {}).items():
            self.writer.add_scalar(f"batch/{key}", float(value), step)
        self._next_step = (step // self.update_freq + 1) * self.update_freq

    def on_epoch_end(self, epoch, logs=None):
        w = self.writer
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:
                w.add_scalar(f"epoch/{key}", float(value), epoch)
        w.add_scalar("epoch/learning_rate", float(self.model.optimizer.learning_rate), epoch)
        w.add_scalar("epoch/beta", float(self.model.beta), epoch)
        every = self.histogram_freq
        if every and (epoch + 1) % every == 0:
            mu, log_var = self.model.posterior(self.x)
            w.add_histogram("latent/z_mean", np.asarray(mu, np.float64), epoch)
            w.add_histogram("latent/z_log_var", np.asarray(log_var, np.float64), epoch)
        if self.write_images and (every == 0 or (epoch + 1) % every == 0):
            self._write_images(epoch)
        w.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ---- images ----------------------------------------------------------------------------
    def _write_images(self, epoch):
        from .._imageutil import image_shape_of, to_display

        vae = self.model
        shape = image_shape_of(vae)
        x = self.x[:self.n_images]
        pairs = np.concatenate([to_display(x, shape, self.value_range),
                                to_display(vae.reconstruct(x), shape, self.value_range)])
        z = np.random.default_rng(self.seed).standard_normal((self.n_images, vae.latent_dim))
        z *= vae.get_config()["prior_std"]
        samples = to_display(vae.decode(z), shape, self.value_range)
        for tag, images in (("images/reconstructions", pairs), ("images/samples", samples)):
            if images.ndim == 3:  # greyscale (n, h, w) -> (n, h, w, 1)
                images = images[..., None]
            self.writer.add_images(tag, images.astype(np.float32), epoch, dataformats="NHWC")
