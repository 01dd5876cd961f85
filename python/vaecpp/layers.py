"""Layer descriptions for encoder and decoder stacks.

Each class only *describes* a layer (Keras-like constructor arguments); the C++ engine builds and
runs it. ``config()`` returns the plain dict the engine reads: ``kind`` plus numbers and strings.
"""

from __future__ import annotations

__all__ = [
    "Layer", "Dense", "Activation", "ReLU", "Dropout", "Flatten", "Reshape", "from_config",
]

ACTIVATIONS = ("linear", "relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus")


def check_activation(name, what="activation"):
    """Returns the engine's name for an activation (None means linear) or raises ValueError."""
    if name is None:
        return "linear"
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(ACTIVATIONS)} or None")
    return name


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return value


class Layer:
    """Base class. Subclasses set ``kind`` (the engine's name), keep their constructor arguments
    in ``self.args`` (saved with the model) and return the engine's options from ``options()``."""

    kind = ""

    def __init__(self, name=None, **args):
        self.name = name
        self.args = dict(args, name=name) if name else dict(args)

    def options(self):
        return {}

    def config(self):
        """The dict the C++ engine builds the layer from."""
        cfg = {"kind": self.kind, **self.options()}
        if self.name:
            cfg["name"] = self.name
        return cfg

    def get_config(self):
        """Class name and constructor arguments, JSON-serialisable (used by ``save``)."""
        return {"class": type(self).__name__, "args": self.args}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer ``f(x @ kernel + bias)``; kernel shaped (in, units) like Keras."""

    kind = "dense"

    def __init__(self, units, activation=None, name=None):
        super().__init__(name, units=units, activation=activation)
        self.units = _positive_int(units, "Dense units")
        self.activation = check_activation(activation)

    def options(self):
        return {"units": self.units, "activation": self.activation}


class Activation(Layer):
    kind = "activation"

    def __init__(self, activation, name=None):
        super().__init__(name, activation=activation)
        self.activation = check_activation(activation)

    def options(self):
        return {"activation": self.activation}


class ReLU(Activation):
    def __init__(self, name=None):
        super().__init__("relu", name)
        self.args = {"name": name} if name else {}


class Dropout(Layer):
    """Inverted dropout, active only while training (inside ``fit``)."""

    kind = "dropout"

    def __init__(self, rate, name=None):
        super().__init__(name, rate=rate)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def options(self):
        return {"rate": self.rate}


class Flatten(Layer):
    kind = "flatten"


class Reshape(Layer):
    kind = "reshape"

    def __init__(self, target_shape, name=None):
        super().__init__(name, target_shape=list(target_shape))
        self.target_shape = tuple(_positive_int(d, "Reshape dimension") for d in target_shape)

    def options(self):
        return {f"shape{i}": d for i, d in enumerate(self.target_shape)}


_CLASSES = {}


def register(cls):
    """Makes a Layer subclass known to ``from_config`` (used when loading saved models)."""
    _CLASSES[cls.__name__] = cls
    return cls


for _cls in (Dense, Activation, ReLU, Dropout, Flatten, Reshape):
    register(_cls)


def from_config(cfg):
    """Rebuilds a layer from ``Layer.get_config()``'s dict."""
    try:
        cls = _CLASSES[cfg["class"]]
        return cls(**cfg["args"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"invalid layer description {cfg!r} in the model file: {e}") from None
