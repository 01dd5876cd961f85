"""User-defined likelihoods written in NumPy, called by the engine once per batch."""

import numpy as np
import pytest

import vaecpp


def sigmoid(v):
    return 0.5 * (1 + np.tanh(0.5 * v))


class PyBernoulli(vaecpp.Likelihood):
    """The documented worked example: Bernoulli with logits."""

    params_per_dim = 1

    def nll(self, x, logits):
        return np.sum(np.logaddexp(0, logits) - x * logits, axis=1)

    def grad(self, x, logits):
        return sigmoid(logits) - x

    def mean(self, logits):
        return sigmoid(logits)

    def sample(self, logits, rng):
        return (rng.random(logits.shape) < sigmoid(logits)).astype(float)


class PyGaussian(vaecpp.Likelihood):
    """Two outputs per dimension: mean and log-variance (no clipping)."""

    params_per_dim = 2

    def __init__(self, offset=0.0):
        self.offset = offset

    def nll(self, x, p):
        D = x.shape[1]
        mu, lv = p[:, :D], p[:, D:]
        return 0.5 * np.sum(np.log(2 * np.pi) + lv + (x - mu) ** 2 * np.exp(-lv), axis=1)

    def grad(self, x, p):
        D = x.shape[1]
        mu, lv = p[:, :D], p[:, D:]
        r = x - mu
        return np.hstack([-r * np.exp(-lv), 0.5 * (1 - r * r * np.exp(-lv))])

    def mean(self, p):
        return p[:, :p.shape[1] // 2] + self.offset

    def get_config(self):
        return {"offset": self.offset}


def pair(lik, builtin, **kw):
    a = vaecpp.VAE(6, hidden=(5,), seed=4, dtype="float64", likelihood=lik, **kw)
    b = vaecpp.VAE(6, hidden=(5,), seed=4, dtype="float64", likelihood=builtin, **kw)
    return a, b


def test_python_bernoulli_matches_builtin():
    x = np.random.default_rng(0).random((8, 6))
    a, b = pair(PyBernoulli(), "bernoulli")
    la, ga = a.gradients(x)
    lb, gb = b.gradients(x)
    for key in la:
        np.testing.assert_allclose(la[key], lb[key], rtol=1e-12)
    for u, v in zip(ga, gb):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a.decode(np.ones((2, 2))), b.decode(np.ones((2, 2))), rtol=1e-12)
    ha = a.fit(x, epochs=3, batch_size=4, verbose=0).history["loss"]
    hb = b.fit(x, epochs=3, batch_size=4, verbose=0).history["loss"]
    np.testing.assert_allclose(ha, hb, rtol=1e-10)


def test_python_gaussian_matches_builtin_linear_gaussian():
    x = np.random.default_rng(1).random((5, 6))
    a, b = pair(PyGaussian(), "gaussian", output_activation="linear", log_var_clip=1e9)
    (la, ga), (lb, gb) = a.gradients(x), b.gradients(x)
    np.testing.assert_allclose(la["loss"], lb["loss"], rtol=1e-12)
    for u, v in zip(ga, gb):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-14)


class WrongShape(PyBernoulli):
    def grad(self, x, logits):
        return np.zeros((len(x), 3))


class NotFinite(PyBernoulli):
    def nll(self, x, logits):
        return np.full(len(x), np.nan)


class Raises(PyBernoulli):
    def mean(self, logits):
        raise RuntimeError("boom in mean")


def test_bad_custom_likelihoods_raise_clear_errors():
    x = np.random.default_rng(0).random((4, 6))
    with pytest.raises(ValueError, match=r"grad\(x, params\) must return an array of shape \(4, 6\)"):
        vaecpp.VAE(6, hidden=(3,), likelihood=WrongShape(), seed=0).gradients(x)
    with pytest.raises(ValueError, match=r"nll\(x, params\) returned NaN or inf"):
        vaecpp.VAE(6, hidden=(3,), likelihood=NotFinite(), seed=0).fit(x, verbose=0)
    with pytest.raises(RuntimeError, match="boom in mean"):
        vaecpp.VAE(6, hidden=(3,), likelihood=Raises(), seed=0).decode(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="params_per_dim"):
        bad = PyBernoulli()
        bad.params_per_dim = 0
        vaecpp.VAE(6, likelihood=bad)


def test_custom_likelihood_save_load(tmp_path):
    vae = vaecpp.VAE(6, hidden=(3,), likelihood=PyGaussian(offset=0.25), seed=0)
    vae.save(tmp_path / "m.vae")
    with pytest.raises(ValueError, match="custom_objects"):
        vaecpp.load_model(tmp_path / "m.vae")
    back = vaecpp.load_model(tmp_path / "m.vae", custom_objects={"PyGaussian": PyGaussian})
    assert back.custom_likelihood.offset == 0.25
    np.testing.assert_array_equal(back.decode(np.zeros((1, 2))), vae.decode(np.zeros((1, 2))))


class Configured(PyBernoulli):
    """PyBernoulli whose get_config() returns the keyword arguments it was made with."""

    def __init__(self, **options):
        self.options = options

    def get_config(self):
        return self.options


@pytest.mark.parametrize("options", [
    {"w": [[1, 2], [3, 4]]}, {"opts": {"a": 1, "b": [None, True, "x"]}}, {"n": 2**40},
    {"big": -(2**100), "tiny": 1e-300},
], ids=["nested-list", "nested-dict", "int-2**40", "huge-int"])
def test_custom_likelihood_json_config_saves_and_loads(tmp_path, options):
    """What Likelihood.get_config's docstring promises (JSON values, nested, integers of any
    size) loads as it was saved (nested lists and dicts, 2**40 were refused by load_model)."""
    vae = vaecpp.VAE(4, hidden=(3,), likelihood=Configured(**options), seed=1)
    vae.save(tmp_path / "m.vae")
    back = vaecpp.load_model(tmp_path / "m.vae", custom_objects={"Configured": Configured})
    assert back.custom_likelihood.options == options
    assert back.get_config() == vae.get_config()


def test_custom_likelihood_tuples_come_back_as_lists(tmp_path):
    vae = vaecpp.VAE(4, hidden=(3,), likelihood=Configured(sizes=(1, (2, 3))), seed=1)
    vae.save(tmp_path / "m.vae")
    back = vaecpp.load_model(tmp_path / "m.vae", custom_objects={"Configured": Configured})
    assert back.custom_likelihood.options == {"sizes": [1, [2, 3]]}


@pytest.mark.parametrize("options,message", [
    ({"x": float("nan")}, r"get_config\(\)\['x'\] = nan is not finite"),
    ({"x": [1, {"y": float("inf")}]}, r"get_config\(\)\['x'\]\[1\]\['y'\] = inf is not finite"),
    ({"x": np.int64(3)}, r"get_config\(\)\['x'\] = .* is of type int64, not a JSON value"),
    ({"x": {1, 2}}, r"is of type set, not a JSON value"),
    ({"x": {1: "a"}}, r"get_config\(\)\['x'\] has the key 1: JSON object keys are strings"),
], ids=["nan", "nested-inf", "numpy-int", "set", "int-key"])
def test_custom_likelihood_config_a_load_would_refuse_is_refused_at_save(tmp_path, options,
                                                                          message):
    """Save and load apply one rule (_file_checks.check_likelihood_args): what a load would
    refuse (NaN saved as a non-JSON NaN; a dict key 1 that would come back as "1") is a
    ValueError at save, before anything is written."""
    vae = vaecpp.VAE(4, hidden=(3,), likelihood=Configured(**options), seed=1)
    with pytest.raises(ValueError, match=f"cannot save .*{message}"):
        vae.save(tmp_path / "m.vae")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("returns, message", [
    (lambda p: np.full((len(p), 6), np.nan), "sample returned NaN or inf"),
    (lambda p: np.zeros((len(p), 3)), r"sample must return an array of shape \(4, 6\), got \(4, 3\)"),
    (lambda p: None, r"sample must return an array of shape \(4, 6\), got None"),
    (lambda p: "draws", r"sample must return an array of shape \(4, 6\)"),
])
def test_a_custom_sample_is_checked_as_the_other_methods_are(returns, message):
    """decode(sample=True) checks what Likelihood.sample returns (it handed back NaN draws, or
    failed with a bare reshape or IndexError), as the engine checks nll, grad and mean."""
    class Sampler(PyBernoulli):
        def sample(self, params, rng):
            return returns(params)
    vae = vaecpp.VAE(6, hidden=(3,), likelihood=Sampler(), seed=0)
    with pytest.raises(ValueError, match=f"custom likelihood: {message}"):
        vae.decode(np.zeros((4, 2)), sample=True)


def test_decode_sample_uses_custom_sampler():
    vae = vaecpp.VAE(6, hidden=(3,), likelihood=PyBernoulli(), seed=0)
    s = vae.decode(np.zeros((50, 2)), sample=True, seed=1)
    assert set(np.unique(s)) <= {0.0, 1.0}
    with pytest.raises(NotImplementedError, match="sample"):
        vaecpp.VAE(6, hidden=(3,), likelihood=PyGaussian(), seed=0).decode(
            np.zeros((1, 2)), sample=True)
