"""Each likelihood's NLL against a NumPy/SciPy reference, its gradient against finite
differences (float64), and its decoded mean."""

import numpy as np
import pytest
from scipy import integrate, special, stats

from vaecpp import _testing
from gradcheck import assert_close_grad, numeric_grad

SPECS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian": dict(likelihood="gaussian", output_activation="sigmoid", log_var_clip=5.0),
    "gaussian_linear": dict(likelihood="gaussian", output_activation="linear", log_var_clip=5.0),
    "mse": dict(likelihood="mse", output_activation="linear"),
    "mse_sigmoid": dict(likelihood="mse", output_activation="sigmoid"),
    "mse_tanh_mean": dict(likelihood="mse", output_activation="tanh", reduction="mean"),
    "continuous_bernoulli": dict(likelihood="continuous_bernoulli"),
    "laplace": dict(likelihood="laplace", output_activation="linear", log_var_clip=5.0),
    "laplace_fixed": dict(likelihood="laplace", output_activation="sigmoid", laplace_scale=0.3),
}
P = {"gaussian": 2, "gaussian_linear": 2, "laplace": 2}


def data(name, B=3, D=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((B, D))
    p = rng.normal(size=(B, P.get(name, 1) * D))
    return x, p


def reference_nll(name, x, p):
    D = x.shape[1]
    sig = special.expit
    if name == "bernoulli":
        q = sig(p)
        return -np.sum(x * np.log(q) + (1 - x) * np.log1p(-q), axis=1)
    if name.startswith("gaussian"):
        mu = sig(p[:, :D]) if name == "gaussian" else p[:, :D]
        return -np.sum(stats.norm.logpdf(x, mu, np.exp(0.5 * p[:, D:])), axis=1)
    if name.startswith("mse"):
        f = {"mse": lambda a: a, "mse_sigmoid": sig, "mse_tanh_mean": np.tanh}[name]
        r = np.sum((x - f(p)) ** 2, axis=1)
        return r / D if name == "mse_tanh_mean" else r
    if name == "continuous_bernoulli":
        lam = sig(p)
        log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
        return -np.sum(x * np.log(lam) + (1 - x) * np.log1p(-lam) + log_c, axis=1)
    if name == "laplace":
        return -np.sum(stats.laplace.logpdf(x, p[:, :D], np.exp(p[:, D:])), axis=1)
    if name == "laplace_fixed":
        return -np.sum(stats.laplace.logpdf(x, sig(p), 0.3), axis=1)
    raise KeyError(name)


@pytest.mark.parametrize("name", SPECS)
def test_nll_matches_reference(name):
    x, p = data(name)
    np.testing.assert_allclose(_testing.lik_nll(SPECS[name], x, p), reference_nll(name, x, p),
                               rtol=1e-10)


@pytest.mark.parametrize("name", SPECS)
def test_nll_gradient_finite_differences(name):
    x, p = data(name, seed=1)
    g = _testing.lik_grad(SPECS[name], x, p)
    f = lambda: float(_testing.lik_nll(SPECS[name], x, p).sum())
    assert_close_grad(g, numeric_grad(f, p), what=name)


# reduction="mean" (Keras 1's losses): every built-in likelihood's NLL averaged over dimensions.
MEAN_SPECS = {name: dict(spec, reduction="mean") for name, spec in SPECS.items()
              if spec.get("reduction") != "mean"}


@pytest.mark.parametrize("name", MEAN_SPECS)
def test_mean_reduction_nll_is_the_mean_over_dimensions(name):
    x, p = data(name, B=4, D=7, seed=3)
    np.testing.assert_allclose(_testing.lik_nll(MEAN_SPECS[name], x, p),
                               reference_nll(name, x, p) / x.shape[1], rtol=1e-10)


@pytest.mark.parametrize("name", MEAN_SPECS)
def test_mean_reduction_gradient_finite_differences(name):
    x, p = data(name, B=4, D=7, seed=4)
    g = _testing.lik_grad(MEAN_SPECS[name], x, p)
    f = lambda: float(_testing.lik_nll(MEAN_SPECS[name], x, p).sum())
    assert_close_grad(g, numeric_grad(f, p), what=name)
    np.testing.assert_allclose(g, _testing.lik_grad(SPECS[name], x, p) / x.shape[1], rtol=1e-12)


@pytest.mark.parametrize("name", MEAN_SPECS)
def test_sum_reduction_is_the_default(name):
    x, p = data(name, seed=5)
    spec = dict(SPECS[name], reduction="sum")
    assert np.array_equal(_testing.lik_nll(spec, x, p), _testing.lik_nll(SPECS[name], x, p))
    assert np.array_equal(_testing.lik_grad(spec, x, p), _testing.lik_grad(SPECS[name], x, p))


def test_gaussian_log_variance_clip_has_zero_gradient_outside():
    x = np.full((1, 2), 0.5)
    p = np.array([[0.0, 0.0, 7.0, -6.0]])  # both log-variances outside +-5
    spec = SPECS["gaussian"]
    g = _testing.lik_grad(spec, x, p)
    assert np.all(g[0, 2:] == 0.0)
    clipped = np.array([[0.0, 0.0, 5.0, -5.0]])
    np.testing.assert_allclose(_testing.lik_nll(spec, x, p), _testing.lik_nll(spec, x, clipped))


def test_bernoulli_logits_form_is_stable_for_large_logits():
    x = np.array([[0.0, 1.0, 1.0, 0.0]])
    p = np.array([[800.0, -800.0, 800.0, -800.0]])
    nll = _testing.lik_nll(SPECS["bernoulli"], x, p)
    np.testing.assert_allclose(nll, [1600.0])
    assert np.all(np.isfinite(_testing.lik_grad(SPECS["bernoulli"], x, p)))


def test_continuous_bernoulli_normaliser_near_one_half():
    """log C near lambda = 0.5 (logit 0), where the closed form is 0/0: compare with numerical
    integration of 1 / C = int_0^1 lam^x (1 - lam)^(1 - x) dx, and check continuity across the
    series/closed-form switch."""
    for logit in [0.0, 1e-9, 1e-4, 0.03, 0.0499999, 0.0500001, 0.2, -0.04, 3.0, -30.0]:
        lam = special.expit(logit)
        inv_c, _ = integrate.quad(lambda t: lam ** t * (1 - lam) ** (1 - t), 0, 1,
                                  epsabs=1e-14, epsrel=1e-14)
        x = np.zeros((1, 1))
        nll = _testing.lik_nll(SPECS["continuous_bernoulli"], x, np.array([[logit]]))[0]
        expected = -(np.log1p(-lam) - np.log(inv_c))
        assert abs(nll - expected) < 1e-12 * max(1, abs(expected)), (logit, nll, expected)


@pytest.mark.parametrize("name", SPECS)
def test_decoded_mean(name):
    x, p = data(name, seed=2)
    D = x.shape[1]
    mean = _testing.lik_mean(SPECS[name], p, D)
    loc = p[:, :D]
    if name in ("bernoulli",):
        expected = special.expit(loc)
    elif name == "continuous_bernoulli":
        lam = special.expit(loc)
        expected = lam / (2 * lam - 1) + 1 / (2 * np.arctanh(1 - 2 * lam))
    else:
        act = SPECS[name].get("output_activation")
        expected = {"sigmoid": special.expit, "tanh": np.tanh, "linear": lambda a: a}[act](loc)
    np.testing.assert_allclose(mean, expected, rtol=1e-10)
