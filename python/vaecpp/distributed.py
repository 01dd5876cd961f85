"""Data-parallel training over MPI (through mpi4py), for ``fit(..., distributed=comm)``.

Every rank runs the same script with the same model seed and the same data. ``batch_size`` is the
global batch: each rank takes a contiguous share of every batch, and inside the C++ epoch loop the
ranks add up their gradients, loss sums and a flag word in one ``Allreduce`` per step, between
backward and the optimizer update. The noise and dropout masks of a row are drawn by its place in
the global batch, so N ranks compute the update of one process with the same global batch, up to
the order of float additions.

Streamed data (data sources, generators, image folders) is stepped from Python, one
``engine.train_batch`` per global batch: before each, :meth:`Distributed.agree` settles in one
small all-reduce how many rows each rank holds (so the global batch and each share's place in it),
whether any rank has a batch left, and whether a rank asked to stop or failed.

This module holds the Python side: the communicator's collectives as the engine and the epoch
loop need them (weights from rank 0 at the start, BatchNorm statistics averaged at each epoch's
end, validation sums added up, stop_training agreed). The engine itself knows no MPI: it calls
back into :meth:`Distributed.allreduce`.
"""

from __future__ import annotations

from typing import Dict, NamedTuple

import numpy as np

from .sources import share_range

__all__ = ["Distributed", "Agreement", "for_comm", "INTERRUPTED", "FAILED"]

INTERRUPTED, FAILED = 1, 2  # what a rank that cannot go on says in Distributed.agree


class Agreement(NamedTuple):
    """What the ranks settled before a global batch of a stream."""

    total: int  # rows in the global batch: every rank's share added up
    first: int  # where this rank's share starts in it
    more: bool  # whether any rank had a batch (False: the pass is over)
    stop: bool  # whether a rank asked to stop (stop_training)
    failed: Dict[int, int]  # rank -> INTERRUPTED (Ctrl-C) or FAILED (an error), for ranks that did


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:  # pragma: no cover - the message is the point
        raise ImportError("distributed training needs mpi4py and an MPI library: "
                          "pip install 'vaecpp[mpi]' (mpi4py and the mpich wheel)") from e
    return MPI


class Distributed:
    """The ranks of an mpi4py communicator, as the training loop uses them."""

    def __init__(self, comm):
        MPI = _mpi()
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"distributed must be an mpi4py communicator (e.g. MPI.COMM_WORLD), "
                            f"got {type(comm).__name__}")
        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    # ---- what the engine calls once per step --------------------------------------------------
    def allreduce(self, a):
        """In place: ``a`` = the sum over the ranks of every rank's ``a``."""
        self.comm.Allreduce(self._MPI.IN_PLACE, a, op=self._MPI.SUM)

    def engine_arg(self):
        """The ``distributed`` argument of the engine's ``train_epoch``."""
        return (self.rank, self.size, self.allreduce)

    # ---- what the epoch loop calls ------------------------------------------------------------
    def shard(self, n):
        """This rank's contiguous part ``(lo, hi)`` of ``n`` rows (as the engine splits a batch)."""
        return share_range(n, self.rank, self.size)

    def agree(self, rows, more, stop=False, failure=0):
        """One all-reduce before a global batch of a stream: this rank holds ``rows`` rows of it
        (``more``: it still had a batch; a rank whose stream ran dry says False and 0 rows),
        asks to ``stop`` or says its ``failure`` (0, INTERRUPTED or FAILED). Every rank gets the
        same :class:`Agreement` (``first`` is its own)."""
        n = self.size
        a = np.zeros(3 * n + 1)  # rows per rank, more per rank, failure per rank, stop
        a[self.rank], a[n + self.rank], a[2 * n + self.rank] = rows, bool(more), failure
        a[3 * n] = bool(stop)
        self.allreduce(a)
        counts = a[:n].astype(np.int64)
        return Agreement(total=int(counts.sum()), first=int(counts[:self.rank].sum()),
                         more=bool(a[n:2 * n].any()), stop=bool(a[3 * n] > 0),
                         failed={r: int(c) for r, c in enumerate(a[2 * n:3 * n]) if c})

    def sum_sums(self, sums):
        """The loss sums of all ranks added up (a dict of ``loss``, ..., ``n``)."""
        keys = sorted(sums)
        a = np.array([float(sums[k]) for k in keys], dtype=np.float64)
        self.allreduce(a)
        out = {k: float(v) for k, v in zip(keys, a)}
        out["n"] = int(round(out["n"]))
        return out

    def any(self, *flags):
        """Whether each flag is true on any rank (every rank gets the same answers): a bool for
        one flag, a tuple for several."""
        a = np.array([1.0 if f else 0.0 for f in flags])
        self.allreduce(a)
        out = tuple(bool(v > 0) for v in a)
        return out[0] if len(out) == 1 else out

    def failed_ranks(self, failed):
        """The ranks that say ``failed`` (every rank gets the same list, in rank order)."""
        a = np.zeros(self.size)
        a[self.rank] = bool(failed)
        self.allreduce(a)
        return [r for r in range(self.size) if a[r] > 0]

    def broadcast_model(self, engine):
        """Weights, BatchNorm state, optimizer moments and step from rank 0 to every rank."""
        for get, put in ((engine.get_params, engine.set_params),
                         (engine.get_state, engine.set_state)):
            a = np.ascontiguousarray(get())
            self.comm.Bcast(a, root=0)
            put(a)
        slots = [np.ascontiguousarray(s) for s in engine.get_optimizer_slots()]
        for s in slots:
            self.comm.Bcast(s, root=0)
        engine.set_optimizer_slots(*slots)
        engine.step = int(self.comm.bcast(int(engine.step), root=0))

    def average_state(self, engine):
        """BatchNorm's moving statistics averaged over the ranks (each rank normalised its own
        share of the batches with its own batch statistics)."""
        if engine.num_state == 0:
            return
        s = np.ascontiguousarray(engine.get_state(), dtype=np.float64)
        self.allreduce(s)
        engine.set_state((s / self.size).astype(engine.get_state().dtype))

    def check_agree(self, settings):
        """Raises on every rank, naming the first setting that differs, when the ranks' ``settings``
        (``{name: value}``, values compared with ``==``) are not all the same. One collective for
        all of them, so that no rank is left waiting in a later one (a rank that trained other
        epochs, or built another model, hung or met a raw MPI error before)."""
        every = self.comm.allgather(settings)
        for name in settings:
            values = [s.get(name) for s in every]
            differ = [r for r, v in enumerate(values) if v != values[0]]
            if differ:
                raise ValueError(f"distributed: {name} differs between ranks ({_short(values[0])} "
                                 f"on rank 0, {_short(values[differ[0]])} on rank {differ[0]}); "
                                 f"every rank must pass the same data and settings")


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def for_comm(comm):
    """A :class:`Distributed` for ``comm``, or None for no communicator or a single rank (which
    then trains exactly as without ``distributed``)."""
    if comm is None:
        return None
    dist = Distributed(comm)
    return dist if dist.size > 1 else None
