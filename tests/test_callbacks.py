"""Callbacks and schedules: each test checks an observable effect."""

import csv

import numpy as np
import pytest

import vaecpp
from vaecpp import callbacks as cb


def model(**kw):
    return vaecpp.VAE(20, hidden=(8,), seed=0, **kw)


def test_early_stopping_stops_and_restores_best_weights(blobs):
    vae = model()
    seen = []

    class Spy(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(vae.get_weights())
    # val_loss on data the model never improves on: pure noise with a fixed seed
    noise = (np.random.default_rng(5).random((50, 20)) > 0.5).astype(float)
    es = cb.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = vae.fit(blobs, epochs=50, verbose=0, validation_data=noise, callbacks=[es, Spy()])
    n = len(h.epoch)
    assert n < 50 and es.stopped_epoch == n - 1
    best = int(np.argmin(h.history["val_loss"]))
    assert n - 1 - best == 2  # patience 2: stops after two epochs without improvement (Keras)
    for a, b in zip(vae.get_weights(), seen[best]):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_unknown_metric_warns_and_goes_on(blobs):
    with pytest.warns(UserWarning, match="val_loss"):
        h = model().fit(blobs, epochs=2, verbose=0, callbacks=[cb.EarlyStopping()])
    assert h.epoch == [0, 1]


def test_model_checkpoint_files(tmp_path, blobs):
    path = str(tmp_path / "ckpt-{epoch:02d}.vae")
    vae = model()
    vae.fit(blobs, epochs=3, verbose=0, callbacks=[cb.ModelCheckpoint(path, monitor="loss")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-01.vae", "ckpt-02.vae",
                                                          "ckpt-03.vae"]
    back = vaecpp.load_model(tmp_path / "ckpt-03.vae")
    np.testing.assert_array_equal(back.encode(blobs), vae.encode(blobs))
    best = tmp_path / "best.vae"
    losses = []
    noise = (np.random.default_rng(5).random((50, 20)) > 0.5).astype(float)
    h = model().fit(blobs, epochs=6, verbose=0, validation_data=noise,
                    callbacks=[cb.ModelCheckpoint(best, save_best_only=True),
                               cb.LambdaCallback(on_epoch_end=lambda e, l: losses.append(
                                   best.stat().st_mtime_ns if best.exists() else None))])
    saved = vaecpp.load_model(best)
    assert len(saved.history.epoch) == int(np.argmin(h.history["val_loss"])) + 1
    weights_only = tmp_path / "w.npz"
    model().fit(blobs, epochs=1, verbose=0,
                callbacks=[cb.ModelCheckpoint(weights_only, monitor="loss", save_weights_only=True)])
    model().load_weights(weights_only)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger(tmp_path, blobs):
    path = tmp_path / "log.csv"
    h = model().fit(blobs, epochs=3, verbose=0, validation_data=blobs,
                    callbacks=[cb.CSVLogger(path)])
    rows = read_csv(path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    np.testing.assert_allclose([float(r["val_loss"]) for r in rows], h.history["val_loss"])
    model().fit(blobs, epochs=1, verbose=0, callbacks=[cb.CSVLogger(path, append=True)])
    assert len(read_csv(path)) == 4
    assert read_csv(path)[3]["val_loss"] == ""  # the columns stay aligned without validation


def test_csv_logger_keeps_the_validation_columns_when_epoch_one_is_not_validated(tmp_path, blobs):
    """validation_freq=2: epoch 1 has no val_ metrics; their columns are there all the same
    (Keras's CSVLogger adds them), empty where an epoch was not validated."""
    path = tmp_path / "log.csv"
    h = model().fit(blobs, epochs=4, verbose=0, validation_data=blobs, validation_freq=2,
                    callbacks=[cb.CSVLogger(path)])
    rows = read_csv(path)
    assert [r["val_loss"] == "" for r in rows] == [True, False, True, False]
    np.testing.assert_allclose([float(rows[i]["val_loss"]) for i in (1, 3)],
                               h.history["val_loss"])
    assert {"val_kl_loss", "val_reconstruction_loss"} <= set(rows[0])


def test_lambda_callback_hooks_in_order(blobs):
    calls = []
    lc = cb.LambdaCallback(on_train_begin=lambda logs: calls.append("begin"),
                           on_epoch_begin=lambda e, logs: calls.append(f"e{e}"),
                           on_epoch_end=lambda e, logs: calls.append(f"end{e}:{'loss' in logs}"),
                           on_train_end=lambda logs: calls.append("end"))
    model().fit(blobs, epochs=2, verbose=0, callbacks=[lc])
    assert calls == ["begin", "e0", "end0:True", "e1", "end1:True", "end"]


def test_stop_training_flag(blobs):
    vae = model()

    def stop(epoch, logs):
        if epoch == 1:
            vae.stop_training = True
    h = vae.fit(blobs, epochs=10, verbose=0, callbacks=[cb.LambdaCallback(on_epoch_end=stop)])
    assert h.epoch == [0, 1]


def test_learning_rate_scheduler_applied_per_epoch(blobs):
    vae = model()
    vae.compile(vaecpp.optimizers.SGD(learning_rate=0.1))
    sched = cb.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))
    h = vae.fit(blobs, epochs=3, verbose=0, callbacks=[sched])
    np.testing.assert_allclose(h.history["learning_rate"], [0.1, 0.05, 0.1 / 3])
    # the engine really uses it: a zero learning rate leaves the weights unchanged
    before = vae.get_weights()
    vae.fit(blobs, epochs=1, verbose=0, callbacks=[cb.LearningRateScheduler(lambda e, lr: 1e-30)])
    for a, b in zip(before, vae.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-20)
    with pytest.raises(ValueError, match="schedule returned"):
        vae.fit(blobs, epochs=1, verbose=0, callbacks=[cb.LearningRateScheduler(lambda e: -1)])


def test_reduce_lr_on_plateau(blobs):
    vae = model()
    vae.compile(vaecpp.optimizers.Adam(learning_rate=1e-3))
    noise = (np.random.default_rng(5).random((50, 20)) > 0.5).astype(float)
    r = cb.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=0.0,
                             min_lr=2e-4)
    h = vae.fit(blobs, epochs=12, verbose=0, validation_data=noise, callbacks=[r])
    lrs = h.history["learning_rate"]
    assert lrs[0] == 1e-3 and min(lrs) == 2.5e-4 or min(lrs) == 2e-4
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert vae.optimizer.learning_rate < 1e-3


def test_beta_schedule_is_applied_and_logged(blobs):
    vae = model(beta=lambda epoch: min(1.0, epoch / 2))
    h = vae.fit(blobs, epochs=4, verbose=0)
    assert h.history["beta"] == [0.0, 0.5, 1.0, 1.0]
    assert h.history["loss"][0] == pytest.approx(h.history["reconstruction_loss"][0])
    np.testing.assert_allclose(h.history["loss"][1], h.history["reconstruction_loss"][1]
                               + 0.5 * h.history["kl_loss"][1])


def poisoned(vae):
    """Weights that make the KL term overflow to inf on the first batch."""
    w = vae.get_weights()
    i = vae.weight_names().index("z_log_var/bias")
    w[i][:] = 1e3
    vae.set_weights(w)
    return w


def test_non_finite_loss_raises_and_keeps_last_good_weights(blobs):
    vae = model()
    w = poisoned(vae)
    with pytest.raises(FloatingPointError, match=r"epoch 1: the loss became (NaN|inf) at batch 1 of 13"):
        vae.fit(blobs, epochs=2, verbose=0)
    for a, b in zip(vae.get_weights(), w):
        np.testing.assert_array_equal(a, b)


def test_terminate_on_nan_stops_cleanly(blobs):
    vae = model()
    poisoned(vae)
    h = vae.fit(blobs, epochs=3, verbose=0, callbacks=[cb.TerminateOnNaN()])
    assert h.epoch == [0] and np.isnan(h.history["loss"][0])


def test_every_callback_that_writes_files_runs_on_rank_zero_only():
    """In distributed training the ranks other than 0 drop the callbacks marked rank_zero_only
    (training.py); every callback taking a place to write (a file path, a folder, a log
    directory) must be one, or each rank writes the same files (PeriodicCheckpoint did)."""
    import inspect
    writes = ("filepath", "filename", "directory", "log_dir")
    classes = [c for c in vars(cb).values() if inspect.isclass(c) and issubclass(c, cb.Callback)]
    writers = [c for c in classes if set(inspect.signature(c.__init__).parameters) & set(writes)]
    assert {c.__name__ for c in writers} >= {"ModelCheckpoint", "PeriodicCheckpoint", "CSVLogger",
                                            "ImageSnapshots", "TensorBoard"}
    assert [c.__name__ for c in writers if not c.rank_zero_only] == []
    assert not any(c.rank_zero_only for c in classes if c not in writers)  # the rest: every rank
