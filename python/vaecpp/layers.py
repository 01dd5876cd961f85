"""Layer descriptions for encoder and decoder stacks.

Each class only *describes* a layer (Keras-like constructor arguments); the C++ engine builds and
runs it. ``config()`` returns the plain dict the engine reads: ``kind`` plus numbers and strings.
"""

from __future__ import annotations

import numpy as np

from . import _core, _limits

__all__ = [
    "Layer", "Dense", "Activation", "ReLU", "LeakyReLU", "Dropout", "Flatten", "Reshape", "Conv2D",
    "Conv2DTranspose", "MaxPool2D", "MaxPooling2D", "BatchNorm", "BatchNormalization",
    "ChannelsToBlocks", "Input", "from_config",
]

# The engine's activation names (the one list, kept in C++).
ACTIVATIONS = tuple(_core.ACTIVATIONS)


def check_activation(name, what="activation"):
    """Returns the engine's name for an activation (None means linear) or raises ValueError."""
    if name is None:
        return "linear"
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(ACTIVATIONS)} or None")
    return name


# What the engine initialises with: Glorot-uniform kernels and zero biases (Keras's defaults).
KERNEL_INITIALIZERS = ("glorot_uniform",)
BIAS_INITIALIZERS = ("zeros",)


def _initializer(value, allowed, what, layer):
    """Keras's initializer argument: only the engine's own is accepted (by name, any case, or
    Keras's class name such as "GlorotUniform"); anything else is refused rather than ignored."""
    key = value.lower().replace("_", "") if isinstance(value, str) else None
    if key in {a.replace("_", "") for a in allowed}:
        return
    raise ValueError(f"{layer} {what}={value!r} is not available: the engine initialises "
                     f"{'kernels' if 'kernel' in what else 'biases'} with "
                     f"{' or '.join(repr(a) for a in allowed)} (Keras's default); leave "
                     f"{what} out, or set other weights with vae.set_weights(...)")


def _plain(value):
    """``value`` with NumPy scalars as Python numbers, inside lists and tuples too."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _positive_int(value, what):
    """An integer in ``[1, _limits.INT_MAX]``: the engine stores layer sizes in a C++ int."""
    return _limits.integer(value, what)


def _positive_pair(value, what):
    """(height, width) from an int or a pair of ints, each >= 1."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an integer or a pair of integers, got {value!r}")
        return tuple(_positive_int(v, what) for v in value)
    v = _positive_int(value, what)
    return (v, v)


def _padding(value, layer):
    p = value.lower() if isinstance(value, str) else value
    if p not in ("valid", "same"):
        raise ValueError(f"{layer} padding must be 'valid' or 'same', got {value!r}")
    return p


def _window_options(prefix, size, strides, padding):
    """The engine's keys for a 2-D window: <prefix>, <prefix>_w, strides, strides_w, padding."""
    return {prefix: size[0], prefix + "_w": size[1], "strides": strides[0],
            "strides_w": strides[1], "padding": padding}


class Layer:
    """Base class. Subclasses set ``kind`` (the engine's name), keep their constructor arguments
    in ``self.args`` (saved with the model) and return the engine's options from ``options()``."""

    kind = ""

    def __init__(self, name=None, **args):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"a layer's name must be a string, got {type(name).__name__}")
        if name and "/" in name:
            raise ValueError(f"a layer's name cannot contain '/' (it separates the layer from "
                             f"its array in weight_names()), got {name!r}")
        self.name = name
        args = {k: _plain(v) for k, v in args.items()}  # saved as JSON: np.int64(4) is 4
        self.args = dict(args, name=name) if name else args

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

    def __init__(self, units, activation=None, name=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros"):
        super().__init__(name, units=units, activation=activation)
        _initializer(kernel_initializer, KERNEL_INITIALIZERS, "kernel_initializer", "Dense")
        _initializer(bias_initializer, BIAS_INITIALIZERS, "bias_initializer", "Dense")
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


class LeakyReLU(Activation):
    """Keras's ``LeakyReLU`` layer: ``x`` for x > 0, ``negative_slope * x`` otherwise. The
    engine's slope is fixed at 0.2 (Keras's ``"leaky_relu"`` activation; note that Keras's
    *layer* defaults to 0.3): other slopes raise ValueError. ``alpha`` is Keras 2's name."""

    SLOPE = 0.2

    def __init__(self, negative_slope=0.2, name=None, alpha=None):
        slope = negative_slope if alpha is None else alpha
        if isinstance(slope, bool) or not isinstance(slope, (int, float)) or slope != self.SLOPE:
            raise ValueError(f"LeakyReLU(negative_slope={slope!r}): the engine's leaky_relu has "
                             f"negative_slope {self.SLOPE}; only that slope is available")
        super().__init__("leaky_relu", name)
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


class Conv2D(Layer):
    """2-D convolution over (height, width, channels) inputs, ``f(conv(x, kernel) + bias)``.

    Keras semantics: kernel shaped (kh, kw, in_channels, filters), TensorFlow's ``"valid"`` and
    ``"same"`` padding (output ``floor((n - k) / s) + 1`` and ``ceil(n / s)``).
    """

    kind = "conv2d"

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, name=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros"):
        super().__init__(name, filters=filters, kernel_size=kernel_size, strides=strides,
                         padding=padding, activation=activation)
        what = type(self).__name__
        _initializer(kernel_initializer, KERNEL_INITIALIZERS, "kernel_initializer", what)
        _initializer(bias_initializer, BIAS_INITIALIZERS, "bias_initializer", what)
        self.filters = _positive_int(filters, f"{what} filters")
        self.kernel_size = _positive_pair(kernel_size, f"{what} kernel_size")
        self.strides = _positive_pair(strides, f"{what} strides")
        self.padding = _padding(padding, what)
        self.activation = check_activation(activation)

    def options(self):
        return {"filters": self.filters, "activation": self.activation,
                **_window_options("kernel_size", self.kernel_size, self.strides, self.padding)}


class Conv2DTranspose(Conv2D):
    """Transposed 2-D convolution (the adjoint of a Conv2D), for upsampling in decoders.

    Keras semantics: kernel shaped (kh, kw, filters, in_channels); output size ``n * s`` with
    ``"same"`` padding and ``n * s + max(k - s, 0)`` with ``"valid"``.
    """

    kind = "conv2d_transpose"


class MaxPool2D(Layer):
    """Max pooling over (height, width) windows; ``strides`` defaults to ``pool_size``."""

    kind = "maxpool2d"

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None):
        super().__init__(name, pool_size=pool_size, strides=strides, padding=padding)
        self.pool_size = _positive_pair(pool_size, "MaxPool2D pool_size")
        self.strides = self.pool_size if strides is None else _positive_pair(strides, "MaxPool2D strides")
        self.padding = _padding(padding, "MaxPool2D")

    def options(self):
        return _window_options("pool_size", self.pool_size, self.strides, self.padding)


MaxPooling2D = MaxPool2D


class BatchNorm(Layer):
    """Batch normalisation over the last (channel) axis, with Keras semantics.

    While training (inside ``fit``) it normalises with the batch's mean and biased variance and
    moves ``moving_mean``/``moving_variance`` by ``moving * momentum + batch * (1 - momentum)``;
    otherwise it uses the moving statistics. Weights: ``gamma`` (ones), ``beta`` (zeros).
    """

    kind = "batchnorm"

    def __init__(self, momentum=0.99, epsilon=1e-3, name=None):
        super().__init__(name, momentum=momentum, epsilon=epsilon)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"BatchNorm momentum must be in [0, 1], got {momentum}")
        if not self.epsilon > 0.0:
            raise ValueError(f"BatchNorm epsilon must be > 0, got {epsilon}")

    def options(self):
        return {"momentum": self.momentum, "epsilon": self.epsilon}


BatchNormalization = BatchNorm


class ChannelsToBlocks(Layer):
    """(h, w, groups * c) -> (groups, h, w, c): channel ``p * c + j`` goes to block ``p``.

    Likelihoods with two values per pixel (``"gaussian"``, ``"laplace"`` with a learned scale)
    read them as two blocks of ``prod(input_shape)`` values; a convolutional decoder gives them
    as ``2 * c`` channels per pixel. ``VAE`` appends this layer by itself when the decoder ends
    in ``(h, w, P * c)`` for inputs ``(h, w, c)``; place it yourself for other layouts.
    """

    kind = "channels_to_blocks"

    def __init__(self, groups, name=None):
        super().__init__(name, groups=groups)
        self.groups = _positive_int(groups, "ChannelsToBlocks groups")

    def options(self):
        return {"groups": self.groups}

def Input(shape=None, batch_size=None, dtype=None, name=None, **kwargs):  # noqa: N802 (Keras's name)
    """Keras's functional ``Input`` has no counterpart: a VAE takes its input shape and its
    layer lists directly. Raises TypeError saying so."""
    hint = f"input_shape={tuple(shape)!r}" if isinstance(shape, (tuple, list)) else "input_shape=..."
    raise TypeError(f"vaecpp has no functional API, so no layers.Input: give the shape to the "
                    f"model, vaecpp.VAE({hint}, encoder=[...], decoder=[...]), and list the "
                    f"layers after the input in encoder=")


_CLASSES = {}


def register(cls):
    """Makes a Layer subclass known to ``from_config`` (used when loading saved models)."""
    _CLASSES[cls.__name__] = cls
    return cls


for _cls in (Dense, Activation, ReLU, LeakyReLU, Dropout, Flatten, Reshape, Conv2D, Conv2DTranspose, MaxPool2D,
             BatchNorm, ChannelsToBlocks):
    register(_cls)


def from_config(cfg):
    """Rebuilds a layer from ``Layer.get_config()``'s dict."""
    try:
        cls = _CLASSES[cfg["class"]]
        return cls(**cfg["args"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"invalid layer description {cfg!r} in the model file: {e}") from None
