"""Training callbacks with Keras's hook names.

``fit`` calls ``on_train_begin``, ``on_epoch_begin(epoch)``, ``on_epoch_end(epoch, logs)`` and
``on_train_end``; a callback may set ``model.stop_training = True`` to stop after the epoch.
Batches run inside the C++ engine, so there are no per-batch hooks.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time

__all__ = [
    "Callback", "History", "ProgressBar", "EarlyStopping", "ModelCheckpoint", "LambdaCallback",
    "CSVLogger", "TerminateOnNaN", "LearningRateScheduler", "ReduceLROnPlateau",
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
            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}",
                            unit="batch", file=sys.stdout, leave=True, dynamic_ncols=True)

    def on_batches(self, done, loss):
        """Called from the engine at most every 0.1 s with the running mean loss."""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"loss: {loss:.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        if self.bar is not None:
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
                 on_train_end=None):
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):
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

