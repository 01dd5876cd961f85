"""The CUDA backend.

Parity with the CPU engine (its reference) needs a CUDA build and a device, and skips with the
reason otherwise. The errors for a backend that cannot run, and the refusal of configurations the
GPU does not run, are tested wherever they can be: everywhere, or in any CUDA build (no device
needed: those checks come before the device is touched).
"""

import numpy as np
import pytest

import vaecpp
from vaecpp import _core, layers as L

BUILT = hasattr(_core, "VaeCudaF32")
DEVICES = int(_core.cuda_device_count()) if BUILT else 0

needs_build = pytest.mark.skipif(not BUILT, reason="vaecpp built without CUDA")
needs_gpu = pytest.mark.skipif(not BUILT or DEVICES == 0,
                               reason="vaecpp built without CUDA" if not BUILT else "no CUDA device")


# ---- everywhere ---------------------------------------------------------------------------------
def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        vaecpp.VAE(20, backend="tpu")


@pytest.mark.parametrize("device", [-1, 1.5, True, "0"])
def test_bad_device(device):
    with pytest.raises(ValueError, match="device must be"):
        vaecpp.VAE(20, backend="cuda", device=device)


def test_cuda_available_needs_build_and_device():
    assert vaecpp.cuda_available() == (BUILT and DEVICES > 0)
    info = vaecpp.build_info()
    assert info["cuda"] == BUILT
    if BUILT:
        assert info["cuda_devices"] == DEVICES
        assert info["cuda_gemm"] in ("cublas", "tiled")
    else:
        assert not hasattr(_core, "cuda_device_count")


@pytest.mark.skipif(BUILT and DEVICES > 0, reason="a CUDA device is present")
def test_cuda_backend_unavailable_is_a_clear_error():
    reason = "built without CUDA" if not BUILT else "no CUDA device was found"
    with pytest.raises(RuntimeError, match=reason):
        vaecpp.VAE(20, hidden=(8,), backend="cuda")
    assert not vaecpp.cuda_available()


def test_config_records_backend_and_load_overrides_it(tmp_path, blobs):
    vae = vaecpp.VAE(20, hidden=(8,), seed=3).compile("adam")
    vae.fit(blobs[:64], epochs=1, batch_size=32, verbose=0)
    assert vae.get_config()["backend"] == "cpu" and vae.backend == "cpu"
    vae.save(tmp_path / "m.vae")
    same = vaecpp.load_model(tmp_path / "m.vae", backend="cpu")
    np.testing.assert_array_equal(same.encode(blobs), vae.encode(blobs))
    with pytest.raises(ValueError, match="unknown backend"):
        vaecpp.load_model(tmp_path / "m.vae", backend="gpu")
    if not vaecpp.cuda_available():
        with pytest.raises(RuntimeError, match="backend='cuda' is not available"):
            vaecpp.load_model(tmp_path / "m.vae", backend="cuda")


# ---- any CUDA build, device or not ---------------------------------------------------------------
@pytest.fixture
def pretend_device(monkeypatch):
    """Lets VAE's Python checks pass as if a device were present, so that the engine's own checks
    run; those for unsupported configurations come before it touches a device."""
    monkeypatch.setattr(_core, "cuda_device_count", lambda: max(DEVICES, 1))


class Twice(vaecpp.Likelihood):
    params_per_dim = 1

    def nll(self, x, p):
        return np.sum((x - p) ** 2, axis=1)

    def grad(self, x, p):
        return 2 * (p - x)

    def mean(self, p):
        return p


@needs_build
@pytest.mark.parametrize("kwargs, what", [
    (dict(input_shape=(8, 8, 1), encoder=[L.Conv2D(4, 3, activation="relu"), L.Flatten()]),
     "Conv2D"),
    (dict(input_shape=20, hidden=(8,), encoder=[L.Dense(8), L.BatchNorm()]), "BatchNorm"),
    (dict(input_shape=20, likelihood=Twice()), "custom Python likelihoods"),
    (dict(input_shape=20, objective="iwae", k=3), "objective='iwae'"),
    (dict(input_shape=20, dtype="float64"), "float32 only"),
])
def test_unsupported_configurations_name_what(pretend_device, kwargs, what):
    with pytest.raises(ValueError, match="CUDA backend") as e:
        vaecpp.VAE(latent_dim=2, backend="cuda", **kwargs)
    assert what in str(e.value)


@needs_build
@pytest.mark.skipif(DEVICES > 0, reason="a CUDA device is present")
def test_engine_without_device_raises_runtime_error(pretend_device):
    # Python believes in a device; the engine asks the driver itself and says there is none.
    with pytest.raises(RuntimeError, match="no CUDA device"):
        vaecpp.VAE(20, hidden=(8,), backend="cuda")


# ---- parity with the CPU engine (GPU only) -------------------------------------------------------
def pair(**kwargs):
    """The same model (same seed, so the same initial weights) on both backends."""
    kwargs = dict(dict(input_shape=20, latent_dim=3, hidden=(16, 12), seed=7), **kwargs)
    return vaecpp.VAE(backend="cpu", **kwargs), vaecpp.VAE(backend="cuda", **kwargs)


def close(a, b, rtol=1e-4, atol=1e-5, what=""):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, what
    err = np.max(np.abs(a - b) / (atol + rtol * np.abs(a))) if a.size else 0.0
    assert err <= 1.0, f"{what}: max |cpu - cuda| = {np.max(np.abs(a - b)):.3g}"


def data_for(likelihood, blobs):
    if likelihood in ("bernoulli", "continuous_bernoulli"):
        return blobs
    return np.clip(blobs * 0.8 + 0.1 * np.sin(np.arange(20)), 0, 1)


LIKELIHOOD_CASES = [
    dict(likelihood="bernoulli"),
    dict(likelihood="continuous_bernoulli"),
    dict(likelihood="gaussian"),
    dict(likelihood="mse", output_activation="tanh"),
    dict(likelihood="mse", reduction="mean"),
    dict(likelihood="bernoulli", reduction="mean"),
    dict(likelihood="gaussian", reduction="mean"),
    dict(likelihood="laplace"),
    dict(likelihood="laplace", laplace_scale=0.3, activation="elu"),
    dict(likelihood="bernoulli", activation="softplus", prior_std=0.7, beta=0.5),
    dict(likelihood="bernoulli", activation="leaky_relu", epsilon_std=0.5),
]


@needs_gpu
@pytest.mark.parametrize("case", LIKELIHOOD_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_losses_and_gradients_match_cpu(case, blobs):
    cpu, gpu = pair(**case)
    x = data_for(case["likelihood"], blobs)[:100]
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_array_equal(a, b)  # same initialiser, same layout
    ce, ge = cpu.evaluate(x, batch_size=32, return_dict=True), gpu.evaluate(x, batch_size=32, return_dict=True)
    for k in ce:
        close(ce[k], ge[k], what=f"evaluate {k}")
    eps = np.random.default_rng(1).standard_normal((len(x), 3)).astype(np.float32)
    for noise in (None, eps):
        (cl, cg), (gl, gg) = cpu.gradients(x, eps=noise), gpu.gradients(x, eps=noise)
        for k in cl:
            close(cl[k], gl[k], what=f"gradients loss {k}")
        for name, a, b in zip(cpu.weight_names(), cg, gg):
            close(a, b, rtol=1e-3, atol=1e-5 * (1 + np.max(np.abs(a))), what=f"gradient {name}")


@needs_gpu
def test_encode_decode_match_cpu(blobs):
    cpu, gpu = pair(likelihood="gaussian")
    for a, b in zip(cpu.posterior(blobs), gpu.posterior(blobs)):
        close(a, b, what="posterior")
    z = np.random.default_rng(2).standard_normal((2500, 3))  # more than one chunk of 1024
    close(cpu.decode(z), gpu.decode(z), what="decode")
    close(cpu.decoder_outputs(z.astype(np.float32)),
          gpu.decoder_outputs(z.astype(np.float32)), what="decode raw")
    close(cpu.log_likelihood(blobs[:5], k=50), gpu.log_likelihood(blobs[:5], k=50), rtol=1e-5,
          what="log_likelihood")


@needs_gpu
@pytest.mark.parametrize("optimizer", [
    vaecpp.optimizers.Adam(1e-3),
    vaecpp.optimizers.Adam(1e-3, clipnorm=0.5, weight_decay=0.01),
    vaecpp.optimizers.SGD(0.01, momentum=0.9, nesterov=True, clipvalue=0.1),
    vaecpp.optimizers.RMSprop(1e-3),
    vaecpp.optimizers.Adagrad(0.01),
], ids=lambda o: type(o).__name__)
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_training_steps_match_cpu(optimizer, dropout, blobs):
    cpu, gpu = pair(dropout=dropout)
    for m in (cpu, gpu):
        m.compile(optimizer)
    # 100 samples, batch 32: four steps per epoch, the last one short; shuffled, noisy, dropout
    hc = cpu.fit(blobs[:100], epochs=2, batch_size=32, verbose=0)
    hg = gpu.fit(blobs[:100], epochs=2, batch_size=32, verbose=0)
    assert gpu.step == cpu.step == 8
    for k in hc.history:
        close(hc.history[k], hg.history[k], rtol=1e-3, what=f"history {k}")
    lr = optimizer.learning_rate
    # An adaptive rule moves a weight whose gradient is ~0 by up to lr per step whatever the sign,
    # so rounding can differ by that much there; elsewhere the two agree far more closely.
    for name, a, b in zip(cpu.weight_names(), cpu.get_weights(), gpu.get_weights()):
        close(a, b, rtol=1e-3, atol=16 * lr, what=f"weights {name}")
    sc, sg = cpu.get_optimizer_state(), gpu.get_optimizer_state()
    (mc, vc), (mg, vg) = (sc["m"], sc["v"]), (sg["m"], sg["v"])
    close(mc, mg, rtol=1e-2, atol=1e-4, what="optimizer m")
    close(vc, vg, rtol=1e-2, atol=1e-6, what="optimizer v")


@needs_gpu
def test_gpu_runs_repeat_bit_for_bit(blobs):
    def run():
        gpu = vaecpp.VAE(20, latent_dim=2, hidden=(32,), dropout=0.1, seed=4, backend="cuda")
        gpu.compile("adam").fit(blobs, epochs=2, batch_size=50, verbose=0)
        return gpu.get_weights(), gpu.history.history["loss"]
    (w1, l1), (w2, l2) = run(), run()
    assert l1 == l2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


@needs_gpu
@pytest.mark.parametrize("first, second", [("cuda", "cpu"), ("cpu", "cuda")])
def test_save_on_one_backend_load_on_the_other(tmp_path, blobs, first, second):
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=5, backend=first).compile("adam")
    vae.fit(blobs, epochs=2, batch_size=64, verbose=0)
    vae.save(tmp_path / "m.vae")
    other = vaecpp.load_model(tmp_path / "m.vae", backend=second)
    assert other.backend == second and other.get_config()["backend"] == second
    for a, b in zip(vae.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    sa, sb = vae.get_optimizer_state(), other.get_optimizer_state()
    for key in ("m", "v"):
        np.testing.assert_array_equal(sa[key], sb[key])
    assert other.step == vae.step == sa["step"] == sb["step"]
    close(vae.encode(blobs), other.encode(blobs), what="encode after the move")
    # training goes on from the same state on the other backend
    other.fit(blobs, epochs=3, initial_epoch=2, batch_size=64, verbose=0)
    assert other.history.epoch == [0, 1, 2]


@needs_gpu
def test_set_weights_and_recompile_reach_the_device(blobs):
    cpu, gpu = pair()
    w = [np.full_like(a, 0.01) for a in cpu.get_weights()]
    cpu.set_weights(w)
    gpu.set_weights(w)
    close(cpu.evaluate(blobs), gpu.evaluate(blobs), what="after set_weights")
    gpu.compile("sgd")
    assert gpu.get_optimizer_state()["m"].size == 0


@needs_gpu
def test_non_finite_loss_keeps_last_good_weights(blobs):
    gpu = vaecpp.VAE(20, hidden=(8,), seed=1, backend="cuda").compile("sgd")
    before = gpu.get_weights()
    gpu.set_weights([np.full_like(a, np.float32(1e30)) for a in before])
    with pytest.raises(FloatingPointError, match="epoch 1: the loss became"):
        gpu.fit(blobs, epochs=1, batch_size=100, verbose=0)
    assert gpu.step == 0
