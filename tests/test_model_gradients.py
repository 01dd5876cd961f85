"""The whole model's gradient (encoder, heads, reparameterisation, KL, decoder, likelihood)
against finite differences of the loss, in float64, through ``VAE.gradients``."""

import numpy as np
import pytest

import vaecpp
from gradcheck import assert_close_grad, numeric_grad

CASES = [
    dict(likelihood="bernoulli", activation="tanh"),
    dict(likelihood="bernoulli", activation="relu", beta=0.5),
    dict(likelihood="gaussian", activation="elu"),
    dict(likelihood="mse", activation="softplus", output_activation="tanh"),
    dict(likelihood="continuous_bernoulli", activation="sigmoid", prior_std=0.5),
    dict(likelihood="laplace", activation="leaky_relu"),
    dict(likelihood="bernoulli", activation="tanh", hidden=(), epsilon_std=0.1),
    dict(likelihood="bernoulli", activation="tanh", hidden=(5, 4), decoder_hidden=(3,),
         dropout=0.3, beta=0.0),
    # reduction="mean" through the engine, including the fused Bernoulli kernel
    dict(likelihood="bernoulli", activation="relu", reduction="mean"),
    dict(likelihood="gaussian", activation="tanh", reduction="mean"),
    dict(likelihood="continuous_bernoulli", activation="elu", reduction="mean"),
    dict(likelihood="laplace", activation="tanh", reduction="mean", laplace_scale=0.5),
]


def make(**kw):
    kw = {"hidden": (5,), **kw}
    return vaecpp.VAE(input_shape=6, latent_dim=2, seed=3, dtype="float64", **kw)


@pytest.mark.parametrize("fixed_eps", [True, False])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_model_gradient_finite_differences(case, fixed_eps):
    vae = make(**case)
    rng = np.random.default_rng(0)
    x = rng.random((4, 6))
    eps = rng.normal(size=(4, 2)) if fixed_eps else None
    weights = vae.get_weights()
    weights = [w + rng.normal(scale=0.1, size=w.shape) for w in weights]
    vae.set_weights(weights)
    losses, grads = vae.gradients(x, eps=eps)
    assert [g.shape for g in grads] == [w.shape for w in weights]

    def loss():
        vae.set_weights(weights)
        return vae.gradients(x, eps=eps)[0]["loss"]

    for w, g, name in zip(weights, grads, vae.weight_names()):
        assert_close_grad(g, numeric_grad(loss, w), what=name)


def test_loss_terms_follow_the_convention():
    """loss = mean over samples of (sum over dims of NLL + beta * sum over latents of KL)."""
    from scipy import special
    vae = make(likelihood="bernoulli", activation="tanh", beta=0.7)
    rng = np.random.default_rng(1)
    x, eps = rng.random((5, 6)), rng.normal(size=(5, 2))
    losses, _ = vae.gradients(x, eps)
    mu, lv = vae.posterior(x)
    z = mu + np.exp(lv / 2) * eps
    W = vae.get_weights()
    h = np.tanh(z @ W[6] + W[7])
    logits = h @ W[8] + W[9]
    q = special.expit(logits)
    nll = -np.sum(x * np.log(q) + (1 - x) * np.log1p(-q), axis=1)
    kl = 0.5 * np.sum(mu ** 2 + np.exp(lv) - 1 - lv, axis=1)
    np.testing.assert_allclose(losses["reconstruction_loss"], nll.mean(), rtol=1e-10)
    np.testing.assert_allclose(losses["kl_loss"], kl.mean(), rtol=1e-10)
    np.testing.assert_allclose(losses["loss"], (nll + 0.7 * kl).mean(), rtol=1e-10)
    np.testing.assert_allclose(losses["elbo"], -(nll + kl).mean(), rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mean_reduction_is_keras_binary_crossentropy_plus_summed_kl(dtype):
    """reduction="mean": the NLL is the mean over pixels (Keras 1's binary_crossentropy), the KL
    stays summed over latents: the weighting of the original Frey-faces notebook."""
    from scipy import special
    vae = vaecpp.VAE(input_shape=6, latent_dim=2, hidden=(5,), activation="tanh", seed=3,
                     dtype=dtype, likelihood="bernoulli", reduction="mean")
    rng = np.random.default_rng(1)
    x, eps = rng.random((5, 6)), rng.normal(size=(5, 2))
    losses, _ = vae.gradients(x, eps)
    mu, lv = (a.astype(np.float64) for a in vae.posterior(x))
    z = mu + np.exp(lv / 2) * eps
    W = [w.astype(np.float64) for w in vae.get_weights()]
    q = special.expit(np.tanh(z @ W[6] + W[7]) @ W[8] + W[9])
    bce = -np.mean(x * np.log(q) + (1 - x) * np.log1p(-q), axis=1)
    kl = 0.5 * np.sum(mu ** 2 + np.exp(lv) - 1 - lv, axis=1)
    rtol = 1e-10 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(losses["reconstruction_loss"], bce.mean(), rtol=rtol)
    np.testing.assert_allclose(losses["loss"], (bce + kl).mean(), rtol=rtol)


def test_mean_reduction_is_refused_for_a_custom_likelihood():
    class Half(vaecpp.Likelihood):
        params_per_dim = 1

        def nll(self, x, params):
            return 0.5 * np.sum((x - params) ** 2, axis=1)

        def grad(self, x, params):
            return params - x

        def mean(self, params):
            return params

    with pytest.raises(ValueError, match="built-in likelihoods"):
        make(likelihood=Half(), reduction="mean")


def test_evaluate_noise_matches_gradients_default_noise():
    vae = make(likelihood="gaussian", activation="tanh")
    x = np.random.default_rng(2).random((9, 6))
    ev = vae.evaluate(x, batch_size=4, return_dict=True)
    gr = vae.gradients(x)[0]
    for k in ("loss", "reconstruction_loss", "kl_loss"):
        np.testing.assert_allclose(ev[k], gr[k], rtol=1e-12)
