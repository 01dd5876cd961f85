"""ImageSnapshots: PNG grids of reconstructions, samples and interpolations while training."""

from __future__ import annotations

import math
import os

import numpy as np

from .. import _checks
from .._imageutil import check_value_range, image_shape_of, to_display
from .base import Callback


class ImageSnapshots(Callback):
    """Every ``every_steps`` optimizer steps, saves PNG image grids to ``directory``:

    * ``reconstructions-{step:08d}.png``: pairs of rows, the inputs ``x[:n]`` above their
      reconstructions;
    * ``samples-{step:08d}.png``: ``samples`` decoded draws from the prior, the same draws
      (from ``seed``) every time, so successive files show the same points as training goes on;
    * ``interpolations-{step:08d}.png``: one row per pair of inputs ``(x[0], x[1])``,
      ``(x[2], x[3])``, ...: the decoded points along the line between their posterior means.

    With array data the step hook is throttled (see the module notes), so a snapshot lands at the
    first report at or after each multiple of ``every_steps``. ``value_range`` gives the values
    shown black and white (``(-1, 1)`` for a tanh decoder); small images are enlarged ``zoom``
    times (default: to at least 64 pixels); ``image_shape=(h, w)`` shows flat inputs whose size
    is not a square as images. Decoding uses the moving BatchNorm statistics, like every call
    outside ``fit``. Needs Pillow. Every argument is checked here, and the images' shape when
    training begins, so that no error waits for the first snapshot.
    """
    rank_zero_only = True  # in distributed training only rank 0 writes files

    def __init__(self, directory, x, every_steps=1000, n=8, samples=16, interpolation_steps=8,
                 value_range=(0.0, 1.0), seed=0, zoom=None, image_shape=None):
        self.directory = os.fspath(directory)
        self.x = np.asarray(x)[:_checks.positive_int(n, "n")]
        if len(self.x) < 1:
            raise ValueError("ImageSnapshots needs at least one input image in x")
        self.every_steps = _checks.positive_int(every_steps, "every_steps")
        self.samples = _checks.positive_int(samples, "samples")
        self.interpolation_steps = _checks.positive_int(interpolation_steps,
                                                        "interpolation_steps", minimum=2)
        self.value_range = check_value_range(value_range)
        self.zoom = None if zoom is None else _checks.positive_int(zoom, "zoom")
        self.seed, self.image_shape = seed, image_shape
        self.next_step = None
        self.written = []  # (step, paths)

    def on_train_begin(self, logs=None):
        image_shape_of(self.model, self.image_shape)  # a shape that cannot be shown: now
        step = self.model.step
        self.next_step = (step // self.every_steps + 1) * self.every_steps

    def on_train_batch_end(self, step, logs=None):
        if self.next_step is not None and step >= self.next_step:
            self.save(step)
            self.next_step = (step // self.every_steps + 1) * self.every_steps

    def save(self, step):
        """Writes the three grids for the model as it is now; returns their paths."""
        vae = self.model
        shape = image_shape_of(vae, self.image_shape)
        show = lambda images: to_display(images, shape, self.value_range)  # noqa: E731
        rng = np.random.default_rng(self.seed)
        z = rng.standard_normal((self.samples, vae.latent_dim)) * vae.get_config()["prior_std"]
        mu = vae.encode(self.x)
        t = np.linspace(0.0, 1.0, self.interpolation_steps)[:, None]
        pairs = [(a, a + 1) for a in range(0, len(mu) - 1, 2)]
        grids = {
            "reconstructions": _interleave(show(self.x), show(vae.reconstruct(self.x))),
            "samples": _rows(show(vae.decode(z)), int(math.ceil(math.sqrt(self.samples)))),
            "interpolations": [show(vae.decode((1 - t) * mu[a] + t * mu[b])) for a, b in pairs],
        }
        os.makedirs(self.directory, exist_ok=True)
        paths = []
        for name, rows in grids.items():
            if not rows:
                continue
            path = os.path.join(self.directory, f"{name}-{step:08d}.png")
            _save_png(path, rows, self.zoom)
            paths.append(path)
        self.written.append((step, paths))
        return paths


def _rows(images, ncols):
    return [images[i:i + ncols] for i in range(0, len(images), ncols)]


def _interleave(a, b, ncols=8):
    """Rows of ``a`` each followed by the same columns of ``b``."""
    out = []
    for ra, rb in zip(_rows(a, ncols), _rows(b, ncols)):
        out += [ra, rb]
    return out


def _save_png(path, rows, zoom=None, pad=2):
    """Tiles rows of display images (values in [0, 1]) into one PNG with a white border."""
    from PIL import Image
    h, w = rows[0][0].shape[:2]
    zoom = zoom or max(1, -(-64 // max(h, w)))
    ncols = max(len(r) for r in rows)
    colour = rows[0][0].ndim == 3
    H, W = len(rows) * (h + pad) + pad, ncols * (w + pad) + pad
    canvas = np.ones((H, W, 3) if colour else (H, W))
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = img
    canvas = np.repeat(np.repeat(canvas, zoom, axis=0), zoom, axis=1)
    Image.fromarray(np.round(canvas * 255).astype(np.uint8)).save(path)
