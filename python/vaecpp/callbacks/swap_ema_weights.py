"""SwapEMAWeights: validate, or run epoch-end callbacks, with the averaged weights."""

from __future__ import annotations

import numpy as np

from .base import Callback


class SwapEMAWeights(Callback):
    """Keras 3's callback for an optimizer with ``use_ema=True``: the model's weights and the
    optimizer's moving average of them swap places before each validation during ``fit`` (so
    ``val_*`` metrics are those of the averaged weights) and swap back after it, before training
    goes on. With ``swap_on_epoch=True`` they also swap at the end of each epoch and back at the
    start of the next, so that the callbacks after this one in the list (``ModelCheckpoint``,
    ``ImageSnapshots``, ...) see the averaged weights at epoch end. Training itself always steps
    the raw weights, and ``fit`` ends with the weights set to the average, as without it. Swapping
    before the first optimizer step (no average yet) does nothing. As in Keras the swap is in
    place: a model saved while swapped (a checkpoint with ``swap_on_epoch=True``) holds the average
    as its weights and the raw weights as its optimizer's average."""

    def __init__(self, swap_on_epoch=False):
        if not isinstance(swap_on_epoch, (bool, np.bool_)):
            raise TypeError(f"swap_on_epoch must be True or False, got {swap_on_epoch!r}")
        self.swap_on_epoch = bool(swap_on_epoch)
        self.swapped = False  # whether the model now holds the averaged weights

    def on_train_begin(self, logs=None):
        if not getattr(self.model.optimizer, "use_ema", False):
            raise ValueError("SwapEMAWeights needs an optimizer with use_ema=True, e.g. "
                             "vaecpp.optimizers.Adam(use_ema=True)")
        self.swapped = False

    def _swap(self):
        engine = self.model._engine
        m, v, ema = engine.get_optimizer_slots()
        if ema.size == 0:  # no step yet: nothing averaged
            return
        weights = engine.get_params()
        engine.set_params(ema)
        engine.set_optimizer_slots(m, v, weights)
        self.swapped = not self.swapped

    def swap_back(self):
        """The raw weights back in the model and the average in the optimizer (fit calls this
        before it sets the weights to the average, however training ended)."""
        if self.swapped:
            self._swap()

    def on_test_begin(self, logs=None):
        if not self.swapped:
            self._swap()

    def on_test_end(self, logs=None):
        if not self.swap_on_epoch:
            self.swap_back()

    def on_epoch_begin(self, epoch, logs=None):
        self.swap_back()

    def on_epoch_end(self, epoch, logs=None):
        if self.swap_on_epoch and not self.swapped:
            self._swap()
