"""The training loop: ``fit`` and ``evaluate`` over one data adapter for arrays and streams.

As Keras's data adapters do, :func:`adapter_for` turns what the user passes into one object with
one interface, so that the epoch loop below does not care where the batches come from:

* :class:`ArrayAdapter` (array data): an epoch runs inside the C++ engine
  (``engine.train_epoch``: shuffling, batching, the optimizer steps) with the GIL released,
  calling back to Python at most every 0.1 s;
* :class:`StreamAdapter` (a data source, generator or iterable of batches, see
  :mod:`vaecpp.sources`): Python iterates the batches and the engine takes one step per batch
  (``engine.train_batch``), calling back after each. With ``distributed``, each rank steps on
  its share of every global batch, after the ranks agreed on the batch in one small all-reduce
  (:class:`_SharedPass`).

Both return the epoch's loss sums (``loss``, ``reconstruction_loss``, ``kl_loss`` summed over
samples, and ``n``), which :func:`fit` turns into the per-sample means that History, the progress
bar and the callbacks see. The loop itself, per epoch: callbacks' ``on_epoch_begin``, the beta
schedule and learning rate into the engine, ``adapter.train_epoch``, validation, callbacks'
``on_epoch_end``.
"""

from __future__ import annotations

import math

import numpy as np

from . import _checks, _core, callbacks as cbks
from .distributed import FAILED, INTERRUPTED, for_comm
from .sources import Stream, is_stream

__all__ = ["fit", "evaluate", "adapter_for", "ArrayAdapter", "StreamAdapter", "means"]

SUM_KEYS = ("loss", "reconstruction_loss", "kl_loss")
DEFAULT_BATCH_SIZE = 32  # Keras's, for batch_size=None


def means(sums):
    """Per-sample means of an engine's loss sums."""
    n = max(int(sums["n"]), 1)
    return {k: float(sums[k]) / n for k in SUM_KEYS}


def _zero_sums():
    return {"loss": 0.0, "reconstruction_loss": 0.0, "kl_loss": 0.0, "n": 0}


def _add(total, sums):
    for key in total:
        total[key] += sums[key]


class ArrayAdapter:
    """Array data, already checked: ``(n, input_dim)`` rows of the model's dtype."""

    exhausted = False  # an array never runs dry

    def __init__(self, rows, batch_size):
        self.rows, self.batch_size = rows, batch_size

    @property
    def steps(self):
        """Batches per epoch."""
        return -(-len(self.rows) // self.batch_size)

    def __len__(self):
        return len(self.rows)

    def split(self, fraction):
        """``(train, validation)`` adapters: the last ``fraction`` of the rows validates."""
        if fraction >= 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {fraction}")
        n_val = int(len(self.rows) * fraction)
        if n_val < 1 or n_val >= len(self.rows):
            raise ValueError(f"validation_split={fraction} leaves no training or no "
                             f"validation samples out of {len(self.rows)}")
        return (ArrayAdapter(self.rows[:-n_val], self.batch_size),
                ArrayAdapter(self.rows[-n_val:], self.batch_size))

    def train_epoch(self, engine, epoch, shuffle, report, begin=None, dist=None):
        """One epoch in C++; ``report(done, total, loss, rec, kl)`` is throttled to 0.1 s.
        ``begin()`` runs before the epoch's first batch (the engine cannot stop before each).
        With ``dist`` the ranks share every batch and add up their gradients in the engine."""
        if begin is not None:
            begin()
        return engine.train_epoch(self.rows, self.batch_size, shuffle, epoch, report,
                                  dist.engine_arg() if dist else None)

    def evaluate(self, engine, batch_size, dist=None):
        """Loss sums; with ``dist`` each rank its contiguous share (sample i keeps its noise)."""
        if dist is None:
            return engine.evaluate(self.rows, batch_size)
        lo, hi = dist.shard(len(self.rows))
        sums = (engine.evaluate(self.rows[lo:hi], batch_size, lo) if hi > lo
                else {"loss": 0.0, "reconstruction_loss": 0.0, "kl_loss": 0.0, "n": 0})
        return dist.sum_sums(sums)


class StreamAdapter:
    """Batches from a data source, generator or iterable; ``check(batch, name)`` turns each into
    checked rows (the model's ``_rows``); ``empty`` is a share of no rows, ``(0, input_dim)``."""

    def __init__(self, stream, check, empty):
        self.stream, self.check, self.empty = stream, check, empty

    @property
    def steps(self):
        """Batches per epoch if known, else None."""
        return self.stream.steps

    @property
    def exhausted(self):
        """Whether a one-pass generator ran dry (training then stops)."""
        return self.stream.exhausted

    def share_rows(self, batch, what):
        """A rank's share of a batch as checked rows; ``empty`` for none."""
        return self.empty if len(batch) == 0 else self.check(batch, what)

    def train_epoch(self, engine, epoch, shuffle, report, begin=None, dist=None):
        """One optimizer step per batch; ``begin()`` before and ``report`` after each (None:
        no calls). With ``dist``, one step per global batch on every rank's share."""
        if dist is not None:
            return self._train_shared(engine, epoch, shuffle, report, begin, dist)
        total = _zero_sums()
        for k, batch in enumerate(self.stream.epoch(epoch, shuffle)):
            if begin is not None:
                begin()
            _add(total, engine.train_batch(self.check(batch, f"batch {k + 1} of x"), k))
            if report is not None:
                m = means(total)
                if not report(k + 1, None, m["loss"], m["reconstruction_loss"], m["kl_loss"]):
                    break
        return total

    def _train_shared(self, engine, epoch, shuffle, report, begin, dist):
        """Every rank steps on its share of each global batch, the ranks' gradients added up in
        the engine. A stop_training after a batch on any rank ends the epoch there on all; an
        error in ``begin`` stops every rank before the batch's update (the engine's word)."""
        total = _zero_sums()
        with _SharedPass(self, self.stream.epoch(epoch, shuffle, dist.rank, dist.size), dist,
                         "x") as shares:
            for k, rows, agreed in shares:
                if begin is not None:
                    shares.call(begin)
                try:
                    sums = engine.train_batch(rows, k, dist.engine_arg(), agreed.first,
                                              agreed.total, shares.pending is not None)
                except _core.Interrupted:
                    shares.raise_pending()  # this rank's own error, else another's Ctrl-C
                    raise
                _add(total, sums)
                if report is not None:
                    m = means(total)
                    if shares.call(report, k + 1, None, m["loss"], m["reconstruction_loss"],
                                   m["kl_loss"]) is False:
                        shares.stop = True
        return total

    def evaluate(self, engine, batch_size, dist=None):
        """One unshuffled pass; sample i's noise depends on its position in the data, as with
        arrays, so the same data streamed or in one array gives the same numbers. With ``dist``
        each rank evaluates its share of every batch at the rows' global positions and the sums
        are added up: the numbers of one process."""
        if dist is not None:
            return self._evaluate_shared(engine, batch_size, dist)
        total = _zero_sums()
        for k, batch in enumerate(self.stream.epoch(0, False)):
            rows = self.check(batch, f"batch {k + 1} of {self.stream.name}")
            _add(total, engine.evaluate(rows, batch_size, total["n"]))
        if total["n"] == 0:
            raise ValueError(f"{self.stream.name} yielded no batches")
        return total

    def _evaluate_shared(self, engine, batch_size, dist):
        total, seen = _zero_sums(), 0  # seen: rows of the earlier batches, over all ranks
        with _SharedPass(self, self.stream.epoch(0, False, dist.rank, dist.size), dist,
                         self.stream.name) as shares:
            for _, rows, agreed in shares:
                if len(rows):
                    sums = shares.call(engine.evaluate, rows, batch_size, seen + agreed.first)
                    if sums is not None:
                        _add(total, sums)
                seen += agreed.total
        total = dist.sum_sums(total)
        if total["n"] == 0:
            raise ValueError(f"{self.stream.name} yielded no batches")
        return total


class _SharedPass:
    """One pass over a stream as one rank of several sees it: iterating gives ``(k, rows,
    agreement)`` for each global batch, ``rows`` this rank's checked share (maybe empty), once the
    ranks agreed on it (:meth:`Distributed.agree`). The pass ends when no rank has a batch left
    or a rank asked to stop (``stop``). An error on this rank between collectives (reading or
    checking its share, a callback, Ctrl-C) is kept by :meth:`call` and said at the next
    agreement, where every rank raises: this one its own error, the others Interrupted (a
    KeyboardInterrupt) or RuntimeError; so no rank is left waiting in a collective."""

    _END = object()

    def __init__(self, adapter, shares, dist, name):
        self.adapter, self.shares, self.dist, self.name = adapter, shares, dist, name
        self.pending, self.stop = None, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shares.close()  # e.g. stops an image folder's decoding thread

    def call(self, fn, *args):
        """``fn(*args)``; None and the error kept for the next agreement if it raises."""
        try:
            return fn(*args)
        except (KeyboardInterrupt, Exception) as e:
            if self.pending is None:
                self.pending = e
            return None

    def raise_pending(self):
        if self.pending is not None:
            raise self.pending

    def _next_share(self, k):
        batch = next(self.shares, self._END)
        return None if batch is self._END else self.adapter.share_rows(
            batch, f"batch {k + 1} of {self.name}")

    def __iter__(self):
        k = 0
        while True:
            stopped = self.pending is not None or self.stop
            rows = None if stopped else self.call(self._next_share, k)
            failure = (0 if self.pending is None else
                       INTERRUPTED if isinstance(self.pending, KeyboardInterrupt) else FAILED)
            agreed = self.dist.agree(0 if rows is None else len(rows), rows is not None,
                                     self.stop, failure)
            if agreed.failed:
                self.raise_pending()
                rank = min(agreed.failed)
                if INTERRUPTED in agreed.failed.values():
                    raise _core.Interrupted(f"rank {rank} was interrupted before batch {k + 1} "
                                            f"of {self.name}; every rank stopped there")
                raise RuntimeError(f"rank {rank} stopped with an error before batch {k + 1} of "
                                   f"{self.name} (see its output); every rank stopped there")
            if agreed.stop or not agreed.more:
                return
            if agreed.total == 0:
                raise ValueError(f"batch {k + 1} of {self.name} is empty on every rank")
            yield k, self.adapter.empty if rows is None else rows, agreed
            k += 1


def adapter_for(model, data, batch_size, steps=None, name="x", steps_name="steps"):
    """The adapter for ``data``: a stream (see :mod:`vaecpp.sources`) or an array. ``steps``
    (evaluate's ``steps``, fit's ``validation_steps``) reads that many batches, as in Keras: of
    an array, which is read in order, its first ``steps * batch_size`` rows."""
    if steps is not None:
        steps = _checks.positive_int(steps, steps_name)
    if is_stream(data):
        stream = Stream(data, batch_size, steps, model.seed, name, steps_name)
        return StreamAdapter(stream, lambda batch, what: model._rows(batch, what),
                             np.zeros((0, model.input_dim), model.dtype))
    rows = model._rows(data, name)
    return ArrayAdapter(rows if steps is None else rows[:steps * batch_size], batch_size)


def evaluate(model, x, batch_size=None, steps=None, distributed=None):
    """Mean loss terms per sample over ``x`` (an array or a stream) plus ``elbo``."""
    batch_size = check_batch_size(batch_size)
    dist = for_comm(distributed)
    data = adapter_for(model, x, batch_size, steps, "x", "steps")
    if dist is not None:
        dist.check_agree({"x (its kind and number of samples)": _kind_and_size(data)})
    out = means(data.evaluate(model._engine, batch_size, dist))
    out["elbo"] = -(out["reconstruction_loss"] + out["kl_loss"])
    check_finite_loss(out, "evaluate")
    return out


def check_finite_loss(losses, what):
    """A loss that overflowed (inf) or is NaN is an error, never a number handed back (fit's
    validation logs it instead, as Keras does)."""
    if not all(math.isfinite(losses[k]) for k in SUM_KEYS):
        raise FloatingPointError(
            f"{what}: the loss is {losses['loss']} (reconstruction {losses['reconstruction_loss']}, "
            f"KL {losses['kl_loss']}): the model overflows on these inputs in "
            f"its dtype; check the data's scale, or use dtype='float64'")


class _Recorder(cbks.Callback):
    """Appends each finished epoch to the model's lifetime history."""

    def __init__(self, history):
        self.lifetime = history

    def on_epoch_end(self, epoch, logs=None):
        self.lifetime.on_epoch_end(epoch, dict(logs or {}))


def check_batch_size(batch_size):
    """Keras's default of 32 for None; else a positive integer."""
    return DEFAULT_BATCH_SIZE if batch_size is None else _checks.positive_int(batch_size,
                                                                             "batch_size")


def check_verbose(verbose):
    """0, 1 or 2; Keras's ``"auto"`` is 1."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


def _validation_epochs(freq):
    """``validation_freq`` as a test on 0-based epochs: every ``freq`` epochs for an integer,
    else the 1-based epoch numbers listed (Keras's two forms)."""
    if isinstance(freq, (int, np.integer)) and not isinstance(freq, bool):
        if freq < 1:
            raise ValueError(f"validation_freq must be >= 1, got {freq}")
        return lambda epoch: (epoch + 1) % int(freq) == 0
    try:
        listed = {int(e) for e in freq}
    except (TypeError, ValueError):
        raise ValueError(f"validation_freq must be a positive integer or a list of epoch "
                         f"numbers, got {freq!r}") from None
    return lambda epoch: epoch + 1 in listed


def _check_callbacks(callbacks):
    """A list of ``vaecpp.callbacks.Callback`` objects (None: none)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, cbks.Callback) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a list of vaecpp.callbacks.Callback objects, got "
                        f"{type(callbacks).__name__}")
    callbacks = list(callbacks)
    for c in callbacks:
        if not isinstance(c, cbks.Callback):
            raise TypeError(f"callbacks must be vaecpp.callbacks.Callback objects, got "
                            f"{type(c).__name__}")
    return callbacks


def _same_as_x(x, y):
    return y is x or (isinstance(y, np.ndarray) and isinstance(x, np.ndarray)
                      and y.shape == x.shape and np.array_equal(y, x))


def _kind_and_size(data):
    """What the ranks must agree on about one data argument: an array must be the same on every
    rank (its size is compared); a stream may give each rank its own rows, as many batches as
    it has (see :mod:`vaecpp.sources`; a rank that runs dry takes empty shares), so only its
    kind is."""
    if data is None:
        return None
    return ("array", len(data)) if isinstance(data, ArrayAdapter) else ("stream",)


def _settings_to_agree(model, train, val, batch_size, initial_epoch, epochs, validate_now,
                       shuffle):
    """Everything every rank of ``fit(..., distributed=comm)`` must pass alike, by name: the
    model (its configuration, seed included: it orders the epochs and draws the noise; the
    thread count and device may differ), its optimizer, the data's kind and size, and the epochs
    trained and validated."""
    config = {k: v for k, v in model.get_config().items()
              if k not in ("threads", "device", "backend")}
    return {"the model's seed": model.seed, "the model's configuration": config,
            "the optimizer": model.optimizer.get_config(),
            "x (its kind and number of samples)": _kind_and_size(train),
            "validation data (its kind and number of samples)": _kind_and_size(val),
            "batch_size": batch_size, "initial_epoch": initial_epoch, "epochs": epochs,
            "the validated epochs (validation_freq)": [
                e for e in range(initial_epoch, epochs) if validate_now(e)],
            "shuffle": bool(shuffle)}


def learning_rate(model):
    """The compiled optimizer's ``learning_rate`` as the engine will use it: a finite number > 0,
    also in the model's dtype (``1e-50`` is 0 as float32: nothing would train). Read before every
    epoch of ``fit`` and every ``train_on_batch``, since a schedule or the user may have set it."""
    lr = _checks.number(model.optimizer.learning_rate, "learning_rate", 0.0, open_minimum=True,
                        dtype=model.dtype)
    if model.dtype.type(lr) == 0:
        raise ValueError(f"learning_rate {lr:g} is 0 as {model.dtype.name}")
    return lr


def fit(model, x, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
        validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=None,
        steps_per_epoch=None, validation_steps=None, validation_freq=1, distributed=None):
    """``VAE.fit`` (see its docstring): checks the arguments, builds the adapters, runs the
    epochs and returns the History of this call."""
    streaming = is_stream(x)
    if y is not None and (streaming or not _same_as_x(x, y)):
        raise ValueError("a VAE reconstructs its input: y must be None or the same array as x"
                         + (" (None for a data source or generator)" if streaming else ""))
    batch_size = check_batch_size(batch_size)
    epochs = _checks.positive_int(epochs, "epochs", minimum=0)
    if initial_epoch is None:  # go on from the epochs this model has trained: epochs more
        initial_epoch = len(model.history.epoch)
        epochs += initial_epoch
    else:  # Keras's meaning: train epochs initial_epoch .. epochs - 1
        initial_epoch = _checks.positive_int(initial_epoch, "initial_epoch", minimum=0)
    verbose = check_verbose(verbose)
    callbacks = _check_callbacks(callbacks)
    validate_now = _validation_epochs(validation_freq)
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
        val = adapter_for(model, validation_data, batch_size, validation_steps,
                          "validation_data", "validation_steps")
    if streaming and split > 0:
        raise ValueError("validation_split needs array data; give a data source or "
                         "generator its validation_data")
    train = adapter_for(model, x, batch_size, steps_per_epoch, "x", "steps_per_epoch")
    if validation_data is None and split > 0:
        train, val = train.split(split)
    if model.optimizer is None:
        model.compile()
    dist = for_comm(distributed)
    if dist is not None:
        dist.check_agree(_settings_to_agree(model, train, val, batch_size, initial_epoch, epochs,
                                            validate_now, shuffle))
        dist.broadcast_model(model._engine)
        if dist.rank != 0:  # rank 0 alone prints and writes files
            verbose = 0
            callbacks = [c for c in (callbacks or []) if not getattr(c, "rank_zero_only", False)]
    return _run(model, train, val, batch_size, epochs, initial_epoch, verbose, callbacks,
                bool(shuffle), validate_now, dist)


def _run(model, train, val, batch_size, epochs, initial_epoch, verbose, callbacks, shuffle,
         validate_now, dist=None):
    """The epoch loop, epochs ``initial_epoch .. epochs - 1``."""
    engine = model._engine
    history = cbks.History()
    user_cbs = list(callbacks or [])
    terminate_on_nan = any(isinstance(c, cbks.TerminateOnNaN) for c in user_cbs)
    progress = cbks.ProgressBar(verbose, epochs, train.steps)
    log_lr = any(isinstance(c, (cbks.LearningRateScheduler, cbks.ReduceLROnPlateau))
                 for c in user_cbs)
    batch_cbs = [c for c in user_cbs if cbks.has_batch_hook(c)]
    # History first, so user callbacks (e.g. ModelCheckpoint) see the finished epoch in it.
    params = {"verbose": verbose, "epochs": epochs, "steps": train.steps}
    cb = cbks.CallbackList([history, _Recorder(model.history), progress] + user_cbs, model,
                           params)

    def begin():
        """Before a batch: every streamed one; for arrays the first of an epoch and the next
        after each report."""
        step = model.step
        for c in batch_cbs:
            c.on_train_batch_begin(step, {})

    def report(done, total, loss, rec, kl):
        """After a batch (throttled to every 0.1 s for arrays); False ends the epoch."""
        if verbose == 1:
            progress.on_batches(done, loss)
        if batch_cbs:
            logs = {"loss": loss, "reconstruction_loss": rec, "kl_loss": kl}
            step = model.step
            for c in batch_cbs:
                c.on_train_batch_end(step, dict(logs))
            if total is not None and done < total and not model.stop_training:
                begin()  # the engine goes on with the next batch of this epoch
        return not model.stop_training

    def settle(where, fn, *args):
        """fn(*args); with several ranks, an error in it on any rank is raised on every rank
        once they all got here (the others would otherwise wait for it forever in their next
        collective): its own error on the rank that had it, a RuntimeError naming it elsewhere."""
        if dist is None:
            return fn(*args)
        error = None
        try:
            fn(*args)
        except (Exception, KeyboardInterrupt) as e:
            error = e
        failed = dist.failed_ranks(error is not None)
        if error is not None:
            raise error
        if failed:
            raise RuntimeError(f"distributed: rank {failed[0]} stopped with an error {where}; "
                               f"its own traceback says which")

    beta_schedule = model._beta_schedule
    model.stop_training = False
    swappers = [c for c in user_cbs if isinstance(c, cbks.SwapEMAWeights)]
    try:
        settle("in on_train_begin", cb.on_train_begin, {})
        for epoch in range(initial_epoch, epochs):
            settle(f"at the start of epoch {epoch + 1}", cb.on_epoch_begin, epoch, {})
            if beta_schedule is not None:
                engine.beta = _checks.number(beta_schedule(epoch), f"beta({epoch})", 0.0,
                                             dtype=model.dtype)
            engine.set_learning_rate(learning_rate(model))  # a schedule may have changed it
            hook = report if verbose == 1 or batch_cbs else None
            try:
                sums = train.train_epoch(engine, epoch, shuffle, hook, begin if batch_cbs else None,
                                         dist)
            except _core.NonFiniteLoss as e:
                if not terminate_on_nan:
                    raise FloatingPointError(
                        f"epoch {epoch + 1}: {e}; training stopped and the weights of the last "
                        f"good step were kept") from None
                cb.on_epoch_end(epoch, {"loss": float("nan")})
                break
            if sums["n"] == 0:  # a generator that had run dry
                break
            if dist is not None:
                dist.average_state(engine)
            logs = means(sums)
            if beta_schedule is not None:
                logs["beta"] = engine.beta
            if log_lr:  # the rate this epoch ran with
                logs["learning_rate"] = model.optimizer.learning_rate
            if val is not None and validate_now(epoch):
                settle(f"before the validation of epoch {epoch + 1}", cb.on_test_begin, {})
                val_logs = {"val_" + k: v
                            for k, v in means(val.evaluate(engine, batch_size, dist)).items()}
                logs.update(val_logs)
                settle(f"after the validation of epoch {epoch + 1}", cb.on_test_end,
                       dict(val_logs))
            settle(f"at the end of epoch {epoch + 1}", cb.on_epoch_end, epoch, logs)
            exhausted = train.exhausted or (val is not None and val.exhausted)
            if dist is not None:  # a callback on any rank (e.g. rank 0's) stops them all, and so
                # does any rank's generator that ran dry
                model.stop_training, exhausted = dist.any(model.stop_training, exhausted)
            if model.stop_training or exhausted:
                break
    finally:  # the raw weights back where a callback swapped in the average, however it ended
        for c in swappers:
            c.swap_back()
    if epochs > initial_epoch and getattr(model.optimizer, "use_ema", False):
        engine.finalize_average()  # Keras's finalize_variable_values: the averaged weights
    cb.on_train_end({})
    return history
