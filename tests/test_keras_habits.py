"""Keras habits: each written as a Keras user types it, with the behaviour Keras gives."""

import io
import json
import sys

import numpy as np
import pytest

import vaecpp
from vaecpp import callbacks as cb, layers as L


def model(**kw):
    return vaecpp.VAE(20, hidden=(8,), seed=0, **kw)


def noise(n=50, seed=5):
    """Validation data the model never learns: its val_loss wanders."""
    return (np.random.default_rng(seed).random((n, 20)) > 0.5).astype(float)


def batches_of(x, size):
    while True:
        for i in range(0, len(x), size):
            yield x[i:i + size]


# ---- EarlyStopping ------------------------------------------------------------------------------
def first_stall(values, patience, start=0):
    """Keras's rule: the epoch at which ``patience`` epochs have passed without an improvement
    (counting from ``start``; patience 0 acts as 1), or None."""
    best, since = np.inf, None
    for epoch in range(start, len(values)):
        if values[epoch] < best:
            best, since = values[epoch], epoch
        elif epoch - since >= max(patience, 1):
            return epoch
    return None


@pytest.mark.parametrize("patience", [0, 1, 2, 4])
def test_early_stopping_stops_after_patience_epochs_without_improvement(blobs, patience):
    vae = model()
    es = cb.EarlyStopping(monitor="val_loss", patience=patience)
    h = vae.fit(blobs, epochs=80, verbose=0, validation_data=noise(), callbacks=[es])
    values = h.history["val_loss"]
    best = int(np.argmin(values))
    assert len(values) < 80 and es.stopped_epoch == len(values) - 1
    assert len(values) - 1 - best == max(patience, 1)  # p epochs without improvement, then stop
    assert first_stall(values, patience) == es.stopped_epoch


def test_early_stopping_verbose_baseline_and_start_from_epoch(blobs, capsys):
    vae = model()
    es = cb.EarlyStopping(patience=2, verbose=1, restore_best_weights=True)
    vae.fit(blobs, epochs=80, verbose=0, validation_data=noise(), callbacks=[es])
    out = capsys.readouterr().out
    assert f"Epoch {es.stopped_epoch + 1}: early stopping" in out
    assert f"Restoring model weights from the end of the best epoch: {es.best_epoch + 1}." in out

    # a baseline that val_loss never reaches: improvements no longer reset the count
    h = model().fit(blobs, epochs=80, verbose=0, validation_data=noise(),
                    callbacks=[cb.EarlyStopping(patience=3, baseline=0.0)])
    values = h.history["val_loss"]
    stalls = [e for e in range(1, len(values)) if values[e] >= min(values[:e])]
    assert len(values) - 1 == min(e for e in stalls if e + 1 >= 3)
    # a baseline every epoch beats changes nothing
    a = model().fit(blobs, epochs=80, verbose=0, validation_data=noise(),
                    callbacks=[cb.EarlyStopping(patience=2, baseline=1e9)])
    b = model().fit(blobs, epochs=80, verbose=0, validation_data=noise(),
                    callbacks=[cb.EarlyStopping(patience=2)])
    assert a.history == b.history

    # epochs before start_from_epoch are not watched
    es = cb.EarlyStopping(patience=1, start_from_epoch=5)
    h = model().fit(blobs, epochs=80, verbose=0, validation_data=noise(), callbacks=[es])
    assert es.stopped_epoch == first_stall(h.history["val_loss"], 1, start=5) >= 6


def test_monitoring_a_missing_metric_warns_and_training_goes_on(blobs, tmp_path):
    vae = model()
    with pytest.warns(UserWarning, match="val_loss.*not available"):
        h = vae.fit(blobs, epochs=3, verbose=0, callbacks=[cb.EarlyStopping(patience=0)])
    assert h.epoch == [0, 1, 2]
    with pytest.warns(UserWarning, match="val_loss"):
        model().fit(blobs, epochs=2, verbose=0, callbacks=[
            cb.ModelCheckpoint(tmp_path / "best.vae", save_best_only=True)])
    assert not (tmp_path / "best.vae").exists()
    with pytest.warns(UserWarning, match="val_loss"):
        model().fit(blobs, epochs=2, verbose=0, callbacks=[cb.ReduceLROnPlateau()])


# ---- fit ---------------------------------------------------------------------------------------
def test_fit_again_continues_the_epoch_numbers(blobs):
    twice = model()
    twice.fit(blobs, epochs=2, verbose=0)
    h = twice.fit(blobs, epochs=2, verbose=0)
    assert h.epoch == [2, 3]
    assert twice.history.epoch == [0, 1, 2, 3]
    once = model()
    once.fit(blobs, epochs=4, verbose=0)
    assert once.history.history == twice.history.history  # the same run, bit for bit
    for a, b in zip(once.get_weights(), twice.get_weights()):
        np.testing.assert_array_equal(a, b)
    # initial_epoch keeps Keras's meaning: train epochs initial_epoch .. epochs - 1
    h = twice.fit(blobs, epochs=6, initial_epoch=4, verbose=0)
    assert h.epoch == [4, 5] and twice.history.epoch == list(range(6))


def test_fit_keras_defaults(blobs, capsys):
    vae = model()
    h = vae.fit(blobs, batch_size=None, epochs=2, verbose="auto")
    assert h.params == {"verbose": 1, "epochs": 2, "steps": 13}  # 400 samples, batches of 32
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "13/13" in out
    with pytest.raises(ValueError, match="verbose"):
        vae.fit(blobs, verbose=3)


def test_validation_freq(blobs):
    h = model().fit(blobs, epochs=4, verbose=0, validation_data=blobs[:50], validation_freq=2)
    assert len(h.history["loss"]) == 4 and len(h.history["val_loss"]) == 2
    h = model().fit(blobs, epochs=4, verbose=0, validation_data=blobs[:50], validation_freq=[1, 4])
    assert len(h.history["val_loss"]) == 2
    with pytest.raises(ValueError, match="validation_freq"):
        model().fit(blobs, verbose=0, validation_data=blobs, validation_freq=0)


def test_compile_takes_keras_arguments(blobs):
    vae = model()
    assert vae.compile(optimizer="adam", loss=None, metrics=None) is vae
    vae.compile(optimizer=vaecpp.optimizers.Adam(), metrics=[])
    with pytest.raises(ValueError, match="likelihood"):
        vae.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="reconstruction_loss"):
        vae.compile(optimizer="adam", metrics=["accuracy"])


def test_keras2_lr_alias_warns():
    with pytest.warns(DeprecationWarning, match="learning_rate"):
        opt = vaecpp.optimizers.Adam(lr=0.01)
    assert opt.learning_rate == 0.01
    with pytest.warns(DeprecationWarning):
        assert vaecpp.optimizers.SGD(lr=0.5, momentum=0.9).get_config()["learning_rate"] == 0.5


def test_optimizer_iterations_is_the_step(blobs):
    vae = model()
    vae.compile("adam")
    assert vae.optimizer.iterations == vae.step == 0
    vae.fit(blobs, epochs=2, batch_size=100, verbose=0)
    assert vae.optimizer.iterations == vae.step == 8


def test_history_params_and_batch_hooks(blobs):
    calls = []

    class Keras2Style(cb.Callback):
        def on_batch_end(self, batch, logs=None):
            calls.append(("end", batch, sorted(logs)))

        def on_train_batch_begin(self, batch, logs=None):
            calls.append(("begin", batch))

    vae = model()
    h = vae.fit(batches_of(blobs, 50), steps_per_epoch=4, epochs=2, verbose=0,
                callbacks=[Keras2Style()])
    assert h.params == {"verbose": 0, "epochs": 2, "steps": 4}
    # streamed batches: every batch, begin with the steps done before it, end with those after
    assert [c[:2] for c in calls] == [x for s in range(8) for x in (("begin", s), ("end", s + 1))]
    assert calls[1][2] == ["kl_loss", "loss", "reconstruction_loss"]
    # array epochs run in C++: the hooks are throttled, but each epoch reports its last batch
    calls.clear()
    vae.fit(blobs, batch_size=50, epochs=2, verbose=0, callbacks=[Keras2Style()])
    ends = [c[1] for c in calls if c[0] == "end"]
    begins = [c[1] for c in calls if c[0] == "begin"]
    assert 16 in ends and 24 in ends and begins[0] == 8 and 16 in begins
    # LambdaCallback takes the same hooks
    seen = []
    vae.fit(batches_of(blobs, 50), steps_per_epoch=2, epochs=1, verbose=0, callbacks=[
        cb.LambdaCallback(on_batch_begin=lambda s, logs: seen.append(("begin", s)),
                          on_batch_end=lambda s, logs: seen.append(("end", s)))])
    assert seen == [("begin", 24), ("end", 25), ("begin", 25), ("end", 26)]


def test_optimizer_state_accessors(blobs):
    a = model()
    with pytest.raises(RuntimeError, match="compile"):
        a.get_optimizer_state()
    a.compile("adam")
    a.fit(blobs, epochs=1, verbose=0)
    state = a.get_optimizer_state()
    assert state["step"] == a.step == 13 and state["m"].shape == state["v"].shape == (
        a.count_params(),)
    b = model().compile("adam")
    b.set_weights(a.get_weights())
    b.set_optimizer_state(state)
    assert b.step == 13
    a.fit(blobs, epochs=1, verbose=0)                   # epoch 1
    b.fit(blobs, epochs=2, initial_epoch=1, verbose=0)  # epoch 1, from the same state
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_train_on_batch_and_layer_summary(blobs):
    vae = model()
    loss = vae.train_on_batch(blobs[:32])
    assert vae.step == 1 and np.isfinite(loss)
    terms = vae.train_on_batch(blobs[:32], return_dict=True)
    assert set(terms) == {"loss", "reconstruction_loss", "kl_loss"} and terms["loss"] < loss
    rows = vae.layer_summary()
    assert [r.name for r in rows] == ["dense", "z_mean", "z_log_var", "dense_1", "decoder_output"]
    assert rows[0].output_shape == (8,) and rows[0].params == 20 * 8 + 8
    assert vae.decoder_outputs(np.zeros((3, 2))).shape == (3, 20)


# ---- the progress display ----------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_once_per_epoch_in_a_file(blobs, capsys):
    model().fit(blobs, epochs=2, verbose=1, validation_data=blobs[:50])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2 and "\r" not in out  # no bar redrawn into a file
    assert lines[1].startswith("Epoch 2/2 - 13/13 - ")
    for key in ("loss", "reconstruction_loss", "kl_loss", "val_loss", "val_kl_loss"):
        assert f" {key}: " in lines[1] or lines[1].count(f"{key}: ") >= 1


def test_progress_in_a_terminal_keeps_every_metric(blobs, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    model().fit(blobs, epochs=2, verbose=1, batch_size=10, validation_data=blobs[:50])
    text = terminal.getvalue()
    assert "\r" in text  # the live bar was drawn
    finals = [line.split("\r")[-1] for line in text.split("\n") if "Epoch" in line]
    finals = [line for line in finals if " - 40/40 - " in line]
    assert len(finals) == 2 and finals[1].startswith("Epoch 2/2") and "val_kl_loss: " in finals[1]


# ---- evaluate and predict ----------------------------------------------------------------------
def test_evaluate_returns_the_loss_unless_return_dict(blobs):
    vae = model()
    vae.fit(blobs, epochs=1, verbose=0)
    terms = vae.evaluate(blobs, return_dict=True)
    assert set(terms) == {"loss", "reconstruction_loss", "kl_loss", "elbo"}
    assert vae.evaluate(blobs) == terms["loss"]
    assert vae.evaluate(blobs, blobs, batch_size=None, verbose=0) == terms["loss"]


def test_steps_reads_that_many_batches_of_an_array(blobs):
    """evaluate(x, steps=N) and fit(validation_steps=N) on arrays: the first N batches, as Keras
    (they were ignored, bad values included)."""
    vae = model()
    vae.fit(blobs, epochs=1, verbose=0)
    assert vae.evaluate(blobs, steps=3, batch_size=10) == vae.evaluate(blobs[:30])
    assert vae.evaluate(blobs, steps=10**6) == vae.evaluate(blobs)
    for bad, error in ((-5, ValueError), (0, ValueError), ("x", TypeError)):
        with pytest.raises(error, match="steps"):
            vae.evaluate(blobs, steps=bad)
    a, b = model(), model()
    ha = a.fit(blobs, epochs=1, verbose=0, batch_size=20, validation_data=blobs,
               validation_steps=2)
    hb = b.fit(blobs, epochs=1, verbose=0, batch_size=20, validation_data=blobs[:40])
    assert ha.history["val_loss"] == hb.history["val_loss"]
    with pytest.raises(ValueError, match="validation_steps"):
        model().fit(blobs, verbose=0, validation_data=blobs, validation_steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        vae.log_likelihood(blobs[:2], k=4, batch_size=-3)
    np.testing.assert_array_equal(vae.log_likelihood(blobs[:3], k=4, batch_size=1),
                                  vae.log_likelihood(blobs[:3], k=4))


def test_from_config_builds_the_same_architecture_afresh(blobs):
    """VAE.from_config(vae.get_config()), as Keras's Model.from_config: the same layers, seed and
    settings, so the same initial weights as the model had when built; conv layers too."""
    vae = model(likelihood="gaussian", beta=0.5, dropout=0.1)
    initial = vae.get_weights()
    vae.fit(blobs, epochs=1, verbose=0)
    again = vaecpp.VAE.from_config(vae.get_config())
    assert again.get_config() == vae.get_config()
    for a, b in zip(again.get_weights(), initial):
        np.testing.assert_array_equal(a, b)
    conv = vaecpp.keras_mnist_conv_vae()
    assert vaecpp.VAE.from_config(conv.get_config()).layer_summary() == conv.layer_summary()
    with pytest.raises(TypeError, match="encoder must be a list"):
        vaecpp.VAE(**vae.get_config())  # the constructor takes layers, not their configs


class CountingEngine:
    """Wraps a model's engine and records the rows of each encode / decode call."""

    def __init__(self, engine):
        self.engine, self.rows = engine, []

    def __getattr__(self, name):
        fn = getattr(self.engine, name)
        if name in ("encode", "decode"):
            def counted(x, *args, **kwargs):
                self.rows.append((name, len(x)))
                return fn(x, *args, **kwargs)
            return counted
        return fn


def test_predict_honours_batch_size(blobs):
    vae = model()
    whole = vae.predict(blobs)
    z = vae.encoder.predict(blobs)
    vae._engine = spy = CountingEngine(vae._engine)
    np.testing.assert_allclose(vae.predict(blobs, batch_size=150, verbose=0), whole, rtol=1e-6)
    assert spy.rows == [("encode", 150), ("encode", 150), ("encode", 100),
                        ("decode", 150), ("decode", 150), ("decode", 100)]
    spy.rows.clear()
    np.testing.assert_allclose(vae.encoder.predict(blobs, batch_size=300), z, rtol=1e-6)
    np.testing.assert_allclose(vae.decoder.predict(z, batch_size=300), vae.decode(z), rtol=1e-6)
    assert spy.rows == [("encode", 300), ("encode", 100), ("decode", 300), ("decode", 100),
                        ("decode", 400)]
    with pytest.raises(ValueError, match="batch_size"):
        vae.predict(blobs, batch_size=0)


# ---- checkpoints and files ---------------------------------------------------------------------
def test_model_checkpoint_verbose_and_save_freq(tmp_path, blobs, capsys):
    path = tmp_path / "ckpt-{epoch}.vae"
    model().fit(blobs, epochs=2, verbose=0, callbacks=[
        cb.ModelCheckpoint(path, monitor="loss", verbose=1)])
    out = capsys.readouterr().out.splitlines()
    assert out == [f"Epoch 1: saving model to {tmp_path / 'ckpt-1.vae'}",
                   f"Epoch 2: saving model to {tmp_path / 'ckpt-2.vae'}"]
    best = tmp_path / "best.vae"
    h = model().fit(blobs, epochs=3, verbose=0, validation_data=noise(), callbacks=[
        cb.ModelCheckpoint(best, save_best_only=True, verbose=1)])
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from inf to" in out
    assert out.count("saving model to") == 1 + sum(
        v < min(h.history["val_loss"][:i]) for i, v in enumerate(h.history["val_loss"]) if i)
    # every 3 optimizer steps (streamed batches report each step)
    steps = tmp_path / "step-{step}.vae"
    model().fit(batches_of(blobs, 50), steps_per_epoch=4, epochs=2, verbose=0,
                callbacks=[cb.ModelCheckpoint(steps, monitor="loss", save_freq=3)])
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-3.vae", "step-6.vae"]
    with pytest.raises(ValueError, match="save_freq"):
        cb.ModelCheckpoint(steps, save_freq="batch")


def test_load_model_without_compiling(tmp_path, blobs):
    vae = model()
    vae.fit(blobs, epochs=2, verbose=0)
    vae.save(tmp_path / "m.vae")
    back = vaecpp.load_model(tmp_path / "m.vae", compile=False)
    assert back.optimizer is None and back.step == 0
    assert back.history.epoch == [0, 1]
    np.testing.assert_array_equal(back.encode(blobs), vae.encode(blobs))
    back.fit(blobs, epochs=1, verbose=0)  # compiles with the default optimizer
    assert back.optimizer.get_config()["name"] == "adam"


# ---- layers ------------------------------------------------------------------------------------
def test_layer_names_must_be_unique_strings(tmp_path):
    """As Keras: two layers of one name (or one named like the model's z_mean head) are refused
    (their weight_names() were the same, and a safetensors file of them did not load back)."""
    for encoder in ([L.Dense(4, name="z_mean")], [L.Dense(4, name="a"), L.Dense(4, name="a")]):
        with pytest.raises(ValueError, match=r"layer names must be unique; '(z_mean|a)' names"):
            vaecpp.VAE(16, encoder=encoder, decoder=[L.Dense(16)])
    with pytest.raises(TypeError, match="a layer's name must be a string, got int"):
        L.Dense(4, name=5)
    with pytest.raises(ValueError, match="cannot contain '/'"):
        L.Dense(4, name="enc/1")
    vae = vaecpp.VAE(16, encoder=[L.Dense(4, name="a"), L.Dense(4, name="b")],
                     decoder=[L.Dense(16)], seed=0)
    assert len(set(vae.weight_names())) == len(vae.weight_names())


def test_layer_sizes_given_as_numpy_integers_save_as_json(tmp_path):
    """Dense(np.int64(4)) trained and then failed at save ("int64 is not JSON serializable"):
    a layer keeps its arguments as Python numbers."""
    vae = vaecpp.VAE(16, encoder=[L.Dense(np.int64(4)), L.Dropout(np.float32(0.5))],
                     decoder=[L.Dense(np.int32(16))], seed=0)
    vae.save(tmp_path / "m.vae")
    again = vaecpp.load_model(tmp_path / "m.vae")
    assert again.get_config() == vae.get_config()
    conv = L.Conv2D(2, np.int64(3), strides=(np.int64(2), 1))
    assert json.loads(json.dumps(conv.get_config()))["args"]["strides"] == [2, 1]


def test_keras_layer_aliases(blobs):
    vae = vaecpp.VAE(20, latent_dim=2, seed=0, encoder=[L.Dense(8), L.LeakyReLU()],
                     decoder=[L.Dense(8, kernel_initializer="glorot_uniform",
                                      bias_initializer="zeros"),
                              L.LeakyReLU(negative_slope=0.2), L.Dense(20)])
    same = vaecpp.VAE(20, latent_dim=2, seed=0, encoder=[L.Dense(8, "leaky_relu")],
                      decoder=[L.Dense(8, "leaky_relu"), L.Dense(20)])
    assert vae.weight_names() == same.weight_names()
    same.set_weights(vae.get_weights())  # initial draws follow the layer count
    np.testing.assert_array_equal(vae.encode(blobs), same.encode(blobs))
    np.testing.assert_array_equal(vae.reconstruct(blobs), same.reconstruct(blobs))
    with pytest.raises(ValueError, match="0.2"):
        L.LeakyReLU(negative_slope=0.3)
    with pytest.raises(ValueError, match="glorot_uniform"):
        L.Dense(8, kernel_initializer="he_normal")
    with pytest.raises(ValueError, match="zeros"):
        L.Dense(8, bias_initializer="ones")
    with pytest.raises(ValueError, match="glorot_uniform"):
        L.Conv2D(8, 3, kernel_initializer="he_uniform")
    with pytest.raises(TypeError, match="input_shape"):
        L.Input(shape=(784,))
    # the defaults keep configs and files as they were
    assert L.Dense(8, kernel_initializer="glorot_uniform").get_config() == L.Dense(8).get_config()


# ---- interop -----------------------------------------------------------------------------------
def test_safetensors_round_trip(tmp_path, blobs):
    st = pytest.importorskip("safetensors.numpy")
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=5)
    vae.fit(blobs, epochs=1, verbose=0)
    path = tmp_path / "w.safetensors"
    vae.save_weights(path)
    tensors = st.load_file(str(path))
    assert sorted(tensors) == sorted(vae.weight_names())
    for name, w in zip(vae.weight_names(), vae.get_weights()):
        np.testing.assert_array_equal(tensors[name], w)
    other = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=1)
    other.load_weights(path)
    np.testing.assert_array_equal(other.encode(blobs), vae.encode(blobs))
    with pytest.raises(ValueError, match="different architecture"):
        vaecpp.VAE(20, latent_dim=2, hidden=(8,), seed=1).load_weights(path)


def test_safetensors_weights_load_into_torch(tmp_path, blobs):
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    vae = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=5, dtype="float64")
    vae.fit(blobs, epochs=1, verbose=0)
    vae.save_weights(tmp_path / "w.safetensors")
    t = load_file(str(tmp_path / "w.safetensors"))
    nn = torch.nn

    def linear(name):  # a Keras kernel is (in, out); torch's weight is (out, in)
        layer = nn.Linear(*t[f"{name}/kernel"].shape, dtype=torch.float64)
        layer.load_state_dict({"weight": t[f"{name}/kernel"].T, "bias": t[f"{name}/bias"]})
        return layer

    encoder = nn.Sequential(linear("dense"), nn.ReLU())
    z_mean, z_log_var = linear("z_mean"), linear("z_log_var")
    decoder = nn.Sequential(linear("dense_1"), nn.ReLU(), linear("decoder_output"))
    with torch.no_grad():
        h = encoder(torch.from_numpy(blobs))
        np.testing.assert_allclose(z_mean(h).numpy(), vae.encode(blobs), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(z_log_var(h).numpy(), vae.posterior(blobs)[1], rtol=1e-10,
                                   atol=1e-12)
        z = vae.encode(blobs)
        logits = decoder(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(logits, vae.decoder_outputs(z), rtol=1e-10, atol=1e-12)


def test_public_api_is_typed():
    import typing

    import vaecpp.model

    hints = typing.get_type_hints(vaecpp.VAE.__init__)
    for name in ("input_shape", "latent_dim", "hidden", "likelihood", "beta", "encoder", "seed",
                 "dtype", "backend"):
        assert name in hints, name
    for fn in (vaecpp.VAE.fit, vaecpp.VAE.evaluate, vaecpp.VAE.predict, vaecpp.VAE.encode,
               vaecpp.VAE.decode, vaecpp.VAE.compile, vaecpp.load_model):
        assert "return" in typing.get_type_hints(fn), fn.__name__
    import importlib.resources
    assert importlib.resources.files("vaecpp").joinpath("py.typed").is_file()
