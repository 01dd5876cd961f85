"""The callback base class, the list that calls them, and the base of those that watch a metric."""

from __future__ import annotations

import math


class Callback:
    model = None
    # In distributed training (fit(distributed=comm)) a callback with rank_zero_only runs on
    # rank 0 alone (files, pictures); the others run on every rank with the same logs.
    rank_zero_only = False

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


class Monitor(Callback):
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
