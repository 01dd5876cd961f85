"""Model files: one NumPy ``.npz`` archive (no pickle) holding a JSON header (format, version,
config, optimizer, history) and the flat parameter, state and optimizer-moment arrays; and
weights files, in the same form or as safetensors (named tensors, for other frameworks).

This module is the format only: the model (``model.py``) decides what goes in and rebuilds
itself from what comes out. Writes go to a temporary file in the same directory, then
``os.replace`` (atomic). Reads check the zip's CRCs, the header and every array's size, and raise
``ValueError`` for anything else than an intact vaecpp file.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

FORMAT = "vaecpp.model"
WEIGHTS_FORMAT = "vaecpp.weights"
VERSION = 1
HEADER = "__vaecpp__"


def _atomic_write(path, write):
    """Calls ``write(file)`` on a temporary file beside ``path``, then renames it to ``path``:
    a reader sees the old file or the new one, never a part."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".vaecpp-", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)  # mkstemp creates 0600; give the file the usual permissions
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write(path, header, arrays):
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    _atomic_write(path, lambda f: np.savez(f, **{HEADER: blob}, **arrays))


def _read(path, expected_format):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        with open(path, "rb") as f:
            z = np.load(f, allow_pickle=False)
            if not hasattr(z, "files") or HEADER not in z.files:
                raise ValueError("no vaecpp header")
            with z:
                header = json.loads(bytes(z[HEADER]).decode("utf-8"))
                arrays = {k: z[k] for k in z.files if k != HEADER}
    except Exception as e:  # truncated zip, bad CRC, pickle, garbage, bad JSON ...
        raise ValueError(f"{path!r} is not an intact vaecpp file: {e}") from None
    if not isinstance(header, dict) or header.get("format") != expected_format:
        raise ValueError(f"{path!r} is not a {expected_format} file "
                         f"(format {header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path!r} has format version {header.get('version')!r}; "
                         f"this vaecpp reads version {VERSION}")
    return header, arrays


class ModelFile:
    """A model file's contents: ``config``, ``optimizer`` (config or None), ``step``, ``history``
    (``{"epoch": [...], "history": {...}}``) and ``arrays`` (``params``, ``state`` and, with an
    optimizer, ``opt_m`` / ``opt_v``)."""

    def __init__(self, header, arrays):
        self.config = header.get("config")
        self.optimizer = header.get("optimizer")
        self.step = int(header.get("step", 0))
        self.history = header.get("history") or {}
        self.arrays = arrays


def flat_array(arrays, key, size, dtype, path):
    """``arrays[key]`` checked to be ``size`` finite values, as a contiguous ``dtype`` array."""
    a = arrays.get(key)
    if a is None or a.ndim != 1 or a.size != size:
        got = None if a is None else a.shape
        raise ValueError(f"{os.fspath(path)!r}: array {key!r} should hold {size} values, got {got}")
    if not np.isfinite(a).all():
        raise ValueError(f"{os.fspath(path)!r}: array {key!r} contains NaN or inf")
    return np.ascontiguousarray(a, dtype=dtype)


def save_model(path, *, config, optimizer, step, history, params, state, optimizer_slots=None):
    """Writes a model file: the JSON header and the flat ``params``, ``state`` and (with an
    optimizer) its two slot arrays ``optimizer_slots = (m, v)``."""
    header = {"format": FORMAT, "version": VERSION, "config": config, "optimizer": optimizer,
              "step": int(step), "history": history}
    arrays = {"params": params, "state": state}
    if optimizer_slots is not None:
        arrays.update(opt_m=optimizer_slots[0], opt_v=optimizer_slots[1])
    _write(path, header, arrays)


def read_model(path):
    """Reads and checks a model file written by :func:`save_model`; returns a ModelFile."""
    return ModelFile(*_read(path, FORMAT))


def save_weights(path, layout, params, state):
    """Writes a weights file; ``layout`` is ``[[name, shape], ...]`` of the model's arrays, so
    that a model of another architecture refuses the file."""
    _write(path, {"format": WEIGHTS_FORMAT, "version": VERSION, "weights": layout},
           {"params": params, "state": state})


def read_weights(path, layout):
    """The arrays (``params``, ``state``) of a weights file whose layout is ``layout``."""
    header, arrays = _read(path, WEIGHTS_FORMAT)
    if header.get("weights") != layout:
        raise ValueError(f"{os.fspath(path)!r} holds weights of a different architecture")
    return arrays


# ---- safetensors: named tensors for PyTorch and the wider ecosystem ----------------------------
SAFETENSORS_SUFFIX = ".safetensors"


def is_safetensors(path):
    return os.fspath(path).endswith(SAFETENSORS_SUFFIX)


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("the safetensors format needs the safetensors package: "
                          "pip install 'vaecpp[safetensors]'") from None
    return safetensors.numpy


def save_safetensors(path, tensors):
    """Writes ``{name: array}`` as a safetensors file, atomically (temporary file, then
    ``os.replace``)."""
    st = _safetensors_numpy()
    data = st.save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                   metadata={"format": "np", "producer": "vaecpp"})
    _atomic_write(path, lambda f: f.write(data))


def read_safetensors(path, layout):
    """The tensors of a safetensors file, checked against ``layout`` (``[[name, shape], ...]``):
    the same names and shapes, finite numbers; else ValueError."""
    st = _safetensors_numpy()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        with open(path, "rb") as f:
            tensors = st.load(f.read())
    except Exception as e:  # truncated, not safetensors, ...
        raise ValueError(f"{path!r} is not an intact safetensors file: {e}") from None
    found = sorted([name, list(t.shape)] for name, t in tensors.items())
    if found != sorted(layout):
        raise ValueError(f"{path!r} holds weights of a different architecture")
    for name, t in tensors.items():
        if not np.issubdtype(t.dtype, np.number) or not np.isfinite(t).all():
            raise ValueError(f"{path!r}: tensor {name!r} must be finite numbers")
    return tensors
