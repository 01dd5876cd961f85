"""CSVLogger: one CSV row per epoch."""

from __future__ import annotations

import csv
import os

from .base import Callback


_NOT_VALIDATED = ("beta", "learning_rate")  # logged settings of the epoch, not measured on data


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` then the metrics. As Keras's, the columns are
    the first epoch's metrics and, where that epoch was not validated (``validation_freq > 1``,
    or no validation data), their ``val_`` twins too, left empty in the rows without them."""
    rank_zero_only = True  # in distributed training only rank 0 writes files

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
            if not any(k.startswith("val_") for k in self.keys):
                self.keys += ["val_" + k for k in self.keys if k not in _NOT_VALIDATED]
            self.writer = csv.writer(self.file, delimiter=self.separator)
            if not self.header_written:
                self.writer.writerow(["epoch"] + self.keys)
        self.writer.writerow([epoch] + [logs.get(k, "") for k in self.keys])
        self.file.flush()

    def on_train_end(self, logs=None):
        self.file.close()
