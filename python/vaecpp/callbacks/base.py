"""The callback base class, the list that calls them, and the base of those that watch a metric."""

from __future__ import annotations

import math
import warnings

BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")


class Callback:
    """Base class of callbacks, with Keras's hooks. ``self.model`` is the VAE being trained and
    ``self.params`` ``{"verbose", "epochs", "steps"}`` of the ``fit`` call (steps per epoch,
    None when a stream does not say)."""

    model = None
    # In distributed training (fit(distributed=comm)) a callback with rank_zero_only runs on
    # rank 0 alone (files, pictures); the others run on every rank with the same logs.
    rank_zero_only = False
    params: dict = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_test_begin(self, logs=None):
        """Before the validation at the end of an epoch of ``fit``."""

    def on_test_end(self, logs=None):
        """After that validation; ``logs`` holds its ``val_*`` means."""

    def on_train_batch_begin(self, step, logs=None):
        """Before a training batch; ``step`` is the global optimizer step, the steps done so far
        (see the package notes: with array data this hook is throttled). Calls
        ``on_batch_begin``, Keras 2's name, as Keras does."""
        self.on_batch_begin(step, logs)

    def on_train_batch_end(self, step, logs=None):
        """After a training batch; ``step`` is the global optimizer step after it and ``logs``
        the running means of the epoch (see the package notes: with array data this hook is
        throttled to every 0.1 s). Calls ``on_batch_end``, Keras 2's name, as Keras does."""
        self.on_batch_end(step, logs)

    def on_batch_begin(self, step, logs=None):
        pass

    def on_batch_end(self, step, logs=None):
        pass


def has_batch_hook(callback):
    """Whether ``callback`` defines any per-batch hook (fit skips the per-batch calls else)."""
    for hook in BATCH_HOOKS:
        fn = getattr(callback, hook, None)
        if fn is not None and getattr(fn, "__func__", None) is not getattr(Callback, hook):
            return True
    return False


class CallbackList:
    def __init__(self, callbacks, model, params=None):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_model(model)
            if params is not None:
                c.set_params(dict(params))

    def __getattr__(self, hook):
        def call(*args):
            for c in self.callbacks:
                getattr(c, hook)(*args)
        return call


class Monitor(Callback):
    """Shared by callbacks that watch one metric for improvement. ``best`` and the values
    compared are signed so that smaller is better (``mode="max"``, or ``"auto"`` for a metric
    named ``elbo``, flips them)."""

    def __init__(self, monitor="val_loss", mode="auto", min_delta=0.0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged metric (e.g. 'val_loss'), "
                            f"got {monitor!r}")
        self.monitor = monitor
        self.sign = -1.0 if mode == "max" or (mode == "auto" and "elbo" in monitor) else 1.0
        self.min_delta = abs(min_delta)
        self.best = math.inf

    def current(self, logs):
        """The signed value of the monitored metric, or None (with a warning, as Keras gives)
        when the epoch did not log it, e.g. ``val_loss`` without validation data."""
        if self.monitor not in (logs or {}):
            warnings.warn(f"{type(self).__name__} is conditioned on metric {self.monitor!r}, "
                          f"which is not available; available metrics are "
                          f"{', '.join(sorted(logs or {})) or 'none'}", UserWarning, stacklevel=3)
            return None
        return self.sign * float(logs[self.monitor])

    def improved(self, value, reference=None):
        """Whether ``value`` beats ``reference`` (default: the best so far) by ``min_delta``."""
        return value < (self.best if reference is None else reference) - self.min_delta

    def shown(self, value):
        """A signed value as the metric logs it."""
        return self.sign * value
