"""The progress display of ``fit``: ``verbose=1`` a live bar while an epoch runs and one line
when it ends, ``verbose=2`` one line per epoch.

The live bar (tqdm) is drawn only where it can be redrawn in place: a terminal, where it fits the
terminal's width as it changes, or a notebook. Written to a file or a pipe, ``verbose=1`` prints
just the epoch's line, once. That line is never cut: it holds every metric, ``val_loss``
included (a terminal narrower than the line wraps it).
"""

from __future__ import annotations

import sys
import time

from .base import Callback


def format_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def is_live(stream):
    """Whether a progress bar can be redrawn on ``stream``: a terminal or a notebook's output."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    return type(stream).__module__.startswith("ipykernel")


class ProgressBar(Callback):
    """verbose=1: a live bar per epoch where the output is live, then one line per epoch;
    verbose=2: one Keras-style line per epoch."""

    def __init__(self, verbose, epochs, steps, file=None):
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.file = sys.stdout if file is None else file
        self.live = verbose == 1 and is_live(self.file)
        self.bar = None
        self.done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.done = 0
        if self.live:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}",  # None: unknown
                            unit="batch", file=self.file, leave=False, dynamic_ncols=True)

    def on_batches(self, done, loss):
        """Called after batches (from the engine at most every 0.1 s) with the running mean loss."""
        self.done = done
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"loss: {loss:.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        self._close_bar()
        if self.verbose == 1:
            batches = f"{self.done}/{self.steps}" if self.steps else f"{self.done} batches"
            self._print(f"Epoch {epoch + 1}/{self.epochs} - {batches} - {seconds:.0f}s - "
                        f"{format_logs(logs or {})}")
        elif self.verbose == 2:
            self._print(f"Epoch {epoch + 1}/{self.epochs} - {seconds:.0f}s - "
                        f"{format_logs(logs or {})}")

    def on_train_end(self, logs=None):
        self._close_bar()

    def _close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _print(self, line):
        print(line, file=self.file, flush=True)
