"""The constructor's arguments checked, completed and translated for the engine, in one place.

``resolve(**VAE arguments)`` returns a :class:`ModelSpec`: every argument validated (a bad one
raises ``ValueError`` / ``TypeError`` naming it), the default MLP stacks built, and two dicts:

* ``config``: what ``VAE.get_config()`` returns and model files store, the user's own words
  (``likelihood`` a name or ``{"class", "args"}`` of a custom one, ``output_activation`` as
  given), enough to rebuild the model with ``VAE(**config)``;
* ``engine``: what the C++ engine is built from, with every choice made (the location's
  activation, the likelihood's parameter count, the stacks' layer configs with names).

The names of likelihoods and activations and the parameters per data dimension come from the
engine (``_core.LIKELIHOODS``, ``_core.likelihood_params_per_dim``), so there is one list.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os

import numpy as np

from . import _core, _checks, _file_checks, _limits, layers as L
from .likelihoods import Likelihood

__all__ = ["BACKENDS", "ModelSpec", "resolve", "make_engine"]

BACKENDS = ("cpu", "cuda")
LIKELIHOODS = tuple(_core.LIKELIHOODS)
# The default output activation of the decoded location, where it is not "linear".
_LOC_DEFAULT = {"gaussian": "sigmoid"}


@dataclasses.dataclass
class ModelSpec:
    """A model's resolved configuration (see the module docstring)."""

    input_shape: tuple
    input_dim: int
    latent_dim: int
    dtype: np.dtype
    likelihood: str                  # a built-in name, or the custom likelihood's class name
    custom_likelihood: Likelihood | None
    params_per_dim: int              # decoder outputs per data dimension
    loc_act: str                     # activation of the decoded location, as the engine runs it
    beta_schedule: object            # callable epoch -> beta, or None
    seed: int
    backend: str
    device: int
    encoder_layers: list
    decoder_layers: list
    config: dict                     # saved with the model, VAE(**config) rebuilds it
    engine: dict                     # the engine's constructor argument


def resolve(input_shape, latent_dim=2, hidden=(512,), decoder_hidden=None, activation="relu",
            likelihood="bernoulli", output_activation=None, dropout=0.0, beta=1.0,
            epsilon_std=1.0, prior_std=1.0, log_var_clip=5.0, laplace_scale=None,
            reduction="sum", encoder=None, decoder=None, objective="elbo", k=1, seed=None,
            dtype="float32", threads=None, backend="cpu", device=0):
    """Checks the arguments of ``VAE(...)`` and returns the resolved :class:`ModelSpec`."""
    input_shape = _limits.shape(input_shape)
    input_dim = int(np.prod(input_shape))
    latent_dim = _limits.integer(latent_dim, "latent_dim")
    if dtype not in ("float32", "float64", np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    dtype = np.dtype(dtype)

    def number(value, name, minimum=0.0, open_minimum=True):
        """A finite number, also as the model's dtype (where the engine uses it)."""
        return _checks.number(value, name, minimum, open_minimum, dtype=dtype)

    device = check_backend(backend, device, dtype)

    custom = likelihood if isinstance(likelihood, Likelihood) else None
    if custom is not None:
        likelihood = type(custom).__name__
        params_per_dim = _checks.positive_int(custom.params_per_dim, "Likelihood.params_per_dim")
    elif not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected one of "
                         f"{', '.join(LIKELIHOODS)} or a vaecpp.Likelihood")
    if custom is not None:
        loc_act = "linear"
    elif likelihood in _checks.UNIT_INTERVAL:
        if output_activation not in (None, "sigmoid"):
            raise ValueError(f"the {likelihood} likelihood decodes sigmoid(logits); "
                             f"output_activation must be None, got {output_activation!r}")
        loc_act = "linear"
    else:
        loc_act = L.check_activation(output_activation or _LOC_DEFAULT.get(likelihood),
                                     "output_activation")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if objective not in ("elbo", "iwae"):
        raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}")
    k = _limits.integer(k, "k")
    if objective == "iwae" and (callable(beta) or beta != 1.0):
        raise ValueError("objective='iwae' trains the importance-weighted bound, which has "
                         "no beta: leave beta=1")
    if reduction == "mean" and objective == "iwae":
        raise ValueError("objective='iwae' weights draws by log p(x, z) / q(z | x), which needs "
                         "the likelihood summed over dimensions: use reduction='sum'")
    if reduction == "mean" and custom is not None:
        raise ValueError("reduction='mean' is for the built-in likelihoods; a custom "
                         "Likelihood returns its own NLL")
    if laplace_scale is not None:
        laplace_scale = number(laplace_scale, "laplace_scale")
    beta_schedule = beta if callable(beta) else None
    beta0 = (number(beta(0), "beta(0)", open_minimum=False) if callable(beta)
             else number(beta, "beta", open_minimum=False))
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    seed = _limits.seed(seed)
    if threads is None:
        threads = default_threads()
    threads = _limits.threads(threads)
    dropout = _checks.number(dropout, "dropout", 0.0)
    if dropout >= 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    activation = L.check_activation(activation)

    if custom is None:
        params_per_dim = int(_core.likelihood_params_per_dim(likelihood, laplace_scale or 0.0))
    if encoder is None:
        hidden = tuple(_limits.integer(h, "hidden width") for h in _sequence(hidden, "hidden"))
        encoder = _mlp(hidden, activation, dropout)
    if decoder is None:
        dec_hidden = tuple(reversed(hidden)) if decoder_hidden is None else tuple(
            _limits.integer(h, "decoder_hidden width")
            for h in _sequence(decoder_hidden, "decoder_hidden"))
        decoder = _mlp(dec_hidden, activation, dropout) + [
            L.Dense(params_per_dim * input_dim, name="decoder_output")]
    for stack, what in ((encoder, "encoder"), (decoder, "decoder")):
        if isinstance(stack, L.Layer) or not all(
                isinstance(layer, L.Layer) for layer in _sequence(stack, what)):
            raise TypeError(f"{what} must be a list of vaecpp.layers.Layer objects")
    encoder, decoder = list(encoder), list(decoder)

    config = dict(
        input_shape=list(input_shape), latent_dim=latent_dim,
        likelihood=likelihood, output_activation=output_activation,
        beta=beta0,  # with a schedule, its value now: VAE.get_config keeps it current
        epsilon_std=number(epsilon_std, "epsilon_std"), prior_std=number(prior_std, "prior_std"),
        log_var_clip=number(log_var_clip, "log_var_clip"),
        laplace_scale=laplace_scale, reduction=reduction, objective=objective, k=k, seed=seed,
        dtype=dtype.name, threads=threads, backend=backend, device=device,
        encoder=[layer.get_config() for layer in encoder],
        decoder=[layer.get_config() for layer in decoder])
    if custom is not None:
        config["likelihood"] = {"class": likelihood, "args": custom.get_config()}
    engine = dict(
        config, beta=beta0, output_activation=loc_act,
        likelihood="bernoulli" if custom is not None else likelihood,  # placeholder: unused
        custom_params_per_dim=params_per_dim if custom is not None else 0,
        laplace_scale=laplace_scale or 0.0, iwae_k=k, **engine_stacks(encoder, decoder))
    return ModelSpec(input_shape=input_shape, input_dim=input_dim, latent_dim=latent_dim,
                     dtype=dtype, likelihood=likelihood, custom_likelihood=custom,
                     params_per_dim=params_per_dim, loc_act=loc_act, beta_schedule=beta_schedule,
                     seed=seed, backend=backend, device=device, encoder_layers=encoder,
                     decoder_layers=decoder, config=config, engine=engine)


def check_model_memory(spec):
    """ValueError when the model's parameters, gradients and two optimizer moments would need
    more memory than this process can have now (``_limits.memory_limit``: what is available, a
    container's limit), before the engine allocates them. The engine itself refuses only what
    exceeds the machine's physical memory; a stack whose shapes do not fit is left to it, which
    names the layer."""
    try:
        params, _ = _file_checks.architecture_sizes(spec.config)
    except ValueError:
        return
    _limits.check_memory(4 * params * spec.dtype.itemsize,
                         f"this model's {params} parameters, with their gradients and optimizer "
                         f"moments,")


def _sequence(value, name):
    """``value`` if it is a sequence (a list, tuple, array); otherwise a TypeError that shows the
    form asked for (``hidden=8`` is ``hidden=(8,)``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, collections.abc.Iterable):
        raise TypeError(f"{name} must be a list or tuple (e.g. {name}=[...] or {name}=(8,)), "
                        f"got {type(value).__name__}")
    return value


def make_engine(spec):
    """The C++ engine for a resolved spec: ``VaeF32`` / ``VaeF64`` on the CPU, ``VaeCudaF32``."""
    if spec.backend == "cuda":
        return _core.VaeCudaF32(spec.engine, None, spec.device)
    engine_cls = _core.VaeF32 if spec.dtype == np.float32 else _core.VaeF64
    return engine_cls(spec.engine, spec.custom_likelihood)


def _mlp(widths, activation, dropout):
    stack = []
    for w in widths:
        stack.append(L.Dense(w, activation))
        if dropout > 0:
            stack.append(L.Dropout(dropout))
    return stack


def check_backend(backend, device, dtype):
    """Validates backend and device; returns the device number, in ``[0, _limits.INT_MAX]`` on
    every backend: the bound a model file's device is checked against (``_file_checks``), so a
    model that saves also loads. A CUDA request that this build or machine cannot serve raises
    RuntimeError saying why, before any engine is built."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if isinstance(device, bool) or not isinstance(device, (int, np.integer)) or device < 0:
        raise ValueError(f"device must be a CUDA device number >= 0, got {device!r}")
    device = _limits.integer(device, "device", 0, _limits.INT_MAX)
    if backend == "cpu":
        return device
    if not hasattr(_core, "VaeCudaF32"):
        raise RuntimeError("backend='cuda' is not available: this vaecpp was built without CUDA. "
                           "Rebuild it with  pip install . -C cmake.define.VAECPP_CUDA=ON  "
                           "(needs nvcc), or use backend='cpu'")
    count = _core.cuda_device_count()
    if count == 0:
        raise RuntimeError("backend='cuda' is not available: vaecpp was built with CUDA but no "
                           "CUDA device was found (no GPU, or no NVIDIA driver); use backend='cpu'")
    if device >= count:
        raise ValueError(f"device={device} but only {count} CUDA device"
                         f"{'s are' if count > 1 else ' is'} present (0..{count - 1})")
    if dtype != np.float32:
        raise ValueError("the CUDA backend runs float32 only: use dtype='float32' or backend='cpu'")
    return device


def engine_stacks(encoder, decoder):
    """Engine configs of both stacks, unnamed layers named like Keras: dense, dense_1, ..."""
    counts = {}
    stacks = {}
    for key, stack in (("encoder", encoder), ("decoder", decoder)):
        cfgs = []
        for layer in stack:
            cfg = layer.config()
            if "name" not in cfg:
                n = counts.get(layer.kind, 0)
                counts[layer.kind] = n + 1
                cfg["name"] = layer.kind if n == 0 else f"{layer.kind}_{n}"
            cfgs.append(cfg)
        stacks[key] = cfgs
    return stacks


def default_threads():
    """``$VAECPP_THREADS`` (a positive integer) if set, else the number of cores (at most
    ``_limits.MAX_THREADS``). On a busy machine fewer threads than cores can be much faster:
    OpenMP threads wait for each other at every layer."""
    value = os.environ.get("VAECPP_THREADS", "").strip()
    if not value:
        return min(_core.max_threads(), _limits.MAX_THREADS)
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"VAECPP_THREADS must be a positive integer, got {value!r}")
    return n
