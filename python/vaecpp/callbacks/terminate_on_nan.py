"""TerminateOnNaN: a NaN/inf loss stops training instead of raising."""

from __future__ import annotations

from .base import Callback


class TerminateOnNaN(Callback):
    """With this callback a NaN/inf loss stops training cleanly instead of raising; the weights of
    the last good step are kept either way."""
