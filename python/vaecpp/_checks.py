"""Argument and array validation shared by the public API: clear errors, never a crash."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _limits

# Likelihoods whose data must lie in [0, 1].
UNIT_INTERVAL = ("bernoulli", "continuous_bernoulli")


def positive_int(value, name, minimum=1, maximum=_limits.INT_MAX):
    """An integer in ``[minimum, maximum]``; the default bound is the engine's ``int``, so that
    a size or count that reaches C++ cannot wrap around (``maximum=None``: unbounded)."""
    return _limits.integer(value, name, minimum, maximum)


def number(value, name, minimum=None, open_minimum=False, dtype=None):
    """A finite real number, ``>= minimum`` (``> minimum`` with ``open_minimum``); with
    ``dtype``, finite in that dtype too (1e300 is inf as float32, where the engine uses it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if dtype is not None and abs(value) > float(np.finfo(dtype).max):
        raise ValueError(f"{name} must be finite as {np.dtype(dtype).name}, got {value:g}")
    if minimum is not None and (value < minimum or (open_minimum and value == minimum)):
        raise ValueError(f"{name} must be {'>' if open_minimum else '>='} {minimum}, got {value}")
    return value


def as_rows(x, shape, dtype, name="x"):
    """Returns x as a C-contiguous (n, prod(shape)) array of dtype; accepts (n, *shape) or
    (n, prod(shape)); rejects non-numeric, empty, NaN/inf."""
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    # bool/int/uint/float kinds pass at once (np.issubdtype costs a microsecond a call, which a
    # one-point decode notices); anything else gets the full check
    if x.dtype.kind not in "biuf" and (
            not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_)
            or np.issubdtype(x.dtype, np.complexfloating)):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    size = math.prod(shape)
    if x.ndim >= 1 and (x.shape[1:] == tuple(shape) or x.shape[1:] == (size,)):
        rows = x.reshape(x.shape[0], size)
    else:
        want = f"(n, {', '.join(map(str, shape))})" + (f" or (n, {size})" if len(shape) > 1 else "")
        raise ValueError(f"{name} must have shape {want}, got {x.shape}")
    if rows.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, rejected below
        out = np.ascontiguousarray(rows, dtype=dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return out, x


def check_support(rows, original, likelihood, name="x"):
    """Values outside [0, 1] cannot be scored by a Bernoulli-type likelihood."""
    if likelihood not in UNIT_INTERVAL:
        return
    lo, hi = float(rows.min()), float(rows.max())
    if lo < 0.0 or hi > 1.0:
        hint = ""
        if np.issubdtype(original.dtype, np.integer) or hi > 1.0 and hi <= 255.0:
            hint = " (for 8-bit images divide by 255 first: x / 255.0)"
        raise ValueError(f"the {likelihood} likelihood needs {name} in [0, 1], "
                         f"got values in [{lo:g}, {hi:g}]{hint}")
