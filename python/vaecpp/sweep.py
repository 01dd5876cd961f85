"""Hyper-parameter sweeps with Optuna, on one machine or on many.

>>> study = vaecpp.sweep({"hidden": [(256,), (512, 256)], "latent_dim": [2, 10],
...                       "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)},
...                      x_train, validation_data=x_val, n_trials=20, directory="sweep-out",
...                      epochs=10, batch_size=100)
>>> study.best_params, study.best_trial.user_attrs["model_path"]
>>> from vaecpp.sweep import load_best
>>> vae = load_best(study)                     # the best trial's model

Each trial turns a dict of hyper-parameters into a compiled ``VAE``, trains it with ``fit``, saves it
(``<directory>/trial-00012.vae``, written atomically) and reports the mean validation loss of the
trained model (nats per sample, ``VAE.evaluate``), which the study minimises.

**Where the study lives.** Optuna keeps the trials in a relational database named by ``storage``:
by default ``sqlite:///<directory>/study.db``. Every process that calls ``sweep`` with the same
``storage`` and ``study_name`` works on the same study, so running the same command in several
terminals of one machine (SQLite) or on several hosts (a PostgreSQL or MySQL URL such as
``postgresql://user:password@dbhost/sweeps``, which needs the database's Python driver:
``psycopg`` for SQLAlchemy 2.1, ``psycopg2`` before it) spreads the trials over them;
``n_trials`` is the total over all of them. SQLite suits the processes of one machine, not a
network file system. ``storage`` may also be an ``optuna.storages.RDBStorage`` (e.g. with
``heartbeat_interval=60``, experimental in Optuna, so that the trials of a killed worker are
marked failed instead of running forever).

**Threads per trial.** Unless ``threads`` is given, each trial's model gets
``max(1, cores // (n_jobs * workers_per_host))`` OpenMP threads (:func:`trial_threads`), where
``cores`` is the number of CPUs this process may use, ``n_jobs`` the trials this process runs at
once (in threads; the engine releases the GIL) and ``workers_per_host`` the sweep processes you
start on this host. More threads than cores make OpenMP threads wait for each other at every
layer, which is much slower than one thread per core.

**Pruning.** :class:`PruningCallback` reports ``val_loss`` to the trial after every epoch; when the
study's pruner (``pruner=``, e.g. ``optuna.pruners.MedianPruner()``) gives up on the trial,
training stops after that epoch and the trial ends as pruned, without a model file. A trial whose
loss becomes NaN or infinite (``FloatingPointError``) ends as failed and the sweep goes on; any
other error stops the sweep.

Optuna is an optional dependency: ``pip install "vaecpp[sweep]"`` (or ``pip install optuna``).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import socket
import time

import numpy as np

from . import _checks, _limits, optimizers
from .training import check_verbose
from .callbacks import Callback
from .model import VAE
from .model import load_model

__all__ = ["sweep", "PruningCallback", "trial_threads", "load_best", "MODEL_KEYS", "TRAINING_KEYS"]

# Keys of a trial's hyper-parameter dict that the default model builder passes to VAE(...): its
# keyword arguments, less those the sweep sets itself.
MODEL_KEYS = tuple(name for name in inspect.signature(VAE).parameters
                   if name not in ("input_shape", "threads"))
# Keys read by compile (default builder only) and by fit (always; they override sweep's own).
COMPILE_KEYS = ("optimizer", "learning_rate")
TRAINING_KEYS = ("epochs", "batch_size")
_PRIMITIVE = (type(None), bool, int, float, str)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError('vaecpp.sweep needs Optuna, an optional dependency: pip install '
                          '"vaecpp[sweep]"  (or: pip install optuna)') from None
    return optuna


def trial_threads(n_jobs=1, workers_per_host=1, cores=None):
    """OpenMP threads per trial: ``max(1, cores // (n_jobs * workers_per_host))``.

    ``cores`` defaults to the CPUs this process may run on (``os.sched_getaffinity``, else
    ``os.cpu_count()``); ``n_jobs * workers_per_host`` is the number of trials running at once on
    this host.
    """
    n_jobs = _checks.positive_int(n_jobs, "n_jobs")
    workers_per_host = _checks.positive_int(workers_per_host, "workers_per_host")
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = _checks.positive_int(cores or 1, "cores")
    return max(1, cores // (n_jobs * workers_per_host))


class PruningCallback(Callback):
    """Reports ``monitor`` to an Optuna ``trial`` after every ``every``-th epoch; stops a trial
    worth pruning.

    Each report is a write to the study's database (some milliseconds with SQLite): for runs of
    thousands of short epochs, report every 10th or 100th. When ``trial.should_prune()`` says so
    after a report, the callback sets
    ``model.stop_training``: the epoch's other callbacks still run and ``fit`` ends as usual,
    and the callback then raises ``optuna.TrialPruned`` from ``on_train_end``, which Optuna records
    as a pruned trial. Put it last in the callback list, so that every other callback has finished
    when it raises. ``pruned_epoch`` is the (0-based) epoch after which it stopped, or None.
    Given ``epochs`` (fit's), the report after the last epoch prunes nothing: the trial is done.
    """

    def __init__(self, trial, monitor="val_loss", every=1, epochs=None):
        self._optuna = _optuna()
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name, got {type(monitor).__name__}")
        self.trial, self.monitor = trial, monitor
        self.every = _checks.positive_int(every, "every")
        self.epochs = None if epochs is None else _checks.positive_int(epochs, "epochs")
        self.pruned_epoch = None

    def on_train_begin(self, logs=None):
        self.pruned_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if (epoch + 1) % self.every:
            return
        if self.monitor not in logs:
            raise ValueError(f"PruningCallback monitors {self.monitor!r}, which is not among the "
                             f"logged metrics {sorted(logs)} (val_loss needs validation_data)")
        self.value = float(logs[self.monitor])
        self.trial.report(self.value, step=epoch)
        if epoch + 1 != self.epochs and self.trial.should_prune():
            self.pruned_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.pruned_epoch is not None:
            raise self._optuna.TrialPruned(
                f"trial {self.trial.number} pruned after epoch {self.pruned_epoch + 1}: "
                f"{self.monitor} {self.value:.4f}")


def load_best(study, **kwargs):
    """The saved model of the study's best trial (``vaecpp.load_model`` with ``kwargs``)."""
    path = study.best_trial.user_attrs.get("model_path")
    if path is None:
        raise ValueError(f"the best trial ({study.best_trial.number}) of study "
                         f"{study.study_name!r} has no model file: it was not run by vaecpp.sweep")
    return load_model(path, **kwargs)


def sweep(space, x, validation_data, *, n_trials, directory, storage=None, study_name="vaecpp",
          build=None, epochs=10, batch_size=32, callbacks=None, pruner=None, sampler=None,
          report_every=1, n_jobs=1, workers_per_host=1, threads=None, seed=0, timeout=None,
          verbose=0):
    """Runs Optuna trials that build, train, save and score VAEs; returns the ``optuna.Study``.

    Parameters
    ----------
    space : dict or callable
        The search space. A dict maps each hyper-parameter to a list of choices (any values,
        e.g. ``"hidden": [(256,), (512, 256)]``; Optuna sees the non-scalar ones by their
        ``repr``), to an ``optuna.distributions`` ``FloatDistribution`` / ``IntDistribution`` /
        ``CategoricalDistribution``, or to a fixed value (anything else: a tuple is a fixed
        value, a list a set of choices). A callable ``space(trial) -> dict`` suggests the values
        itself with ``trial.suggest_*``.
    x, validation_data : arrays
        Training and validation data (``validation_data`` may be ``(x_val, x_val)`` as for fit).
    n_trials : int or None
        Trials to run in the study, counted over every worker sharing it: finished, pruned,
        diverged and running trials count (a worker starts no trial once the study holds
        ``n_trials``, and workers that check at the same instant may start one each beyond it);
        trials that failed with an error that stopped the sweep do not, so after fixing the
        error the same command runs the rest. None with ``sampler="grid"``: the size of the grid.
    directory : path
        Where the model files (``trial-<number>.vae``) and the default SQLite study go; created if
        absent. Use one directory per study: a second study would overwrite the first's files.
    storage : str, optuna storage or None
        The study's database URL; None: ``sqlite:///<directory>/study.db``.
    study_name : str
        Workers with the same ``storage`` and ``study_name`` share the study.
    build : callable or None
        ``build(params) -> VAE`` (compiled or not) for models the default cannot make. The
        default builds ``VAE(x.shape[1:], seed=seed, **params)`` from the keys in
        :data:`MODEL_KEYS` and compiles it with ``params["optimizer"]`` (default ``"adam"``) and,
        if given, ``params["learning_rate"]``. Either way ``params["epochs"]`` and
        ``params["batch_size"]``, if present, override ``epochs`` and ``batch_size`` for that
        trial, and the model's ``threads`` is set by the sweep.
    epochs, batch_size : int
        Training of each trial (unless the trial's params say otherwise).
    callbacks : list or None
        Extra callbacks for each trial's ``fit`` (they run before the pruning callback). The same
        objects serve every trial: with ``n_jobs > 1`` they must not keep per-run state.
    report_every : int
        Epochs between the validation losses reported to the pruner (:class:`PruningCallback`).
    pruner, sampler
        Optuna's pruner and sampler for this process's trials (None: Optuna's defaults, median
        pruning and TPE); every worker passes its own. ``sampler="grid"`` tries every
        combination of a dict space whose searched entries are all lists of choices
        (``optuna.samplers.GridSampler``).
    n_jobs : int
        Trials this process runs at once, in threads.
    workers_per_host : int
        Sweep processes started on this host (for the threads formula only).
    threads : int or None
        OpenMP threads per trial; None: :func:`trial_threads`.
    seed : int or None
        The models' seed (unless the trial's params have one): by default every trial starts
        from the same seed, so trials differ by their hyper-parameters only.
    timeout : float or None
        Seconds after which this process starts no new trial.
    verbose : 0, 1, 2 or "auto"
        ``fit``'s verbosity for each trial.

    Each trial's ``user_attrs`` hold ``params`` (the full hyper-parameter dict, non-JSON values
    as their ``repr``), ``model_path`` (absolute path of its file on ``host``), ``host``,
    ``threads``, ``epochs_run`` and, for a pruned trial, ``pruned_epoch``.
    """
    optuna = _optuna()
    rows = _check_data(x, "x")
    val = validation_data[0] if isinstance(validation_data, tuple) and validation_data else validation_data
    if val is None:
        raise ValueError("sweep needs validation_data: each trial is scored by its validation loss")
    val = _check_data(val, "validation_data")
    if val.shape[1:] != rows.shape[1:]:
        raise ValueError(f"validation_data has samples of shape {val.shape[1:]}, x of {rows.shape[1:]}")
    if build is None:
        seed = None if seed is None else _limits.seed(seed)
        build = _DefaultBuilder(rows.shape[1:], seed)
    elif not callable(build):
        raise TypeError(f"build must be a callable build(params) -> VAE, got {type(build).__name__}")
    fixed_space = _check_space(space, custom_build=not isinstance(build, _DefaultBuilder))
    if isinstance(sampler, str):
        if sampler != "grid":
            raise ValueError(f"sampler must be an Optuna sampler or 'grid', got {sampler!r}")
        sampler, grid_size = _grid_sampler(optuna, fixed_space)
        n_trials = grid_size if n_trials is None else n_trials
    if n_trials is None:
        raise TypeError("n_trials must be an integer (None only with sampler='grid')")
    n_trials = _checks.positive_int(n_trials, "n_trials")
    if threads is None:
        threads = trial_threads(n_jobs, workers_per_host)
    threads = _checks.positive_int(threads, "threads")
    n_jobs = _checks.positive_int(n_jobs, "n_jobs")
    training = {"epochs": _checks.positive_int(epochs, "epochs"),
                "batch_size": _checks.positive_int(batch_size, "batch_size")}
    verbose = check_verbose(verbose)  # fit's own check, before any trial (True passed here)
    if timeout is not None:
        timeout = _checks.number(timeout, "timeout", 0.0, open_minimum=True)
    callbacks = list(callbacks or [])
    report_every = _checks.positive_int(report_every, "report_every")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}")
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)

    study = optuna.create_study(storage=_storage(optuna, storage, directory), sampler=sampler,
                                pruner=pruner, study_name=study_name, direction="minimize",
                                load_if_exists=True)
    objective = _Objective(space, build, rows, val, training, callbacks, report_every, threads,
                           directory, verbose)

    def stop_when_enough(study, _trial):
        if _enough(study, n_trials):
            study.stop()

    if not _enough(study, n_trials):
        study.optimize(objective, n_jobs=n_jobs, timeout=timeout, catch=(FloatingPointError,),
                       callbacks=[stop_when_enough])
    return study


def _enough(study, n_trials):
    """Whether the study holds n_trials that count: finished, pruned, diverged or running."""
    from optuna.trial import TrialState as S
    trials = study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.FAIL, S.RUNNING))
    return sum(t.state != S.FAIL or "diverged" in t.user_attrs for t in trials) >= n_trials


class _Objective:
    """One trial: hyper-parameters -> VAE -> fit (pruned or not) -> file -> validation loss."""

    def __init__(self, space, build, x, val, training, callbacks, report_every, threads,
                 directory, verbose):
        self.space, self.build, self.x, self.val = space, build, x, val
        self.training, self.callbacks, self.report_every = training, callbacks, report_every
        self.threads, self.directory, self.verbose = threads, directory, verbose

    def __call__(self, trial):
        import optuna
        params = _suggest(trial, self.space)
        trial.set_user_attr("params", _json_safe(params))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("threads", self.threads)
        run = {k: params.pop(k) if k in params else v for k, v in self.training.items()}
        vae = self.build(params)
        if not isinstance(vae, VAE):
            raise TypeError(f"build(params) must return a vaecpp.VAE, got {type(vae).__name__}")
        vae.threads = self.threads
        pruning = PruningCallback(trial, every=self.report_every, epochs=run["epochs"])
        try:
            history = vae.fit(self.x, epochs=run["epochs"], batch_size=run["batch_size"],
                              validation_data=self.val, verbose=self.verbose,
                              callbacks=self.callbacks + [pruning])
        except optuna.TrialPruned:  # by the pruner, or by a callback of the caller's
            done = len(vae.history.epoch)  # the epochs finished before it stopped
            trial.set_user_attr("pruned_epoch", done - 1 if done else None)
            trial.set_user_attr("epochs_run", done)
            raise
        except FloatingPointError as e:  # a failed trial (Optuna catches it); the sweep goes on
            trial.set_user_attr("diverged", str(e))
            raise
        trial.set_user_attr("epochs_run", len(history.epoch))
        path = os.path.join(self.directory, f"trial-{trial.number:05d}.vae")
        vae.save(path)
        trial.set_user_attr("model_path", path)
        return vae.evaluate(self.val, batch_size=run["batch_size"], verbose=0)


def _check_data(x, name):
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise TypeError(f"{name} must be an array of samples: {e}") from None
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{name} must be an array of samples, shape (n, ...) with n >= 1; "
                         f"got shape {x.shape}")
    return x


class _DefaultBuilder:
    """``VAE(input_shape, seed=seed, **model_params)``, compiled with the optimizer params."""

    def __init__(self, input_shape, seed):
        self.input_shape, self.seed = input_shape, seed

    def __call__(self, params):
        unknown = sorted(set(params) - set(MODEL_KEYS) - set(COMPILE_KEYS))
        if unknown:
            raise ValueError(_unknown_keys_message(unknown))
        model = {k: v for k, v in params.items() if k in MODEL_KEYS}
        model.setdefault("seed", self.seed)
        vae = VAE(self.input_shape, **model)
        optimizer = optimizers.get(params.get("optimizer", "adam"))
        if "learning_rate" in params:
            optimizer = optimizers.get({**optimizer.get_config(),
                                        "learning_rate": params["learning_rate"]})
        return vae.compile(optimizer)


def _unknown_keys_message(unknown):
    return (f"unknown hyper-parameter(s) {unknown} for the default model builder; it takes the "
            f"VAE arguments {', '.join(MODEL_KEYS)} and {', '.join(COMPILE_KEYS + TRAINING_KEYS)} "
            f"(give build= for anything else)")


def _check_space(space, custom_build):
    """Validates a search-space dict (or accepts a callable); returns the dict or None."""
    if callable(space):
        return None
    if not isinstance(space, dict):
        raise TypeError(f"space must be a dict of hyper-parameters or a callable "
                        f"space(trial) -> dict, got {type(space).__name__}")
    for name, spec in space.items():
        if not isinstance(name, str):
            raise TypeError(f"space keys must be hyper-parameter names (str), got {name!r}")
        if isinstance(spec, list):
            _choice_labels(name, spec)
    unknown = sorted(set(space) - set(MODEL_KEYS) - set(COMPILE_KEYS) - set(TRAINING_KEYS))
    if unknown and not custom_build:
        raise ValueError(_unknown_keys_message(unknown))
    return space


def _choice_labels(name, choices):
    """What Optuna stores for each choice: the value itself if it is a scalar, else its repr."""
    if not choices:
        raise ValueError(f"space[{name!r}] is an empty list of choices")
    if all(isinstance(c, _PRIMITIVE) for c in choices):
        return list(choices)
    labels = [c if isinstance(c, str) else repr(c) for c in choices]
    if len(set(labels)) != len(labels):
        raise ValueError(f"space[{name!r}] has choices that look alike: {labels}")
    return labels


def _suggest(trial, space):
    """The hyper-parameters of one trial, from a search-space dict or a space(trial) function."""
    if callable(space):
        params = space(trial)
        if not isinstance(params, dict):
            raise TypeError(f"space(trial) must return a dict of hyper-parameters, "
                            f"got {type(params).__name__}")
        return dict(params)
    from optuna import distributions as D
    params = {}
    for name, spec in space.items():
        if isinstance(spec, D.FloatDistribution):
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, D.IntDistribution):
            params[name] = trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
        elif isinstance(spec, D.CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, spec.choices)
        elif isinstance(spec, list):
            labels = _choice_labels(name, spec)
            params[name] = spec[labels.index(trial.suggest_categorical(name, labels))]
        else:
            params[name] = spec
    return params


def _grid_sampler(optuna, space):
    if space is None:
        raise ValueError("sampler='grid' needs a search-space dict, not a function")
    grid = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            grid[name] = _choice_labels(name, spec)
        elif isinstance(spec, optuna.distributions.CategoricalDistribution):
            grid[name] = list(spec.choices)
        elif isinstance(spec, optuna.distributions.BaseDistribution):
            raise ValueError(f"sampler='grid' needs lists of choices; space[{name!r}] is {spec}")
    return optuna.samplers.GridSampler(grid), math.prod(len(v) for v in grid.values())


def _storage(optuna, storage, directory, attempts=5):
    """An Optuna RDB storage for a URL (storage objects pass through).

    Workers started together race to create the tables of a new database: the loser's CREATE or
    INSERT fails, and a retry finds the tables made. SQLite waits up to a minute for a lock (the
    processes of one machine share the file).
    """
    if storage is None:
        storage = "sqlite:///" + os.path.join(directory, "study.db")
    if not isinstance(storage, (str, optuna.storages.BaseStorage)):
        raise TypeError(f"storage must be a database URL or an Optuna storage, "
                        f"got {type(storage).__name__}")
    if not isinstance(storage, str):
        return storage
    import sqlalchemy.exc
    engine_kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1) * (1 + random.random()))


def _json_safe(params):
    out = {}
    for k, v in params.items():
        try:
            json.dumps(v)
            out[k] = v
        except (TypeError, ValueError):
            out[k] = repr(v)
    return out
