"""vaecpp: variational autoencoders with a small, fast, exact C++ engine and a Keras-like API.

>>> import vaecpp
>>> vae = vaecpp.VAE(input_shape=(28, 28), latent_dim=2, hidden=(512,))
>>> vae.compile(optimizer=vaecpp.optimizers.Adam(1e-3))
>>> history = vae.fit(x_train, epochs=10, batch_size=100, validation_data=x_test)
"""

from . import callbacks, layers, likelihoods, optimizers, sources
from ._core import build_info as _build_info
from ._fpmode import flush_denormal, set_flush_denormal
from .callbacks import History
from .likelihoods import Likelihood
from .model import VAE, load_model
from . import architectures
from .architectures import celeba_conv_vae, keras_mnist_conv_vae
from .sweep import sweep  # Optuna is imported when sweep() runs (optional: vaecpp[sweep])

__version__ = "0.1.0"

# Imported on first use, as Keras's ``keras.datasets``: ``vaecpp.plot`` brings matplotlib,
# ``vaecpp.widgets`` ipywidgets, ``vaecpp.distributed`` mpi4py only when a program asks for them.
_ON_FIRST_USE = ("datasets", "plot", "widgets", "distributed")


def __getattr__(name):
    if name in _ON_FIRST_USE:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")  # also sets it on this module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))

__all__ = ["VAE", "load_model", "History", "Likelihood", "callbacks", "layers", "optimizers", "build_info",
           "cuda_available", "__version__", "architectures", "celeba_conv_vae", "keras_mnist_conv_vae",
           "sources", "sweep", "set_flush_denormal", "flush_denormal", *_ON_FIRST_USE]


def build_info():
    """How the engine was built: OpenMP, CUDA (and, in CUDA builds, ``cuda_devices``: how many
    devices the driver reports now, and ``cuda_gemm``: cuBLAS or the built-in kernel), SIMD
    features, Eigen version and ``eigen_from`` ("system", or "cmeel-eigen": the pip package the
    build falls back to), compiler (e.g. "GCC 12.2.0")."""
    info = dict(_build_info())
    info.update(_build_config())
    info["compiler"] = _compiler_name(info["compiler"])
    from ._core import max_threads
    info["max_threads"] = max_threads()
    if info["cuda"]:
        info["cuda_devices"] = _cuda_device_count()
    info["version"] = __version__
    return info


def _build_config():
    """What CMake wrote next to the engine at build time (``_build_config.json``); {} if absent."""
    import json
    import os

    try:
        with open(os.path.join(os.path.dirname(__file__), "_build_config.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _compiler_name(version):
    """The compiler as people name it: GCC's ``__VERSION__`` is the bare version ("12.2.0"),
    Clang's and others' already start with their name ("Clang 16.0.6", "Apple LLVM ...")."""
    return f"GCC {version}" if version[:1].isdigit() else version


def _cuda_device_count():
    from . import _core
    return int(_core.cuda_device_count()) if hasattr(_core, "cuda_device_count") else 0


def cuda_available():
    """True when this build has the CUDA backend and a CUDA device is present, i.e. when
    ``VAE(..., backend="cuda")`` can run."""
    return bool(_build_info()["cuda"]) and _cuda_device_count() > 0
