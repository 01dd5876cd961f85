"""Run under mpiexec by tests/test_distributed.py: one scenario per call, each rank writing what it
saw to OUT/rank<r>.npz (or OUT/rank<r>.txt for an error)."""

import sys
import traceback

import numpy as np
from mpi4py import MPI

import vaecpp
from vaecpp import callbacks as cb

scenario, out, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
comm = MPI.COMM_WORLD
rank = comm.Get_rank()


def data(n, d=24, seed=0):
    return (np.random.default_rng(seed).random((n, d)) > 0.5).astype(dtype)


def model():
    vae = vaecpp.VAE(24, latent_dim=3, hidden=(16,), dropout=0.25, seed=7, threads=1,
                     dtype=dtype)
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
    else:
        raise SystemExit(f"unknown scenario {scenario}")
except Exception:
    with open(f"{out}/rank{rank}.txt", "w") as f:
        f.write(traceback.format_exc())
    raise
