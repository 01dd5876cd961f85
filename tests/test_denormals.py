"""Denormal numbers flushed to zero inside vaecpp's calls, and only there (cpp/fp_mode.hpp).

The mode register is read through the test hooks _testing.fp_bits (the calling thread) and
_testing.team_fp_bits (each thread of an OpenMP team opened from it)."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import vaecpp
from vaecpp import _testing

MACHINE = platform.machine().lower()
if MACHINE in ("x86_64", "amd64"):
    FLUSH = 0x8040        # MXCSR: FTZ | DAZ
    STICKY = 0x3F         # MXCSR's exception flags: raised by the arithmetic itself, not a mode
elif MACHINE in ("aarch64", "arm64"):
    FLUSH = 1 << 24       # FPCR.FZ (FPCR has no sticky flags)
    STICKY = 0
else:
    FLUSH = STICKY = None

needs_flush_bits = pytest.mark.skipif(
    FLUSH is None, reason=f"no denormal flush bits on {platform.machine()}: the switch is a no-op")


def mode():
    """The calling thread's floating-point mode: its register without the sticky flags."""
    return _testing.fp_bits() & ~STICKY


@pytest.fixture(autouse=True)
def default_switch():
    """Every test starts with flushing on and leaves the switch and this thread's mode as found."""
    before, bits = vaecpp.flush_denormal(), _testing.fp_bits()
    vaecpp.set_flush_denormal(True)
    yield
    vaecpp.set_flush_denormal(before)
    _testing.set_fp_bits(bits)


def data(n=240, d=16, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random((n, d)).astype(dtype)


def small_vae(threads=1, dtype="float32", d=16, **kw):
    vae = vaecpp.VAE(d, latent_dim=2, hidden=(24,), seed=0, threads=threads, dtype=dtype, **kw)
    vae.compile(optimizer=vaecpp.optimizers.Adam(1e-3))
    return vae


# ---- the switch ----------------------------------------------------------------------------------
def test_switch_round_trip_and_bad_input():
    assert vaecpp.flush_denormal() is True
    assert vaecpp.set_flush_denormal(False) is (FLUSH is not None)
    assert vaecpp.flush_denormal() is False
    vaecpp.set_flush_denormal(np.bool_(True))
    assert vaecpp.flush_denormal() is True
    for bad in (1, "off", None):
        with pytest.raises(TypeError, match="True or False"):
            vaecpp.set_flush_denormal(bad)
    assert vaecpp.flush_denormal() is True


@pytest.mark.parametrize("value, expected", [("0", False), ("off", False), ("1", True)])
def test_environment_variable_sets_the_default(value, expected):
    env = dict(os.environ, VAECPP_FLUSH_DENORMAL=value)
    out = subprocess.run([sys.executable, "-c", "import vaecpp; print(vaecpp.flush_denormal())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(expected)


# ---- the caller's mode and the workers' --------------------------------------------------------
CALLS = {
    "fit": lambda vae, x: vae.fit(x, batch_size=32, epochs=1, verbose=0),
    "evaluate": lambda vae, x: vae.evaluate(x, batch_size=64),
    "encode": lambda vae, x: vae.encode(x),
    "decode": lambda vae, x: vae.decode(np.zeros((len(x), 2), np.float32)),
    "gradients": lambda vae, x: vae.gradients(x),
    "log_likelihood": lambda vae, x: vae.log_likelihood(x[:8], k=16),
}


@needs_flush_bits
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("call", list(CALLS))
def test_caller_mode_unchanged(call, threads):
    vae, x = small_vae(threads), data()
    for start in (mode() & ~FLUSH, mode() | FLUSH):  # an IEEE caller, and one that flushes itself
        _testing.set_fp_bits(start)
        CALLS[call](vae, x)
        assert mode() == start & ~STICKY


@needs_flush_bits
def test_worker_threads_flush_inside_and_are_restored_after():
    assert all(b & FLUSH == 0 for b in _testing.team_fp_bits(3, False, 0))
    inside = _testing.team_fp_bits(3, True, 0)
    assert len(inside) == 3 and all(b & FLUSH == FLUSH for b in inside)
    assert all(b & FLUSH == 0 for b in _testing.team_fp_bits(3, False, 0))
    # Workers started inside the scope by a flushing thread (their mode is inherited) are put back
    # in the caller's mode too, not left flushing.
    grown = _testing.team_fp_bits(2, True, 3)
    assert len(grown) == 5 and all(b & FLUSH == FLUSH for b in grown)
    assert all(b & FLUSH == 0 for b in _testing.team_fp_bits(5, False, 0))
    vaecpp.set_flush_denormal(False)
    assert all(b & FLUSH == 0 for b in _testing.team_fp_bits(3, True, 0))


@needs_flush_bits
def test_workers_of_a_two_thread_fit_are_restored():
    small_vae(threads=2, d=64).fit(data(2048, 64), batch_size=512, epochs=1, verbose=0)
    assert all(b & FLUSH == 0 for b in _testing.team_fp_bits(2, False, 0))


@needs_flush_bits
def test_callbacks_run_in_the_callers_mode():
    seen = []
    cb = vaecpp.callbacks.LambdaCallback(
        on_train_batch_end=lambda step, logs: seen.append(mode()),
        on_epoch_end=lambda epoch, logs: seen.append(mode()))
    start = mode() & ~FLUSH
    _testing.set_fp_bits(start)
    small_vae(threads=2).fit(data(), batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    assert seen and all(m == start for m in seen)
    assert mode() == start


# ---- what flushing does to the numbers ---------------------------------------------------------
def linear_decoder(dtype, threads, d=784):
    """A VAE whose decode(z) is z @ W + b exactly (no hidden layer, linear output, Gaussian
    likelihood with a fixed variance: its mean is the decoder's output)."""
    vae = vaecpp.VAE(d, latent_dim=2, hidden=(), likelihood="mse", output_activation="linear",
                     seed=0, threads=threads, dtype=dtype)
    weights = [np.zeros_like(w) for w in vae.get_weights()]
    return vae, weights, vae.weight_names().index("decoder_output/kernel")


@needs_flush_bits
@pytest.mark.parametrize("dtype, tiny", [("float32", 1e-20), ("float64", 1e-160)])
@pytest.mark.parametrize("threads, rows", [(1, 3), (2, 1024)])
def test_a_product_with_a_denormal_result(dtype, tiny, threads, rows):
    """z * W with z = W = tiny (normal numbers) is denormal: 0 when flushing, IEEE's value not."""
    vae, weights, k = linear_decoder(dtype, threads)
    t = np.dtype(dtype).type
    weights[k][0, :] = t(tiny)
    vae.set_weights(weights)
    z = np.zeros((rows, 2), dtype)
    z[:, 0] = t(tiny)
    exact = t(tiny) * t(tiny)  # computed here, in the caller's IEEE mode
    assert 0 < exact < np.finfo(dtype).tiny  # denormal
    assert np.all(vae.decode(z) == 0)
    vaecpp.set_flush_denormal(False)
    assert np.all(vae.decode(z) == exact)


@needs_flush_bits
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_denormal_weights_read_as_zero(dtype):
    """DAZ: a denormal weight times 1 gives 0 when flushing, the weight itself when not."""
    vae, weights, k = linear_decoder(dtype, 1, d=8)
    den = np.finfo(dtype).tiny / np.dtype(dtype).type(16)
    weights[k][0, :] = den
    vae.set_weights(weights)
    z = np.array([[1, 0]], dtype)
    assert np.all(vae.decode(z) == 0)
    vaecpp.set_flush_denormal(False)
    assert np.all(vae.decode(z) == den)


@pytest.mark.parametrize("threads", [1, 2])
def test_losses_on_a_normal_model_match_ieee(threads):
    x = data(480, 32)
    losses = {}
    for flush in (True, False):
        vaecpp.set_flush_denormal(flush)
        vae = small_vae(threads, d=32)
        h = vae.fit(x, batch_size=32, epochs=2, verbose=0, validation_data=x[:96])
        losses[flush] = h.history["loss"] + h.history["val_loss"]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-6)


def test_float64_gradients_unaffected():
    x = data(64, 16, dtype=np.float64)
    vae = small_vae(1, dtype="float64")
    on = vae.gradients(x)
    vaecpp.set_flush_denormal(False)
    off = vae.gradients(x)
    assert on[0] == off[0]
    for a, b in zip(on[1], off[1]):
        np.testing.assert_array_equal(a, b)
