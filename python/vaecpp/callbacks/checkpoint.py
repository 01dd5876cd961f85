"""Saving the model while it trains: after epochs (ModelCheckpoint) or every so many seconds
(PeriodicCheckpoint)."""

from __future__ import annotations

import os
import time

from .base import Callback, Monitor


class ModelCheckpoint(Monitor):
    """Saves the model (or only its weights) after each epoch, or every ``save_freq`` optimizer
    steps; ``filepath`` may contain ``{epoch}`` (1-based), ``{step}`` (the global optimizer step)
    and metric names, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.vae"``.

    ``save_best_only`` saves only when ``monitor`` improved (a metric the epoch did not log gives
    a warning and no file). ``verbose=1`` prints a line per save (and per epoch that did not
    improve), as Keras does. ``save_freq="epoch"`` (default) saves after every epoch; an integer
    saves after every that many optimizer steps: with streamed data after exactly those steps,
    with arrays (whose epochs run in C++ and report at most every 0.1 s) at the first report at or
    after each multiple. A path ending in ``.safetensors`` with ``save_weights_only=True``
    writes the safetensors format.
    """
    rank_zero_only = True  # in distributed training only rank 0 writes files

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch"):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                     or save_freq < 1):
            raise ValueError(f"save_freq must be 'epoch' or a positive number of optimizer steps, "
                             f"got {save_freq!r}")
        self.save_freq = save_freq
        self.epoch = 0
        self.next_step = None

    def on_train_begin(self, logs=None):
        if self.save_freq != "epoch":
            self.next_step = (self.model.step // self.save_freq + 1) * self.save_freq

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, step, logs=None):
        if self.next_step is not None and step >= self.next_step:
            self._save(self.epoch, step, logs)
            self.next_step = (step // self.save_freq + 1) * self.save_freq

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, self.model.step, logs)

    def _save(self, epoch, step, logs):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, step=step, **logs)
        if self.save_best_only:
            value = self.current(logs)
            if value is None:
                return
            if not self.improved(value):
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from "
                          f"{self.shown(self.best):.5f}")
                return
            if self.verbose > 0:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from "
                      f"{self.shown(self.best):.5f} to {self.shown(value):.5f}, saving model to "
                      f"{path}")
            self.best = value
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


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

    rank_zero_only = True  # in distributed training only rank 0 writes files

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
        self._maybe_save(self.model.step)

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
