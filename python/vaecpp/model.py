"""The VAE model: a Keras-like front end over the C++ engine.

Reading order: the constructor hands its arguments to :mod:`vaecpp._config`, which checks them
and translates them into the engine's configuration; ``fit`` and ``evaluate`` hand over to
:mod:`vaecpp.training`; the rest of this file is inference, weights and the optimizer's state,
and files (whose format :mod:`vaecpp.saving` reads and writes).
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _checks, _config, _file_checks, _limits, layers as L, optimizers, saving, training
from .callbacks import Callback, History
from .likelihoods import Likelihood, sample_builtin

__all__ = ["VAE", "load_model", "LayerSummary"]

# Names of the types in the signatures below (for editors and type checkers).
Shape = Union[int, Sequence[int]]
#: An array ``(n, *input_shape)`` or ``(n, prod(input_shape))``, or, where ``fit`` and
#: ``evaluate`` take one, a data source, generator or iterable of batches (``vaecpp.sources``).
Data = Any
OptimizerLike = Union[str, "optimizers.Optimizer", Dict[str, Any]]

LIKELIHOODS = _config.LIKELIHOODS
BACKENDS = _config.BACKENDS


class LayerSummary(tuple):
    """One row of ``VAE.layer_summary()``: ``(name, kind, output_shape, params)``."""

    __slots__ = ()

    def __new__(cls, name, kind, output_shape, params):
        return super().__new__(cls, (name, kind, tuple(output_shape), int(params)))

    name = property(lambda self: self[0])
    kind = property(lambda self: self[1])
    output_shape = property(lambda self: self[2])
    params = property(lambda self: self[3])

    def __repr__(self):
        return (f"LayerSummary(name={self.name!r}, kind={self.kind!r}, "
                f"output_shape={self.output_shape}, params={self.params})")


class _SubModel:
    """``vae.encoder`` / ``vae.decoder``: Keras-style ``predict`` over one half of the model."""

    def __init__(self, fn):
        self._fn = fn

    def predict(self, x, batch_size: Optional[int] = None, verbose: Union[int, str] = 0
                ) -> np.ndarray:
        """The posterior means (encoder) or decoded means (decoder), ``batch_size`` rows per
        engine call (None: all at once)."""
        return self._fn(x, batch_size=batch_size)

    __call__ = predict


def _batched(fn, rows, batch_size):
    """``fn`` over ``rows`` in slices of ``batch_size`` (None: one call), outputs joined."""
    if batch_size is None:
        return fn(rows)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    parts = [fn(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(p) for p in zip(*parts))
    return np.concatenate(parts)


class VAE:
    """A variational autoencoder trained with hand-written gradients in C++.

    Parameters
    ----------
    input_shape : int or tuple
        Shape of one sample, e.g. ``784`` or ``(28, 28)``. Inputs may be given flat or in this
        shape; decoded outputs come back in this shape.
    latent_dim : int
        Size of z.
    hidden : tuple of int
        Widths of the encoder's Dense layers (ignored when ``encoder`` is given).
    decoder_hidden : tuple of int or None
        Widths of the decoder's Dense layers; None mirrors ``hidden``.
    activation : str
        Activation of the hidden layers: relu, leaky_relu, elu, tanh, sigmoid, softplus, linear.
    likelihood : str or vaecpp.Likelihood
        ``"bernoulli"`` (logits, binary cross-entropy; data in [0, 1]), ``"gaussian"`` (learned
        per-pixel variance, full NLL), ``"mse"`` (sum of squared errors),
        ``"continuous_bernoulli"`` (the normalised Bernoulli for grey values in [0, 1]),
        ``"laplace"`` (L1 with a learned or fixed scale), or a user-defined Likelihood object.
    output_activation : str or None
        Activation of the decoded location for gaussian / mse / laplace (default: sigmoid for
        gaussian, linear otherwise). Bernoulli-type likelihoods always decode sigmoid(logits).
    dropout : float
        Dropout rate after every hidden Dense layer (training only).
    beta : float or callable
        Weight of the KL term, or a schedule ``beta(epoch) -> float`` (KL warm-up), called at
        the start of each epoch. A schedule is not saved: ``save`` / ``get_config`` keep its
        value at that time, which a loaded model keeps as a constant beta.
    epsilon_std : float
        Standard deviation of the reparameterisation noise ``eps ~ N(0, epsilon_std^2)``.
    prior_std : float
        Standard deviation of the prior ``p(z) = N(0, prior_std^2 I)``.
    log_var_clip : float
        The gaussian decoder's log-variance (laplace: log-scale) is clipped to +-this.
    laplace_scale : float or None
        Fixed Laplace scale; None learns a per-pixel log-scale.
    reduction : "sum" or "mean"
        Sum (default) or mean over data dimensions of the built-in likelihood's NLL, as Keras 1's
        losses (e.g. ``binary_crossentropy``) took it; the KL stays a sum over latent dimensions.
    encoder, decoder : list of vaecpp.layers.Layer or None
        Explicit layer stacks (e.g. convolutions; ``vaecpp.architectures`` has reference ones).
        The encoder ends before the z heads; the decoder must end with the likelihood's outputs,
        ``params_per_dim * prod(input_shape)`` values per sample as ``params_per_dim`` blocks. A
        convolutional decoder for images ``(h, w, c)`` may end in ``(h, w, params_per_dim * c)``
        channels instead (e.g. ``likelihood="gaussian"``: a mean and a log-variance channel per
        colour): the model then appends a ``layers.ChannelsToBlocks`` layer that regroups them.
        A layer whose input shape does not fit raises ValueError naming it.
    objective : "elbo" or "iwae"
        Train on the ELBO (analytic KL) or on the importance-weighted bound with ``k`` samples
        (Burda et al. 2016; needs beta=1).
    k : int
        Importance samples per data point for ``objective="iwae"``.
    seed : int or None
        Seeds initialisation, shuffling, noise and dropout. Same seed and thread count give
        identical numbers run after run.
    dtype : "float32" or "float64"
    threads : int or None
        OpenMP threads (default: ``$VAECPP_THREADS`` if set, else all cores).
    backend : "cpu" or "cuda"
        Where the engine runs. ``"cuda"`` needs vaecpp built with ``VAECPP_CUDA=ON`` and a CUDA
        device (see ``vaecpp.cuda_available()``); it runs float32 MLP models (Dense, Activation,
        Dropout, Flatten, Reshape) with the built-in likelihoods and the ELBO, and gives the same
        numbers as the CPU to float rounding. Weights, optimizer state and files are the same on
        both backends: ``load_model(path, backend=...)`` moves a model across.
    device : int
        The CUDA device's number (``backend="cuda"`` only).
    """


    def __init__(self, input_shape: Shape, latent_dim: int = 2, hidden: Sequence[int] = (512,),
                 decoder_hidden: Optional[Sequence[int]] = None, activation: str = "relu",
                 likelihood: Union[str, Likelihood] = "bernoulli",
                 output_activation: Optional[str] = None, dropout: float = 0.0,
                 beta: Union[float, Callable[[int], float]] = 1.0, epsilon_std: float = 1.0,
                 prior_std: float = 1.0, log_var_clip: float = 5.0,
                 laplace_scale: Optional[float] = None, reduction: str = "sum",
                 encoder: Optional[List[L.Layer]] = None, decoder: Optional[List[L.Layer]] = None,
                 objective: str = "elbo", k: int = 1, seed: Optional[int] = None,
                 dtype: Union[str, type] = "float32", threads: Optional[int] = None,
                 backend: str = "cpu", device: int = 0) -> None:
        spec = _config.resolve(
            input_shape, latent_dim=latent_dim, hidden=hidden, decoder_hidden=decoder_hidden,
            activation=activation, likelihood=likelihood, output_activation=output_activation,
            dropout=dropout, beta=beta, epsilon_std=epsilon_std, prior_std=prior_std,
            log_var_clip=log_var_clip, laplace_scale=laplace_scale, reduction=reduction,
            encoder=encoder, decoder=decoder, objective=objective, k=k, seed=seed, dtype=dtype,
            threads=threads, backend=backend, device=device)
        self.input_shape, self.input_dim = spec.input_shape, spec.input_dim
        self.latent_dim, self.dtype, self.seed = spec.latent_dim, spec.dtype, spec.seed
        self.likelihood, self.custom_likelihood = spec.likelihood, spec.custom_likelihood
        self.params_per_dim = spec.params_per_dim
        self.encoder_layers, self.decoder_layers = spec.encoder_layers, spec.decoder_layers
        self.backend, self.device = spec.backend, spec.device
        self._config = spec.config          # everything needed to rebuild this model
        self._loc_act = spec.loc_act
        self._beta_schedule = spec.beta_schedule
        _config.check_model_memory(spec)
        self._engine = _config.make_engine(spec)
        self._weight_index = self._weight_layout()
        _check_unique_names(self.weight_names())

        self.optimizer = None
        self.history = History()  # every epoch this model has trained, across fit calls
        self.stop_training = False
        self._sample_calls = 0
        self.encoder = _SubModel(self.encode)
        self.decoder = _SubModel(self.decode)

    # ---- configuration --------------------------------------------------------------------
    @property
    def beta(self):
        return self._beta_schedule if self._beta_schedule is not None else self._engine.beta

    @beta.setter
    def beta(self, value):
        if callable(value):
            self._beta_schedule = value
        else:
            self._beta_schedule = None
            self._engine.beta = _checks.number(value, "beta", 0.0, dtype=self.dtype)
            self._config["beta"] = self._engine.beta

    @property
    def threads(self):
        return self._engine.threads

    @threads.setter
    def threads(self, n):
        self._engine.threads = _limits.threads(n)
        self._config["threads"] = self._engine.threads

    @property
    def epsilon_std(self):
        return self._engine.epsilon_std

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments (JSON-serialisable). With a beta schedule, ``beta`` is its
        value now (the last epoch's after ``fit``; ``beta(0)`` before): a function cannot be
        saved, so a model saved and loaded evaluates as it did, with that constant beta; to go on
        with the schedule, set it again (``loaded.beta = schedule``)."""
        if self._beta_schedule is None:
            return dict(self._config)  # beta as given (0.1, not its float32 rounding)
        return dict(self._config, beta=self._engine.beta)

    @classmethod
    def from_config(cls, config: Dict[str, Any],
                    custom_objects: Optional[Dict[str, type]] = None) -> "VAE":
        """A new model, with fresh weights, of the architecture ``config`` describes (a
        ``get_config()`` dict: layers as their configs, a custom likelihood as its class name and
        arguments, found in ``custom_objects``), as Keras's ``Model.from_config``."""
        return cls(**_constructor_args(config, custom_objects))

    def compile(self, optimizer: OptimizerLike = "adam", loss: None = None,
                metrics: Optional[Sequence[str]] = None) -> "VAE":
        """Chooses the optimizer (a name or a vaecpp.optimizers.Optimizer); resets its state.

        ``loss`` and ``metrics`` are accepted as Keras's ``compile`` takes them, but a VAE's loss
        is fixed by the model (the likelihood's negative log-likelihood plus ``beta`` times the
        KL term) and ``loss``, ``reconstruction_loss`` and ``kl_loss`` are always reported: pass
        None (or no metrics)."""
        if loss is not None:
            raise ValueError(f"a VAE's loss is its likelihood's negative log-likelihood plus "
                             f"beta * KL: choose it with VAE(likelihood=...), not compile(loss="
                             f"{loss!r})")
        if metrics:
            raise ValueError(f"compile(metrics={metrics!r}): a VAE always reports loss, "
                             f"reconstruction_loss and kl_loss (and val_... with validation "
                             f"data); other metrics are not supported")
        optimizer = optimizers.get(optimizer)
        for key, value in optimizer.get_config().items():  # 1e300 is inf in a float32 engine
            if isinstance(value, float):
                _checks.number(value, f"optimizer {key}", dtype=self.dtype)
        self.optimizer = optimizer
        self._engine.set_optimizer(self.optimizer.get_config())
        self.optimizer._model = weakref.ref(self)  # optimizer.iterations reads self.step
        return self

    # ---- the optimizer's progress and state -----------------------------------------------
    @property
    def step(self) -> int:
        """Optimizer steps taken since ``compile`` (across ``fit`` calls and file round trips);
        Keras's ``optimizer.iterations``. Callbacks that act every so many steps count these."""
        return int(self._engine.step)

    @step.setter
    def step(self, value):
        self._engine.step = _limits.integer(value, "step", 0, _limits.STEP_MAX)

    def get_optimizer_state(self) -> Dict[str, Any]:
        """The optimizer's state as ``{"step": int, "m": array, "v": array, "ema": array}``: the
        step count and its per-parameter slots (Adam's moments, SGD's momentum in ``m``,
        RMSprop's and Adagrad's accumulators; ``ema`` the weights' moving average with
        ``use_ema=True``; empty arrays for a slot the optimizer does not use). Raises
        RuntimeError before ``compile``."""
        self._need_optimizer("get_optimizer_state")
        m, v, ema = self._engine.get_optimizer_slots()
        return {"step": self.step, "m": m, "v": v, "ema": ema}

    def set_optimizer_state(self, state: Dict[str, Any]) -> None:
        """Restores what :meth:`get_optimizer_state` returned (same optimizer and model). Without
        ``"ema"`` (or with an empty one) an optimizer with ``use_ema=True`` starts its average
        at the current weights."""
        self._need_optimizer("set_optimizer_state")
        m = self._real_array(state["m"], "optimizer state 'm'")
        v = self._real_array(state["v"], "optimizer state 'v'")
        ema = self._real_array(state.get("ema", np.zeros(0)), "optimizer state 'ema'")
        if v.size and v.min() < 0:  # second moments and accumulators: sqrt(v) divides
            raise ValueError(f"optimizer state 'v' must be >= 0, got min {v.min()}")
        step = _limits.integer(state["step"], "optimizer step", 0, _limits.STEP_MAX)
        self._engine.set_optimizer_slots(m, v, ema)
        self.step = step

    def _need_optimizer(self, what):
        if self.optimizer is None:
            raise RuntimeError(f"{what} needs an optimizer: call compile() first")

    # ---- data ---------------------------------------------------------------------------------
    def _rows(self, x, name="x", check_support=True):
        rows, original = _checks.as_rows(x, self.input_shape, self.dtype, name)
        if check_support:
            _checks.check_support(rows, original, self.likelihood, name)
            if self.custom_likelihood is not None:
                self.custom_likelihood.check(rows)
        return rows

    def _latent_rows(self, z, name="z"):
        z = np.asarray(z) if isinstance(z, (list, tuple)) else z
        if isinstance(z, np.ndarray) and z.ndim == 1 and z.shape[0] == self.latent_dim:
            z = z[None, :]
        return _checks.as_rows(z, (self.latent_dim,), self.dtype, name)[0]

    def _out_shape(self, rows):
        return rows.reshape((rows.shape[0],) + self.input_shape)

    def _check_output(self, n, values, float64s, what):
        """A ValueError naming the size, before anything is allocated, when ``n`` rows of
        ``values`` numbers of this model's dtype and ``float64s`` float64 numbers each (an
        estimate of the call's arrays) would not fit in the memory this process may use
        (``_limits.memory_limit``)."""
        _limits.check_memory(n * (values * self.dtype.itemsize + 8 * float64s), what)

    # ---- training (see training.py) ---------------------------------------------------------
    def fit(self, x: Data, y: Optional[Data] = None, batch_size: Optional[int] = None,
            epochs: int = 1, verbose: Union[int, str] = "auto",
            callbacks: Optional[Sequence[Callback]] = None, validation_split: float = 0.0,
            validation_data: Optional[Data] = None, shuffle: bool = True,
            initial_epoch: Optional[int] = None, steps_per_epoch: Optional[int] = None,
            validation_steps: Optional[int] = None,
            validation_freq: Union[int, Sequence[int]] = 1, distributed: Any = None) -> History:
        """Trains for ``epochs`` more epochs; returns a History of this call.

        Epochs are numbered on from those this model has trained (``vae.history``), so calling
        ``fit`` again continues the numbering. ``initial_epoch``, when given, keeps Keras's
        meaning: train epochs ``initial_epoch`` to ``epochs - 1`` (e.g. to resume from a file:
        ``fit(x, epochs=20, initial_epoch=len(vae.history.epoch))``). ``batch_size=None`` is
        32 and ``verbose="auto"`` is 1, as in Keras. ``validation_freq``: validate every that
        many epochs, or after the (1-based) epochs listed.

        ``x`` is an array, or data that does not fit in memory (see :mod:`vaecpp.sources`): a
        data source with ``batches(batch_size, shuffle, seed, epoch)`` such as
        ``datasets.image_folder(path, stream=True)``, a generator of batches (with
        ``steps_per_epoch``), or another iterable of batches; each batch is one optimizer step.
        ``y`` must be None or ``x`` itself (a VAE reconstructs its input). ``validation_data`` is
        an array, a tuple ``(x_val, anything)`` or a stream (a generator with
        ``validation_steps``). Ctrl-C stops between batches: the model stays usable and
        ``vae.history`` keeps every finished epoch.

        ``distributed``: an mpi4py communicator (e.g. ``MPI.COMM_WORLD``) for data-parallel
        training, launched with ``mpiexec -n N python -m mpi4py train.py`` (``-m mpi4py``: an
        exception on one rank aborts the whole job instead of leaving the others waiting):
        every rank passes the same array ``x`` (and validation data), or a stream of which each
        rank reads its share (see :mod:`vaecpp.sources`), and builds the model with the same seed;
        ``batch_size`` is the global batch, of which each rank computes a share. N ranks give
        the weights of one process (see :mod:`vaecpp.distributed` and the README).
        """
        return training.fit(self, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                            callbacks=callbacks, validation_split=validation_split,
                            validation_data=validation_data, shuffle=shuffle,
                            initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                            validation_steps=validation_steps, validation_freq=validation_freq,
                            distributed=distributed)

    def train_on_batch(self, x: Data, y: Optional[Data] = None,
                       return_dict: bool = False) -> Union[float, Dict[str, float]]:
        """One optimizer step on the batch ``x``; returns the batch's mean loss before the step
        (a dict of the loss terms with ``return_dict=True``), as Keras's ``train_on_batch``."""
        if y is not None and not training._same_as_x(x, y):
            raise ValueError("a VAE reconstructs its input: y must be None or the same array as x")
        if self.optimizer is None:
            self.compile()
        self._engine.set_learning_rate(training.learning_rate(self))
        out = training.means(self._engine.train_batch(self._rows(x)))
        return out if return_dict else out["loss"]

    def evaluate(self, x: Data, y: Optional[Data] = None, batch_size: Optional[int] = None,
                 verbose: Union[int, str] = "auto", steps: Optional[int] = None,
                 return_dict: bool = False, distributed: Any = None) -> Union[float, Dict[str, float]]:
        """The mean loss per sample over x, as Keras returns it; with ``return_dict=True`` all
        the terms: ``loss``, ``reconstruction_loss``, ``kl_loss`` and ``elbo`` (=
        -(reconstruction_loss + kl_loss), the evidence lower bound in nats). The noise of sample
        i depends only on the seed and i, so the result is repeatable. ``x`` may be a data
        source or generator (see :mod:`vaecpp.sources`; a generator needs ``steps``), read once
        in order: the same data as an array gives the same numbers. ``steps`` evaluates that
        many batches (of an array, its first ``steps * batch_size`` rows), as in Keras. ``batch_size=None`` is 32.
        ``y`` must be None or ``x`` (``verbose`` is accepted and ignored: nothing is shown).
        With ``distributed`` (an mpi4py communicator) each rank evaluates its share of the array
        or stream and every rank returns the totals."""
        if y is not None and not training._same_as_x(x, y):
            raise ValueError("a VAE reconstructs its input: y must be None or the same array as x")
        training.check_verbose(verbose)
        out = training.evaluate(self, x, batch_size, steps, distributed)
        return out if return_dict else out["loss"]

    # ---- inference ------------------------------------------------------------------------
    def posterior(self, x: Data, batch_size: Optional[int] = None
                  ) -> Tuple[np.ndarray, np.ndarray]:
        """``(z_mean, z_log_var)`` of q(z|x), each (n, latent_dim); ``batch_size`` rows per
        engine call (None: all at once)."""
        return _batched(self._engine.encode, self._rows(x, check_support=False), batch_size)

    def encode(self, x: Data, sample: bool = False, seed: Optional[int] = None,
               batch_size: Optional[int] = None) -> np.ndarray:
        """Posterior means (n, latent_dim), or one sample ``z = mu + exp(lv/2) * eps`` each."""
        mu, lv = self.posterior(x, batch_size)
        if not sample:
            return mu
        eps = self._rng(seed).standard_normal(mu.shape) * self.epsilon_std
        return (mu + np.exp(0.5 * lv) * eps).astype(self.dtype)

    def decode(self, z: Data, sample: bool = False, seed: Optional[int] = None,
               batch_size: Optional[int] = None) -> np.ndarray:
        """For each latent point the likelihood's mean (the "expectation instead of a sample"),
        or with ``sample=True`` a draw from it (Bernoulli draws, Gaussian draws with the learned
        variance, ...); shaped (n, *input_shape). ``batch_size`` rows per engine call."""
        rows = self._latent_rows(z)
        # the means (twice when joined from pieces); for draws the likelihood's parameters,
        # and the float64 draws and their temporaries (about three of each)
        d, joined = self.input_dim, 1 if batch_size is None else 2
        self._check_output(len(rows), d * joined * (self.params_per_dim if sample else 1),
                           3 * d if sample else 0, f"decoding {len(rows)} latent points")
        if not sample:
            return self._out_shape(_batched(self._engine.decode, rows, batch_size))
        params = _batched(lambda r: self._engine.decode(r, raw=True), rows, batch_size)
        rng = self._rng(seed)
        if self.custom_likelihood is not None:
            x = self._checked_sample(self.custom_likelihood.sample(params, rng), len(rows))
        else:
            c = self._config
            x = sample_builtin(self.likelihood, params, self.input_dim, rng,
                               loc_act=self._loc_act, log_var_clip=c["log_var_clip"],
                               laplace_scale=c["laplace_scale"], reduction=c["reduction"])
        return self._out_shape(np.asarray(x, self.dtype))

    def _checked_sample(self, x, n):
        """What a custom likelihood's ``sample`` returned, checked as the engine checks its other
        methods: ``n`` finite rows of the model's input (flat or shaped)."""
        try:
            a = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            a = None
        if a is None or a.shape not in ((n, self.input_dim), (n, *self.input_shape)):
            got = "None" if x is None else getattr(a, "shape", type(x).__name__)
            raise ValueError(f"custom likelihood: sample must return an array of shape "
                             f"({n}, {self.input_dim}), got {got}")
        if not np.isfinite(a).all():
            raise ValueError("custom likelihood: sample returned NaN or inf")
        return a

    def decoder_outputs(self, z: Data) -> np.ndarray:
        """The decoder's raw outputs for each latent point: the likelihood's parameters (logits,
        or location then log-variance blocks, ...), ``(n, params_per_dim * input_dim)``."""
        rows = self._latent_rows(z)
        self._check_output(len(rows), self.params_per_dim * self.input_dim, 0,
                           f"decoder_outputs of {len(rows)} latent points")
        return self._engine.decode(rows, raw=True)

    def log_likelihood(self, x: Data, k: int = 5000, batch_size: Optional[int] = None
                       ) -> np.ndarray:
        """Importance-sampled estimate of log p(x) per sample, in nats (the IWAE bound with k
        draws from q(z|x), summed with log-sum-exp in float64). It tightens towards log p(x) as
        k grows; this is the number papers quote (e.g. about -87 nats for a VAE on dynamically
        binarised MNIST). Repeatable: the draws depend only on the seed and sample index.
        ``batch_size`` (None or a positive integer, for Keras-like call sites) does not change
        the result: the engine takes as many samples per pass as keep k draws each within its
        own bounded buffers."""
        if batch_size is not None:
            _checks.positive_int(batch_size, "batch_size")
        rows = self._rows(x)
        k = _limits.integer(k, "k")
        return self._engine.log_likelihood(rows, k).astype(np.float64)

    def reconstruct(self, x: Data, batch_size: Optional[int] = None) -> np.ndarray:
        """``decode(encode(x))`` through the posterior means."""
        return self.decode(self.encode(x, batch_size=batch_size), batch_size=batch_size)

    def predict(self, x: Data, batch_size: Optional[int] = None,
                verbose: Union[int, str] = "auto") -> np.ndarray:
        """Keras's name for :meth:`reconstruct`: ``batch_size`` rows per engine call (None: all
        at once; ``verbose`` is accepted and ignored)."""
        training.check_verbose(verbose)
        return self.reconstruct(x, batch_size=batch_size)

    def sample(self, n: int, seed: Optional[int] = None) -> np.ndarray:
        """n draws from the prior N(0, prior_std^2 I), decoded to their means. An ``n`` whose
        result would not fit in memory is a ValueError, before anything is allocated."""
        n = _limits.integer(n, "n")
        # z in float64 (and its scaled copy) and in the model's dtype, then the decoded means
        self._check_output(n, self.input_dim + self.latent_dim, 2 * self.latent_dim,
                           f"sample({n})")
        z = self._rng(seed).standard_normal((n, self.latent_dim)) * self._config["prior_std"]
        return self.decode(z)

    def _rng(self, seed):
        if seed is None:  # a fresh but reproducible stream per call
            self._sample_calls += 1
            return np.random.default_rng([self.seed, self._sample_calls])
        return np.random.default_rng(seed)

    def gradients(self, x: Data, eps: Optional[np.ndarray] = None
                  ) -> Tuple[Dict[str, float], List[np.ndarray]]:
        """Loss terms and the gradient of the mean loss for the batch x, without an update.

        ``eps`` (n, latent_dim), if given, is used as the (already scaled) noise; otherwise it is
        drawn as in ``evaluate``. Dropout is off. Returns ``(losses, grads)`` with ``grads`` in
        the order and shapes of ``get_weights()`` (zeros for non-trainable arrays)."""
        rows = self._rows(x)
        if eps is not None:
            eps = _checks.as_rows(eps, (self.latent_dim,), self.dtype, "eps")[0]
            draws = self._config["k"] if self._config["objective"] == "iwae" else 1
            if len(eps) != draws * len(rows):
                raise ValueError(f"eps must have one row per sample{' and draw' if draws > 1 else ''}"
                                 f": {len(eps)} != {draws * len(rows)}")
        sums, flat = self._engine.gradients(rows, eps)
        losses = training.means(sums)
        losses["elbo"] = -(losses["reconstruction_loss"] + losses["kl_loss"])
        training.check_finite_loss(losses, "gradients")
        if not np.isfinite(flat).all():
            raise FloatingPointError("gradients: the gradient overflowed to inf or NaN on these "
                                     "inputs; check the data's scale, or use dtype='float64'")
        return losses, self._split(flat, np.zeros(self._engine.num_state, self.dtype))

    # ---- weights --------------------------------------------------------------------------
    def _weight_layout(self):
        """For each array of get_weights(): (source, offset, shape), source 'p' or 's'; Keras
        order: per layer its trainable arrays, then its non-trainable ones."""
        entries = []
        for source, infos in (("p", self._engine.weight_info()), ("s", self._engine.state_info())):
            offset = 0
            for layer_idx, layer, name, shape in infos:
                size = int(np.prod(shape))
                entries.append((layer_idx, 0 if source == "p" else 1, source, offset, shape,
                                f"{layer}/{name}"))
                offset += size
        entries.sort(key=lambda e: (e[0], e[1]))
        return [(src, off, shape, name) for _, _, src, off, shape, name in entries]

    def _split(self, params, state):
        out = []
        for src, off, shape, _ in self._weight_index:
            buf = params if src == "p" else state
            out.append(buf[off:off + int(np.prod(shape))].reshape(shape).copy())
        return out

    def weight_names(self) -> List[str]:
        """Names of the arrays of get_weights(), e.g. ``dense/kernel``."""
        return [name for *_, name in self._weight_index]

    def get_weights(self) -> List[np.ndarray]:
        """NumPy arrays: per layer (encoder, z_mean, z_log_var, decoder) kernel (in, out), bias,
        then any non-trainable arrays (BatchNorm moving statistics)."""
        return self._split(self._engine.get_params(), self._engine.get_state())

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Sets the arrays of :meth:`get_weights`, in its order and shapes: real numbers, finite
        as the model's dtype, BatchNorm moving variances >= 0; ValueError / TypeError otherwise,
        the weights unchanged."""
        self._set_flat(*self._flatten(weights, "set_weights"), "set_weights")

    def _flatten(self, weights, what):
        """The engine's flat ``(params, state)`` holding ``weights`` (get_weights' arrays),
        each checked for its shape and cast (``_real_array``); ``what`` begins the messages."""
        weights = list(weights)
        if len(weights) != len(self._weight_index):
            raise ValueError(f"{what} expects {len(self._weight_index)} arrays, "
                             f"got {len(weights)}")
        params = self._engine.get_params()
        state = self._engine.get_state()
        for w, (src, off, shape, name) in zip(weights, self._weight_index):
            w = np.asarray(w)
            if w.shape != tuple(shape):
                raise ValueError(f"{what}: {name} must have shape {tuple(shape)}, "
                                 f"got {w.shape}")
            (params if src == "p" else state)[off:off + w.size] = self._real_array(
                w, f"{what}: {name}").ravel()
        return params, state

    def _set_flat(self, params, state, where):
        """Hands flat parameters and state to the engine once the state passed
        ``_file_checks.check_state`` (BatchNorm variances >= 0; ``where`` begins its message):
        the one way in for set_weights, load_weights (either format) and load_model."""
        _file_checks.check_state(where, state, self._engine.state_info())
        self._engine.set_params(params)
        self._engine.set_state(state)

    def _real_array(self, a, what):
        """``a`` as this model's dtype: real numbers only (no complex, bool, datetime, object),
        finite after the cast (1e300 is inf as float32)."""
        a = np.asarray(a)
        if a.dtype.kind not in "iuf":
            raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}")
        with np.errstate(over="ignore"):
            out = np.ascontiguousarray(a, dtype=self.dtype)
        if not np.isfinite(out).all():
            raise ValueError(f"{what} must be finite numbers (as {self.dtype.name})")
        return out

    def count_params(self) -> int:
        return int(self._engine.num_params)

    def layer_summary(self) -> List[LayerSummary]:
        """One :class:`LayerSummary` ``(name, kind, output_shape, params)`` per engine layer, in
        order: the encoder, ``z_mean``, ``z_log_var``, the decoder (what ``summary`` prints)."""
        return [LayerSummary(*row) for row in self._engine.layers()]

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Prints every layer with its output shape and parameter count."""
        rows = [("input", "Input", self.input_shape, 0)]
        for name, kind, shape, n in self.layer_summary():
            rows.append((name, kind, shape, n))
            if name == "z_log_var":
                rows.append(("z", "Sampling", (self.latent_dim,), 0))
        width = max(len(f"{r[0]} ({r[1]})") for r in rows) + 2
        line = "-" * (width + 34)
        where = "cpu" if self.backend == "cpu" else f"cuda:{self.device}"
        print_fn(f'Model: "vae"  likelihood: {self.likelihood}  dtype: {self.dtype.name}  '
                 f'backend: {where}')
        print_fn(line)
        print_fn(f"{'Layer (type)':<{width}}{'Output Shape':<22}{'Param #':>12}")
        print_fn("=" * len(line))
        for name, kind, shape, n in rows:
            print_fn(f"{f'{name} ({kind})':<{width}}{str((None,) + tuple(shape)):<22}{n:>12,}")
        print_fn("=" * len(line))
        print_fn(f"Total params: {self.count_params():,}")
        print_fn(line)

    # ---- files (the format: saving.py) ----------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes config, weights, optimizer state and history to one file, atomically."""
        slots = None
        if self.optimizer is not None:
            state = self.get_optimizer_state()
            slots = (state["m"], state["v"], state["ema"])
        saving.save_model(
            path, config=self.get_config(),
            optimizer=None if self.optimizer is None else self.optimizer.get_config(),
            step=self.step, history={"epoch": self.history.epoch,
                                     "history": self.history.history},
            params=self._engine.get_params(), state=self._engine.get_state(),
            optimizer_slots=slots)

    def _weights_layout(self):
        return [[name, list(w.shape)] for name, w in zip(self.weight_names(), self.get_weights())]

    def save_weights(self, path: Union[str, os.PathLike]) -> None:
        """Writes the weights (no config, optimizer or history) to one file, atomically. A path
        ending in ``.safetensors`` gets the safetensors format (needs ``pip install
        'vaecpp[safetensors]'``): one named tensor per array of ``get_weights()``, named by
        ``weight_names()`` (``dense/kernel``, ..., Dense kernels ``(in, out)`` as in Keras), for
        PyTorch and the wider ecosystem."""
        if saving.is_safetensors(path):
            saving.save_safetensors(path, dict(zip(self.weight_names(), self.get_weights())))
            return
        saving.save_weights(path, self._weights_layout(), self._engine.get_params(),
                            self._engine.get_state())

    def load_weights(self, path: Union[str, os.PathLike]) -> None:
        """Reads weights written by ``save_weights`` (either format) from a model of the same
        architecture; a file of another architecture raises ValueError."""
        if saving.is_safetensors(path):
            tensors = saving.read_safetensors(path, self._weights_layout(), self.dtype)
            where = repr(os.fspath(path))
            self._set_flat(*self._flatten([tensors[name] for name in self.weight_names()],
                                          where), where)
            return
        with saving.read_weights(path, self._weights_layout()) as f:
            self._set_flat_weights(f)

    def _set_flat_weights(self, f):
        """Parameters and state from an open file (``saving.read_weights`` / ``read_model``),
        checked: the sizes this model has, finite as its dtype, BatchNorm variances >= 0."""
        params = f.read("params", self._engine.num_params, self.dtype)
        state = f.read("state", self._engine.num_state, self.dtype)
        self._set_flat(params, state, repr(f.path))

    def __repr__(self):
        return (f"VAE(input_shape={self.input_shape}, latent_dim={self.latent_dim}, "
                f"likelihood={self.likelihood!r}, params={self.count_params():,})")

    # The engine under its old attribute name, for code written before it was renamed; use the
    # public accessors above (step, get_optimizer_state, layer_summary, train_on_batch, ...).
    _core = property(lambda self: self._engine)


def _check_unique_names(names):
    """Layer names must be unique, as in Keras: two arrays called ``dense/kernel`` (two layers
    named alike, or one named like the model's own ``z_mean`` / ``z_log_var`` heads or like a
    layer's default name) cannot be told apart in weight_names(), safetensors files or summaries."""
    seen, clashes = set(), []
    for name in names:
        if name in seen and name.split("/")[0] not in clashes:
            clashes.append(name.split("/")[0])
        seen.add(name)
    if clashes:
        raise ValueError(f"layer names must be unique; {', '.join(map(repr, clashes))} names more "
                         f"than one layer (z_mean and z_log_var are the model's own heads; "
                         f"unnamed layers are called dense, dense_1, ...)")


def load_model(path: Union[str, os.PathLike], custom_objects: Optional[Dict[str, type]] = None,
               backend: Optional[str] = None, device: Optional[int] = None,
               compile: bool = True) -> VAE:
    """Rebuilds a model saved with ``VAE.save``: weights, optimizer state and history, so that
    ``fit`` continues where training stopped (epochs numbered on). A model with a user-defined
    likelihood needs ``custom_objects={"ClassName": Class}``. ``backend`` / ``device`` override
    the saved ones: a model trained on the GPU loads on the CPU with ``backend="cpu"`` and the
    other way round (the weight layout is the same). ``compile=False`` leaves the optimizer
    and its state out (``vae.optimizer`` is None until ``compile``), as in Keras."""
    with saving.read_model(path) as saved:
        return _rebuild(saved, custom_objects, backend, device, compile)


def _constructor_args(config, custom_objects):
    """``VAE(...)``'s arguments from a ``get_config()`` dict: the layer configs as layers, a
    custom likelihood's ``{"class", "args"}`` as an instance of its class in ``custom_objects``."""
    cfg = dict(config)
    if isinstance(cfg.get("likelihood"), dict):
        name = cfg["likelihood"]["class"]
        if name not in (custom_objects or {}):
            raise ValueError(f"the model uses the custom likelihood {name!r}: pass "
                             f"custom_objects={{{name!r}: {name}}}")
        cfg["likelihood"] = custom_objects[name](**cfg["likelihood"].get("args", {}))
    for stack in ("encoder", "decoder"):
        if stack in cfg:
            cfg[stack] = [c if isinstance(c, L.Layer) else L.from_config(c) for c in cfg[stack]]
    return cfg


def _rebuild(saved, custom_objects, backend, device, compile):
    """The model of an open, checked model file (``saving.read_model``)."""
    where = saved.path
    try:
        cfg = dict(saved.config)
        if backend is not None:
            cfg["backend"] = backend
        if device is not None:
            cfg["device"] = device
        model = VAE(**_constructor_args(cfg, custom_objects))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where!r}: invalid model configuration: {e}") from None
    model._set_flat_weights(saved)
    if compile and saved.optimizer is not None:
        try:
            model.compile(saved.optimizer)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where!r}: invalid optimizer configuration: {e}") from None
        m, v, ema = saved.optimizer_slots(model.count_params(), model.dtype)
        try:
            model.set_optimizer_state({"step": saved.step, "m": m, "v": v, "ema": ema})
        except ValueError as e:
            raise ValueError(f"{where!r}: optimizer state does not fit: {e}") from None
    model.history = History()
    model.history.epoch = list(saved.history.get("epoch", []))
    model.history.history = {k: list(v) for k, v in saved.history.get("history", {}).items()}
    return model
