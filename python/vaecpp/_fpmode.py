"""The engine's floating-point mode: denormal numbers flushed to zero inside vaecpp's own calls.

While ``fit``, ``evaluate``, ``encode``, ``decode``, ``gradients`` or ``log_likelihood`` run, the
calling thread and the engine's worker threads compute with flush-to-zero and denormals-are-zero
set (x86-64 MXCSR; the FZ bit on AArch64; nothing elsewhere), and each thread's own mode is put back
when the call returns. Your NumPy code, and your callbacks while a call is running, keep IEEE
behaviour. Why: optimizer moments of weights that never get a gradient decay into the denormal
range, where each operation costs about a hundred cycles on Intel cores.
"""

import numpy as np

from . import _core

__all__ = ["set_flush_denormal", "flush_denormal"]


def set_flush_denormal(flag):
    """Turns the flushing of denormal numbers in vaecpp's calls on (the default) or off, for the
    whole process; calls already running keep their mode. The environment variable
    ``VAECPP_FLUSH_DENORMAL=0`` makes off the default. Returns True when this CPU has the flush bits
    (x86-64, AArch64), i.e. when the switch has an effect, as ``torch.set_flush_denormal`` does."""
    if not isinstance(flag, (bool, np.bool_)):
        raise TypeError(f"flag must be True or False, got {flag!r}")
    _core.set_flush_denormal(bool(flag))
    return bool(_core.flush_denormal_supported())


def flush_denormal():
    """Whether vaecpp's calls flush denormal numbers to zero (see ``set_flush_denormal``)."""
    return bool(_core.flush_denormal())
