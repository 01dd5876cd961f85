"""Reading model files without trusting them: every size is checked before it is allocated.

A model file is a zip (``np.savez``) of ``.npy`` members. :class:`Archive` reads its directory,
rejects members it does not know, reads each array's ``.npy`` header (a few bytes of the member)
and checks that the zip entry holds exactly the bytes that header declares. Nothing is
decompressed beyond those headers until the caller asks for an array of a size it expects, so a
small file that declares a huge array, or holds an extra deflated one, costs nothing.

:func:`check_model_header` validates the JSON header's types and bounds, and
:func:`architecture_sizes` computes, from the configuration alone, how many parameter and state
values the model will have (the engine's shape rules, mirrored in Python): a header whose layer
widths disagree with the arrays in the file is rejected before any engine is built.

:func:`remove_stale_temporaries` removes what an interrupted save (SIGKILL, power loss) left.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import stat
import time
import zipfile

import numpy as np

from . import _limits
from . import layers as L

MAX_HEADER_BYTES = 64 << 20  # the JSON header (config, optimizer, history)
_CHUNK = 1 << 20
_NPY_HEADER_MAX = 10000  # NumPy's own default for .npy headers


def _fail(path, message):
    return ValueError(f"{os.fspath(path)!r}: {message}")


# ---- stale temporary files ----------------------------------------------------------------------
TEMP_PREFIX = ".vaecpp-"
_STALE_AGE_S = 24 * 3600  # where process ids cannot be checked (Windows): a day-old file is stale


TEMP_SUFFIX = ".tmp"
# What tempfile.mkstemp puts between prefix and suffix: 8 characters of [a-z0-9_]. Matching
# exactly that, not any text, keeps the temporaries of "m.vae.77777"
# (".vaecpp-m.vae.77777.<pid>.<random>.tmp") from reading as m.vae's of process 77777.
_MKSTEMP_RANDOM = r"[a-z0-9_]{8}"


def temp_prefix(path):
    """The prefix of ``path``'s temporary files: ``.vaecpp-<name>.<pid>.`` (then mkstemp's
    random part and :data:`TEMP_SUFFIX`)."""
    return f"{TEMP_PREFIX}{os.path.basename(os.fspath(path))}.{os.getpid()}."


def _temp_pattern(path):
    """The names of ``path``'s temporary files and only those (the pid is group 1)."""
    return re.compile(re.escape(f"{TEMP_PREFIX}{os.path.basename(path)}.") + r"(\d+)\."
                      + _MKSTEMP_RANDOM + re.escape(TEMP_SUFFIX))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path):
    """Removes the temporary files that saves to ``path`` left behind when they were killed:
    those of processes that no longer run (POSIX), or older than a day (elsewhere). A save in
    progress in another live process is left alone. Best effort: errors are ignored."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern = _temp_pattern(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        full = os.path.join(directory, name)
        try:
            pid = int(m.group(1))
            if os.name == "posix":
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = time.time() - os.stat(full).st_mtime > _STALE_AGE_S
            if stale:
                os.remove(full)
        except (OSError, ValueError, OverflowError):
            continue


# ---- the file itself ----------------------------------------------------------------------------
_NOT_REGULAR = ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))


def check_regular_file(path, what):
    """``path`` (a str) names a regular file to read as ``what`` ("vaecpp file", "safetensors
    file"): FileNotFoundError if nothing is there, IsADirectoryError for a folder, ValueError for
    a device, FIFO or socket (``/dev/null`` was "no such file"; a FIFO would block the read)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path!r}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path!r} is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "special file")
        raise ValueError(f"{path!r} is a {kind}, not a regular file: it cannot be read as a "
                         f"{what}")


# ---- the zip archive ----------------------------------------------------------------------------
class ArrayEntry:
    """One ``.npy`` member: its zip entry, declared shape and dtype, and where its data starts."""

    def __init__(self, info, shape, dtype, data_offset):
        self.info, self.shape, self.dtype, self.data_offset = info, shape, dtype, data_offset

    @property
    def size(self):
        return math.prod(self.shape)


class Archive:
    """An open vaecpp file: ``header`` (the parsed JSON) and ``entries`` (name -> ArrayEntry).

    ``names`` are the array names the format allows; any other member is an error, but a
    vaecpp file of another format (``hints``: format -> what to do with it) is named as such
    first. Use as a context manager; :meth:`read` returns one array once its size has been
    checked."""

    def __init__(self, path, expected_format, version, header_name, names, hints=None):
        self.path = os.fspath(path)
        check_regular_file(self.path, "vaecpp file")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except Exception as e:  # not a zip, truncated directory, ...
            raise _fail(self.path, f"not an intact vaecpp file: {e}") from None
        try:
            self._open(expected_format, version, header_name, names, hints or {})
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._zip.close()

    def _open(self, expected_format, version, header_name, names, hints):
        """Checks the zip directory, then the header (its format before any unexpected member:
        a model file given to ``load_weights`` is named as one), then each array's ``.npy``
        header. Unexpected members are never read."""
        members, unexpected = {}, []
        for info in self._zip.infolist():
            if not info.filename.endswith(".npy"):
                unexpected.append(info.filename)
                continue
            name = info.filename[:-4]
            if name in members:
                raise _fail(self.path, f"not an intact vaecpp file: member {info.filename!r} "
                                       f"appears twice")
            members[name] = info
            if name not in names and name != header_name:
                unexpected.append(info.filename)

        def reject_unexpected():
            raise _fail(self.path, f"not an intact vaecpp file: unexpected member "
                                   f"{unexpected[0]!r} (a vaecpp file holds only "
                                   f"{', '.join(sorted(names))})")

        if header_name not in members:
            if unexpected:
                reject_unexpected()
            raise _fail(self.path, "not an intact vaecpp file: no vaecpp header")
        self.header = self._header(members[header_name], header_name, expected_format, version,
                                   hints)
        if unexpected:
            reject_unexpected()
        self.entries = {name: self._entry(name, info) for name, info in members.items()
                        if name != header_name}

    def _header(self, info, header_name, expected_format, version, hints):
        """The parsed JSON header, of ``expected_format`` and ``version``; a vaecpp file of a
        format in ``hints`` is named as such, with the hint."""
        head = self._entry(header_name, info)
        if head.dtype != np.uint8 or len(head.shape) != 1 or head.size > MAX_HEADER_BYTES:
            raise _fail(self.path, f"not an intact vaecpp file: bad header array "
                                   f"{head.dtype} {head.shape}")
        blob = self._read_bytes(head).tobytes()
        try:
            header = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise _fail(self.path, f"not an intact vaecpp file: bad JSON header ({e})") from None
        found = header.get("format") if isinstance(header, dict) else None
        if isinstance(found, str) and found in hints:
            raise _fail(self.path, f"is a {found} file, not a {expected_format} file: "
                                   f"{hints[found]}")
        if found != expected_format:
            raise _fail(self.path, f"is not a {expected_format} file (format {found!r:.60})")
        if header.get("version") != version:
            raise _fail(self.path, f"has format version {header.get('version')!r:.60}; "
                                   f"this vaecpp reads version {version}")
        return header

    def _entry(self, name, info):
        """Reads the ``.npy`` header of one member and checks it against the zip entry's size."""
        try:
            with self._zip.open(info) as f:
                major, minor = np.lib.format.read_magic(f)
                if (major, minor) == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                        f, max_header_size=_NPY_HEADER_MAX)
                elif (major, minor) == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                        f, max_header_size=_NPY_HEADER_MAX)
                else:
                    raise ValueError(f".npy version {major}.{minor}")
                offset = f.tell()
        except Exception as e:  # bad zip entry, CRC of a short member, bad .npy header ...
            raise _fail(self.path, f"not an intact vaecpp file: array {name!r}: {e}") from None
        if dtype.hasobject or dtype.kind not in "iuf" or dtype.subdtype is not None:
            raise _fail(self.path, f"array {name!r} has dtype {dtype}; a vaecpp file holds "
                                   f"real numbers only")
        if len(shape) != 1:
            raise _fail(self.path, f"array {name!r} has shape {shape}; expected a flat array")
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != offset + nbytes:
            raise _fail(self.path, f"not an intact vaecpp file: array {name!r} declares "
                                   f"{nbytes} bytes of data but its zip entry holds "
                                   f"{info.file_size - offset}")
        return ArrayEntry(info, tuple(shape), dtype, offset)

    def _read_bytes(self, entry):
        """The data bytes of ``entry`` (whose size has been checked), read in chunks into one
        buffer, with the zip's CRC verified at the end."""
        out = np.empty(entry.size * entry.dtype.itemsize, np.uint8)
        view = memoryview(out)
        try:
            with self._zip.open(entry.info) as f:
                f.read(entry.data_offset)
                pos = 0
                while pos < len(out):
                    chunk = f.read(min(_CHUNK, len(out) - pos))
                    if not chunk:
                        raise EOFError(f"data ends after {pos} of {len(out)} bytes")
                    view[pos:pos + len(chunk)] = chunk
                    pos += len(chunk)
                if f.read(1):
                    raise ValueError("more data than declared")
        except Exception as e:  # bad CRC, truncated deflate stream, ...
            raise _fail(self.path, f"not an intact vaecpp file: {e}") from None
        return out

    def shape(self, name):
        entry = self.entries.get(name)
        return None if entry is None else entry.shape

    def size(self, name, full):
        """The declared size of an optional array that is either empty or ``full`` values long
        (an optimizer slot): 0 when absent; ValueError for any other size."""
        entry = self.entries.get(name)
        if entry is None:
            return 0
        if entry.size not in (0, full):
            raise _fail(self.path, f"array {name!r} should hold 0 or {full} values, "
                                   f"got {entry.shape}")
        return entry.size

    def read(self, name, size, dtype, minimum=None):
        """Array ``name`` as a flat C-contiguous ``dtype`` array of ``size`` values, checked:
        present (or absent with ``size`` 0), of that size (before anything is read), finite after
        the cast to ``dtype``, and ``>= minimum`` if given."""
        entry = self.entries.get(name)
        if entry is None and size == 0:
            return np.zeros(0, dtype)
        if entry is None or entry.size != size:
            got = None if entry is None else entry.shape
            raise _fail(self.path, f"array {name!r} should hold {size} values, got {got}")
        raw = self._read_bytes(entry).view(entry.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.ascontiguousarray(raw, dtype=dtype)
        if not np.isfinite(values).all():
            raise _fail(self.path, f"array {name!r} contains NaN or inf"
                                   + (f" as {np.dtype(dtype).name}" if entry.dtype != dtype else ""))
        if minimum is not None and values.size and values.min() < minimum:
            raise _fail(self.path, f"array {name!r} holds values below {minimum} "
                                   f"(min {values.min()})")
        return values


def check_arrays_fit(archive, params, state):
    """The parameter and state arrays hold the ``params`` and ``state`` values the configuration
    needs, and the optimizer slots none or ``params`` (checked on the declared shapes)."""
    for name, size in (("params", params), ("state", state)):
        got = archive.shape(name)
        if got != (size,):
            raise _fail(archive.path, f"array {name!r} should hold {size} values for the "
                                      f"architecture in the header, got {got}")
    for name in ("opt_m", "opt_v", "opt_ema"):
        archive.size(name, params)


def check_state(where, state, infos):
    """Non-trainable arrays that must not be negative (BatchNorm's moving variance: its square
    root divides, and ``encode`` would return NaN) are not; ``infos`` is the engine's
    ``state_info()``. ValueError starting with ``where`` (a file's path, or the method) otherwise.
    Every way in (model and weights files in either format, ``set_weights``) checks with it."""
    offset = 0
    for _, layer, name, shape in infos:
        size = math.prod(shape)
        part = state[offset:offset + size]
        if name == "moving_variance" and part.size and part.min() < 0:
            raise ValueError(f"{where}: {layer}/{name} holds negative values (min {part.min()})")
        offset += size



# ---- safetensors headers ------------------------------------------------------------------------
SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I8": "i1", "I16": "<i2",
                      "I32": "<i4", "I64": "<i8", "U8": "u1", "U16": "<u2", "U32": "<u4",
                      "U64": "<u8"}
"""The safetensors dtypes vaecpp reads (real numbers NumPy has; not BOOL, BF16, F8, complex)."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_safetensors_header(path, header, layout, data_bytes):
    """The tensors a safetensors ``header`` declares, checked against the model's ``layout``
    (``[[name, shape], ...]``) and the ``data_bytes`` the file holds after its header: the same
    names, real dtypes, the layout's shapes, offsets whose spans fit shape and dtype and tile the
    data exactly (no gap, no overlap, nothing after). Returns ``{name: (dtype, shape, begin,
    end)}`` in file order. Nothing is read here."""
    bad = lambda message: _fail(path, message)  # noqa: E731
    if not isinstance(header, dict):
        raise bad("not an intact safetensors file: the header must be a JSON object")
    meta = header.get("__metadata__", {})
    if not (isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in meta.items())):
        raise bad("not an intact safetensors file: __metadata__ must map strings to strings")
    expected = {name: list(shape) for name, shape in layout}
    names = set(header) - {"__metadata__"}
    if names != set(expected):
        raise bad(f"holds weights of a different architecture: tensors {sorted(names)!r:.200}, "
                  f"this model's are {sorted(expected)!r:.200}")
    entries = {}
    for name in names:
        info = header[name]
        if not (isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}):
            raise bad(f"tensor {name!r}: expected {{'dtype', 'shape', 'data_offsets'}}, got "
                      f"{info!r:.100}")
        stored = SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if stored is None:
            raise bad(f"tensor {name!r} has dtype {info['dtype']!r:.20}; vaecpp reads real "
                      f"numbers only ({', '.join(SAFETENSORS_DTYPES)})")
        if info["shape"] != expected[name]:
            raise bad(f"holds weights of a different architecture: tensor {name!r} has shape "
                      f"{info['shape']!r:.100}, this model's is {expected[name]}")
        offsets = info["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
            raise bad(f"tensor {name!r}: data_offsets must be two integers, got "
                      f"{offsets!r:.100}")
        begin, end = offsets
        need = math.prod(expected[name]) * np.dtype(stored).itemsize
        if end - begin != need:
            raise bad(f"tensor {name!r} declares {end - begin} bytes (data_offsets {offsets}); "
                      f"its shape and dtype need {need}")
        entries[name] = (np.dtype(stored), tuple(expected[name]), begin, end)
    at = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda e: e[1][2:]):
        if begin != at:
            raise bad(f"not an intact safetensors file: tensor {name!r} starts at byte {begin} "
                      f"of the data, expected {at} (data offsets overlap or leave a gap)")
        at = end
    if at != data_bytes:
        raise bad(f"not an intact safetensors file: its tensors declare {at} bytes of data, "
                  f"the file holds {data_bytes} after its header")
    return dict(sorted(entries.items(), key=lambda e: e[1][2:]))


# ---- the JSON header ----------------------------------------------------------------------------
def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _finite_as(value, dtype):
    """Whether the number ``value`` stays finite in the model's ``dtype`` (1e300 does not in
    float32); a dtype the model will reject anyway counts as float64."""
    if not math.isfinite(value):
        return False
    limit = float(np.finfo(np.float32 if dtype == "float32" else np.float64).max)
    return abs(value) <= limit


def _check_int(cfg, key, path, minimum, maximum, optional=False):
    if key not in cfg and optional:
        return
    try:
        _limits.integer(cfg.get(key), key, minimum, maximum)
    except (TypeError, ValueError) as e:
        raise _fail(path, f"invalid model configuration: {e}") from None


_NUMBERS = ("beta", "epsilon_std", "prior_std", "log_var_clip")
_STRINGS = ("reduction", "objective", "dtype", "backend")
_CONFIG_KEYS = {"input_shape", "latent_dim", "likelihood", "output_activation", "laplace_scale",
                "k", "seed", "threads", "device", "encoder", "decoder", *_NUMBERS, *_STRINGS}


def _check_json_args(args, path, where):
    """Layer arguments: a dict of JSON scalars or lists of them, integers within the engine's
    range."""
    if not isinstance(args, dict):
        raise _fail(path, f"invalid model configuration: {where} args must be a dict")
    if not isinstance(args.get("name", ""), str):
        raise _fail(path, f"invalid model configuration: {where} name must be a string")
    for key, value in args.items():
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, bool) or v is None or isinstance(v, str):
                continue
            if isinstance(v, int) and abs(v) <= _limits.INT_MAX:
                continue
            if isinstance(v, float) and math.isfinite(v):
                continue
            raise _fail(path, f"invalid model configuration: {where} argument {key!r} = "
                              f"{v!r:.60} is not a finite number or an integer within the "
                              f"engine's range")


def check_likelihood_args(args):
    """ValueError unless ``args``, a custom likelihood's ``get_config()``, is what a model file
    stores and gives back: a dict of JSON values (None, bools, strings, integers of any size,
    finite floats, lists or tuples of them, which come back as lists, and dicts with string keys
    of them, nested). One rule for both sides: a save refuses such args before writing, a load
    refuses a file that holds them, so whatever saves, loads. The arguments go to the
    likelihood's constructor in Python, never to the engine: no integer bound."""
    if not isinstance(args, dict):
        raise ValueError(f"a custom likelihood's get_config() must return a dict, "
                         f"got {type(args).__name__}")
    pending = [(args, "get_config()")]  # a stack, not recursion: no limit on the nesting
    while pending:
        value, where = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                _check_json_key(key, where)
                pending.append((item, f"{where}[{key!r}]"))
        elif isinstance(value, (list, tuple)):
            pending.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"custom likelihood {where} = {value!r} is not finite "
                             f"(JSON has no NaN or infinity)")
        elif not (value is None or isinstance(value, (bool, str, int, float))):
            raise ValueError(f"custom likelihood {where} = {value!r:.60} is of type "
                             f"{type(value).__name__}, not a JSON value (None, bool, str, int, "
                             f"float, list, dict)")


def _check_json_key(key, where):
    if not isinstance(key, str):
        raise ValueError(f"custom likelihood {where} has the key {key!r:.60}: JSON "
                         f"object keys are strings")


def _check_layers(cfg, key, path):
    stack = cfg.get(key)
    if not isinstance(stack, list):
        raise _fail(path, f"invalid model configuration: {key} must be a list of layers")
    for i, layer in enumerate(stack):
        if not (isinstance(layer, dict) and isinstance(layer.get("class"), str)
                and set(layer) <= {"class", "args"}):
            raise _fail(path, f"invalid model configuration: {key} layer {i} must be "
                              f"{{'class': name, 'args': {{...}}}}, got {layer!r:.80}")
        _check_json_args(layer.get("args", {}), path, f"{key} layer {i}")


def check_model_config(cfg, path):
    """Types and bounds of a saved ``VAE.get_config()``; values are checked again by ``VAE``."""
    if not isinstance(cfg, dict):
        raise _fail(path, "invalid model configuration: not a dict")
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise _fail(path, f"invalid model configuration: unknown keys {sorted(unknown)}")
    for key in ("input_shape", "encoder", "decoder"):
        if key not in cfg:
            raise _fail(path, f"invalid model configuration: no {key!r}")
    try:
        if not isinstance(cfg["input_shape"], list):
            raise TypeError("input_shape must be a list of integers")
        _limits.shape(cfg["input_shape"])
    except (TypeError, ValueError) as e:
        raise _fail(path, f"invalid model configuration: {e}") from None
    _check_int(cfg, "latent_dim", path, 1, _limits.INT_MAX, optional=True)
    _check_int(cfg, "k", path, 1, _limits.INT_MAX, optional=True)
    _check_int(cfg, "seed", path, 0, _limits.SEED_MAX, optional=True)
    _check_int(cfg, "threads", path, 1, _limits.MAX_THREADS, optional=True)
    _check_int(cfg, "device", path, 0, _limits.INT_MAX, optional=True)
    dtype = cfg.get("dtype", "float32")
    for key in _NUMBERS:
        if key in cfg and not (_is_number(cfg[key]) and _finite_as(cfg[key], dtype)):
            raise _fail(path, f"invalid model configuration: {key} must be a finite number "
                              f"(as {dtype}), got {cfg[key]!r:.60}")
    laplace = cfg.get("laplace_scale")
    if laplace is not None and not (_is_number(laplace) and math.isfinite(laplace)):
        raise _fail(path, f"invalid model configuration: laplace_scale must be None or a "
                          f"finite number, got {laplace!r:.60}")
    for key in _STRINGS:
        if key in cfg and not isinstance(cfg[key], str):
            raise _fail(path, f"invalid model configuration: {key} must be a string")
    if cfg.get("output_activation") is not None and not isinstance(cfg["output_activation"], str):
        raise _fail(path, "invalid model configuration: output_activation must be a string or None")
    lik = cfg.get("likelihood", "bernoulli")
    if isinstance(lik, dict):
        if not (isinstance(lik.get("class"), str) and set(lik) <= {"class", "args"}):
            raise _fail(path, "invalid model configuration: a custom likelihood must be "
                              "{'class': name, 'args': {...}}")
        try:
            check_likelihood_args(lik.get("args", {}))
        except ValueError as e:
            raise _fail(path, f"invalid model configuration: {e}") from None
    elif not isinstance(lik, str):
        raise _fail(path, "invalid model configuration: likelihood must be a name or a dict")
    _check_layers(cfg, "encoder", path)
    _check_layers(cfg, "decoder", path)


def check_model_header(header, path):
    """Everything in a model file's header but the arrays: config, optimizer, step, history."""
    check_model_config(header.get("config"), path)
    opt = header.get("optimizer")
    if opt is not None and not (isinstance(opt, dict) and isinstance(opt.get("name"), str)):
        raise _fail(path, f"invalid optimizer configuration {opt!r:.80}")
    dtype = header["config"].get("dtype", "float32")
    if opt is not None:
        for key, value in opt.items():
            if key != "name" and not (isinstance(value, bool) or value is None or (
                    _is_number(value) and _finite_as(value, dtype))):
                raise _fail(path, f"invalid optimizer configuration: {key} = {value!r:.60}"
                                  f" (not a finite {dtype})")
    step = header.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= _limits.STEP_MAX:
        raise _fail(path, f"the optimizer step must be an integer >= 0, got {step!r:.60}")
    hist = header.get("history", {})
    if hist is None:
        return
    if not (isinstance(hist, dict) and set(hist) <= {"epoch", "history"}):
        raise _fail(path, "invalid training history: expected {'epoch': [...], 'history': {...}}")
    epochs = hist.get("epoch", [])
    if not (isinstance(epochs, list) and all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in epochs)):
        raise _fail(path, "invalid training history: 'epoch' must be a list of integers >= 0")
    metrics = hist.get("history", {})
    if not isinstance(metrics, dict) or not all(
            isinstance(v, list) and all(_is_number(x) or x is None for x in v)
            for v in metrics.values()):
        raise _fail(path, "invalid training history: 'history' must map names to lists of "
                          "numbers")


# ---- sizes from the configuration ---------------------------------------------------------------
def _window_out(n, k, s, same):
    """TensorFlow's output size along one dimension (see cpp/kernels/conv.hpp ``window_dim``)."""
    return -(-n // s) if same else (n - k) // s + 1


def _layer_sizes(opts, shape, where):
    """(output shape, parameters, state values) of the layer with engine options ``opts`` on an
    input of ``shape`` (the rules of cpp/layers/basic_layers.hpp, conv_layers.hpp and
    batchnorm_layer.hpp). Raises ValueError for an input the engine would reject too."""
    kind = opts["kind"]
    size = math.prod(shape)
    if kind == "dense":
        units = opts["units"]
        return (units,), size * units + units, 0
    if kind in ("activation", "dropout"):
        return shape, 0, 0
    if kind == "flatten":
        return (size,), 0, 0
    if kind == "reshape":
        target = tuple(opts[f"shape{i}"] for i in range(sum(k.startswith("shape") for k in opts)))
        if math.prod(target) != size:
            raise ValueError(f"{where}: cannot reshape {shape} to {target}")
        return target, 0, 0
    if kind == "batchnorm":
        c = shape[-1]
        return shape, 2 * c, 2 * c
    if kind == "channels_to_blocks":
        groups = opts["groups"]
        if len(shape) < 2 or shape[-1] % groups:
            raise ValueError(f"{where}: {shape} does not split into {groups} channel groups")
        return (groups, *shape[:-1], shape[-1] // groups), 0, 0
    if kind in ("conv2d", "conv2d_transpose", "maxpool2d"):
        if len(shape) != 3:
            raise ValueError(f"{where} needs a 3-D (height, width, channels) input, got {shape}")
        key = "pool_size" if kind == "maxpool2d" else "kernel_size"
        k = (opts[key], opts[key + "_w"])
        s = (opts["strides"], opts["strides_w"])
        same = opts["padding"] == "same"
        h, w, c = shape
        if kind == "conv2d_transpose":
            grow = [0 if same else max(k[d] - s[d], 0) for d in (0, 1)]
            out = (h * s[0] + grow[0], w * s[1] + grow[1], opts["filters"])
            return out, k[0] * k[1] * opts["filters"] * c + opts["filters"], 0
        if not same and (k[0] > h or k[1] > w):
            raise ValueError(f"{where}: window {k} is larger than its {h}x{w} input")
        oh, ow = _window_out(h, k[0], s[0], same), _window_out(w, k[1], s[1], same)
        if kind == "maxpool2d":
            return (oh, ow, c), 0, 0
        return (oh, ow, opts["filters"]), k[0] * k[1] * c * opts["filters"] + opts["filters"], 0
    raise ValueError(f"{where}: unknown layer kind {kind!r}")


def _check_shape(shape, where):
    if any(d < 1 or d > _limits.INT_MAX for d in shape) or math.prod(shape) > _limits.INT_MAX:
        raise ValueError(f"{where} has output shape {shape}, outside the engine's range "
                         f"(every size between 1 and {_limits.INT_MAX})")


def architecture_sizes(cfg):
    """(parameters, state values) of the model that ``VAE(**cfg)`` builds, computed from the
    configuration alone (nothing is allocated). ``cfg`` has passed :func:`check_model_config`.
    Raises ValueError for a stack whose shapes do not fit or leave the engine's integer range."""
    latent = cfg.get("latent_dim", 2)
    params = state = 0
    shape = tuple(cfg["input_shape"])
    stacks = (("encoder", cfg["encoder"]), ("decoder", cfg["decoder"]))
    for key, stack in stacks:
        if key == "decoder":
            heads = 2 * (math.prod(shape) * latent + latent)  # z_mean and z_log_var, Dense
            params += heads
            shape = (latent,)
        for i, layer_cfg in enumerate(stack):
            try:
                opts = L.from_config(layer_cfg).config()
            except (TypeError, ValueError) as e:
                raise ValueError(f"{key} layer {i}: {e}") from None
            where = f"{key} layer {i} ({opts['kind']})"
            shape, p, s = _layer_sizes(opts, shape, where)
            _check_shape(shape, where)
            params, state = params + p, state + s
    return params, state
