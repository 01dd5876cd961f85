"""decode(z, sample=True) draws from the likelihood; sample=False is its mean."""

import numpy as np
import pytest

import vaecpp


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian",
                                        "laplace", "mse"])
def test_sample_mean_matches_decoded_mean(likelihood):
    vae = vaecpp.VAE(12, hidden=(4,), seed=2, likelihood=likelihood, dtype="float64")
    z = np.tile(np.array([[0.3, -0.2]]), (20000, 1))
    draws = vae.decode(z, sample=True, seed=0)
    mean = vae.decode(z[:1])[0]
    se = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5 * se + 1e-12)
    if likelihood in ("bernoulli",):
        assert set(np.unique(draws)) <= {0.0, 1.0}
    if likelihood == "continuous_bernoulli":
        assert draws.min() >= 0 and draws.max() <= 1
    np.testing.assert_array_equal(vae.decode(z[:5], sample=True, seed=0), draws[:5])


def test_gaussian_draws_have_the_learned_variance():
    vae = vaecpp.VAE(3, hidden=(), seed=0, likelihood="gaussian", dtype="float64")
    w = vae.get_weights()
    w[-1][:] = 0.0
    w[-1][3:] = np.log([0.01, 0.04, 0.09])  # decoder log-variance biases
    w[-2][:, 3:] = 0.0
    vae.set_weights(w)
    draws = vae.decode(np.zeros((40000, 2)), sample=True, seed=3)
    np.testing.assert_allclose(draws.var(axis=0), [0.01, 0.04, 0.09], rtol=0.03)
