"""History: what ``fit`` returns and ``vae.history`` keeps."""

from __future__ import annotations

from .base import Callback


class History(Callback):
    """``.epoch`` lists the epoch indices, ``.history`` maps each metric to its per-epoch list.

    ``.key_epochs`` maps each metric to the epoch indices its values were logged at: the same as
    ``.epoch`` for the training metrics, only the validated epochs for ``val_*`` (see ``fit``'s
    ``validation_freq``, or a later ``fit`` without validation data), so that ``history[k][i]``
    belongs to epoch ``key_epochs[k][i]``.
    """

    def __init__(self):
        self.epoch = []
        self.history = {}
        self.key_epochs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
            self.key_epochs.setdefault(k, []).append(epoch)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"
