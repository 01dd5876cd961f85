"""Training callbacks with Keras's hook names.

``fit`` calls ``on_train_begin``, ``on_epoch_begin(epoch)``, ``on_epoch_end(epoch, logs)`` and
``on_train_end``; a callback may set ``model.stop_training = True`` to stop after the epoch.

``on_train_batch_end(step, logs)`` gets the model's global optimizer step (``vae._core.step``:
steps done since the optimizer was compiled, across ``fit`` calls) and the running means of the
epoch so far. With streamed data (generators, data sources) it runs after every batch. With
arrays a whole epoch runs inside the C++ engine, which calls back at most every 0.1 s and after
the last batch: there the hook is **throttled** and sees only some steps, so count steps from the
``step`` argument rather than from calls. Setting ``model.stop_training`` in it ends the epoch.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time

import numpy as np

__all__ = [
    "Callback", "History", "ProgressBar", "EarlyStopping", "ModelCheckpoint", "LambdaCallback",
    "CSVLogger", "TerminateOnNaN", "LearningRateScheduler", "ReduceLROnPlateau",
    "PeriodicCheckpoint", "ImageSnapshots",
]


class Callback:
    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, step, logs=None):
        """After a training batch; ``step`` is the global optimizer step (see the module notes:
        with array data this hook is throttled to every 0.1 s)."""


def has_batch_hook(callback):
    """Whether ``callback`` defines ``on_train_batch_end`` (fit skips the per-batch calls else)."""
    fn = getattr(callback, "on_train_batch_end", None)
    return fn is not None and getattr(fn, "__func__", None) is not Callback.on_train_batch_end


class History(Callback):
    """``.epoch`` lists the epoch indices, ``.history`` maps each metric to its per-epoch list."""

    def __init__(self):
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def format_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class ProgressBar(Callback):
    """verbose=1: a live bar per epoch (tqdm); verbose=2: one Keras-style line per epoch."""

    def __init__(self, verbose, epochs, steps):
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        if self.verbose == 1:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}",  # None: unknown
                            unit="batch", file=sys.stdout, leave=True, dynamic_ncols=True)

    def on_batches(self, done, loss):
        """Called after batches (from the engine at most every 0.1 s) with the running mean loss."""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"loss: {loss:.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        if self.bar is not None:
            if self.steps is not None:
                self.bar.update(self.steps - self.bar.n)
            self.bar.set_postfix_str(format_logs(logs or {}), refresh=True)
            self.bar.close()
            self.bar = None
        elif self.verbose == 2:
            print(f"Epoch {epoch + 1}/{self.epochs} - {seconds:.0f}s - {format_logs(logs or {})}",
                  flush=True)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Monitor(Callback):
    """Shared by callbacks that watch one metric for improvement."""

    def __init__(self, monitor="val_loss", mode="auto", min_delta=0.0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.sign = -1.0 if mode == "max" or (mode == "auto" and "elbo" in monitor) else 1.0
        self.min_delta = abs(min_delta)
        self.best = math.inf

    def current(self, logs):
        if self.monitor not in (logs or {}):
            raise ValueError(f"{type(self).__name__} monitors {self.monitor!r}, which is not "
                             f"among the logged metrics {sorted(logs or {})}")
        return self.sign * float(logs[self.monitor])

    def improved(self, value):
        return value < self.best - self.min_delta


class EarlyStopping(_Monitor):
    """Stops when ``monitor`` has not improved for ``patience`` epochs; optionally restores the
    weights of the best epoch."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self.stopped_epoch = 0

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.best_weights, self.best_epoch = math.inf, 0, None, 0

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_from_epoch:
            return
        value = self.current(logs)
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Saves the model (or only its weights) after each epoch; ``filepath`` may contain
    ``{epoch}`` and metric names, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.vae"``."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False,
                 save_weights_only=False, mode="auto"):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only:
            value = self.current(logs)
            if not self.improved(value):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **(logs or {}))
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class LambdaCallback(Callback):
    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_end=None):
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                         ("on_train_batch_end", on_train_batch_end)):
            if fn is not None:
                setattr(self, name, fn)


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` then the metrics."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self.keys = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename)
        self.file = open(self.filename, "a" if self.append else "w", newline="")
        self.writer = None
        self.header_written = exists and os.path.getsize(self.filename) > 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.writer is None:
            self.keys = list(logs)
            self.writer = csv.writer(self.file, delimiter=self.separator)
            if not self.header_written:
                self.writer.writerow(["epoch"] + self.keys)
        self.writer.writerow([epoch] + [logs.get(k, "") for k in self.keys])
        self.file.flush()

    def on_train_end(self, logs=None):
        self.file.close()


class TerminateOnNaN(Callback):
    """With this callback a NaN/inf loss stops training cleanly instead of raising; the weights of
    the last good step are kept either way."""


class LearningRateScheduler(Callback):
    """Sets the optimizer's learning rate at the start of each epoch from ``schedule(epoch)`` or
    ``schedule(epoch, lr)`` (Keras's signature). With it (or ReduceLROnPlateau) in the callbacks,
    the history logs ``learning_rate`` per epoch."""

    def __init__(self, schedule, verbose=0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        try:
            lr = self.schedule(epoch, opt.learning_rate)
        except TypeError:
            lr = self.schedule(epoch)
        lr = float(lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"the learning-rate schedule returned {lr} at epoch {epoch}")
        opt.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")


class ReduceLROnPlateau(_Monitor):
    """Multiplies the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs, down to ``min_lr``; waits ``cooldown`` epochs after each reduction."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        if not 0.0 < factor < 1.0:
            raise ValueError("ReduceLROnPlateau factor must be in (0, 1)")
        self.factor, self.patience, self.verbose = factor, patience, verbose
        self.cooldown, self.min_lr = cooldown, min_lr

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_left = math.inf, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        value = self.current(logs)
        opt = self.model.optimizer
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self.improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_left == 0:
            self.wait += 1
            if self.wait >= self.patience and opt.learning_rate > self.min_lr:
                opt.learning_rate = max(opt.learning_rate * self.factor, self.min_lr)
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                          f"{opt.learning_rate}.")
                self.cooldown_left, self.wait = self.cooldown, 0


class PeriodicCheckpoint(Callback):
    """Saves the model every ``every_seconds`` seconds of training, for runs of hours or days.

    The clock is checked after each batch report (see the module notes) and each epoch, so a
    save lands at the first of those after the interval. ``filepath`` may contain ``{step}``
    (the global optimizer step) and ``{epoch}`` (1-based), e.g. ``"ckpt/vae-{step:08d}.vae"``;
    directories are created. Of the files this callback has written, the newest ``keep`` stay
    and older ones are deleted (``keep=None`` keeps all). Saves are atomic, so a crash during
    one leaves the previous checkpoint intact; resume with ``load_model`` and
    ``fit(..., initial_epoch=len(vae.history.epoch))``.
    """

    def __init__(self, filepath="checkpoint-{step:08d}.vae", every_seconds=600.0, keep=3,
                 save_weights_only=False):
        self.filepath = os.fspath(filepath)
        self.every_seconds = float(every_seconds)
        if not self.every_seconds >= 0:
            raise ValueError(f"every_seconds must be >= 0, got {every_seconds}")
        if keep is not None and (int(keep) != keep or keep < 1):
            raise ValueError(f"keep must be a positive integer or None, got {keep!r}")
        self.keep = keep
        self.save_weights_only = save_weights_only
        self.saved = []  # paths written, oldest first
        self.epoch = 0

    def on_train_begin(self, logs=None):
        self.last = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, step, logs=None):
        self._maybe_save(step)

    def on_epoch_end(self, epoch, logs=None):
        self._maybe_save(int(self.model._core.step))

    def _maybe_save(self, step):
        if time.monotonic() - self.last < self.every_seconds:
            return
        path = self.filepath.format(step=step, epoch=self.epoch + 1)
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        self.last = time.monotonic()
        if path in self.saved:
            self.saved.remove(path)
        self.saved.append(path)
        while self.keep is not None and len(self.saved) > self.keep:
            old = self.saved.pop(0)
            if os.path.exists(old):
                os.remove(old)


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
    times (default: to at least 64 pixels). Decoding uses the moving BatchNorm statistics, like
    every call outside ``fit``. Needs Pillow.
    """

    def __init__(self, directory, x, every_steps=1000, n=8, samples=16, interpolation_steps=8,
                 value_range=(0.0, 1.0), seed=0, zoom=None):
        self.directory = os.fspath(directory)
        self.x = np.asarray(x)[:n]
        if len(self.x) < 1:
            raise ValueError("ImageSnapshots needs at least one input image in x")
        self.every_steps = int(every_steps)
        if self.every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        self.samples, self.interpolation_steps = int(samples), int(interpolation_steps)
        self.value_range, self.seed, self.zoom = value_range, seed, zoom
        self.next_step = None
        self.written = []  # (step, paths)

    def on_train_begin(self, logs=None):
        step = int(self.model._core.step)
        self.next_step = (step // self.every_steps + 1) * self.every_steps

    def on_train_batch_end(self, step, logs=None):
        if self.next_step is not None and step >= self.next_step:
            self.save(step)
            self.next_step = (step // self.every_steps + 1) * self.every_steps

    def save(self, step):
        """Writes the three grids for the model as it is now; returns their paths."""
        from ._imageutil import image_shape_of, to_display
        vae = self.model
        shape = image_shape_of(vae)
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


class CallbackList:
    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_model(model)

    def __getattr__(self, hook):
        def call(*args):
            for c in self.callbacks:
                getattr(c, hook)(*args)
        return call

