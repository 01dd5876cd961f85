"""Optimizers, with Keras's names, defaults and update rules (run by the C++ engine).

Keras 2's ``lr=`` is accepted for ``learning_rate=`` with a DeprecationWarning.

>>> vae.compile(optimizer=vaecpp.optimizers.Adam(learning_rate=1e-3))
>>> vae.compile(optimizer="rmsprop")
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from . import _core, _limits

__all__ = ["Optimizer", "Adam", "SGD", "RMSprop", "Adagrad", "get"]


def _number(name, value, low=0.0, low_open=False, high=None):
    """A finite real ``value`` (Python or NumPy scalar) in ``[low, high)`` (``(low, high)``
    with ``low_open``), as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < low or (low_open and value == low) or (
            high is not None and value >= high):
        bound = f"> {low}" if low_open else f">= {low}"
        if high is not None:
            bound += f" and < {high}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _bool(name, value):
    """``value`` as a bool; anything but True or False (``"no"``, 1) is a TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class Optimizer:
    """Base class. ``learning_rate`` may be changed between epochs (schedules do this)."""

    name = ""
    _defaults: dict = {}
    _model = None  # a weak reference to the model compiled with this optimizer

    def __init__(self, learning_rate=1e-3, clipnorm=None, clipvalue=None, weight_decay=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, **kwargs):
        if "lr" in kwargs:  # Keras 2's name, still common in tutorials
            warnings.warn(f"{type(self).__name__}(lr=...) is deprecated: use learning_rate=...",
                          DeprecationWarning, stacklevel=3)
            learning_rate = kwargs.pop("lr")
        unknown = set(kwargs) - set(self._defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(unknown)}; "
                            f"it takes learning_rate, clipnorm, clipvalue, weight_decay, "
                            f"use_ema, ema_momentum, ema_overwrite_frequency"
                            + "".join(f", {k}" for k in self._defaults))
        self.learning_rate = _number("learning_rate", learning_rate, low_open=True)
        self.clipnorm = None if clipnorm is None else _number("clipnorm", clipnorm, low_open=True)
        self.clipvalue = None if clipvalue is None else _number("clipvalue", clipvalue, low_open=True)
        self.weight_decay = None if weight_decay is None else _number("weight_decay", weight_decay)
        # Keras 3's moving average of the weights: after each update avg = m avg + (1 - m) w
        # (avg = w after the first); fit ends with the weights set to it; every
        # ema_overwrite_frequency steps (if given) the weights are set to it during training.
        self.use_ema = _bool("use_ema", use_ema)
        self.ema_momentum = _number("ema_momentum", ema_momentum)
        if self.ema_momentum > 1:
            raise ValueError(f"ema_momentum must be in [0, 1], got {self.ema_momentum}")
        self.ema_overwrite_frequency = None if ema_overwrite_frequency is None else \
            _limits.integer(ema_overwrite_frequency, "ema_overwrite_frequency", 1, _limits.STEP_MAX)
        self.options = {**self._defaults, **kwargs}

    @property
    def iterations(self):
        """Optimizer steps taken by the model compiled with this optimizer (Keras's
        ``optimizer.iterations``; the same number as ``vae.step``); 0 before ``compile``."""
        model = self._model() if self._model is not None else None
        return 0 if model is None else model.step

    @iterations.setter
    def iterations(self, value):
        model = self._model() if self._model is not None else None
        if model is None:
            raise RuntimeError("optimizer.iterations can be set once a model is compiled with it")
        model.step = value

    def get_config(self):
        cfg = {"name": self.name, "learning_rate": self.learning_rate, **self.options}
        for k in ("clipnorm", "clipvalue", "weight_decay"):
            if getattr(self, k) is not None:
                cfg[k] = getattr(self, k)
        cfg.update(use_ema=self.use_ema, ema_momentum=self.ema_momentum,
                   ema_overwrite_frequency=self.ema_overwrite_frequency)
        return cfg

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        name = cfg.pop("name", None)
        if not isinstance(name, str) or name.lower() not in _CLASSES:
            raise ValueError(f"an optimizer config needs 'name', one of {', '.join(_CLASSES)}; "
                             f"got {name!r}")
        return _CLASSES[name.lower()](**cfg)

    def __repr__(self):
        ema = ("use_ema", "ema_momentum", "ema_overwrite_frequency")
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()
                         if k != "name" and (self.use_ema or k not in ema))
        return f"{type(self).__name__}({args})"


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) in Keras's form:
    ``m += (g - m)(1 - beta_1); v += (g^2 - v)(1 - beta_2);
    p -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)``."""

    name = "adam"
    _defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, beta_1=_number("beta_1", beta_1, high=1.0),
                         beta_2=_number("beta_2", beta_2, high=1.0),
                         epsilon=_number("epsilon", epsilon), **kwargs)


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum, Keras's form:
    ``m = momentum m - lr g; p += m`` (Nesterov: ``p += momentum m - lr g``)."""

    name = "sgd"
    _defaults = {"momentum": 0.0, "nesterov": False}

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, momentum=_number("momentum", momentum, high=1.0),
                         nesterov=_bool("nesterov", nesterov), **kwargs)


class RMSprop(Optimizer):
    """RMSprop: ``v = rho v + (1 - rho) g^2; p -= lr g / (sqrt(v) + epsilon)``."""

    name = "rmsprop"
    _defaults = {"rho": 0.9, "epsilon": 1e-7}

    def __init__(self, learning_rate=1e-3, rho=0.9, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, rho=_number("rho", rho, high=1.0),
                         epsilon=_number("epsilon", epsilon), **kwargs)


class Adagrad(Optimizer):
    """Adagrad (the AEVB paper's choice): ``a += g^2; p -= lr g / (sqrt(a) + epsilon)``."""

    name = "adagrad"
    _defaults = {"initial_accumulator_value": 0.1, "epsilon": 1e-7}

    def __init__(self, learning_rate=1e-3, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate,
                         initial_accumulator_value=_number("initial_accumulator_value",
                                                           initial_accumulator_value),
                         epsilon=_number("epsilon", epsilon), **kwargs)


# The engine's rules by name (_core.OPTIMIZERS is the one list); a rule without its class here
# fails at import, not when a user asks for it.
_BY_NAME = {c.name: c for c in (Adam, SGD, RMSprop, Adagrad)}
_CLASSES = {name: _BY_NAME[name] for name in _core.OPTIMIZERS}


def get(identifier):
    """An Optimizer from an instance, a name (one of ``_core.OPTIMIZERS``: "adam", "sgd",
    "rmsprop", "adagrad") or a config."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _CLASSES:
            raise ValueError(f"unknown optimizer {identifier!r}; expected one of "
                             f"{', '.join(_CLASSES)} or a vaecpp.optimizers.Optimizer")
        return _CLASSES[key]()
    if isinstance(identifier, dict):
        return Optimizer.from_config(identifier)
    raise TypeError(f"optimizer must be a name or a vaecpp.optimizers.Optimizer, "
                    f"got {type(identifier).__name__}")
