"""Data that does not fit in memory: what ``VAE.fit`` and ``VAE.evaluate`` accept besides arrays.

* A **data source**: any object with ``batches(batch_size, shuffle=True, seed=0, epoch=0)``
  returning an iterable of float arrays ``(b, *input_shape)`` that covers the data once, e.g.
  ``vaecpp.datasets.image_folder(path, stream=True)``. ``fit`` asks it for a fresh pass each epoch
  (shuffled from the model's seed and the epoch number); ``len(source)``, when defined, gives the
  number of samples and so the steps of the progress bar.
* A **generator** or other iterator of batches: one stream shared by all epochs, so ``fit`` needs
  ``steps_per_epoch`` (``evaluate`` and validation need ``steps``/``validation_steps``). If it
  runs dry, the epoch ends with the batches it gave and training stops with a warning.
* Any other **re-iterable** of batches that is not array data (a list or tuple is array data:
  wrap a list of batches in ``iter()``): iterated afresh each epoch.

Every batch is one optimizer step, whatever its size (``batch_size`` is what ``fit`` asks a data
source for). Batches may also be tuples ``(x, anything)``, as Keras generators yield them; only
``x`` is used. Progress bar, callbacks, history, Ctrl-C and validation behave as with arrays.

**Shards** (``fit(..., distributed=comm)``, see :mod:`vaecpp.distributed`). A data source whose
``batches`` also takes ``rank`` and ``size`` -- ``batches(batch_size, shuffle=True, seed=0,
epoch=0, rank=0, size=1)`` -- yields, for each *global* batch of ``batch_size`` rows (the order a
single process gets), only rank ``rank``'s contiguous share of it: rows ``[lo, hi)`` with
:func:`share_range` (an empty array where the share is empty), and reads only those rows: the
image folder decodes only its own files. Any other source, a generator or a re-iterable is read
whole on every rank (it must give every rank the same batches: same data, same seed), and each
rank keeps its share of each batch.
"""

from __future__ import annotations

import collections.abc
import inspect
import itertools
import warnings

import numpy as np

__all__ = ["is_stream", "map_batches", "MappedSource", "share_range", "share_of", "takes_shards"]


def is_stream(data):
    """Whether ``fit`` treats ``data`` as a stream of batches rather than an array."""
    if hasattr(data, "batches"):
        return True
    if isinstance(data, (np.ndarray, list, tuple, str, bytes)) or hasattr(data, "__array__"):
        return False
    return isinstance(data, collections.abc.Iterable)


def share_range(n, rank, size):
    """Rows ``[lo, hi)`` of a batch of ``n`` rows that rank ``rank`` of ``size`` holds: contiguous,
    in rank order, as the engine splits a batch (``split_range`` in ``cpp/core/threads.hpp``)."""
    return n * rank // size, n * (rank + 1) // size


def share_of(batch, rank, size):
    """Rank ``rank``'s rows of a whole batch (the batch itself for one rank)."""
    if size == 1:
        return batch
    x = np.asarray(_x_of(batch))
    if x.ndim == 0:
        return x  # not rows: the model's check says so
    lo, hi = share_range(len(x), rank, size)
    return x[lo:hi]


def takes_shards(source):
    """Whether ``source.batches`` takes ``rank`` and ``size`` (and so yields one rank's share of
    each batch)."""
    try:
        params = inspect.signature(source.batches).parameters
    except (TypeError, ValueError):
        return False
    return "rank" in params and "size" in params


def check_shard(rank, size):
    """``rank`` and ``size`` as a data source's ``batches`` takes them."""
    if (isinstance(rank, bool) or isinstance(size, bool) or not isinstance(rank, (int, np.integer))
            or not isinstance(size, (int, np.integer)) or size < 1 or not 0 <= rank < size):
        raise ValueError(f"rank and size must be integers with 0 <= rank < size, got rank={rank!r}, "
                         f"size={size!r}")
    return int(rank), int(size)


class MappedSource:
    """A data source whose batches are ``fn(batch)``; see :func:`map_batches`."""

    def __init__(self, source, fn):
        if not hasattr(source, "batches"):
            raise TypeError(f"map_batches needs a data source with a batches() method, "
                            f"got {type(source).__name__}")
        if not callable(fn):
            raise TypeError(f"map_batches needs a function of a batch, got {type(fn).__name__}")
        self.source, self.fn = source, fn

    def __len__(self):
        return len(self.source)

    def batches(self, batch_size, shuffle=True, seed=0, epoch=0, rank=0, size=1):
        rank, size = check_shard(rank, size)
        order = {"shuffle": shuffle, "seed": seed, "epoch": epoch}
        if takes_shards(self.source):  # the source reads this rank's rows only: fn maps them
            for share in self.source.batches(batch_size, **order, rank=rank, size=size):
                yield self.fn(share) if len(_x_of(share)) else share
        else:  # the whole batch, mapped, then this rank's rows of it
            for batch in self.source.batches(batch_size, **order):
                yield share_of(self.fn(batch), rank, size)

    def __repr__(self):
        return f"MappedSource({self.source!r}, {getattr(self.fn, '__name__', self.fn)!r})"


def map_batches(source, fn):
    """The data source ``source`` with ``fn`` applied to every batch, e.g. images in [0, 1] to the
    [-1, 1] of a tanh decoder: ``map_batches(image_folder(path, stream=True), lambda b: 2 * b - 1)``.

    It passes ``rank`` and ``size`` on to a source that takes them (see Shards above), so ``fn``
    then sees one rank's share of each batch, never an empty one: with distributed training
    ``fn`` should map each row on its own, as the example does.
    """
    return MappedSource(source, fn)


def _x_of(batch):
    """The ``x`` of a batch: ``x`` or ``(x, ...)`` (an empty tuple is passed on, for the batch
    check to name)."""
    return batch[0] if isinstance(batch, tuple) and batch else batch


class Stream:
    """Per-epoch iterators over the batches of a source, an iterator or a re-iterable."""

    def __init__(self, data, batch_size, steps, seed, name, steps_name):
        self.data, self.batch_size, self.seed, self.name = data, batch_size, seed, name
        self.steps_name = steps_name
        self.is_iterator = isinstance(data, collections.abc.Iterator) and not hasattr(data, "batches")
        self.limit = steps
        if self.is_iterator and steps is None:
            raise ValueError(f"{name} is a generator (or another one-pass iterator): give the "
                             f"number of batches to take from it per pass, {steps_name}=")
        self.exhausted = False

    @property
    def steps(self):
        """Batches per epoch if known (for the progress bar), else None."""
        if self.limit is not None:
            return self.limit
        if hasattr(self.data, "batches"):
            try:  # a source may have no len(), or wrap one that has none (map_batches)
                return -(-len(self.data) // self.batch_size)
            except TypeError:
                return None
        return None

    def epoch(self, epoch, shuffle, rank=0, size=1):
        """The ``x`` arrays of one epoch's batches (at most ``steps`` of them); with ``size > 1``
        rank ``rank``'s share of each (see Shards above), one per batch, empty ones included."""
        source = hasattr(self.data, "batches")
        sharded = size > 1 and source and takes_shards(self.data)
        if source:
            shard = {"rank": rank, "size": size} if sharded else {}
            it = self.data.batches(self.batch_size, shuffle=shuffle, seed=self.seed, epoch=epoch,
                                   **shard)
        else:
            it = self.data if self.is_iterator else iter(self.data)
        share = None if size == 1 or sharded else (lambda batch: share_of(batch, rank, size))
        return self._watch(iter(it), share)

    def _watch(self, it, share=None):
        """Yields up to ``steps`` batches from ``it`` (``share(x)`` of each, if given); closes a
        per-epoch iterator when done (e.g. stops an image folder's decoding thread) and notes when
        a shared one ran dry."""
        n = 0
        try:
            for batch in it if self.limit is None else itertools.islice(it, self.limit):
                n += 1
                yield _x_of(batch) if share is None else share(batch)
        finally:
            close = getattr(it, "close", None)
            if close is not None and not self.is_iterator:
                close()
        if self.is_iterator and n < self.limit:
            self.exhausted = True
            warnings.warn(f"{self.name} ran out of batches after {n} of the {self.limit} steps of "
                          f"this pass; fit stops after this epoch (a generator must yield "
                          f"{self.steps_name} batches for each pass that reads it)",
                          UserWarning, stacklevel=2)
