"""Saving the model while it trains: after epochs (ModelCheckpoint) or every so many seconds
(PeriodicCheckpoint)."""

from __future__ import annotations

import os
import time

from .base import Callback, Monitor


class ModelCheckpoint(Monitor):
    """Saves the model (or only its weights) after each epoch; ``filepath`` may contain
    ``{epoch}`` and metric names, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.vae"``."""
    rank_zero_only = True  # in distributed training only rank 0 writes files

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
