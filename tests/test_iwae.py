"""The importance-weighted bound: its gradient (finite differences) and the log-likelihood
estimate against the exact marginal of a linear-Gaussian model."""

import numpy as np
import pytest
from scipy import stats

import vaecpp
from gradcheck import assert_close_grad, numeric_grad


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("k", [1, 5])
def test_iwae_gradient_finite_differences(likelihood, k):
    vae = vaecpp.VAE(5, latent_dim=2, hidden=(4,), activation="tanh", likelihood=likelihood,
                     objective="iwae", k=k, seed=1, dtype="float64", prior_std=0.8)
    rng = np.random.default_rng(0)
    x = rng.random((3, 5))
    eps = rng.normal(size=(3 * k, 2))
    weights = [w + rng.normal(scale=0.2, size=w.shape) for w in vae.get_weights()]
    vae.set_weights(weights)
    losses, grads = vae.gradients(x, eps)

    def loss():
        vae.set_weights(weights)
        return vae.gradients(x, eps)[0]["loss"]
    for w, g, name in zip(weights, grads, vae.weight_names()):
        assert_close_grad(g, numeric_grad(loss, w), what=f"iwae k={k} {name}")


def test_iwae_k1_loss_is_the_single_sample_elbo():
    """With k = 1 the bound is log p(x|z) + log p(z) - log q(z|x) for one draw; its expectation
    is the ELBO. Check the identity on the draw itself."""
    vae = vaecpp.VAE(4, hidden=(3,), objective="iwae", k=1, seed=0, dtype="float64",
                     likelihood="gaussian")
    elbo = vaecpp.VAE(4, hidden=(3,), seed=0, dtype="float64", likelihood="gaussian")
    x = np.random.default_rng(1).random((6, 4))
    eps = np.random.default_rng(2).normal(size=(6, 2))
    li, le = vae.gradients(x, eps)[0], elbo.gradients(x, eps)[0]
    mu, lv = vae.posterior(x)
    z = mu + np.exp(lv / 2) * eps
    log_p = stats.norm.logpdf(z).sum(1)
    log_q = stats.norm.logpdf(z, mu, np.exp(lv / 2)).sum(1)
    np.testing.assert_allclose(li["loss"], le["reconstruction_loss"] - (log_p - log_q).mean(),
                               rtol=1e-10)


def linear_gaussian(seed=0, D=4, L=2, noise_sd=0.5):
    """A VAE whose decoder is x = W z + b + N(0, noise_sd^2): p(x) = N(b, W W^T + noise_sd^2 I).
    The encoder is linear (no hidden layer) and set to the exact posterior's mean and marginal
    variances; with orthogonal W columns that posterior is diagonal, so q is exact."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(D, L)))
    W = Q * np.array([1.5, 0.8])[:L]
    b = rng.normal(size=D) * 0.3
    vae = vaecpp.VAE(D, latent_dim=L, hidden=(), likelihood="gaussian", output_activation="linear",
                     log_var_clip=20.0, seed=seed, dtype="float64")
    psi = noise_sd ** 2
    post_cov = np.linalg.inv(np.eye(L) + W.T @ W / psi)
    A = post_cov @ W.T / psi                      # posterior mean = A (x - b)
    w = vae.get_weights()                         # z_mean k/b, z_log_var k/b, decoder k/b
    w[0][:], w[1][:] = A.T, -A @ b
    w[2][:], w[3][:] = 0.0, np.log(np.diag(post_cov))
    w[4][:, :D], w[4][:, D:] = W.T, 0.0
    w[5][:D], w[5][D:] = b, np.log(psi)
    vae.set_weights(w)
    exact = stats.multivariate_normal(b, W @ W.T + psi * np.eye(D))
    return vae, exact


def test_log_likelihood_exact_when_q_is_the_posterior():
    vae, exact = linear_gaussian()
    x = exact.rvs(size=20, random_state=1)
    for k in (1, 50):
        np.testing.assert_allclose(vae.log_likelihood(x, k=k), exact.logpdf(x), rtol=1e-9)


def test_log_likelihood_converges_to_the_exact_marginal():
    vae, exact = linear_gaussian()
    w = vae.get_weights()
    w[0] = w[0] * 0.6          # a worse posterior approximation
    w[3] = w[3] + 0.7          # too wide
    vae.set_weights(w)
    x = exact.rvs(size=30, random_state=2)
    truth = exact.logpdf(x)
    gaps = [np.mean(truth - vae.log_likelihood(x, k=k)) for k in (1, 10, 100, 5000)]
    assert gaps[0] > 0.05                              # the ELBO is loose here
    assert gaps[0] > gaps[1] > abs(gaps[3])            # tightening with k
    assert abs(gaps[2]) < 0.03 and abs(gaps[3]) < 0.01
    np.testing.assert_array_equal(vae.log_likelihood(x, k=100), vae.log_likelihood(x, k=100))


def test_iwae_training_learns(blobs):
    vae = vaecpp.VAE(20, hidden=(32,), objective="iwae", k=5, seed=0)
    h = vae.fit(blobs, epochs=10, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < 0.85 * h.history["loss"][0]  # floor: ~6.5 nats of noise
    ll = vae.log_likelihood(blobs[:50], k=200)
    assert np.all(np.isfinite(ll)) and ll.mean() > -h.history["loss"][0]


def test_iwae_rejects_beta():
    with pytest.raises(ValueError, match="beta"):
        vaecpp.VAE(5, objective="iwae", beta=0.5)
    with pytest.raises(ValueError, match="objective"):
        vaecpp.VAE(5, objective="vimco")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_log_likelihood_sums_over_dimensions_whatever_the_reduction(likelihood):
    """log p(x) is a density: a model trained with reduction='mean' (Keras 1's losses) gets the
    same estimate as the same weights with the summed likelihood, not 1/D of its NLL."""
    x = np.random.default_rng(0).random((5, 12))
    kw = dict(latent_dim=2, hidden=(6,), likelihood=likelihood, seed=4, dtype="float64")
    summed = vaecpp.VAE(12, reduction="sum", **kw)
    mean = vaecpp.VAE(12, reduction="mean", **kw)
    mean.set_weights(summed.get_weights())
    np.testing.assert_array_equal(mean.log_likelihood(x, k=50), summed.log_likelihood(x, k=50))
    # the training loss is the one that differs (mean over the 12 dimensions)
    assert mean.evaluate(x, return_dict=True)["reconstruction_loss"] < \
        summed.evaluate(x, return_dict=True)["reconstruction_loss"] / 6


def test_iwae_refuses_the_mean_reduction():
    with pytest.raises(ValueError, match="reduction='sum'"):
        vaecpp.VAE(12, latent_dim=2, hidden=(6,), objective="iwae", k=3, reduction="mean")
