"""The progress display of ``fit(verbose=1)`` (a bar) and ``verbose=2`` (a line per epoch)."""

from __future__ import annotations

import sys
import time

from .base import Callback


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
            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}",  # None: unknown
                            unit="batch", file=sys.stdout, leave=True, dynamic_ncols=True)

    def on_batches(self, done, loss):
        """Called after batches (from the engine at most every 0.1 s) with the running mean loss."""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"loss: {loss:.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        if self.bar is not None:
            if self.steps is not None:
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
