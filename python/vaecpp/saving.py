"""Model files: one NumPy ``.npz`` archive (no pickle) holding a JSON header (format, version,
config, optimizer, history) and the flat parameter, state and optimizer-moment arrays; and
weights files, in the same form or as safetensors (named tensors, for other frameworks).

This module is the format only: the model (``model.py``) decides what goes in and rebuilds
itself from what comes out. Writes go to a temporary file in the same directory, then
``os.replace`` (atomic); a save also removes the temporaries that killed saves to the same path
left behind. Reads trust nothing in the file (:mod:`vaecpp._file_checks`): the zip's members, each
array's declared dtype and size, the header's types and bounds, and the sizes the header's
architecture implies are all checked before an array is read; arrays are then read one at a time
(CRC-checked) when the caller asks for them at the size it expects, and must be finite after the
cast to the model's dtype. Anything else than an intact vaecpp file is a ``ValueError``.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import _file_checks

FORMAT = "vaecpp.model"
WEIGHTS_FORMAT = "vaecpp.weights"
VERSION = 1
HEADER = "__vaecpp__"
_WEIGHT_ARRAYS = ("params", "state")
_MODEL_ARRAYS = _WEIGHT_ARRAYS + ("opt_m", "opt_v", "opt_ema")


def _atomic_write(path, write):
    """Calls ``write(file)`` on a temporary file beside ``path``, then renames it to ``path``:
    a reader sees the old file or the new one, never a part."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _file_checks.remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_file_checks.temp_prefix(path),
                               suffix=_file_checks.TEMP_SUFFIX, dir=directory)
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


# What to do with a vaecpp file of the other format, by its format.
_HINTS = {FORMAT: "load it with vaecpp.load_model(path), which restores the configuration, "
                  "weights and optimizer state",
          WEIGHTS_FORMAT: "a weights file holds no configuration: build the model, then call "
                          "its load_weights(path)"}


def _open(path, expected_format, names):
    """The open file (an ``_file_checks.Archive``): header parsed, array sizes known, nothing
    else read yet. ``names`` are the arrays the format holds; any other member is rejected, but
    a vaecpp file of the other format is named as such, with what to do with it."""
    hints = {found: hint for found, hint in _HINTS.items() if found != expected_format}
    return _file_checks.Archive(path, expected_format, VERSION, HEADER, names, hints)


class ModelFile:
    """An open model file whose header and array sizes have been checked: ``path``, ``config``,
    ``optimizer`` (config or None), ``step``, ``history`` (``{"epoch": [...], "history":
    {...}}``). Arrays are read on request with :meth:`read` / :meth:`optimizer_slots`. Use it as
    a context manager (it holds the file open)."""

    def __init__(self, archive):
        header = archive.header
        self.path = archive.path
        self.config = header["config"]
        self.optimizer = header.get("optimizer")
        self.step = header.get("step", 0)
        self.history = header.get("history") or {}
        self._archive = archive

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._archive.close()

    def read(self, name, size, dtype, minimum=None):
        """Array ``name`` (``params`` or ``state``) as ``size`` finite ``dtype`` values."""
        return self._archive.read(name, size, dtype, minimum)

    def optimizer_slots(self, size, dtype):
        """The optimizer's slot arrays ``(m, v, ema)``, each empty or ``size`` values, finite,
        ``v >= 0`` (second moments and accumulators); ``ema`` the weights' moving average."""
        a = self._archive
        m = a.read("opt_m", a.size("opt_m", size), dtype)
        v = a.read("opt_v", a.size("opt_v", size), dtype, minimum=0)
        ema = a.read("opt_ema", a.size("opt_ema", size), dtype)
        return m, v, ema


def save_model(path, *, config, optimizer, step, history, params, state, optimizer_slots=None):
    """Writes a model file: the JSON header and the flat ``params``, ``state`` and (with an
    optimizer) its slot arrays ``optimizer_slots = (m, v, ema)`` (``opt_ema`` only where
    non-empty, so files without a weight average read as before). ValueError, before anything
    is written, for a custom likelihood whose arguments a load would refuse
    (``_file_checks.check_likelihood_args``)."""
    likelihood = config.get("likelihood")
    if isinstance(likelihood, dict):  # a custom one: refused now if a load would refuse it
        try:
            _file_checks.check_likelihood_args(likelihood.get("args"))
        except ValueError as e:
            raise ValueError(f"cannot save {os.fspath(path)!r}: {e}") from None
    header = {"format": FORMAT, "version": VERSION, "config": config, "optimizer": optimizer,
              "step": int(step), "history": history}
    arrays = {"params": params, "state": state}
    if optimizer_slots is not None:
        arrays.update(opt_m=optimizer_slots[0], opt_v=optimizer_slots[1])
        if len(optimizer_slots[2]):
            arrays["opt_ema"] = optimizer_slots[2]
    _write(path, header, arrays)


def read_model(path):
    """Opens a model file written by :func:`save_model` and checks everything but the arrays'
    values: its members, the header, and that the arrays have the sizes the header's
    architecture needs (nothing is allocated for a file that lies). Returns an open
    :class:`ModelFile`: ``with read_model(path) as saved: ...``."""
    archive = _open(path, FORMAT, _MODEL_ARRAYS)
    try:
        _file_checks.check_model_header(archive.header, archive.path)
        try:
            sizes = _file_checks.architecture_sizes(archive.header["config"])
        except ValueError as e:
            raise ValueError(f"{archive.path!r}: invalid model configuration: {e}") from None
        _file_checks.check_arrays_fit(archive, *sizes)
    except BaseException:
        archive.close()
        raise
    return ModelFile(archive)


def save_weights(path, layout, params, state):
    """Writes a weights file; ``layout`` is ``[[name, shape], ...]`` of the model's arrays, so
    that a model of another architecture refuses the file."""
    _write(path, {"format": WEIGHTS_FORMAT, "version": VERSION, "weights": layout},
           {"params": params, "state": state})


def read_weights(path, layout):
    """Opens a weights file whose layout is ``layout`` (else ValueError); returns the open
    ``_file_checks.Archive``, whose ``read(name, size, dtype)`` gives ``params`` and ``state``:
    ``with read_weights(path, layout) as f: ...``."""
    archive = _open(path, WEIGHTS_FORMAT, _WEIGHT_ARRAYS)
    if archive.header.get("weights") != layout:
        archive.close()
        raise ValueError(f"{archive.path!r} holds weights of a different architecture")
    return archive


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


def read_safetensors(path, layout, dtype):
    """The tensors of a safetensors file as ``{name: array}`` of ``dtype``, checked against
    ``layout`` (``[[name, shape], ...]``) before any tensor is read: the header's length, then
    its names, dtypes (real numbers), shapes and data offsets (:func:`_file_checks.
    check_safetensors_header`), which must tile the rest of the file exactly, so a header that
    declares huge tensors or a file larger than the model needs costs nothing. Each tensor is
    then read alone and must be finite after the cast to ``dtype``. Anything else than such a
    file is a ``ValueError``. Reading needs no package beyond NumPy."""
    path = os.fspath(path)
    _file_checks.check_regular_file(path, "safetensors file")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header, start = _safetensors_header(f, path, size)
        entries = _file_checks.check_safetensors_header(path, header, layout, size - start)
        tensors = {}
        for name, (stored, shape, begin, end) in entries.items():
            f.seek(start + begin)
            raw = f.read(end - begin)
            if len(raw) != end - begin:  # the file shrank while being read
                raise ValueError(f"{path!r}: truncated safetensors file (tensor {name!r})")
            with np.errstate(over="ignore", invalid="ignore"):
                values = np.frombuffer(raw, stored).astype(dtype).reshape(shape)
            if not np.isfinite(values).all():
                raise ValueError(f"{path!r}: tensor {name!r} must be finite numbers (as "
                                 f"{np.dtype(dtype).name})")
            tensors[name] = values
    return tensors


SAFETENSORS_HEADER_MAX = 16 << 20
"""The longest safetensors header read (names, shapes, offsets and metadata as JSON); a vaecpp
file's is well under a kilobyte per tensor."""


def _safetensors_header(f, path, size):
    """The parsed JSON header of the open safetensors file ``f`` of ``size`` bytes, and where
    its data start; its length is checked against the file and the cap before it is read."""
    n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
    if not 0 < n <= min(size - 8, SAFETENSORS_HEADER_MAX):
        raise ValueError(f"{path!r} is not an intact safetensors file: it declares {n} header "
                         f"bytes, and holds {max(size - 8, 0)} after the header's length (at "
                         f"most {SAFETENSORS_HEADER_MAX} are read)")
    blob = f.read(n)
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{path!r} is not an intact safetensors file: bad JSON header ({e})"
                         ) from None
    return header, 8 + n
