"""The KL term against its closed form, a Monte-Carlo estimate and finite differences."""

import numpy as np
import pytest

from vaecpp import _testing
from gradcheck import assert_close_grad, numeric_grad


@pytest.mark.parametrize("prior_std", [1.0, 0.5, 2.0])
def test_kl_matches_closed_form(prior_std):
    rng = np.random.default_rng(1)
    mu, lv = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    s2 = prior_std ** 2
    expected = 0.5 * np.sum((np.exp(lv) + mu ** 2) / s2 - 1 - lv + np.log(s2), axis=1)
    np.testing.assert_allclose(_testing.kl(mu, lv, prior_std), expected, rtol=1e-13)
    if prior_std == 1.0:
        np.testing.assert_allclose(_testing.kl(mu, lv, 1.0),
                                   0.5 * np.sum(mu ** 2 + np.exp(lv) - 1 - lv, axis=1), rtol=1e-13)


def test_kl_is_zero_at_the_prior():
    assert np.all(_testing.kl(np.zeros((3, 4)), np.zeros((3, 4)), 1.0) == 0.0)


@pytest.mark.parametrize("prior_std", [1.0, 1.5])
def test_kl_matches_monte_carlo(prior_std):
    """E_q[log q(z) - log p(z)] estimated from 200k draws lies within 4 standard errors."""
    rng = np.random.default_rng(2)
    mu, lv = rng.normal(size=(1, 3)), rng.normal(scale=0.5, size=(1, 3))
    sd = np.exp(0.5 * lv)
    z = mu + sd * rng.standard_normal((200_000, 3))
    log_q = -0.5 * np.sum(np.log(2 * np.pi) + lv + ((z - mu) / sd) ** 2, axis=1)
    log_p = -0.5 * np.sum(np.log(2 * np.pi * prior_std ** 2) + (z / prior_std) ** 2, axis=1)
    diff = log_q - log_p
    est, se = diff.mean(), diff.std() / np.sqrt(diff.size)
    kl = _testing.kl(mu, lv, prior_std)[0]
    assert abs(est - kl) < 4 * se, (est, se, kl)


def test_kl_gradient_finite_differences():
    rng = np.random.default_rng(3)
    mu, lv = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    for prior_std in (1.0, 0.7):
        dmu, dlv = _testing.kl_grad(mu, lv, prior_std)
        f = lambda: _testing.kl(mu, lv, prior_std).sum()
        assert_close_grad(dmu, numeric_grad(f, mu), what="dKL/dmu")
        assert_close_grad(dlv, numeric_grad(f, lv), what="dKL/dlogvar")
