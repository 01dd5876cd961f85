"""Model files: one NumPy ``.npz`` archive (no pickle) holding a JSON header (format, version,
config, optimizer, history) and the flat parameter, state and optimizer-moment arrays.

Writes go to a temporary file in the same directory, then ``os.replace`` (atomic). Reads check
the zip's CRCs, the header and every array's size, and raise ``ValueError`` for anything else
than an intact vaecpp file.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import layers as L
from .callbacks import History

FORMAT = "vaecpp.model"
WEIGHTS_FORMAT = "vaecpp.weights"
VERSION = 1
HEADER = "__vaecpp__"


def _write(path, header, arrays):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=".vaecpp-", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)  # mkstemp creates 0600; give the file the usual permissions
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{HEADER: blob}, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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


def _put(setter, arrays, key, size, dtype, path):
    a = arrays.get(key)
    if a is None or a.ndim != 1 or a.size != size:
        got = None if a is None else a.shape
        raise ValueError(f"{path!r}: array {key!r} should hold {size} values, got {got}")
    if not np.isfinite(a).all():
        raise ValueError(f"{path!r}: array {key!r} contains NaN or inf")
    setter(np.ascontiguousarray(a, dtype=dtype))


def _weights_arrays(model):
    return {"params": model._core.get_params(), "state": model._core.get_state()}


def _set_weights_arrays(model, arrays, path):
    core = model._core
    _put(core.set_params, arrays, "params", core.num_params, model.dtype, path)
    _put(core.set_state, arrays, "state", core.num_state, model.dtype, path)


def save_model(model, path):
    header = {
        "format": FORMAT, "version": VERSION, "config": model.get_config(),
        "optimizer": None if model.optimizer is None else model.optimizer.get_config(),
        "step": int(model._core.step),
        "history": {"epoch": model.history.epoch, "history": model.history.history},
    }
    arrays = _weights_arrays(model)
    if model.optimizer is not None:
        m, v = model._core.get_optimizer_slots()
        arrays.update(opt_m=m, opt_v=v)
    _write(path, header, arrays)


def load_model(path, custom_objects=None, backend=None, device=None):
    """Rebuilds a model saved with ``VAE.save``: weights, optimizer state and history, so that
    ``fit(..., initial_epoch=len(model.history.epoch))`` continues where training stopped.
    A model with a user-defined likelihood needs ``custom_objects={"ClassName": Class}``.
    ``backend`` / ``device`` override the saved ones: a model trained on the GPU loads on the CPU
    with ``backend="cpu"`` and the other way round (the weight layout is the same)."""
    from .model import VAE

    header, arrays = _read(path, FORMAT)
    try:
        cfg = dict(header["config"])
        if backend is not None:
            cfg["backend"] = backend
        if device is not None:
            cfg["device"] = device
        if isinstance(cfg.get("likelihood"), dict):
            name = cfg["likelihood"]["class"]
            if name not in (custom_objects or {}):
                raise ValueError(f"the model uses the custom likelihood {name!r}: pass "
                                 f"custom_objects={{{name!r}: {name}}}")
            cfg["likelihood"] = custom_objects[name](**cfg["likelihood"]["args"])
        cfg["encoder"] = [L.from_config(c) for c in cfg["encoder"]]
        cfg["decoder"] = [L.from_config(c) for c in cfg["decoder"]]
        model = VAE(**cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{os.fspath(path)!r}: invalid model configuration: {e}") from None
    _set_weights_arrays(model, arrays, path)
    if header.get("optimizer") is not None:
        model.compile(header["optimizer"])
        core = model._core
        m = np.ascontiguousarray(arrays.get("opt_m", np.zeros(0)), dtype=model.dtype)
        v = np.ascontiguousarray(arrays.get("opt_v", np.zeros(0)), dtype=model.dtype)
        try:
            core.set_optimizer_slots(m, v)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)!r}: optimizer state does not fit: {e}") from None
        core.step = int(header.get("step", 0))
    hist = header.get("history") or {}
    model.history = History()
    model.history.epoch = list(hist.get("epoch", []))
    model.history.history = {k: list(v) for k, v in hist.get("history", {}).items()}
    return model


def _layout(model):
    return [[name, list(w.shape)] for name, w in zip(model.weight_names(), model.get_weights())]


def save_weights(model, path):
    header = {"format": WEIGHTS_FORMAT, "version": VERSION,
              "weights": _layout(model)}
    _write(path, header, _weights_arrays(model))


def load_weights(model, path):
    header, arrays = _read(path, WEIGHTS_FORMAT)
    if header.get("weights") != _layout(model):
        raise ValueError(f"{os.fspath(path)!r} holds weights of a different architecture")
    _set_weights_arrays(model, arrays, path)
