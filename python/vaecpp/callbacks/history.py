"""History: what ``fit`` returns and ``vae.history`` keeps."""

from __future__ import annotations

from .base import Callback


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
