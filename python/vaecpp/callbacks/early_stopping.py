"""EarlyStopping: stop when a monitored metric stops improving."""

from __future__ import annotations

import math

from .base import Monitor


class EarlyStopping(Monitor):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs, with Keras's
    rules: an epoch improves on the best so far by more than ``min_delta``; after ``patience``
    epochs without an improvement training stops (``patience=0`` stops at the first epoch without
    one, like 1). With ``baseline``, an improvement that does not also beat the baseline does not
    restart the count. Epochs before ``start_from_epoch`` are not watched (a warm-up).
    ``restore_best_weights`` puts back the weights of the best epoch when training ends.
    ``verbose=1`` says when it stopped and which weights it restored. A metric that the epoch
    did not log (``val_loss`` without validation data) gives a warning, and training goes on.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.verbose = verbose
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self.stopped_epoch = 0
        self.best_epoch = 0

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.best_weights, self.best_epoch = math.inf, 0, None, 0
        self.stopped_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        value = self.current(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self.improved(value):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self.improved(value, self.sign * self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)
