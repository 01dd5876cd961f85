"""Run under mpiexec by tests/test_distributed.py: one scenario per call, each rank writing what it
saw to OUT/rank<r>.npz (or OUT/rank<r>.txt for an error). The stream scenarios run on one rank
too: that is one process (``distributed`` with a single rank trains as without it)."""

import pathlib
import sys
import traceback

import numpy as np
from mpi4py import MPI

import vaecpp
from vaecpp import _image_folder, callbacks as cb, datasets, sources

scenario, out, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
comm = MPI.COMM_WORLD
rank = comm.Get_rank()


def data(n, d=24, seed=0):
    return (np.random.default_rng(seed).random((n, d)) > 0.5).astype(dtype)


def model(likelihood="bernoulli"):
    vae = vaecpp.VAE(24, latent_dim=3, hidden=(16,), dropout=0.25, seed=7, threads=1,
                     dtype=dtype, likelihood=likelihood)
    vae.compile("adam")
    return vae


class EpochWeights(cb.Callback):
    """Every epoch's weights, flat."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(np.concatenate([w.ravel() for w in self.model.get_weights()]))


def save(**arrays):
    np.savez(f"{out}/rank{rank}.npz", **arrays)


def flat_weights(vae):
    return np.concatenate([w.ravel() for w in vae.get_weights()])


# ---- streams: each rank its share of every global batch ----------------------------------------
def count_decodes():
    """The names of the files this rank's image folders decode, in a list that grows."""
    names, load = [], _image_folder.load_image

    def counting(file, *args, **kwargs):
        names.append(pathlib.Path(file).name)
        return load(file, *args, **kwargs)

    _image_folder.load_image = counting
    return names


def image_folder_run(bs):
    """2 epochs on OUT/images streamed (the fit's batches and validation sharded), then
    evaluate on the stream; also which files this rank decoded."""
    decoded = count_decodes()
    folder = f"{out}/images"
    train = datasets.image_folder(folder, size=(4, 4), stream=True)
    val = sources.map_batches(datasets.image_folder(folder, size=(4, 4), stream=True),
                              lambda b: 0.5 * b + 0.25)
    vae = vaecpp.VAE((4, 4, 3), latent_dim=2, hidden=(16,), dropout=0.25, seed=7, threads=1,
                     dtype=dtype)
    vae.compile("adam")
    ew = EpochWeights()
    h = vae.fit(train, batch_size=bs, epochs=2, verbose=0, validation_data=val, callbacks=[ew],
                distributed=comm)
    ev = vae.evaluate(val, batch_size=4, distributed=comm, return_dict=True)
    save(weights=np.stack(ew.seen), loss=np.array(h.history["loss"]),
         val_loss=np.array(h.history["val_loss"]), evaluate=np.array(ev["loss"]),
         decoded=np.array(decoded))


def batches(n_batches, bad=None):
    """A generator of batches of uneven sizes (one of a single row), the same on every rank;
    ``bad=(k, value)`` puts ``value`` in the last row of batch k, on rank 1 only."""
    rng = np.random.default_rng(3)
    for k in range(n_batches):
        x = data(int(rng.integers(1, 17)) if k != 2 else 1, seed=100 + k)
        if bad is not None and k == bad[0] and rank == 1 and comm.Get_size() > 1:
            x[-1, 0] = bad[1]
        yield x


class ArraySource:
    """A data source that does not take rank and size: every rank reads all of it."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def batches(self, batch_size, shuffle=True, seed=0, epoch=0):
        order = np.random.default_rng([seed, epoch]).permutation(len(self.x)) if shuffle else \
            np.arange(len(self.x))
        for i in range(0, len(self.x), batch_size):
            yield self.x[order[i:i + batch_size]]


class RaggedSource:
    """A data source that gives each rank its own rows: rank 1's run dry after 2 batches while
    rank 0 has 4. On one rank it yields what the two ranks hold together."""

    def __init__(self):
        self.parts = [[data(n, seed=200 + k) for k, n in enumerate((5, 3, 6, 2))],
                      [data(n, seed=300 + k) for k, n in enumerate((4, 7))]]

    def batches(self, batch_size, shuffle=True, seed=0, epoch=0, rank=0, size=1):
        if size > 1:
            yield from self.parts[rank]
            return
        for k, x in enumerate(self.parts[0]):
            yield np.concatenate([x] + [p[k] for p in self.parts[1:] if k < len(p)])


def stream_run(x, val, **fit_args):
    """fit on a stream (generator or source) and evaluate: weights, losses, step."""
    vae, ew = model(), EpochWeights()
    h = vae.fit(x, epochs=2, verbose=0, validation_data=val, callbacks=[ew] +
                fit_args.pop("callbacks", []), distributed=comm, **fit_args)
    ev = vae.evaluate(val, batch_size=5, distributed=comm, return_dict=True)
    save(weights=np.stack(ew.seen), loss=np.array(h.history["loss"]),
         val_loss=np.array(h.history["val_loss"]), evaluate=np.array(ev["loss"]),
         step=np.array(vae.step))


def stream_failure(x, callbacks=(), likelihood="bernoulli"):
    """fit on a stream that fails on one rank: what each rank raised, its step and weights."""
    vae = model(likelihood)
    try:
        vae.fit(x, steps_per_epoch=6, epochs=1, verbose=0, callbacks=list(callbacks),
                distributed=comm)
        raise AssertionError("no error")
    except (Exception, KeyboardInterrupt) as e:
        if isinstance(e, AssertionError):
            raise
        save(kind=np.array(type(e).__name__), message=np.array(str(e)), step=np.array(vae.step),
             weights=flat_weights(vae))


class RaiseOnRankOne(cb.Callback):
    """KeyboardInterrupt on rank 1 when the step reaches 2, before or after a batch."""

    def __init__(self, where):
        self.where = where

    def on_train_batch_begin(self, step, logs=None):
        if self.where == "begin" and rank == 1 and step == 2:
            raise KeyboardInterrupt

    def on_train_batch_end(self, step, logs=None):
        if self.where == "end" and rank == 1 and step == 2:
            raise KeyboardInterrupt


class FailOutsideTheBatches(cb.Callback):
    """A ValueError on one rank in epoch 2, in the hook named (outside the engine's batches)."""

    def __init__(self, hook, on_rank):
        self.hook, self.on_rank = hook, on_rank

    def _maybe(self, hook, epoch):
        if hook == self.hook and rank == self.on_rank and epoch == 1:
            raise ValueError(f"{hook} failed on rank {rank}")

    def on_epoch_begin(self, epoch, logs=None):
        self._maybe("on_epoch_begin", epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._maybe("on_epoch_end", epoch)

    def on_test_end(self, logs=None):  # (the model's history holds the epochs before this one)
        self._maybe("on_test_end", len(self.model.history.history.get("loss", [])))


def array_failure(callbacks):
    """fit on arrays with a callback that fails on one rank: what each rank raised, its step and
    weights."""
    vae = model()
    try:
        vae.fit(data(200), batch_size=20, epochs=4, verbose=0, validation_data=data(40, seed=1),
                callbacks=list(callbacks), distributed=comm)
        raise AssertionError("no error")
    except Exception as e:
        if isinstance(e, AssertionError):
            raise
        save(kind=np.array(type(e).__name__), message=np.array(str(e)), step=np.array(vae.step),
             weights=flat_weights(vae))


class StopOnRankZeroAtStep3(cb.Callback):
    def on_train_batch_end(self, step, logs=None):
        if rank == 0 and step == 3:
            self.model.stop_training = True


try:
    if scenario in ("exact", "uneven"):
        n, bs = (400, 64) if scenario == "exact" else (203, 50)
        x, x_val = data(n), data(60, seed=1)
        vae, ew = model(), EpochWeights()
        h = vae.fit(x, batch_size=bs, epochs=3, verbose=0, validation_data=x_val,
                    callbacks=[ew], distributed=comm)
        ev = vae.evaluate(x_val, batch_size=16, distributed=comm, return_dict=True)
        save(weights=np.stack(ew.seen), loss=np.array(h.history["loss"]),
             val_loss=np.array(h.history["val_loss"]), evaluate=np.array(ev["loss"]))
    elif scenario == "nan":
        x = data(256)
        if rank == 1:
            x[210] = np.nan  # in rank 1's share of batch 7; only this rank's copy: the engine sees it, no Python check does
        vae = model()
        try:
            for epoch in range(2):
                vae._engine.train_epoch(x, 32, False, epoch, None,
                                        (rank, comm.Get_size(), lambda a: comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)))
            raise AssertionError("no error")
        except FloatingPointError as e:
            save(step=np.array(vae.step), message=np.array(str(e)),
                 weights=np.concatenate([w.ravel() for w in vae.get_weights()]))
    elif scenario in ("stop_epoch", "stop_batch"):
        x = data(3000)
        vae = model()

        class StopOnRankZero(cb.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if rank == 0 and scenario == "stop_epoch" and epoch == 1:
                    self.model.stop_training = True

            def on_train_batch_end(self, step, logs=None):
                if rank == 0 and scenario == "stop_batch":
                    self.model.stop_training = True

        h = vae.fit(x, batch_size=20, epochs=5, verbose=0, callbacks=[StopOnRankZero()],
                    distributed=comm)
        save(epochs=np.array(len(h.history["loss"])), step=np.array(vae.step),
             weights=np.concatenate([w.ravel() for w in vae.get_weights()]))
    elif scenario == "interrupt":
        x = data(3000)
        vae = model()

        class InterruptRankOne(cb.Callback):
            def on_train_batch_end(self, step, logs=None):
                if rank == 1:
                    raise KeyboardInterrupt

        try:
            vae.fit(x, batch_size=20, epochs=2, verbose=0, callbacks=[InterruptRankOne()],
                    distributed=comm)
            raise AssertionError("no error")
        except KeyboardInterrupt as e:
            save(kind=np.array(type(e).__name__), step=np.array(vae.step),
                 weights=np.concatenate([w.ravel() for w in vae.get_weights()]))
    elif scenario == "sigint_allreduce":  # Ctrl-C lands inside rank 1's third all-reduce
        import os
        import signal
        from vaecpp import distributed as vdist

        real, calls = vdist.Distributed.allreduce, [0]

        def allreduce(self, a):
            real(self, a)
            calls[0] += 1
            if rank == 1 and calls[0] == 3:
                os.kill(os.getpid(), signal.SIGINT)

        vdist.Distributed.allreduce = allreduce
        x = data(3000)
        vae = model()
        try:
            vae.fit(x, batch_size=20, epochs=2, verbose=0, distributed=comm)
            raise AssertionError("no error")
        except KeyboardInterrupt as e:
            save(kind=np.array(type(e).__name__), step=np.array(vae.step),
                 weights=np.concatenate([w.ravel() for w in vae.get_weights()]))
    elif scenario in ("folder2", "folder3"):
        image_folder_run(7 if scenario == "folder2" else 10)
    elif scenario == "generator":  # every rank reads the whole stream and keeps its share
        stream_run(batches(10), ArraySource(data(23, seed=5)), steps_per_epoch=5)
    elif scenario == "ragged":
        stream_run(RaggedSource(), RaggedSource(), batch_size=99)
    elif scenario == "stop_stream":
        stream_run(batches(12), ArraySource(data(23, seed=5)), steps_per_epoch=6,
                   callbacks=[StopOnRankZeroAtStep3()])
    elif scenario == "inf_stream":  # a finite value whose squared error overflows, on rank 1
        stream_failure(batches(6, bad=(3, 3e37)), likelihood="mse")
    elif scenario == "nan_stream":  # a NaN in rank 1's share: its check fails
        stream_failure(batches(6, bad=(3, np.nan)))
    elif scenario in ("interrupt_begin", "interrupt_end"):
        stream_failure(batches(6), [RaiseOnRankOne(scenario.split("_")[1])])
    elif scenario == "sources_of_their_own":  # rank 0: 40 rows, rank 1: 20 rows of its own
        vae = model()
        h = vae.fit(ArraySource(data(40 - 20 * rank, seed=rank)), batch_size=10, epochs=1,
                    verbose=0, distributed=comm)
        save(step=np.array(vae.step), loss=np.array(h.history["loss"]))
    elif scenario.startswith("mismatch_"):  # mismatch_<what>: rank 1 passes <what> otherwise
        what, other = scenario[len("mismatch_"):], rank == 1
        vae = vaecpp.VAE(24, latent_dim=3, hidden=(12,) if other and what == "hidden" else (16,),
                         seed=7, threads=1, dtype=dtype)
        vae.compile("sgd" if other and what == "optimizer" else "adam")
        kw = dict(batch_size=20, epochs=2, verbose=0, distributed=comm)
        if what == "initial_epoch":
            kw["initial_epoch"] = rank
        if what == "validation" and rank == 0:
            kw["validation_data"] = data(40, seed=1)
        if what == "validation_freq":
            kw.update(validation_data=data(40, seed=1), validation_freq=1 + rank)
        try:
            vae.fit(data(200), **kw)
            raise AssertionError("no error")
        except ValueError as e:
            save(message=np.array(str(e)), step=np.array(vae.step))
    elif scenario.startswith("fail_"):  # fail_<hook>_<rank>: a callback error outside batches
        hook, on_rank = scenario[len("fail_"):].rsplit("_", 1)
        array_failure([FailOutsideTheBatches(hook, int(on_rank))])
    else:
        raise SystemExit(f"unknown scenario {scenario}")
except Exception:
    with open(f"{out}/rank{rank}.txt", "w") as f:
        f.write(traceback.format_exc())
    raise
