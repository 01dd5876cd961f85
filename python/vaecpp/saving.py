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

from . import _file_checks
from . import layers as L
from .callbacks import History

FORMAT = "vaecpp.model"
WEIGHTS_FORMAT = "vaecpp.weights"
VERSION = 1
HEADER = "__vaecpp__"
_WEIGHT_ARRAYS = ("params", "state")
_MODEL_ARRAYS = _WEIGHT_ARRAYS + ("opt_m", "opt_v")


def _write(path, header, arrays):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    _file_checks.remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_file_checks.temp_prefix(path), suffix=".tmp", dir=directory)
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


def _read(path, expected_format, names):
    """The open file (an ``_file_checks.Archive``): header parsed, array sizes known, nothing
    else read yet. ``names`` are the arrays the format holds; any other member is rejected."""
    return _file_checks.Archive(path, expected_format, VERSION, HEADER, names)


def _put(setter, archive, key, size, dtype, minimum=None):
    setter(archive.read(key, size, dtype, minimum))


def _weights_arrays(model):
    return {"params": model._core.get_params(), "state": model._core.get_state()}


def _set_weights_arrays(model, archive):
    core = model._core
    _put(core.set_params, archive, "params", core.num_params, model.dtype)
    state = archive.read("state", core.num_state, model.dtype)
    _file_checks.check_state(archive.path, state, core.state_info())
    core.set_state(state)


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
    with _read(path, FORMAT, _MODEL_ARRAYS) as archive:
        return _load_model(archive, custom_objects, backend, device)


def _load_model(archive, custom_objects, backend, device):
    from .model import VAE

    path, header = archive.path, archive.header
    _file_checks.check_model_header(header, path)
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
            cfg["likelihood"] = custom_objects[name](**cfg["likelihood"].get("args", {}))
        # sizes from the configuration, checked against the arrays before anything is built
        _file_checks.check_arrays_fit(archive, *_file_checks.architecture_sizes(cfg))
        cfg["encoder"] = [L.from_config(c) for c in cfg["encoder"]]
        cfg["decoder"] = [L.from_config(c) for c in cfg["decoder"]]
        model = VAE(**cfg)
    except (KeyError, TypeError, ValueError) as e:
        message = str(e).removeprefix(f"{path!r}: ")
        raise ValueError(f"{path!r}: invalid model configuration: {message}") from None
    _set_weights_arrays(model, archive)
    if header.get("optimizer") is not None:
        try:
            model.compile(header["optimizer"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path!r}: invalid optimizer configuration: {e}") from None
        core = model._core
        n = core.num_params
        m = archive.read("opt_m", archive.size("opt_m", n), model.dtype)
        v = archive.read("opt_v", archive.size("opt_v", n), model.dtype, minimum=0)
        try:
            core.set_optimizer_slots(m, v)
        except ValueError as e:
            raise ValueError(f"{path!r}: optimizer state does not fit: {e}") from None
        core.step = header.get("step", 0)
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
    with _read(path, WEIGHTS_FORMAT, _WEIGHT_ARRAYS) as archive:
        if archive.header.get("weights") != _layout(model):
            raise ValueError(f"{os.fspath(path)!r} holds weights of a different architecture")
        _set_weights_arrays(model, archive)
