"""The VAE model: a Keras-like front end over the C++ engine."""

from __future__ import annotations

import os

import numpy as np

from . import _core, _checks, callbacks as cbks, layers as L, optimizers
from .likelihoods import Likelihood, sample_builtin
from .callbacks import History
from .sources import Stream, is_stream

__all__ = ["VAE"]

LIKELIHOODS = ("bernoulli", "gaussian", "mse", "continuous_bernoulli", "laplace")
# Parameters per data dimension, and the default output activation of the location.
_LOC_DEFAULT = {"gaussian": "sigmoid"}


class _SubModel:
    """``vae.encoder`` / ``vae.decoder``: Keras-style ``predict`` over one half of the model."""

    def __init__(self, fn):
        self._fn = fn

    def predict(self, x, batch_size=None, verbose=0):
        return self._fn(x)

    __call__ = predict


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
        Weight of the KL term, or a schedule ``beta(epoch) -> float`` (KL warm-up).
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

    def __init__(self, input_shape, latent_dim=2, hidden=(512,), decoder_hidden=None,
                 activation="relu", likelihood="bernoulli", output_activation=None, dropout=0.0,
                 beta=1.0, epsilon_std=1.0, prior_std=1.0, log_var_clip=5.0, laplace_scale=None,
                 reduction="sum", encoder=None, decoder=None, objective="elbo", k=1, seed=None,
                 dtype="float32", threads=None, backend="cpu", device=0):
        self.input_shape = _checks.shape_tuple(input_shape)
        self.input_dim = int(np.prod(self.input_shape))
        self.latent_dim = _checks.positive_int(latent_dim, "latent_dim")
        if dtype not in ("float32", "float64", np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(dtype)
        device = _check_backend(backend, device, self.dtype)
        self.custom_likelihood = likelihood if isinstance(likelihood, Likelihood) else None
        if self.custom_likelihood is not None:
            likelihood = type(likelihood).__name__
            self.params_per_dim = _checks.positive_int(self.custom_likelihood.params_per_dim,
                                                       "Likelihood.params_per_dim")
        elif not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; expected one of "
                             f"{', '.join(LIKELIHOODS)} or a vaecpp.Likelihood")
        self.likelihood = likelihood
        if self.custom_likelihood is not None:
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
        k = _checks.positive_int(k, "k")
        if objective == "iwae" and (callable(beta) or beta != 1.0):
            raise ValueError("objective='iwae' trains the importance-weighted bound, which has "
                             "no beta: leave beta=1")
        if reduction == "mean" and self.custom_likelihood is not None:
            raise ValueError("reduction='mean' is for the built-in likelihoods; a custom "
                             "Likelihood returns its own NLL")
        if laplace_scale is not None:
            laplace_scale = _checks.number(laplace_scale, "laplace_scale", 0.0, open_minimum=True)
        self._beta_schedule = beta if callable(beta) else None
        beta0 = float(beta(0)) if callable(beta) else _checks.number(beta, "beta", 0.0)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        self.seed = _checks.positive_int(seed, "seed", minimum=0)
        if threads is None:
            threads = _default_threads()
        threads = _checks.positive_int(threads, "threads")
        dropout = _checks.number(dropout, "dropout", 0.0)
        if dropout >= 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        activation = L.check_activation(activation)

        if self.custom_likelihood is None:
            self.params_per_dim = 2 if likelihood == "gaussian" or (
                likelihood == "laplace" and laplace_scale is None) else 1
        if encoder is None:
            hidden = tuple(_checks.positive_int(h, "hidden width") for h in hidden)
            encoder = self._mlp(hidden, activation, dropout)
        if decoder is None:
            dec_hidden = tuple(reversed(hidden)) if decoder_hidden is None else tuple(
                _checks.positive_int(h, "decoder_hidden width") for h in decoder_hidden)
            decoder = self._mlp(dec_hidden, activation, dropout) + [
                L.Dense(self.params_per_dim * self.input_dim, name="decoder_output")]
        for stack, what in ((encoder, "encoder"), (decoder, "decoder")):
            if not all(isinstance(layer, L.Layer) for layer in stack):
                raise TypeError(f"{what} must be a list of vaecpp.layers.Layer objects")
        self.encoder_layers, self.decoder_layers = list(encoder), list(decoder)

        # Everything needed to rebuild this model (saved in model files).
        self._config = dict(
            input_shape=list(self.input_shape), latent_dim=self.latent_dim,
            likelihood=likelihood, output_activation=output_activation,
            beta=beta0 if self._beta_schedule is None else 1.0,
            epsilon_std=_checks.number(epsilon_std, "epsilon_std", 0.0, open_minimum=True),
            prior_std=_checks.number(prior_std, "prior_std", 0.0, open_minimum=True),
            log_var_clip=_checks.number(log_var_clip, "log_var_clip", 0.0, open_minimum=True),
            laplace_scale=laplace_scale, reduction=reduction, objective=objective, k=k,
            seed=self.seed,
            dtype=self.dtype.name, threads=threads, backend=backend, device=device,
            encoder=[layer.get_config() for layer in self.encoder_layers],
            decoder=[layer.get_config() for layer in self.decoder_layers])
        if self.custom_likelihood is not None:
            self._config["likelihood"] = {"class": likelihood,
                                          "args": self.custom_likelihood.get_config()}
        engine_cfg = dict(
            self._config, beta=beta0, output_activation=loc_act,
            likelihood="bernoulli" if self.custom_likelihood is not None else likelihood,
            custom_params_per_dim=self.params_per_dim if self.custom_likelihood else 0,
            laplace_scale=laplace_scale or 0.0, iwae_k=k,
            **_engine_stacks(self.encoder_layers, self.decoder_layers))
        if backend == "cuda":
            self._core = _core.VaeCudaF32(engine_cfg, None, device)
        else:
            core_cls = _core.VaeF32 if self.dtype == np.float32 else _core.VaeF64
            self._core = core_cls(engine_cfg, self.custom_likelihood)
        self.backend, self.device = backend, device
        self._weight_index = self._weight_layout()
        self._core_loc_act = loc_act

        self.optimizer = None
        self.history = History()  # every epoch this model has trained, across fit calls
        self.stop_training = False
        self._sample_calls = 0
        self.encoder = _SubModel(self.encode)
        self.decoder = _SubModel(self.decode)

    @staticmethod
    def _mlp(widths, activation, dropout):
        stack = []
        for w in widths:
            stack.append(L.Dense(w, activation))
            if dropout > 0:
                stack.append(L.Dropout(dropout))
        return stack

    # ---- configuration --------------------------------------------------------------------
    @property
    def beta(self):
        return self._beta_schedule if self._beta_schedule is not None else self._core.beta

    @beta.setter
    def beta(self, value):
        if callable(value):
            self._beta_schedule = value
        else:
            self._beta_schedule = None
            self._core.beta = _checks.number(value, "beta", 0.0)
            self._config["beta"] = self._core.beta

    @property
    def threads(self):
        return self._core.threads

    @threads.setter
    def threads(self, n):
        self._core.threads = _checks.positive_int(n, "threads")
        self._config["threads"] = self._core.threads

    @property
    def epsilon_std(self):
        return self._core.epsilon_std

    def get_config(self):
        """The constructor arguments (JSON-serialisable); a beta schedule is not included."""
        return dict(self._config)

    def compile(self, optimizer="adam"):
        """Chooses the optimizer (a name or a vaecpp.optimizers.Optimizer); resets its state."""
        self.optimizer = optimizers.get(optimizer)
        self._core.set_optimizer(self.optimizer.get_config())
        return self

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

    # ---- training -------------------------------------------------------------------------
    def fit(self, x, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None):
        """Trains for ``epochs - initial_epoch`` epochs; returns a History of this call.

        ``x`` is an array, or data that does not fit in memory (see :mod:`vaecpp.sources`): a
        data source with ``batches(batch_size, shuffle, seed, epoch)`` such as
        ``datasets.image_folder(path, stream=True)``, a generator of batches (with
        ``steps_per_epoch``), or another iterable of batches; each batch is one optimizer step.
        ``y`` must be None or ``x`` itself (a VAE reconstructs its input). ``validation_data`` is
        an array, a tuple ``(x_val, anything)`` or a stream (a generator with
        ``validation_steps``). Ctrl-C stops between batches: the model stays usable and
        ``vae.history`` keeps every finished epoch.
        """
        streaming = is_stream(x)
        if y is not None and (streaming or y is not x and not (
                isinstance(y, np.ndarray) and isinstance(x, np.ndarray) and y.shape == x.shape
                and np.array_equal(y, x))):
            raise ValueError("a VAE reconstructs its input: y must be None or the same array as x"
                             + (" (None for a data source or generator)" if streaming else ""))
        batch_size = _checks.positive_int(batch_size, "batch_size")
        epochs = _checks.positive_int(epochs, "epochs", minimum=0)
        initial_epoch = _checks.positive_int(initial_epoch, "initial_epoch", minimum=0)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        if steps_per_epoch is not None:
            steps_per_epoch = _checks.positive_int(steps_per_epoch, "steps_per_epoch")
            if not streaming:
                raise ValueError("steps_per_epoch is for data sources and generators; with arrays "
                                 "an epoch is one pass over x")
        split = _checks.number(validation_split, "validation_split", 0.0)
        val = None
        if validation_data is not None:
            if isinstance(validation_data, tuple):
                if not validation_data:
                    raise ValueError("validation_data is an empty tuple")
                validation_data = validation_data[0]
            val = self._data(validation_data, batch_size, validation_steps, "validation_data",
                             "validation_steps")
        if streaming:
            if split > 0:
                raise ValueError("validation_split needs array data; give a data source or "
                                 "generator its validation_data")
            train = Stream(x, batch_size, steps_per_epoch, self.seed, "x", "steps_per_epoch")
            steps = train.steps
        else:
            train = self._rows(x)
            if validation_data is None and split > 0:
                if split >= 1.0:
                    raise ValueError(f"validation_split must be in [0, 1), got {split}")
                n_val = int(len(train) * split)
                if n_val < 1 or n_val >= len(train):
                    raise ValueError(f"validation_split={split} leaves no training or no "
                                     f"validation samples out of {len(train)}")
                train, val = train[:-n_val], train[-n_val:]
            steps = -(-len(train) // batch_size)
        if self.optimizer is None:
            self.compile()

        history = History()
        user_cbs = list(callbacks or [])
        terminate_on_nan = any(isinstance(c, cbks.TerminateOnNaN) for c in user_cbs)
        progress = cbks.ProgressBar(verbose, epochs, steps)
        log_lr = any(isinstance(c, (cbks.LearningRateScheduler, cbks.ReduceLROnPlateau))
                     for c in user_cbs)
        batch_cbs = [c for c in user_cbs if cbks.has_batch_hook(c)]
        # History first, so user callbacks (e.g. ModelCheckpoint) see the finished epoch in it.
        cb = cbks.CallbackList([history, _Recorder(self.history), progress] + user_cbs, self)

        def report(done, total, loss, rec, kl):
            """After a batch (throttled to every 0.1 s for arrays); False ends the epoch."""
            if verbose == 1:
                progress.on_batches(done, loss)
            if batch_cbs:
                logs = {"loss": loss, "reconstruction_loss": rec, "kl_loss": kl}
                step = int(self._core.step)
                for c in batch_cbs:
                    c.on_train_batch_end(step, dict(logs))
            return not self.stop_training

        self.stop_training = False
        cb.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch, {})
            if self._beta_schedule is not None:
                self._core.beta = _checks.number(self._beta_schedule(epoch), "beta(epoch)", 0.0)
            self._core.set_learning_rate(self.optimizer.learning_rate)
            hook = report if verbose == 1 or batch_cbs else None
            try:
                if streaming:
                    sums = self._train_stream(train.epoch(epoch, bool(shuffle)), hook)
                else:
                    sums = self._core.train_epoch(train, batch_size, bool(shuffle), epoch, hook)
            except _core.NonFiniteLoss as e:
                if not terminate_on_nan:
                    raise FloatingPointError(
                        f"epoch {epoch + 1}: {e}; training stopped and the weights of the last "
                        f"good step were kept") from None
                logs = {"loss": float("nan")}
                cb.on_epoch_end(epoch, logs)
                break
            if sums["n"] == 0:  # a generator that had run dry
                break
            logs = _means(sums)
            if self._beta_schedule is not None:
                logs["beta"] = self._core.beta
            if log_lr:  # the rate this epoch ran with
                logs["learning_rate"] = self.optimizer.learning_rate
            if val is not None:
                logs.update({"val_" + k: v for k, v in _means(self._evaluate_sums(val, batch_size)).items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training or streaming and train.exhausted:
                break
        cb.on_train_end({})
        return history

    def _train_stream(self, batches, report):
        """One epoch over streamed batches, one optimizer step each; the loss sums."""
        tot = {"loss": 0.0, "reconstruction_loss": 0.0, "kl_loss": 0.0, "n": 0}
        for k, batch in enumerate(batches):
            s = self._core.train_batch(self._rows(batch, f"batch {k + 1} of x"), k)
            for key in tot:
                tot[key] += s[key]
            if report is not None:
                m = _means(tot)
                if not report(k + 1, None, m["loss"], m["reconstruction_loss"], m["kl_loss"]):
                    break
        return tot

    def _data(self, data, batch_size, steps, name, steps_name):
        """Array rows, or a Stream for a data source / generator / iterable of batches."""
        if is_stream(data):
            if steps is not None:
                steps = _checks.positive_int(steps, steps_name)
            return Stream(data, batch_size, steps, self.seed, name, steps_name)
        return self._rows(data, name)

    def _evaluate_sums(self, data, batch_size):
        """Loss sums over array rows or over one pass of a Stream (unshuffled)."""
        if not isinstance(data, Stream):
            return self._core.evaluate(data, batch_size)
        tot = {"loss": 0.0, "reconstruction_loss": 0.0, "kl_loss": 0.0, "n": 0}
        for k, batch in enumerate(data.epoch(0, False)):
            rows = self._rows(batch, f"batch {k + 1} of {data.name}")
            s = self._core.evaluate(rows, batch_size, tot["n"])  # noise by position in the data
            for key in tot:
                tot[key] += s[key]
        if tot["n"] == 0:
            raise ValueError(f"{data.name} yielded no batches")
        return tot

    # ---- inference ------------------------------------------------------------------------
    def evaluate(self, x, y=None, batch_size=32, verbose=0, steps=None):
        """Mean loss terms per sample over x: ``loss``, ``reconstruction_loss``, ``kl_loss`` and
        ``elbo`` (= -(reconstruction_loss + kl_loss), the evidence lower bound in nats). The noise
        of sample i depends only on the seed and i, so the result is repeatable. ``x`` may be a
        data source or generator (see :mod:`vaecpp.sources`; a generator needs ``steps``),
        read once in order: the same data as an array gives the same numbers."""
        batch_size = _checks.positive_int(batch_size, "batch_size")
        out = _means(self._evaluate_sums(self._data(x, batch_size, steps, "x", "steps"), batch_size))
        out["elbo"] = -(out["reconstruction_loss"] + out["kl_loss"])
        return out

    def posterior(self, x):
        """``(z_mean, z_log_var)`` of q(z|x), each (n, latent_dim)."""
        return self._core.encode(self._rows(x, check_support=False))

    def encode(self, x, sample=False, seed=None):
        """Posterior means (n, latent_dim), or one sample ``z = mu + exp(lv/2) * eps`` each."""
        mu, lv = self.posterior(x)
        if not sample:
            return mu
        eps = self._rng(seed).standard_normal(mu.shape) * self.epsilon_std
        return (mu + np.exp(0.5 * lv) * eps).astype(self.dtype)

    def decode(self, z, sample=False, seed=None):
        """For each latent point the likelihood's mean (the "expectation instead of a sample"),
        or with ``sample=True`` a draw from it (Bernoulli draws, Gaussian draws with the learned
        variance, ...); shaped (n, *input_shape)."""
        rows = self._latent_rows(z)
        if not sample:
            return self._out_shape(self._core.decode(rows))
        params = self._core.decode(rows, raw=True)
        rng = self._rng(seed)
        if self.custom_likelihood is not None:
            x = self.custom_likelihood.sample(params, rng)
        else:
            c = self._config
            x = sample_builtin(self.likelihood, params, self.input_dim, rng,
                               loc_act=self._core_loc_act, log_var_clip=c["log_var_clip"],
                               laplace_scale=c["laplace_scale"], reduction=c["reduction"])
        return self._out_shape(np.asarray(x, self.dtype))

    def log_likelihood(self, x, k=5000, batch_size=None):
        """Importance-sampled estimate of log p(x) per sample, in nats (the IWAE bound with k
        draws from q(z|x), summed with log-sum-exp in float64). It tightens towards log p(x) as
        k grows; this is the number papers quote (e.g. about -87 nats for a VAE on dynamically
        binarised MNIST). Repeatable: the draws depend only on the seed and sample index."""
        rows = self._rows(x)
        k = _checks.positive_int(k, "k")
        return self._core.log_likelihood(rows, k).astype(np.float64)

    def reconstruct(self, x):
        """``decode(encode(x))`` through the posterior means."""
        return self.decode(self.encode(x))

    predict = reconstruct

    def sample(self, n, seed=None):
        """n draws from the prior N(0, prior_std^2 I), decoded to their means."""
        n = _checks.positive_int(n, "n")
        z = self._rng(seed).standard_normal((n, self.latent_dim)) * self._config["prior_std"]
        return self.decode(z)

    def _rng(self, seed):
        if seed is None:  # a fresh but reproducible stream per call
            self._sample_calls += 1
            return np.random.default_rng([self.seed, self._sample_calls])
        return np.random.default_rng(seed)

    def gradients(self, x, eps=None):
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
        sums, flat = self._core.gradients(rows, eps)
        losses = _means(sums)
        losses["elbo"] = -(losses["reconstruction_loss"] + losses["kl_loss"])
        return losses, self._split(flat, np.zeros(self._core.num_state, self.dtype))

    # ---- weights --------------------------------------------------------------------------
    def _weight_layout(self):
        """For each array of get_weights(): (source, offset, shape), source 'p' or 's'; Keras
        order: per layer its trainable arrays, then its non-trainable ones."""
        entries = []
        for source, infos in (("p", self._core.weight_info()), ("s", self._core.state_info())):
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

    def weight_names(self):
        """Names of the arrays of get_weights(), e.g. ``dense/kernel``."""
        return [name for *_, name in self._weight_index]

    def get_weights(self):
        """NumPy arrays: per layer (encoder, z_mean, z_log_var, decoder) kernel (in, out), bias,
        then any non-trainable arrays (BatchNorm moving statistics)."""
        return self._split(self._core.get_params(), self._core.get_state())

    def set_weights(self, weights):
        weights = list(weights)
        if len(weights) != len(self._weight_index):
            raise ValueError(f"set_weights expects {len(self._weight_index)} arrays, "
                             f"got {len(weights)}")
        params = self._core.get_params()
        state = self._core.get_state()
        for w, (src, off, shape, name) in zip(weights, self._weight_index):
            w = np.asarray(w)
            if w.shape != tuple(shape):
                raise ValueError(f"set_weights: {name} must have shape {tuple(shape)}, "
                                 f"got {w.shape}")
            if not np.issubdtype(w.dtype, np.number) or not np.isfinite(w).all():
                raise ValueError(f"set_weights: {name} must be finite numbers")
            (params if src == "p" else state)[off:off + w.size] = w.ravel()
        self._core.set_params(params)
        self._core.set_state(state)

    def count_params(self):
        return int(self._core.num_params)

    def summary(self, print_fn=print):
        """Prints every layer with its output shape and parameter count."""
        rows = [("input", "Input", self.input_shape, 0)]
        for i, (name, kind, shape, n) in enumerate(self._core.layers()):
            rows.append((name, kind, tuple(shape), n))
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

    # ---- persistence (see saving.py) ------------------------------------------------------
    def save(self, path):
        """Writes config, weights, optimizer state and history to one file, atomically."""
        from .saving import save_model
        save_model(self, path)

    def save_weights(self, path):
        from .saving import save_weights
        save_weights(self, path)

    def load_weights(self, path):
        from .saving import load_weights
        load_weights(self, path)

    def __repr__(self):
        return (f"VAE(input_shape={self.input_shape}, latent_dim={self.latent_dim}, "
                f"likelihood={self.likelihood!r}, params={self.count_params():,})")


class _Recorder(cbks.Callback):
    """Appends each finished epoch to the model's lifetime history."""

    def __init__(self, history):
        self.lifetime = history

    def on_epoch_end(self, epoch, logs=None):
        self.lifetime.on_epoch_end(epoch, dict(logs or {}))


BACKENDS = ("cpu", "cuda")


def _check_backend(backend, device, dtype):
    """Validates backend and device; returns the device number. A CUDA request that this build or
    machine cannot serve raises RuntimeError saying why, before any engine is built."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if isinstance(device, bool) or not isinstance(device, (int, np.integer)) or device < 0:
        raise ValueError(f"device must be a CUDA device number >= 0, got {device!r}")
    device = int(device)
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


def _engine_stacks(encoder, decoder):
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


def _default_threads():
    """``$VAECPP_THREADS`` (a positive integer) if set, else the number of cores. On a busy
    machine fewer threads than cores can be much faster: OpenMP threads wait for each other at
    every layer."""
    value = os.environ.get("VAECPP_THREADS", "").strip()
    if not value:
        return _core.max_threads()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"VAECPP_THREADS must be a positive integer, got {value!r}")
    return n


def _means(sums):
    n = max(int(sums["n"]), 1)
    return {k: float(sums[k]) / n for k in ("loss", "reconstruction_loss", "kl_loss")}

